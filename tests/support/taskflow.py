"""A job's way through docpipe's real path, for the integration tests that follow it: submitted over the API, queued,
delivered to the worker, read back.

POST /jobs → the row in the jobs table and the real SQS message → the ``process_jobs`` Lambda handler, invoked as
Lambda's SQS event source does → the job row and the result, read back through the API. The LLM is the fake
OpenAI-compatible server (the ``llm`` fixture of tests/integration/conftest.py), configured through the standard
variables::

    from tests.support.taskflow import run_job, submit

    def test_x(client, sqs, drain_queue, llm):
        job_id = submit(client, {"text": "..."}, {"type": "classify", "labels": ["a", "b"]})
        job, result = run_job(client, sqs, drain_queue, job_id)
"""

from __future__ import annotations

import json
import re
import time

import boto3
from botocore.exceptions import ClientError

from tests.events import sqs_event_of_bodies
from tests.support.fake_openai import FakeOpenAI, message_text

# The integration tests' stack: the stage and bucket its emulator holds, and the fake LLM's key.
STAGE = "test"
BUCKET = "docpipe-test-documents"
API_KEY = "sk-tasks-test-Kq7Wm2Xv9"
_TAG = re.compile(r'<document pages="(\d+(?:-\d+)?)">\n(.*)\n</document>', re.DOTALL)


# --- the app's settings and clients ----------------------------------------------------------------------------------

def aws_client(service: str):
    """The app's own client, so a test reaches the emulator exactly as the app does."""
    from chalicelib.aws import clients

    return clients.client(service)


def refresh_settings() -> None:
    """Settings are read once and cached; after changing the environment the app must read them again."""
    from chalicelib.bootstrap import get_services
    from chalicelib.config import get_settings

    get_settings.cache_clear()
    get_services.cache_clear()


def configure(monkeypatch, **variables: str) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    refresh_settings()


def reset_circuit(services) -> None:
    """No LLM circuit state left by other tests: none stored, none counted in this process."""
    from aws_lambda_powertools.utilities.circuit_breaker import base

    from chalicelib.llm import breaker

    aws_client("dynamodb").delete_item(TableName=services.settings.idempotency_table,
                                       Key={"id": {"S": breaker.CIRCUIT_NAME}})
    breaker._guard.cache_clear()
    for counters in (base._LOCAL_FAILURES, base._LOCAL_SUCCESSES, base._LAST_OBSERVED_STATE):
        counters.clear()


def forget_map_answers(services) -> None:
    from chalicelib.aws import CACHE_PREFIX

    s3 = aws_client("s3")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=services.settings.bucket, Prefix=CACHE_PREFIX):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=services.settings.bucket, Key=item["Key"])


# --- submitting, and what it left in the table and the queue ---------------------------------------------------------

def submit(client, document: dict, task: dict | None = None) -> str:
    """POST /jobs with ``document`` and ``task`` (a summary by default); returns the accepted job's id."""
    response = client.http.post("/jobs", headers={"content-type": "application/json"},
                                body=json.dumps({"document": document, "task": task or {"type": "summarize"}}))
    assert response.status_code == 202, response.body
    return response.json_body["job_id"]


def job_count(services) -> int:
    """Rows in the jobs table: the only honest way to say "no job was created"."""
    table = boto3.resource("dynamodb").Table(services.settings.jobs_table)
    count, kwargs = 0, {"Select": "COUNT", "ConsistentRead": True}
    while True:
        page = table.scan(**kwargs)
        count += page["Count"]
        if "LastEvaluatedKey" not in page:
            return count
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def queued_job_ids(sqs, queue_url: str) -> list[str]:
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                   VisibilityTimeout=30).get("Messages", [])
    return [json.loads(m["Body"])["job_id"] for m in messages]


# --- delivering to the worker ----------------------------------------------------------------------------------------

def receive(sqs, queue_url: str, job_id: str, *, first_receive: bool = False) -> dict:
    """The real message that carries ``job_id``, received as Lambda's poller does (hidden, not deleted).

    Other messages on the queue are not this test's and are deleted. With ``first_receive`` the message must not have
    been received before, so that an event claiming ``receive_count=1`` tells the truth.
    """
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                           MessageSystemAttributeNames=["All"]).get("Messages", []):
            if json.loads(message["Body"]).get("job_id") == job_id:
                if first_receive:
                    assert message["Attributes"]["ApproximateReceiveCount"] == "1"
                return message
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    raise AssertionError(f"no message for job {job_id} on the jobs queue")


def event_for(messages: list[dict], *, receive_count: int = 1) -> dict:
    """The SQS event Lambda builds from received ``messages``: their bodies, message ids and receipt handles."""
    event = sqs_event_of_bodies([m["Body"] for m in messages], receive_count=receive_count)
    for record, message in zip(event["Records"], messages, strict=True):
        record.update(messageId=message["MessageId"], receiptHandle=message["ReceiptHandle"])
    return event


def invoke_worker(client, sqs, queue_url: str, event: dict) -> dict:
    """Invoke ``process_jobs``; then delete every message of the batch it did not report as failed, as Lambda does.

    Records made up by ``sqs_event_of_bodies`` (receipt handle ``handle-N``) stand for no message, and a recorded
    event's handles for none of this queue's.
    """
    payload = client.lambda_.invoke("process_jobs", event).payload
    failed = {f["itemIdentifier"] for f in (payload or {}).get("batchItemFailures", [])}
    for record in event["Records"]:
        if record["messageId"] not in failed and not record["receiptHandle"].startswith("handle-"):
            try:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=record["receiptHandle"])
            except ClientError:  # a recorded event's handle, or a stale one: there is nothing left to delete
                pass
    return payload


def deliver(client, sqs, queue_url: str, *messages: dict, receive_count: int = 1) -> dict:
    """One delivery of ``messages``, in one batch, as Lambda makes it; each is deleted unless reported failed."""
    return invoke_worker(client, sqs, queue_url, event_for(list(messages), receive_count=receive_count))


def deliver_job(client, sqs, queue_url: str, job_id: str, *, first_receive: bool = False) -> tuple[dict, dict]:
    """Deliver the job's message once; returns (handler payload, job view)."""
    payload = deliver(client, sqs, queue_url, receive(sqs, queue_url, job_id, first_receive=first_receive))
    return payload, get_job(client, job_id)


def run_job(client, sqs, queue_url: str, job_id: str) -> tuple[dict, dict | None]:
    """Deliver the job once, which must not hand its message back; returns (job view, result or None if it failed)."""
    payload, job = deliver_job(client, sqs, queue_url, job_id)
    assert payload == {"batchItemFailures": []}, payload
    return job, get_result(client, job_id) if job["status"] == "SUCCEEDED" else None


# --- reading back ----------------------------------------------------------------------------------------------------

def get_job(client, job_id: str) -> dict:
    response = client.http.get(f"/jobs/{job_id}")
    assert response.status_code == 200, response.body
    return response.json_body


def get_result(client, job_id: str) -> dict:
    response = client.http.get(f"/jobs/{job_id}/result")
    assert response.status_code == 200, response.body
    return response.json_body


# --- what the fake LLM was asked -------------------------------------------------------------------------------------

def user_text(request: dict) -> str:
    return "".join(message_text(m) for m in request["json"]["messages"] if m["role"] == "user")


def system_text(request: dict) -> str:
    return "".join(message_text(m) for m in request["json"]["messages"] if m["role"] == "system")


def excerpt(request: dict) -> tuple[str, str] | None:
    """(pages, text) of the document excerpt a map request carries, or None for a reduce request."""
    found = _TAG.fullmatch(message_text(next(m for m in request["json"]["messages"] if m["role"] == "user")))
    return (found.group(1), found.group(2)) if found else None


def map_requests(fake: FakeOpenAI) -> list[dict]:
    return [r for r in fake.chat_requests if excerpt(r) is not None and len(r["json"]["messages"]) == 2]
