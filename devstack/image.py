"""The image every local container is forked from: what a Lambda function's deployment package holds ready.

Imported once, by the forkserver of ``devstack.containers`` (after ``app``): the modules a worker imports lazily on
its first job (the openai SDK, Powertools' batch processing and circuit breaker, the pipeline, the workflow's routing
and the tasks), the tokenizer's tables read from the local cache, the TLS trust store of the LLM clients and the
text-quality gate's word lists. A container forked from it still makes its own clients, caches and services on
first use, as a Lambda's init phase does; what it skips is a second or more of imports and AWS service models per
container, which on a two-core machine would otherwise dominate a burst of cold starts.
"""

from __future__ import annotations

import aws_lambda_powertools.utilities.batch
import aws_lambda_powertools.utilities.circuit_breaker  # noqa: F401
import boto3
import openai
import openai.types.chat  # noqa: F401

import chalicelib.entry.worker
import chalicelib.pipeline.run
import chalicelib.pipeline.workflow
import chalicelib.tasks.registry  # noqa: F401
from chalicelib.config import get_settings
from chalicelib.documents.legibility import score_text
from chalicelib.documents.tokens import get_encoding
from chalicelib.llm.chat import trust_store

try:  # the stage's model; another is loaded by its first job
    get_encoding(get_settings().model)
except Exception:  # no cached tables and no network: the first job loads them, as it would without this image
    pass

# Profiled in a burst of cold containers on two cores: about 0.2 s of CPU each, all at once, without these two.
trust_store()
score_text("The text-quality gate reads its word lists on a worker's first page: this sentence loads them.")

# The AWS service models the functions use, loaded into boto3's default session (its loader caches them): each
# container still creates its own clients, without reading and parsing the same JSON models again.
for _service in ("s3", "sqs", "dynamodb", "secretsmanager"):
    try:
        boto3.client(_service)
    except Exception:  # no region configured: the container loads the model itself
        pass
try:  # the job store's table (a resource, with a model of its own)
    boto3.resource("dynamodb")
except Exception:
    pass
