"""Never pay twice: map answers are cached in S3 by content, and re-used by resubmitted and redelivered jobs."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from botocore.exceptions import ClientError

from chalicelib.aws.mapcache import CACHE_PREFIX, CacheWriter, MapCache, map_cache_key, map_cache_scope
from tests.events import sqs_event_of_bodies
from tests.support.taskflow import (
    BUCKET,
    configure,
    excerpt,
    get_job,
    get_result,
    map_requests,
    receive,
    run_job,
    submit,
)

pytestmark = pytest.mark.timeout(60)

PAGES = [
    "Glaciers carve deep valleys as they advance. Their moraines mark the furthest reach of the ice.",
    "Meltwater from the glacier feeds braided rivers. The rivers carry fine silt that colours lakes turquoise.",
    "Mountain guides read the crevasses each morning. They rope their clients together before crossing.",
    "In autumn the snow line descends to the valley. Huts close once the first heavy snow has fallen.",
]
TEXT = "\f".join(f"{page} {page}" for page in PAGES)  # about one 50-token chunk a page


@pytest.fixture
def small_chunks(llm, monkeypatch):
    configure(monkeypatch, DOCPIPE_CHUNK_TOKENS="50", DOCPIPE_CHUNK_OVERLAP_TOKENS="0")
    return llm


def test_a_resubmitted_identical_job_makes_no_map_call(client, sqs, drain_queue, small_chunks):
    first_job, first = run_job(client, sqs, drain_queue, submit(client, {"text": TEXT}, {"type": "summarize"}))
    chunks = first["document"]["chunks"]
    assert chunks >= 3 and first_job["usage"]["cache_hits"] == 0
    small_chunks.reset()

    job, result = run_job(client, sqs, drain_queue, submit(client, {"text": TEXT}, {"type": "summarize"}))

    assert job["status"] == "SUCCEEDED", job
    assert map_requests(small_chunks) == []
    assert job["usage"]["cache_hits"] == chunks
    assert job["usage"]["calls"] == small_chunks.calls == 1  # the reduce, whose input is the cached answers
    assert result["summary"] == first["summary"]
    assert job["progress"] == {"chunks_done": chunks, "chunks_total": chunks}


def test_changing_a_task_parameter_answers_the_chunks_again(client, sqs, drain_queue, small_chunks):
    run_job(client, sqs, drain_queue, submit(client, {"text": TEXT}, {"type": "summarize", "target_words": 100}))
    small_chunks.reset()

    job, result = run_job(client, sqs, drain_queue,
                          submit(client, {"text": TEXT}, {"type": "summarize", "target_words": 300}))

    assert job["usage"]["cache_hits"] == 0
    assert len(map_requests(small_chunks)) == result["document"]["chunks"]


def test_a_redelivered_job_reuses_every_chunk_answered_before_its_attempt_failed(client, sqs, drain_queue,
                                                                                small_chunks, monkeypatch):
    configure(monkeypatch, DOCPIPE_LLM_CONCURRENCY="1", DOCPIPE_LLM_MAX_ATTEMPTS="1")
    failing = submit(client, {"text": TEXT}, {"type": "summarize"})
    failing_message = receive(sqs, drain_queue, failing)
    healthy = submit(client, {"text": "A short and healthy note about alpine huts and their keepers."},
                     {"type": "summarize"})
    healthy_message = receive(sqs, drain_queue, healthy)
    # The records of a batch run at once: the failing job's third call fails, whenever the healthy job's comes.
    failing_calls: list[str] = []

    def fault(request: dict):
        from tests.support.fake_openai import message_text

        if "alpine huts" in "".join(message_text(m) for m in request["messages"]):
            return None
        failing_calls.append("call")
        return ("status", 500) if len(failing_calls) == 3 else None

    small_chunks.fault = fault

    first = deliver_batch(client, [failing_message, healthy_message])

    assert first == {"batchItemFailures": [{"itemIdentifier": failing_message["MessageId"]}]}
    assert get_job(client, failing)["status"] == "RUNNING"
    of_failing = [r for r in map_requests(small_chunks) if "alpine huts" not in excerpt(r)[1]]
    answered = {excerpt(r)[1] for r in of_failing[:2]}
    small_chunks.fault = None
    small_chunks.reset()

    assert deliver_batch(client, [failing_message], receive_count=2) == {"batchItemFailures": []}

    job = get_job(client, failing)
    assert job["status"] == "SUCCEEDED", job
    assert job["usage"]["cache_hits"] == 2
    asked_again = {excerpt(r)[1] for r in map_requests(small_chunks)}
    assert len(asked_again) == get_result(client, failing)["document"]["chunks"] - 2
    assert not asked_again & answered


def deliver_batch(client, messages: list[dict], *, receive_count: int = 1) -> dict:
    event = sqs_event_of_bodies([m["Body"] for m in messages], receive_count=receive_count)
    for record, message in zip(event["Records"], messages, strict=True):
        record.update(messageId=message["MessageId"], receiptHandle=message["ReceiptHandle"])
    return client.lambda_.invoke("process_jobs", event).payload


def test_answers_are_stored_in_batches_under_the_documents_scope_in_the_clients_folder(client, sqs, drain_queue,
                                                                                       small_chunks):
    from chalicelib.aws import clients as aws

    marker = f"Logbook{uuid.uuid4().hex[:8]}"
    job, result = run_job(client, sqs, drain_queue, submit(client, {"text": f"{marker} {TEXT}"},
                                                           {"type": "summarize"}))

    assert job["status"] == "SUCCEEDED"
    s3 = aws.client("s3")
    objects = {item["Key"]: json.loads(s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read())["entries"]
               for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=CACHE_PREFIX)
               for item in page.get("Contents", [])}
    scope = next(key.split("/")[3] for key, entries in objects.items() if marker in json.dumps(entries))
    ours = {key: entries for key, entries in objects.items() if key.split("/")[3] == scope}
    assert {key.split("/")[2] for key in ours} == {"local"}  # the keyless client's folder
    answers = [answer for entries in ours.values() for answer in entries.values()]
    assert len(answers) == result["document"]["chunks"] >= 3  # every chunk's answer under the document's scope
    assert len(ours) < len(answers)  # in batches, not an object per chunk
    assert all(answer[0]["text"].startswith("Summary of") for answer in answers)


# --- the store and its key ------------------------------------------------------------------------------------------

IDENTITY = {"endpoint": "http://llm.local/v1", "model": "gpt-4o-mini", "prompt_version": "summarize/2",
            "params": {"map_words": 200}, "pages": "3-4", "text": "Some chunk text."}


@pytest.mark.parametrize("changed", [("endpoint", ""), ("model", "gpt-4.1"), ("prompt_version", "summarize/3"),
                                     ("params", {"map_words": 201}), ("pages", "3"), ("text", "Some chunk text!")])
def test_every_input_that_shapes_an_answer_changes_its_key(changed):
    name, value = changed

    assert map_cache_key(**{**IDENTITY, name: value}) != map_cache_key(**IDENTITY)


def test_the_key_does_not_depend_on_the_order_of_parameters():
    one = map_cache_key(**{**IDENTITY, "params": {"a": 1, "b": 2}})
    assert one == map_cache_key(**{**IDENTITY, "params": {"b": 2, "a": 1}})
    assert len(one) == 64


class BrokenS3:
    def get_paginator(self, _name):
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "denied"}}, "ListObjectsV2")

    def put_object(self, **_kwargs):
        raise ClientError({"Error": {"Code": "SlowDown", "Message": "slow"}}, "PutObject")


def test_an_unreachable_cache_is_a_miss_and_never_fails_the_job():
    cache = MapCache(BrokenS3(), "bucket")

    assert cache.load("scope") == {}
    cache.store("scope", {"k": [{"text": "answer"}]})  # logged, not raised


def test_stored_batches_are_read_back_together(services):
    from chalicelib.aws import clients as aws

    cache = MapCache(aws.client("s3"), services.settings.bucket, prefix="cache/map-test/")
    scope = map_cache_scope(owner="alice", **{k: v for k, v in IDENTITY.items() if k not in ("pages", "text")},
                            document=f"a document {uuid.uuid4()}")

    assert cache.load(scope) == {}
    cache.store(scope, {"one": [{"text": "Résumé (p. 3)"}]})
    cache.store(scope, {"two": [{"text": "Second (p. 4)"}]})
    assert cache.load(scope) == {"one": [{"text": "Résumé (p. 3)"}], "two": [{"text": "Second (p. 4)"}]}


class RecordingCache:
    def __init__(self) -> None:
        self.batches: list[dict] = []

    def store(self, scope: str, entries: dict, part: str = "") -> None:
        self.batches.append(entries)


def test_answers_finishing_within_a_second_are_stored_together():
    clock = [0.0]
    cache = RecordingCache()
    writer = CacheWriter(cache, "scope", interval=1.0, clock=lambda: clock[0])

    async def chunks_finish() -> None:
        for key, at in (("a", 0.2), ("b", 0.5), ("c", 1.1), ("d", 1.3)):
            clock[0] = at
            await writer.add(key, [key])
        await writer.flush()
        await writer.flush()  # nothing pending: no empty object

    asyncio.run(chunks_finish())

    assert cache.batches == [{"a": ["a"], "b": ["b"], "c": ["c"]}, {"d": ["d"]}]
