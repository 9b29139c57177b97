"""The image every local container is forked from: what a Lambda function's deployment package holds ready.

Imported once, by the forkserver of ``devstack.containers`` (after ``app``): the modules a worker imports lazily on
its first job (the openai SDK, Powertools' batch processing and circuit breaker, the pipeline) and the tokenizer's
tables, read from the local cache. A container forked from it still makes its own clients, caches and services on
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
import chalicelib.pipeline.run  # noqa: F401
from chalicelib.config import get_settings
from chalicelib.documents.tokens import get_encoding

try:  # the stage's model; another is loaded by its first job
    get_encoding(get_settings().model)
except Exception:  # no cached tables and no network: the first job loads them, as it would without this image
    pass

# The AWS service models the functions use, loaded into boto3's default session (its loader caches them): each
# container still creates its own clients, without reading and parsing the same JSON models again.
for _service in ("s3", "sqs", "dynamodb", "secretsmanager"):
    try:
        boto3.client(_service)
    except Exception:  # no region configured: the container loads the model itself
        pass
