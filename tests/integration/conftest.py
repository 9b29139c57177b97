"""Integration tests: docpipe's real code against one embedded AWS emulator for the session, with docpipe's resources
created from infra/, and against fake external services (an OpenAI-compatible server) on 127.0.0.1.

The environment is set before ``app`` is imported, as Lambda and ``chalice local`` do: app.py reads queue and
bucket names at import. Tests use the same code path as production — plain boto3 clients that reach the emulator
through ``AWS_ENDPOINT_URL`` — never ``mock_aws``.
"""

from __future__ import annotations

import os

import pytest
from moto.server import ThreadedMotoServer

from tests.support import PROJECT
from tests.support.fake_openai import FakeOpenAI
from tests.support.taskflow import API_KEY, BUCKET, STAGE, forget_map_answers, refresh_settings, reset_circuit

os.environ.update(
    DOCPIPE_STAGE=STAGE, DOCPIPE_BUCKET=BUCKET,
    # As the local stage: a request without an API key acts as the client "local".
    DOCPIPE_KEYLESS_CLIENT="local",
    # Job events on a bus of their own, as the local stage: other tests' rules on the default bus stay apart.
    DOCPIPE_EVENT_BUS="docpipe-test",
    # Tests drain the jobs queue often; AWS (and strict moto) allow one purge a minute.
    MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR="false",
)

_EMULATOR = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
_EMULATOR.start()
_HOST, _PORT = _EMULATOR.get_host_and_port()
EMULATOR_URL = f"http://{_HOST}:{_PORT}"
os.environ.update(AWS_ENDPOINT_URL=EMULATOR_URL, MOTO_PORT=str(_PORT))

import chalice.test
from chalice.app import S3EventConfig
from chalice.local import LambdaContext


class _ConfiguredLambdaContext(LambdaContext):
    """chalice.test gives every invoke 3 s to live whatever the function's timeout; Lambda gives the configured
    timeout (the worker's is minutes). The pipeline budgets its LLM calls by this, so tests get a real one."""

    def __init__(self, function_name, memory_size, max_runtime_ms=300_000, time_source=None):
        super().__init__(function_name, memory_size, max_runtime_ms=max_runtime_ms, time_source=time_source)


chalice.test.LambdaContext = _ConfiguredLambdaContext

import app as docpipe_app
from devstack.resources import provision

# A short visibility timeout so redelivery can be observed within a test.
RESOURCES = provision(EMULATOR_URL, stage=STAGE, bucket=BUCKET, visibility_timeout=2, event_bus="docpipe-test",
                      s3_notifications=[s for s in docpipe_app.app.event_sources if isinstance(s, S3EventConfig)])


def pytest_sessionfinish(session, exitstatus):
    _EMULATOR.stop()


@pytest.fixture
def services():
    """The app's real services against the emulator, rebuilt per test so settings changes take effect."""
    from chalicelib.bootstrap import get_services

    refresh_settings()
    yield get_services()
    refresh_settings()


@pytest.fixture
def client(services):
    with chalice.test.Client(docpipe_app.app, stage_name=STAGE, project_dir=str(PROJECT)) as test_client:
        yield test_client


@pytest.fixture
def sqs(services):
    from chalicelib.aws import clients

    return clients.client("sqs")


@pytest.fixture
def jobs_queue_url(sqs):
    return sqs.get_queue_url(QueueName=RESOURCES.jobs_queue)["QueueUrl"]


@pytest.fixture
def drain_queue(sqs, jobs_queue_url):
    """Empty the jobs queue before a test that counts its messages."""
    sqs.purge_queue(QueueUrl=jobs_queue_url)
    return jobs_queue_url


@pytest.fixture
def llm(services, monkeypatch):
    """A fake OpenAI endpoint configured through the standard variables, as a deployment would.

    No map answer cached by another test can match its requests: the cache is emptied (a fresh port alone is not
    enough, the system may hand out a port an earlier test's fake used). The circuit breaker is out of the way
    (closed, with a threshold these tests never reach): each failure must reach the job's own retry logic.
    """
    reset_circuit(services)
    forget_map_answers(services)
    with FakeOpenAI() as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
        monkeypatch.setenv("DOCPIPE_BREAKER_FAILURES", "1000")
        refresh_settings()
        yield fake
    monkeypatch.undo()
    refresh_settings()
    reset_circuit(services)
    assert not fake.errors, fake.errors
