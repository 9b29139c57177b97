"""Running a job of any task type through the worker's real path, for the task tests (test_tasks_*.py).

POST /jobs → the real SQS message → the ``process_jobs`` Lambda handler → the job row and the result, read back through
the API. The LLM is the fake OpenAI-compatible server, configured through the standard variables::

    from tests.taskflow import llm, run_job, submit  # noqa: F401  (llm is a fixture)

    def test_x(client, sqs, drain_queue, llm):
        job_id = submit(client, {"text": "..."}, {"type": "classify", "labels": ["a", "b"]})
        job, result = run_job(client, sqs, drain_queue, job_id)
"""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.conftest import sqs_event
from tests.fake_openai import FakeOpenAI, message_text

API_KEY = "sk-tasks-test-Kq7Wm2Xv9"
_TAG = re.compile(r'<document pages="(\d+(?:-\d+)?)">\n(.*)\n</document>', re.S)


def refresh_settings() -> None:
    from chalicelib.config import get_settings
    from chalicelib.services import get_services

    get_settings.cache_clear()
    get_services.cache_clear()


def reset_circuit(services) -> None:
    """No LLM circuit state left by other tests, so each failure here reaches the job's own retry logic."""
    from aws_lambda_powertools.utilities.circuit_breaker import base

    from chalicelib import aws, breaker

    aws.client("dynamodb").delete_item(TableName=services.settings.idempotency_table,
                                       Key={"id": {"S": breaker.CIRCUIT_NAME}})
    breaker._guard.cache_clear()
    for counters in (base._LOCAL_FAILURES, base._LOCAL_SUCCESSES, base._LAST_OBSERVED_STATE):
        counters.clear()


@pytest.fixture
def llm(services, monkeypatch):
    """A fake OpenAI endpoint on a fresh port, so no map answer cached by another test can match its requests."""
    reset_circuit(services)
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


def configure(monkeypatch, **variables: str) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    refresh_settings()


def submit(client, document: dict, task: dict) -> str:
    response = client.http.post("/jobs", headers={"content-type": "application/json"},
                                body=json.dumps({"document": document, "task": task}))
    assert response.status_code == 202, response.body
    return response.json_body["job_id"]


def _receive(sqs, queue_url: str, job_id: str) -> dict:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                           MessageSystemAttributeNames=["All"]).get("Messages", []):
            if json.loads(message["Body"]).get("job_id") == job_id:
                return message
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    raise AssertionError(f"no message for job {job_id}")


def deliver(client, sqs, queue_url: str, message: dict, *, receive_count: int = 1) -> dict:
    """One delivery of ``message`` as Lambda makes it; the message is deleted unless reported failed."""
    event = sqs_event([message["Body"]], receive_count=receive_count)
    event["Records"][0].update(messageId=message["MessageId"], receiptHandle=message["ReceiptHandle"])
    payload = client.lambda_.invoke("process_jobs", event).payload
    if not payload.get("batchItemFailures"):
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return payload


def run_job(client, sqs, queue_url: str, job_id: str) -> tuple[dict, dict | None]:
    """Deliver the job once; returns (job view, result or None when it failed)."""
    payload = deliver(client, sqs, queue_url, _receive(sqs, queue_url, job_id))
    assert payload == {"batchItemFailures": []}, payload
    job = get_job(client, job_id)
    return job, get_result(client, job_id) if job["status"] == "SUCCEEDED" else None


def receive(sqs, queue_url: str, job_id: str) -> dict:
    return _receive(sqs, queue_url, job_id)


def get_job(client, job_id: str) -> dict:
    response = client.http.get(f"/jobs/{job_id}")
    assert response.status_code == 200, response.body
    return response.json_body


def get_result(client, job_id: str) -> dict:
    response = client.http.get(f"/jobs/{job_id}/result")
    assert response.status_code == 200, response.body
    return response.json_body


def user_text(request: dict) -> str:
    return "".join(message_text(m) for m in request["json"]["messages"] if m["role"] == "user")


def system_text(request: dict) -> str:
    return "".join(message_text(m) for m in request["json"]["messages"] if m["role"] == "system")


def excerpt(request: dict) -> tuple[str, str] | None:
    """(pages, text) of the document excerpt a map request carries, or None for a reduce request."""
    found = _TAG.fullmatch(message_text([m for m in request["json"]["messages"] if m["role"] == "user"][0]))
    return (found.group(1), found.group(2)) if found else None


def map_requests(fake: FakeOpenAI) -> list[dict]:
    return [r for r in fake.chat_requests if excerpt(r) is not None and len(r["json"]["messages"]) == 2]
