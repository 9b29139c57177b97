"""The worker through its real path: POST /jobs (or an S3 upload under incoming/) → the real SQS message → the
``process_jobs`` Lambda handler → the job row in DynamoDB and the result in S3, read back through the API.

Messages are received from the emulator's jobs queue with their system attributes, and handed to the handler as
Lambda would (real body, message id and receipt handle, the ApproximateReceiveCount a test needs); afterwards every
message the handler did not report as failed is deleted, as Lambda's SQS event source does.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from pathlib import Path

import pytest

from tests.events import sqs_event_of_bodies
from tests.support.corpus import CORPUS_FAILURES, corpus_file, corpus_manifest
from tests.support.emf import emf_values
from tests.support.pdfs import make_pdf
from tests.support.taskflow import (
    API_KEY,
    BUCKET,
    aws_client,
    configure,
    deliver,
    deliver_job,
    event_for,
    get_job,
    get_result,
    invoke_worker,
    receive,
    submit,
    user_text,
)

pytestmark = pytest.mark.timeout(120)

DLQ_NAME = "docpipe-test-jobs-dlq"

# Three pages with their own vocabulary, so a cited page can be checked against the text it came from.
PAGES = [
    "Lighthouses guided sailors along the rocky northern coast for centuries. Keepers trimmed the lamp wicks "
    "every evening before sunset. The granite towers withstood violent winter storms and crashing waves. "
    "Coastal lighthouses used rotating lenses to throw their beams far across the water.",
    "Railway engineers surveyed mountain passes before laying the steel tracks. Steam locomotives hauled coal "
    "wagons through long tunnels and over iron viaducts. Station masters kept timetables and signalled departing "
    "trains with flags. Railway companies competed fiercely for the profitable mountain routes.",
    "Beekeepers inspected wooden hives for healthy queens each spring morning. Honey bees gathered nectar from "
    "clover meadows and orchard blossoms. Beekeepers harvested the golden honey in late summer afternoons. "
    "Healthy colonies of honey bees pollinated the orchards and the surrounding farms.",
]


# --- helpers -----------------------------------------------------------------------------------------------------

def submit_pdf(client, data: bytes, task: dict | None = None, filename: str = "doc.pdf") -> str:
    return submit(client, {"pdf_base64": base64.b64encode(data).decode(), "filename": filename}, task)


def no_failures(payload: dict) -> bool:
    return payload == {"batchItemFailures": []}


def assert_failed(job: dict, code: str) -> None:
    assert job["status"] == "FAILED", job
    assert job["error"]["code"] == code, job["error"]
    assert isinstance(job["error"]["message"], str) and job["error"]["message"].strip()
    assert job["finished_at"]


# --- every PDF of the corpus ends as the manifest says -----------------------------------------------------------

PDF_ENTRIES = [e for e in corpus_manifest() if e["file"].startswith("pdfs/")]
EXPECTED_FAILURES = CORPUS_FAILURES
# POST /jobs refuses these before any job exists (no PDF header / no bytes); an S3 upload has no such gate.
REJECTED_BY_THE_API = {"qpdf__not-a-pdf__bad.pdf": 415, "zero-byte__empty.pdf": 400}


def _corpus_params():
    for entry in PDF_ENTRIES:
        name = Path(entry["file"]).name
        yield pytest.param(entry, id=name)


def _expected_pages(entry: dict) -> int:
    found = re.search(r"\b(\d+) pages?\b", entry["expected_behaviour"])
    assert found, f"the manifest gives no page count for {entry['file']}"
    return int(found.group(1))


def _start_from_upload(client, name: str, data: bytes) -> str:
    key = f"incoming/local/{uuid.uuid4().hex}/{name}"  # the keyless client's folder, so GET /jobs shows it
    aws_client("s3").put_object(Bucket=BUCKET, Key=key, Body=data)
    client.lambda_.invoke("start_job_from_upload", client.events.generate_s3_event(bucket=BUCKET, key=key))
    tags = aws_client("s3").get_object_tagging(Bucket=BUCKET, Key=key)["TagSet"]
    return {t["Key"]: t["Value"] for t in tags}["docpipe-job-id"]


@pytest.mark.parametrize("entry", list(_corpus_params()))
def test_every_corpus_pdf_ends_as_the_manifest_says(entry, client, sqs, drain_queue):
    name = Path(entry["file"]).name
    data = corpus_file(entry["file"]).read_bytes()
    expected_failure = EXPECTED_FAILURES.get(name)
    if expected_failure is None:
        assert "text extracted" in entry["expected_behaviour"], \
            f"no expectation in this test for the new corpus file {name}: {entry['expected_behaviour']}"

    if name in REJECTED_BY_THE_API:
        refused = client.http.post("/jobs", headers={"content-type": "application/json"}, body=json.dumps(
            {"document": {"pdf_base64": base64.b64encode(data).decode()}, "task": {"type": "summarize"}}))
        assert refused.status_code == REJECTED_BY_THE_API[name], refused.body
        job_id = _start_from_upload(client, name, data)
    else:
        job_id = submit_pdf(client, data, filename=name)

    payload, job = deliver_job(client, sqs, drain_queue, job_id, first_receive=True)

    assert no_failures(payload), payload  # a permanent failure is never handed back to SQS
    if expected_failure:
        assert_failed(job, expected_failure)
        assert client.http.get(f"/jobs/{job_id}/result").json_body["error"]["code"] == "job_failed"
        return
    assert job["status"] == "SUCCEEDED", job
    result = get_result(client, job_id)
    assert result["document"]["pages"] == _expected_pages(entry)
    assert result["document"]["kind"] == "pdf"
    assert job["progress"]["chunks_done"] == job["progress"]["chunks_total"] == result["document"]["chunks"] >= 1
    assert result["summary"].strip(), f"empty summary for {name}: {result}"


# --- the result of the offline provider --------------------------------------------------------------------------

def test_the_result_cites_the_pages_its_sentences_come_from(client, sqs, drain_queue):
    job_id = submit_pdf(client, make_pdf(PAGES))

    payload, job = deliver_job(client, sqs, drain_queue, job_id, first_receive=True)

    assert no_failures(payload)
    assert job["status"] == "SUCCEEDED", job
    result = get_result(client, job_id)
    assert result["provider"] == "offline-extractive"
    assert result["model"] is None
    assert "Nothing here was written by a language model" in result["note"]
    assert result["usage"]["calls"] == 0 and job["usage"]["calls"] == 0
    assert result["document"]["pages"] == 3
    assert result["pages_cited"] and set(result["pages_cited"]) <= {1, 2, 3}
    assert result["chunks"]
    for chunk in result["chunks"]:
        assert re.fullmatch(r"[123](-[123])?", chunk["pages"]), chunk
        assert 0 <= chunk["start"] < chunk["end"] <= result["document"]["characters"]
        assert chunk["tokens"] > 0
    page_texts = [" ".join(p.split()) for p in PAGES]
    assert result["sentences"]
    for sentence in result["sentences"]:  # each quoted sentence is cited with the page it is on
        assert sentence["text"] in page_texts[sentence["page"] - 1], sentence
        assert f"{sentence['text']} (p. {sentence['page']})" in result["summary"]
    assert {s["page"] for s in result["sentences"]} == set(result["pages_cited"])


def test_a_page_without_text_layer_is_a_warning_not_a_failure(client, sqs, drain_queue):
    job_id = submit_pdf(client, make_pdf([PAGES[0], None, PAGES[2]]))

    payload, job = deliver_job(client, sqs, drain_queue, job_id, first_receive=True)

    assert no_failures(payload)
    assert job["status"] == "SUCCEEDED", job
    assert any(re.search(r"\bpage 2\b", w) for w in job["warnings"]), job["warnings"]
    result = get_result(client, job_id)
    assert result["warnings"] == job["warnings"]
    assert 2 not in result["pages_cited"]


# --- the openai provider, against the fake server ----------------------------------------------------------------

def long_pdf(pages: int = 4) -> bytes:
    return make_pdf([" ".join(f"{PAGES[n % 3]} Section {n + 1} paragraph {i}." for i in range(3))
                     for n in range(pages)])


def test_openai_summarizes_chunks_in_parallel_and_accounts_for_every_call(client, sqs, drain_queue, llm,
                                                                          monkeypatch):
    configure(monkeypatch, DOCPIPE_CHUNK_TOKENS="200", DOCPIPE_CHUNK_OVERLAP_TOKENS="20")
    llm.latency = 0.2
    job_id = submit_pdf(client, long_pdf(4))

    payload, job = deliver_job(client, sqs, drain_queue, job_id, first_receive=True)

    assert no_failures(payload)
    assert job["status"] == "SUCCEEDED", job
    result = get_result(client, job_id)
    assert result["provider"] == "openai" and result["model"] == "gpt-4o-mini"
    assert "note" not in result
    chunks = result["document"]["chunks"]
    assert chunks >= 4
    maps = [r for r in llm.chat_requests if user_text(r).startswith("<document ")]
    reduces = [r for r in llm.chat_requests if user_text(r).startswith("<partial ")]
    assert len(maps) == chunks
    assert len(reduces) >= result["reduce_levels"] >= 1
    usage = result["usage"]
    assert usage["calls"] == llm.calls == chunks + len(reduces)
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["cost_usd"] > 0
    assert job["usage"] == usage
    assert llm.max_concurrency >= 2, "the chunks were summarized one after another"
    # The document reaches the model as data, inside <document pages="..."> tags, one request per chunk.
    spans = []
    for request in maps:
        tagged = re.fullmatch(r'<document pages="(\d+(?:-\d+)?)">\n(.+)\n</document>', user_text(request), re.DOTALL)
        assert tagged, user_text(request)[:200]
        spans.append(tagged.group(1))
        assert request["json"]["model"] == "gpt-4o-mini"
    assert sorted(spans) == sorted(c["pages"] for c in result["chunks"])
    sent = " ".join(" ".join(user_text(r).split()) for r in maps)
    assert "Railway engineers surveyed mountain passes" in sent and "Section 4 paragraph 2." in sent
    assert result["summary"].startswith("Summary of")
    assert llm.chat_requests[0]["headers"]["authorization"] == f"Bearer {API_KEY}"


def test_openai_one_chunk_document_takes_exactly_one_call(client, sqs, drain_queue, llm):
    job_id = submit(client, {"text": PAGES[0]})

    payload, job = deliver_job(client, sqs, drain_queue, job_id, first_receive=True)

    assert no_failures(payload) and job["status"] == "SUCCEEDED", job
    result = get_result(client, job_id)
    assert result["document"]["chunks"] == 1 and result["reduce_levels"] == 0
    assert result["usage"]["calls"] == llm.calls == 1
    assert PAGES[0] in user_text(llm.chat_requests[0])


def test_the_records_of_a_batch_run_at_once_each_with_its_own_outcome_and_log_keys(client, sqs, drain_queue, llm):
    import io
    import logging
    import threading

    from chalicelib.observability import logger
    from tests.support.fake_openai import default_reply

    together = threading.Barrier(3, timeout=30)  # broken unless the three jobs' calls are at the provider at once

    def responder(request: dict) -> str:
        together.wait()
        return default_reply(request)

    llm.responder = responder
    jobs, messages = [], []
    for page in PAGES[:3]:  # one at a time: receiving one job's message deletes any other
        jobs.append(submit(client, {"text": page}))
        messages.append(receive(sqs, drain_queue, jobs[-1], first_receive=True))
    # Lines formatted as they are logged, on the record's own thread, as CloudWatch receives them.
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(logger.registered_formatter)
    logger._logger.addHandler(handler)
    try:
        payload = deliver(client, sqs, drain_queue, *messages, receive_count=1)
    finally:
        logger._logger.removeHandler(handler)

    assert no_failures(payload) and not together.broken
    assert [get_job(client, job_id)["status"] for job_id in jobs] == ["SUCCEEDED"] * 3
    lines = [json.loads(line) for line in written.getvalue().splitlines() if line.startswith("{")]
    succeeded = [line for line in lines if line["message"] == "job succeeded"]
    assert sorted(line["job_id"] for line in succeeded) == sorted(jobs), "each record's lines carry its own job"


def test_a_throttled_job_waits_on_the_queue_as_long_as_the_provider_says_and_leaves_no_asyncio_errors(
        client, services, sqs, drain_queue, llm, monkeypatch, caplog):
    import gc
    import logging

    configure(monkeypatch, DOCPIPE_CHUNK_TOKENS="60", DOCPIPE_CHUNK_OVERLAP_TOKENS="0")
    llm.script([("status", 429, {"retry-after": "120"})] * 40)
    job_id = submit(client, {"text": "\f".join(PAGES * 3)})
    message = receive(sqs, drain_queue, job_id, first_receive=True)

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        payload = deliver(client, sqs, drain_queue, message, receive_count=1)
        gc.collect()

    assert no_failures(payload), "the job's message is done with: a fresh one waits on the queue"
    job = get_job(client, job_id)
    assert job["status"] == "RUNNING" and "slow down" in job["last_error"]["message"]
    assert "120 s" in job["last_error"]["message"]
    delayed = sqs.get_queue_attributes(QueueUrl=drain_queue, AttributeNames=["ApproximateNumberOfMessagesDelayed"])
    assert int(delayed["Attributes"]["ApproximateNumberOfMessagesDelayed"]) == 1
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


@pytest.mark.parametrize("echoes_key", [False, True], ids=["recorded-401-body", "body-echoing-the-key"])
def test_a_rejected_api_key_fails_the_job_without_retry_or_leak(client, sqs, drain_queue, llm, monkeypatch,
                                                                echoes_key):
    key = API_KEY
    if echoes_key:
        key = "sk-test-Zq8xW3vN5kL2pR7tY9uB4mC6"
        configure(monkeypatch, OPENAI_API_KEY=key)
        llm.script([("status", 401, {}, {"error": {"message": f"Incorrect API key provided: {key}.",
                                                   "type": "invalid_request_error", "param": None,
                                                   "code": "invalid_api_key"}})])
    else:
        llm.script([("status", 401)])
    job_id = submit(client, {"text": PAGES[1]})

    payload, job = deliver_job(client, sqs, drain_queue, job_id, first_receive=True)

    assert no_failures(payload), payload
    assert_failed(job, "llm_unavailable")
    assert "401" in job["error"]["message"]
    assert key not in job["error"]["message"]
    assert key not in json.dumps(job)
    assert llm.calls == 1  # a 401 is not retried


def _fail_first_of_two(client, sqs, queue_url: str, llm) -> tuple[str, dict, str]:
    """A batch of two jobs whose first LLM call answers 500: (failing job, its message, healthy job)."""
    failing = submit(client, {"text": PAGES[2]})
    failing_message = receive(sqs, queue_url, failing, first_receive=True)
    healthy = submit(client, {"text": PAGES[0]})
    healthy_message = receive(sqs, queue_url, healthy, first_receive=True)
    # The records of a batch run at once: the failing job's call is told apart by its text, and fails once.
    failed_once: list[bool] = []

    def fault(request: dict):
        from tests.support.fake_openai import message_text

        if "Beekeepers" in "".join(message_text(m) for m in request["messages"]) and not failed_once:
            failed_once.append(True)
            return ("status", 500)
        return None

    llm.fault = fault

    payload = deliver(client, sqs, queue_url, failing_message, healthy_message, receive_count=1)

    assert payload == {"batchItemFailures": [{"itemIdentifier": failing_message["MessageId"]}]}, payload
    assert get_job(client, healthy)["status"] == "SUCCEEDED"
    llm.fault = None
    return failing, failing_message, healthy


def test_an_llm_outage_is_retried_by_sqs_then_fails_on_the_last_receive(client, sqs, drain_queue, llm, monkeypatch):
    configure(monkeypatch, DOCPIPE_LLM_MAX_ATTEMPTS="1")
    job_id, message, _ = _fail_first_of_two(client, sqs, drain_queue, llm)
    job = get_job(client, job_id)
    assert job["status"] == "RUNNING" and job["attempts"] == 1, job
    assert job["last_error"]["code"] == "llm_unavailable" and "error" not in job
    assert llm.calls == 2  # no client-side retry with DOCPIPE_LLM_MAX_ATTEMPTS=1
    llm.script([("status", 500)] * 5)

    last = deliver(client, sqs, drain_queue, message, receive_count=3)

    assert no_failures(last), last
    job = get_job(client, job_id)
    assert_failed(job, "llm_unavailable")
    assert job["attempts"] == 2 and "last_error" not in job
    assert llm.calls == 3


def test_a_single_job_batch_failing_transiently_reports_its_message_as_failed(client, sqs, drain_queue, llm,
                                                                             monkeypatch):
    configure(monkeypatch, DOCPIPE_LLM_MAX_ATTEMPTS="1")
    llm.script([("status", 500)] * 10)
    job_id = submit(client, {"text": PAGES[2]})
    message = receive(sqs, drain_queue, job_id, first_receive=True)

    payload = deliver(client, sqs, drain_queue, message, receive_count=1)

    assert payload == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}
    job = get_job(client, job_id)
    assert job["status"] == "RUNNING" and job["last_error"]["code"] == "llm_unavailable"


def test_a_job_over_its_token_budget_fails_before_any_llm_call(client, sqs, drain_queue, llm):
    job_id = submit(client, {"text": "\n\n".join(PAGES * 4)}, {"type": "summarize", "max_total_tokens": 1000})

    payload, job = deliver_job(client, sqs, drain_queue, job_id, first_receive=True)

    assert no_failures(payload)
    assert_failed(job, "budget_exceeded")
    estimate = re.search(r"about (\d+) tokens", job["error"]["message"])
    assert estimate and int(estimate.group(1)) > 1000, job["error"]["message"]
    assert "1000" in job["error"]["message"]
    assert llm.calls == 0
    assert job["usage"]["calls"] == 0


def test_a_duplicate_delivery_of_a_finished_job_changes_nothing(client, sqs, drain_queue, llm):
    job_id = submit(client, {"text": "\n\n".join(PAGES)})
    message = receive(sqs, drain_queue, job_id, first_receive=True)
    assert no_failures(deliver(client, sqs, drain_queue, message))
    done = get_job(client, job_id)
    assert done["status"] == "SUCCEEDED"
    stored = aws_client("s3").head_object(Bucket=BUCKET, Key=f"results/{job_id}.json")
    calls = llm.calls
    assert calls >= 1
    time.sleep(1.1)  # S3 LastModified has a one-second resolution

    again = deliver(client, sqs, drain_queue, message)

    assert no_failures(again), again
    assert get_job(client, job_id) == done
    after = aws_client("s3").head_object(Bucket=BUCKET, Key=f"results/{job_id}.json")
    assert (after["ETag"], after["LastModified"]) == (stored["ETag"], stored["LastModified"])
    assert llm.calls == calls


# --- leases: a live worker keeps its job; a dead worker's job is taken over --------------------------------------

def test_a_job_claimed_by_a_live_worker_is_left_to_it_and_its_message_kept(client, services, sqs, drain_queue):
    job_id = submit(client, {"text": PAGES[0]})
    message = receive(sqs, drain_queue, job_id, first_receive=True)
    assert services.jobs.claim(job_id, 600) is not None

    payload = deliver(client, sqs, drain_queue, message)

    # Kept (reported as failed) rather than deleted: it comes back when the lease ends, in case the holder died.
    assert [f["itemIdentifier"] for f in payload["batchItemFailures"]] == [message["MessageId"]]
    job = get_job(client, job_id)
    assert job["status"] == "RUNNING" and job["attempts"] == 1, job
    assert client.http.get(f"/jobs/{job_id}/result").json_body["error"]["code"] == "not_finished"
    assert aws_client("s3").list_objects_v2(Bucket=BUCKET, Prefix=f"results/{job_id}")["KeyCount"] == 0


def test_the_job_of_a_dead_worker_is_taken_over_by_the_next_delivery(client, services, sqs, drain_queue):
    job_id = submit(client, {"text": PAGES[0]})
    message = receive(sqs, drain_queue, job_id, first_receive=True)
    assert services.jobs.claim(job_id, 0.01) is not None
    time.sleep(0.05)

    payload = deliver(client, sqs, drain_queue, message, receive_count=2)

    assert no_failures(payload)
    job = get_job(client, job_id)
    assert job["status"] == "SUCCEEDED" and job["attempts"] == 2, job
    assert get_result(client, job_id)["summary"]


# --- messages that are not jobs ----------------------------------------------------------------------------------

def corpus_sqs_event() -> dict:
    event = json.loads(corpus_file("events/powertools-py__sqsEvent.json").read_text())
    ids = [r["messageId"] for r in event["Records"]]
    if len(set(ids)) != len(ids):
        for record in event["Records"]:
            record["messageId"] = str(uuid.uuid4())
    return event


def test_the_real_sqs_event_of_non_job_bodies_is_dropped_with_an_error_log(client, caplog):
    event = corpus_sqs_event()
    assert [r["body"] for r in event["Records"]] == ["Test message.", '{"message": "foo1"}']

    payload = client.lambda_.invoke("process_jobs", event).payload

    assert no_failures(payload), payload  # a retry cannot fix them: rejected, not cycled into the DLQ
    rejected = [r for r in caplog.records if r.getMessage() == "rejected a message that is not a docpipe job"]
    assert len(rejected) == 2 and all(r.levelname == "ERROR" for r in rejected), caplog.text[-2000:]


def test_a_batch_mixing_non_job_bodies_with_a_real_job_runs_the_job(client, sqs, drain_queue):
    job_id = submit(client, {"text": PAGES[1]})
    message = receive(sqs, drain_queue, job_id, first_receive=True)
    event = corpus_sqs_event()
    event["Records"].insert(1, event_for([message])["Records"][0])

    payload = invoke_worker(client, sqs, drain_queue, event)

    assert no_failures(payload), payload
    assert get_job(client, job_id)["status"] == "SUCCEEDED"


@pytest.mark.parametrize("body", ['{"job_id": "' + "0" * 32 + '"}', '{"job_id": "../../etc/passwd"}', "[1, 2]",
                                  '{"job_id": 12}', "", "null"])
def test_malformed_or_unknown_job_messages_are_not_retried(client, body):
    assert no_failures(client.lambda_.invoke("process_jobs", sqs_event_of_bodies([body])).payload)


# --- the dead-letter backstop ------------------------------------------------------------------------------------

def dead_letter(client, body: str) -> None:
    client.lambda_.invoke("fail_dead_letters", sqs_event_of_bodies([body], receive_count=1, queue=DLQ_NAME))


def test_a_dead_letter_fails_its_running_job_with_the_last_error(client, sqs, drain_queue, llm, monkeypatch):
    configure(monkeypatch, DOCPIPE_LLM_MAX_ATTEMPTS="1")
    job_id, message, _ = _fail_first_of_two(client, sqs, drain_queue, llm)
    running = get_job(client, job_id)
    assert running["status"] == "RUNNING" and running["last_error"]["code"] == "llm_unavailable"

    dead_letter(client, message["Body"])

    job = get_job(client, job_id)
    assert_failed(job, "llm_unavailable")
    assert job["error"] == running["last_error"]


def test_a_dead_letter_of_a_job_whose_worker_always_died_fails_it_as_delivery_exhausted(client, services,
                                                                                       monkeypatch, capsys):
    from chalicelib.observability import metrics

    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    job_id = submit(client, {"text": PAGES[0]})
    assert services.jobs.claim(job_id, 0.01)  # a worker took it and never came back; no error was recorded
    metrics.clear_metrics()  # what earlier tests added while metrics were off is never flushed
    capsys.readouterr()

    dead_letter(client, json.dumps({"job_id": job_id}))
    dead_letter(client, json.dumps({"job_id": job_id}))  # a second copy: the job is already failed

    assert_failed(get_job(client, job_id), "delivery_exhausted")
    # Counted once by the failure-rate alarm, like the worker's failures.
    assert emf_values(capsys.readouterr().out, "JobsFailed") == [1]


def test_a_dead_letter_of_a_succeeded_job_leaves_it_succeeded(client, sqs, drain_queue):
    job_id = submit(client, {"text": PAGES[1]})
    _, done = deliver_job(client, sqs, drain_queue, job_id, first_receive=True)
    assert done["status"] == "SUCCEEDED"

    dead_letter(client, json.dumps({"job_id": job_id}))

    assert get_job(client, job_id) == done


@pytest.mark.parametrize("body", ["Test message.", '{"message": "foo1"}', '{"job_id": "' + "f" * 32 + '"}'])
def test_a_dead_letter_that_is_not_a_known_job_is_ignored(client, body):
    dead_letter(client, body)  # no exception
