"""Nothing lost, nothing doubled, nothing stuck: retries, heartbeats, the circuit breaker, the local dispatcher."""

from __future__ import annotations

import json
import threading
import time
import types
import uuid

import pytest

from chalicelib.jobs.store import QUEUED, RUNNING, Job
from tests.events import sqs_event_of_bodies
from tests.support.emf import emf_values
from tests.support.fake_openai import FakeOpenAI

TEXT = "Harbour lights guided ships past the rocks. Keepers trimmed the wicks at dusk. " * 30


def submit(client, text: str = TEXT) -> str:
    response = client.http.post("/jobs", headers={"content-type": "application/json"},
                                body=json.dumps({"document": {"text": text}, "task": {"type": "summarize"}}))
    assert response.status_code == 202, response.body
    return response.json_body["job_id"]


def receive(sqs, queue_url, wait: int = 1) -> list[dict]:
    return sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait,
                               MessageSystemAttributeNames=["All"]).get("Messages", [])


def deliver(client, sqs, queue_url, messages: list[dict]) -> dict:
    """What Lambda's SQS event source does: invoke with the batch, delete all but the reported failures."""
    event = sqs_event_of_bodies([m["Body"] for m in messages])
    for record, message in zip(event["Records"], messages, strict=True):
        record.update(messageId=message["MessageId"], receiptHandle=message["ReceiptHandle"])
    outcome = client.lambda_.invoke("process_jobs", event).payload
    failed = {f["itemIdentifier"] for f in outcome["batchItemFailures"]}
    for message in messages:
        if message["MessageId"] not in failed:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return outcome


def use_llm(monkeypatch, fake: FakeOpenAI, **settings: str) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-reliability-test")
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    from chalicelib.bootstrap import get_services
    from chalicelib.config import get_settings

    get_settings.cache_clear()
    get_services.cache_clear()


# --- POST /jobs/{job_id}/retry ---------------------------------------------------------------------------------------

def test_a_failed_job_can_be_retried_and_is_queued_again(client, services, sqs, drain_queue):
    job_id = submit(client)
    receive(sqs, drain_queue)
    services.jobs.mark_failed(job_id, {"code": "llm_unavailable", "message": "provider down"})

    response = client.http.post(f"/jobs/{job_id}/retry")

    assert response.status_code == 202
    assert response.json_body["status"] == QUEUED and "error" not in response.json_body
    assert [json.loads(m["Body"])["job_id"] for m in receive(sqs, drain_queue)] == [job_id]


def test_only_a_failed_job_can_be_retried(client, services, sqs, drain_queue):
    job_id = submit(client)
    response = client.http.post(f"/jobs/{job_id}/retry")
    assert response.status_code == 409
    assert response.json_body["error"]["code"] == "not_retryable"
    assert client.http.post(f"/jobs/{uuid.uuid4().hex}/retry").status_code == 404


# --- heartbeat -------------------------------------------------------------------------------------------------------

def test_a_running_job_keeps_its_message_hidden_and_its_lease_held(services, sqs, drain_queue):
    from chalicelib.jobs import Delivery, Heartbeat

    job_id = uuid.uuid4().hex
    services.jobs.create(Job(job_id=job_id, status=QUEUED, task={"type": "summarize"}, document={},
                             created_at=time.time()))
    services.lifecycle.queue.send(job_id)
    message = receive(sqs, drain_queue)[0]  # the test queue hides a received message for 2 s
    attempt = services.lifecycle.claim(job_id, lease_seconds=1.0)
    delivery = Delivery(job_id, message_id=message["MessageId"], receipt_handle=message["ReceiptHandle"],
                        queue_name=services.settings.jobs_queue)

    # Each beat holds both for 3 s; the test outlasts that, and the queue's own 2 s, while the worker is alive.
    with Heartbeat(services.lifecycle, delivery, interval=1.0) as heartbeat:
        heartbeat.track(attempt)
        time.sleep(4.5)
        assert receive(sqs, drain_queue, wait=0) == [], "the message was redelivered while its worker was alive"
        assert services.jobs.get(job_id).lease_until > time.time()

    deadline = time.monotonic() + 15
    while not (again := receive(sqs, drain_queue, wait=1)) and time.monotonic() < deadline:
        pass
    assert [m["MessageId"] for m in again] == [message["MessageId"]], "after the worker stops, the job comes back"
    assert services.jobs.claim(job_id, 60).status == RUNNING, "and its lease has lapsed, so it can be taken over"


# --- circuit breaker -------------------------------------------------------------------------------------------------

@pytest.fixture
def closed_circuit(services):
    """Each test starts with a closed circuit: no stored state, no counters left in this process."""
    from aws_lambda_powertools.utilities.circuit_breaker import base

    from chalicelib.aws import clients as aws
    from chalicelib.llm import breaker

    def reset():
        aws.client("dynamodb").delete_item(TableName=services.settings.idempotency_table,
                                           Key={"id": {"S": breaker.CIRCUIT_NAME}})
        breaker._guard.cache_clear()
        for counters in (base._LOCAL_FAILURES, base._LOCAL_SUCCESSES, base._LAST_OBSERVED_STATE):
            counters.clear()

    reset()
    yield
    reset()


def test_an_llm_outage_opens_the_circuit_and_jobs_wait_instead_of_burning_deliveries(
        client, sqs, drain_queue, monkeypatch, closed_circuit, capsys):
    from chalicelib.observability import metrics

    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    metrics.clear_metrics()  # what earlier tests added while metrics were off is never flushed
    with FakeOpenAI() as fake:
        fake.script([("status", 500)] * 200)
        # The breaker stamps its times in whole seconds: a 3 s recovery window lasts 2 to 3 s, time enough for the
        # second batch, sent right after the first, to find the circuit still open on a busy machine.
        use_llm(monkeypatch, fake, DOCPIPE_BREAKER_FAILURES="2", DOCPIPE_BREAKER_RECOVERY_SECONDS="3",
                DOCPIPE_LLM_MAX_ATTEMPTS="1", DOCPIPE_LLM_CONCURRENCY="1", DOCPIPE_RETRY_BACKOFF_SECONDS="1")
        from chalicelib.bootstrap import get_services

        services = get_services()
        jobs = [submit(client) for _ in range(4)]
        messages = receive(sqs, drain_queue)
        assert len(messages) == 4

        # The records of a batch run at once, so the circuit is tripped by a first batch and tested by a second.
        first = deliver(client, sqs, drain_queue, messages[:2])
        later = deliver(client, sqs, drain_queue, messages[2:])

        # Two failed calls (one per job, no retries) trip the circuit; the jobs after them never reach the provider.
        assert fake.calls == 2
        assert len(first["batchItemFailures"]) == 2 and later["batchItemFailures"] == []
        deferred = [services.jobs.get(json.loads(m["Body"])["job_id"]) for m in messages[2:]]
        assert all(j.status == RUNNING and "waits" in j.last_error["message"] for j in deferred)
        # The gauge the circuit alarm reads: closed when the first jobs looked, open once tripped and when refused.
        gauge = emf_values(capsys.readouterr().out, "LLMCircuitOpen")
        assert gauge[0] == 0 and gauge[-1] == 1 and set(gauge) == {0, 1}, gauge

        # Recovery: the provider answers again; after the recovery window every job drains by itself. While one
        # job's call probes the half-open circuit, the others of its batch wait once more on the queue.
        fake.reset()
        time.sleep(3.2)
        redelivered = receive(sqs, drain_queue, wait=2)
        assert sorted(json.loads(m["Body"])["job_id"] for m in redelivered) == sorted(jobs)
        for _round in range(4):
            outcome = deliver(client, sqs, drain_queue, redelivered)
            assert outcome["batchItemFailures"] == []
            if all(services.jobs.get(j).status == "SUCCEEDED" for j in jobs):
                break
            redelivered = receive(sqs, drain_queue, wait=4)
    assert [services.jobs.get(j).status for j in jobs] == ["SUCCEEDED"] * 4
    # The probe's success closed it: the last value this worker reported is 0.
    assert emf_values(capsys.readouterr().out, "LLMCircuitOpen")[-1] == 0


# --- the local dispatcher --------------------------------------------------------------------------------------------

def test_the_local_dispatcher_deletes_successes_and_leaves_reported_failures_for_redelivery(sqs):
    from chalice.app import SQSEventConfig

    from devstack.dispatcher import Dispatcher

    name = f"dispatch-{uuid.uuid4().hex[:8]}"
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    for body in ("ok-1", "fail", "ok-2"):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    seen: list[str] = []
    done = threading.Event()

    def handler(event, context):
        seen.extend(r["body"] for r in event["Records"])
        if len(seen) >= 3:
            done.set()
        return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"]
                                      if r["body"] == "fail"]}

    app = types.SimpleNamespace(event_sources=[SQSEventConfig(
        name="consumer", handler_string="app.consumer", queue=name, queue_arn=None, batch_size=10,
        maximum_batching_window_in_seconds=0, maximum_concurrency=None)])

    dispatcher = Dispatcher(app, {"consumer": handler}, sqs, function_settings={}, s3_events_queue="unused")
    dispatcher.start()
    try:
        assert done.wait(10)
        time.sleep(2.5)  # past the visibility timeout: only the reported failure comes back
    finally:
        dispatcher.stop()
    assert sorted(seen[:3]) == ["fail", "ok-1", "ok-2"]
    assert set(seen[3:]) <= {"fail"} and "fail" in seen[3:], "the failed message was redelivered, and only it"
