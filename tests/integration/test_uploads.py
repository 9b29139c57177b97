"""The S3 upload trigger: an object put under incoming/ becomes exactly one queued job, tagged on the object.

Objects are really put into the emulator's bucket; the handler gets the S3 event Lambda would get (Chalice's
generator, or a real recorded event from the corpus). The job is found the way an uploader finds it: through the
docpipe-job-id tag on the object.
"""

from __future__ import annotations

import json
import urllib.parse
import uuid

import pytest

from chalicelib.bootstrap import get_services
from tests.support.corpus import corpus_file
from tests.support.pdfs import make_pdf
from tests.support.taskflow import aws_client, configure, job_count, queued_job_ids

PDF = make_pdf(["Harbour lights were built where ships kept breaking on the rocks.",
                "Keepers trimmed the wick and polished the lens every evening."])


# --- helpers ---------------------------------------------------------------------------------------------------------

def unique_key(name: str = "report.pdf") -> str:
    return f"incoming/test-uploads/{uuid.uuid4().hex[:8]}-{name}"


def upload(services, key: str, body: bytes = PDF, **extra) -> None:
    aws_client("s3").put_object(Bucket=services.settings.bucket, Key=key, Body=body, ContentType="application/pdf",
                                **extra)


def job_tag(services, key: str) -> str | None:
    tags = aws_client("s3").get_object_tagging(Bucket=services.settings.bucket, Key=key)["TagSet"]
    values = [t["Value"] for t in tags if t["Key"] == "docpipe-job-id"]
    assert len(values) <= 1, tags
    return values[0] if values else None


def trigger(client, bucket: str, key: str):
    """The S3 notification for one object; S3 url-encodes the key (spaces as '+'), as Lambda receives it."""
    event = client.events.generate_s3_event(bucket, urllib.parse.quote_plus(key, safe="/"))
    return client.lambda_.invoke("start_job_from_upload", event)


# --- an upload starts one job ----------------------------------------------------------------------------------------

def test_upload_under_incoming_starts_one_tagged_queued_job(client, services, sqs, drain_queue):
    key = unique_key()
    upload(services, key)
    before = job_count(services)

    trigger(client, services.settings.bucket, key)

    assert job_count(services) == before + 1
    job_id = job_tag(services, key)
    assert job_id is not None
    job = services.jobs.get(job_id)
    assert job.status == "QUEUED"
    assert job.source == "s3"
    assert job.task == {"type": "summarize"}
    assert job.document["s3_key"] == key
    assert queued_job_ids(sqs, drain_queue) == [job_id]


@pytest.mark.parametrize("metadata, expected_task", [
    pytest.param("summarize", {"type": "summarize"}, id="task-type"),
    pytest.param('{"type": "summarize", "target_words": 80}', {"type": "summarize", "target_words": 80},
                 id="json-task"),
])
def test_task_metadata_on_the_object_is_honoured(client, services, sqs, drain_queue, metadata, expected_task):
    key = unique_key()
    upload(services, key, Metadata={"task": metadata})

    trigger(client, services.settings.bucket, key)

    job_id = job_tag(services, key)
    assert job_id is not None
    assert services.jobs.get(job_id).task == expected_task
    assert queued_job_ids(sqs, drain_queue) == [job_id]


@pytest.mark.parametrize("metadata, codes", [
    pytest.param("translate", {"unknown_task"}, id="unknown-task-type"),
    pytest.param('{"type": "summarize", "target_words": 0}', {"invalid_task"}, id="bad-task-option"),
    pytest.param('{"type": "summarize",', {"invalid_task"}, id="broken-json"),
])
def test_invalid_task_metadata_records_a_failed_job_and_queues_nothing(client, services, sqs, drain_queue,
                                                                        metadata, codes):
    key = unique_key()
    upload(services, key, Metadata={"task": metadata})
    before = job_count(services)

    trigger(client, services.settings.bucket, key)

    assert job_count(services) == before + 1
    job_id = job_tag(services, key)
    assert job_id is not None
    job = services.jobs.get(job_id)
    assert job.status == "FAILED"
    assert job.error["code"] in codes, job.error
    assert queued_job_ids(sqs, drain_queue) == []


def test_the_same_s3_event_delivered_twice_starts_one_job(client, services, sqs, drain_queue):
    key = unique_key()
    upload(services, key)
    event = client.events.generate_s3_event(services.settings.bucket, key)
    before = job_count(services)

    client.lambda_.invoke("start_job_from_upload", event)
    client.lambda_.invoke("start_job_from_upload", event)

    assert job_count(services) == before + 1
    job_id = job_tag(services, key)
    assert queued_job_ids(sqs, drain_queue) == [job_id]


def test_url_encoded_key_with_spaces_unicode_and_plus_is_decoded(client, services, sqs, drain_queue):
    key = f"incoming/test-uploads/{uuid.uuid4().hex[:8]} My Doc (1) ü+x.pdf"
    upload(services, key)
    encoded = urllib.parse.quote_plus(key, safe="/")
    assert " " not in encoded and "+" in encoded and "%2B" in encoded  # what S3 puts in the event

    client.lambda_.invoke("start_job_from_upload", client.events.generate_s3_event(services.settings.bucket,
                                                                                   encoded))

    job_id = job_tag(services, key)
    assert job_id is not None
    assert services.jobs.get(job_id).document["s3_key"] == key
    assert queued_job_ids(sqs, drain_queue) == [job_id]


# --- events that must not start a job ---------------------------------------------------------------------------------

def test_real_event_from_a_foreign_bucket_is_ignored(client, services, sqs, drain_queue):
    event = json.loads(corpus_file("events/powertools-py__s3Event.json").read_text())
    assert event["Records"][0]["s3"]["bucket"]["name"] != services.settings.bucket
    before = job_count(services)

    client.lambda_.invoke("start_job_from_upload", event)

    assert job_count(services) == before
    assert queued_job_ids(sqs, drain_queue) == []


@pytest.mark.parametrize("key", [
    pytest.param("uploads/test-uploads/staged.pdf", id="uploads-prefix"),
    pytest.param("inputs/0123456789abcdef0123456789abcdef", id="inputs-prefix"),
    pytest.param("incoming-not-really/report.pdf", id="lookalike-prefix"),
    pytest.param("incoming/test-uploads/folder/", id="folder-marker"),
])
def test_object_outside_incoming_in_our_bucket_is_ignored(client, services, sqs, drain_queue, key):
    upload(services, key)
    before = job_count(services)

    trigger(client, services.settings.bucket, key)

    assert job_count(services) == before
    assert queued_job_ids(sqs, drain_queue) == []
    assert job_tag(services, key) is None


def test_event_for_an_object_already_deleted_is_ignored(client, services, sqs, drain_queue):
    key = unique_key("deleted.pdf")
    upload(services, key)
    aws_client("s3").delete_object(Bucket=services.settings.bucket, Key=key)
    before = job_count(services)

    trigger(client, services.settings.bucket, key)

    assert job_count(services) == before
    assert queued_job_ids(sqs, drain_queue) == []


def test_upload_over_the_document_limit_records_a_failed_job(client, services, sqs, drain_queue, monkeypatch):
    configure(monkeypatch, DOCPIPE_MAX_DOCUMENT_BYTES="1024")
    rebuilt = get_services()
    assert rebuilt.settings.max_document_bytes == 1024
    key = unique_key("big.pdf")
    big = make_pdf(["A long page. " * 200])
    assert len(big) > 1024
    upload(rebuilt, key, big)
    before = job_count(rebuilt)

    trigger(client, rebuilt.settings.bucket, key)

    assert job_count(rebuilt) == before + 1
    job_id = job_tag(rebuilt, key)
    assert job_id is not None
    job = rebuilt.jobs.get(job_id)
    assert job.status == "FAILED"
    assert job.error["code"] == "too_large"
    assert queued_job_ids(sqs, drain_queue) == []


# --- robustness -----------------------------------------------------------------------------------------------------

def test_tagging_the_job_keeps_the_uploaders_own_tags(client, services, sqs, drain_queue):
    key = unique_key()
    upload(services, key, Tagging="owner=alice&project=harbours")

    trigger(client, services.settings.bucket, key)

    tagging = aws_client("s3").get_object_tagging(Bucket=services.settings.bucket, Key=key)
    tags = {t["Key"]: t["Value"] for t in tagging["TagSet"]}
    assert tags.get("owner") == "alice" and tags.get("project") == "harbours", tags
    assert tags.get("docpipe-job-id") in queued_job_ids(sqs, drain_queue)


def test_a_transient_queue_failure_during_an_upload_is_recovered_by_the_redelivery(client, services, sqs,
                                                                                   drain_queue, monkeypatch):
    key = unique_key()
    upload(services, key)
    event = client.events.generate_s3_event(services.settings.bucket, key)
    real_send = services.lifecycle.queue.send
    calls = []

    def send_failing_once(job_id):
        calls.append(job_id)
        if len(calls) == 1:
            raise ConnectionError("SQS is briefly unreachable")
        real_send(job_id)

    monkeypatch.setattr(services.lifecycle.queue, "send", send_failing_once)
    try:
        client.lambda_.invoke("start_job_from_upload", event)
    except Exception:  # raising is one correct answer: Lambda retries an asynchronous invocation that failed
        pass

    client.lambda_.invoke("start_job_from_upload", event)  # Lambda's retry of the same event

    assert calls, "the handler never tried to queue the job"
    job_id = job_tag(services, key)
    assert job_id is not None
    assert services.jobs.get(job_id).status == "QUEUED"
    assert queued_job_ids(sqs, drain_queue) == [job_id]
