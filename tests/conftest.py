"""Shared test setup: one embedded AWS emulator for the session, with docpipe's resources created from infra/.

The environment is set before ``app`` is imported, as Lambda and ``chalice local`` do: app.py reads queue and
bucket names at import. Tests use the same code path as production — plain boto3 clients that reach the emulator
through ``AWS_ENDPOINT_URL`` — never ``mock_aws``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
CORPUS = PROJECT.parent / "shared" / "corpus"
STAGE = "test"
BUCKET = "docpipe-test-documents"

os.environ.update(
    AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
    DOCPIPE_STAGE=STAGE, DOCPIPE_BUCKET=BUCKET, TIKTOKEN_CACHE_DIR=str(PROJECT / ".local" / "tiktoken"),
    POWERTOOLS_METRICS_DISABLED="true", POWERTOOLS_SERVICE_NAME="docpipe", POWERTOOLS_DEV="false",
    # As the local stage: a request without an API key acts as the client "local".
    DOCPIPE_KEYLESS_CLIENT="local",
    # Tests drain the jobs queue often; AWS (and strict moto) allow one purge a minute.
    MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR="false",
)
for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "DOCPIPE_API_URL"):
    os.environ.pop(name, None)
sys.path.insert(0, str(PROJECT))

from moto.server import ThreadedMotoServer  # noqa: E402

_EMULATOR = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
_EMULATOR.start()
_HOST, _PORT = _EMULATOR.get_host_and_port()
EMULATOR_URL = f"http://{_HOST}:{_PORT}"
os.environ.update(AWS_ENDPOINT_URL=EMULATOR_URL, MOTO_PORT=str(_PORT))

import chalice.test  # noqa: E402
from chalice.app import S3EventConfig  # noqa: E402
from chalice.local import LambdaContext  # noqa: E402


class _ConfiguredLambdaContext(LambdaContext):
    """chalice.test gives every invoke 3 s to live whatever the function's timeout; Lambda gives the configured
    timeout (the worker's is minutes). The pipeline budgets its LLM calls by this, so tests get a real one."""

    def __init__(self, function_name, memory_size, max_runtime_ms=300_000, time_source=None):
        super().__init__(function_name, memory_size, max_runtime_ms=max_runtime_ms, time_source=time_source)


chalice.test.LambdaContext = _ConfiguredLambdaContext

import app as docpipe_app  # noqa: E402
from devstack.resources import provision  # noqa: E402

# A short visibility timeout so redelivery can be observed within a test.
RESOURCES = provision(EMULATOR_URL, stage=STAGE, bucket=BUCKET, visibility_timeout=2,
                      s3_notifications=[s for s in docpipe_app.app.event_sources if isinstance(s, S3EventConfig)])


def pytest_sessionfinish(session, exitstatus):
    _EMULATOR.stop()


@pytest.fixture
def services():
    """The app's real services against the emulator, rebuilt per test so settings changes take effect."""
    from chalicelib.config import get_settings
    from chalicelib.bootstrap import get_services

    get_settings.cache_clear()
    get_services.cache_clear()
    yield get_services()
    get_settings.cache_clear()
    get_services.cache_clear()


@pytest.fixture
def client(services):
    from chalice.test import Client

    with Client(docpipe_app.app, stage_name=STAGE, project_dir=str(PROJECT)) as test_client:
        yield test_client


@pytest.fixture
def sqs(services):
    from chalicelib.aws import clients as aws

    return aws.client("sqs")


@pytest.fixture
def jobs_queue_url(sqs):
    return sqs.get_queue_url(QueueName=RESOURCES.jobs_queue)["QueueUrl"]


@pytest.fixture
def drain_queue(sqs, jobs_queue_url):
    """Empty the jobs queue before a test that counts its messages."""
    sqs.purge_queue(QueueUrl=jobs_queue_url)
    return jobs_queue_url


def corpus_file(relative: str) -> Path:
    path = CORPUS / relative
    if not path.exists():
        pytest.skip(f"shared corpus file {relative} is not present in this checkout")
    return path


def corpus_manifest() -> list[dict]:
    manifest = CORPUS / "manifest.json"
    return json.loads(manifest.read_text()) if manifest.exists() else []


# The corpus PDFs no pipeline can read, with the error code docpipe answers each with (the manifest's verdicts).
CORPUS_FAILURES = {
    "samplefiles__libreoffice-writer-password.pdf": "encrypted",
    "ocrmypdf__c02-22.pdf": "no_text",
    "ocrmypdf__invalid.pdf": "corrupt_pdf",
    "pdfjs__Pages-tree-refs.pdf": "corrupt_pdf",
    "qpdf__bad7.pdf": "corrupt_pdf",
    "qpdf__not-a-pdf__bad.pdf": "unsupported_type",
    "zero-byte__empty.pdf": "empty",
}


def sqs_event(bodies: list[str], *, receive_count: int = 1, queue: str = "docpipe-test-jobs") -> dict:
    """An SQS event as Lambda delivers it, with distinct message ids (Chalice's generator repeats one id)."""
    return {"Records": [{
        "messageId": str(uuid.uuid4()), "receiptHandle": f"handle-{i}", "body": body,
        "attributes": {"ApproximateReceiveCount": str(receive_count), "SentTimestamp": str(int(time.time() * 1000)),
                       "SenderId": "local", "ApproximateFirstReceiveTimestamp": str(int(time.time() * 1000))},
        "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:us-east-1:123456789012:{queue}", "awsRegion": "us-east-1",
    } for i, body in enumerate(bodies)]}
