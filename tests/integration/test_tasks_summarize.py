"""The summarize task against the fake OpenAI server, through the worker: faults, splits, budgets."""

from __future__ import annotations

import re

import pytest

from tests.support.fake_openai import error_body
from tests.support.taskflow import configure, excerpt, map_requests, run_job, submit, system_text

pytestmark = pytest.mark.timeout(60)

PAGES = [
    "Harbour pilots board incoming freighters outside the breakwater. They know every sandbank of the estuary.",
    "Tugboats push the freighters against the quay. Dock workers secure the hawsers to iron bollards.",
    "Cranes unload the containers onto trucks. Customs officers inspect a sample of the cargo each morning.",
    "At night the harbour lights guide the last ferries home. The pilots rest until the next high tide.",
]
TEXT = "\f".join(PAGES)


@pytest.fixture
def small_chunks(llm, monkeypatch):
    """Chunks of a page or two, so the four-page text makes several map calls."""
    configure(monkeypatch, DOCPIPE_CHUNK_TOKENS="60", DOCPIPE_CHUNK_OVERLAP_TOKENS="0")
    return llm


def test_the_summary_cites_pages_and_its_length_follows_target_words(client, sqs, drain_queue, small_chunks):
    job_id = submit(client, {"text": TEXT}, {"type": "summarize", "target_words": 90})

    job, result = run_job(client, sqs, drain_queue, job_id)

    assert job["status"] == "SUCCEEDED", job
    assert result["prompt_version"] == "summarize/2"
    chunks = result["document"]["chunks"]
    assert chunks >= 2
    spans = [pages for pages, _text in map(excerpt, map_requests(small_chunks))]
    assert sorted(spans) == sorted(c["pages"] for c in result["chunks"])
    final = small_chunks.chat_requests[-1]
    assert "at most 90 words" in system_text(final) and final["json"]["max_tokens"] == 270
    assert result["pages_cited"] and set(result["pages_cited"]) <= {1, 2, 3, 4}
    assert job["progress"] == {"chunks_done": chunks, "chunks_total": chunks}
    usage = job["usage"]
    assert usage["calls"] == small_chunks.calls == chunks + 1
    assert usage["retries"] == 0 and usage["cache_hits"] == 0
    assert usage["estimated_tokens"] > 0 and usage["estimated_cost_usd"] > 0


def test_a_429_with_retry_after_is_retried_after_the_advertised_wait(client, sqs, drain_queue, llm):
    llm.script([("status", 429, {"Retry-After": "1"})])
    job_id = submit(client, {"text": PAGES[0]}, {"type": "summarize"})

    job, result = run_job(client, sqs, drain_queue, job_id)

    assert job["status"] == "SUCCEEDED", job
    first, second = llm.chat_requests
    assert second["time"] - first["time"] >= 0.9  # lower bound only
    assert job["usage"]["retries"] == 1 and job["usage"]["calls"] == 1 and llm.calls == 2
    assert result["summary"].startswith("Summary of")


def test_server_errors_are_retried_with_backoff(client, sqs, drain_queue, llm):
    llm.script([("status", 500), ("status", 503, {"retry-after-ms": "50"})])
    job_id = submit(client, {"text": PAGES[1]}, {"type": "summarize"})

    job, _result = run_job(client, sqs, drain_queue, job_id)

    assert job["status"] == "SUCCEEDED", job
    assert llm.calls == 3 and job["usage"]["retries"] == 2
    times = [r["time"] for r in llm.chat_requests]
    assert times[1] - times[0] >= 0.35  # the exponential backoff's first step (0.5 s less jitter)


def test_a_call_that_hangs_past_the_timeout_is_abandoned_and_retried(client, sqs, drain_queue, llm, monkeypatch):
    configure(monkeypatch, DOCPIPE_LLM_TIMEOUT_SECONDS="0.5")
    llm.script([("hang", 5)])
    job_id = submit(client, {"text": PAGES[2]}, {"type": "summarize"})

    job, _result = run_job(client, sqs, drain_queue, job_id)

    assert job["status"] == "SUCCEEDED", job
    assert llm.calls == 2 and job["usage"]["retries"] == 1


def test_a_chunk_too_long_for_the_model_is_split_in_two_and_still_summarized(client, sqs, drain_queue, llm):
    body = error_body("This model's maximum context length is 128000 tokens. However, your messages resulted in "
                      "130000 tokens. Please reduce the length of the messages.", "invalid_request_error",
                      "context_length_exceeded", "messages")
    llm.script([("status", 400, None, body)])
    text = " ".join(PAGES)
    job_id = submit(client, {"text": text}, {"type": "summarize"})

    job, result = run_job(client, sqs, drain_queue, job_id)

    assert job["status"] == "SUCCEEDED", job
    refused, *halves = [excerpt(r)[1] for r in map_requests(llm)]
    assert len(halves) == 2 and halves[0] + halves[1] == refused  # split exactly, nothing lost or repeated
    assert abs(len(halves[0]) - len(halves[1])) < len(refused) / 3
    assert result["document"]["chunks"] == 1 and result["reduce_levels"] == 1
    assert job["usage"]["calls"] == 3  # two halves and the reduce that joins them


def test_a_job_whose_estimate_is_over_its_cost_budget_fails_before_any_call(client, sqs, drain_queue,
                                                                             small_chunks):
    job_id = submit(client, {"text": TEXT}, {"type": "summarize", "max_cost_usd": 0.00001})

    job, _result = run_job(client, sqs, drain_queue, job_id)

    assert job["status"] == "FAILED" and job["error"]["code"] == "budget_exceeded"
    assert re.search(r"would cost about \$0\.\d+ \(\d+ tokens", job["error"]["message"])
    assert "Nothing was spent" in job["error"]["message"]
    assert small_chunks.calls == 0
    assert job["usage"]["calls"] == 0 and job["usage"]["estimated_cost_usd"] > 0.00001


def test_tokens_cost_calls_and_latency_are_emitted_as_metrics_per_model(client, sqs, drain_queue, small_chunks,
                                                                        monkeypatch, capsys):
    import json

    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "docpipe")
    small_chunks.script([("status", 429, {"retry-after-ms": "10"})])
    capsys.readouterr()

    job, _result = run_job(client, sqs, drain_queue, submit(client, {"text": TEXT}, {"type": "summarize"}))

    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    per_model = [d for d in documents if d.get("model") == "gpt-4o-mini"]
    assert per_model, documents
    emitted = {name: value if isinstance(value, list) else [value] for name, value in per_model[0].items()}
    usage = job["usage"]
    dimensions = per_model[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
    assert all("model" in names for names in dimensions)
    assert emitted["LLMCalls"] == [usage["calls"]] and emitted["LLMRetries"] == [usage["retries"]] == [1]
    assert emitted["PromptTokens"] == [usage["prompt_tokens"]]
    assert emitted["CompletionTokens"] == [usage["completion_tokens"]]
    assert emitted["CostMicroUSD"] == [round(usage["cost_usd"] * 1_000_000)] and emitted["MapCacheHits"] == [0]
    assert len(emitted["LLMLatency"]) == usage["calls"]


def test_a_job_with_too_little_invocation_time_left_hands_itself_back_without_calling(client, llm):
    import time

    from chalicelib.bootstrap import get_services
    from chalicelib.llm import OutOfTime
    from chalicelib.pipeline import FINISH_SECONDS, run_job

    job_id = submit(client, {"text": PAGES[0]}, {"type": "summarize"})
    services = get_services()
    attempt = services.lifecycle.claim(job_id, lease_seconds=30)

    with pytest.raises(OutOfTime) as handed_back:
        run_job(attempt, services, deadline=time.monotonic() + FINISH_SECONDS + 1)

    assert handed_back.value.code == "out_of_time"
    assert llm.calls == 0
