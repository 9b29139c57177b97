"""A job delivered more than once counts, and budgets, everything its attempts paid for.

Each attempt's spend is kept on the job's row (by the heartbeat as it grows, and when the attempt ends), so the
usage a client sees adds up every call that was billed, and the budget of a redelivered job includes what its
earlier attempts already spent.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from chalicelib.jobs import Delivery, Heartbeat, Job
from chalicelib.llm import Budget, Usage, total_spend
from tests.integration.test_cache import TEXT, deliver_batch
from tests.support.taskflow import configure, get_job, receive, submit

pytestmark = pytest.mark.timeout(60)

PRICES = {"gpt-4o-mini": (0.15, 0.60)}


def test_a_redelivered_job_reports_the_calls_of_every_attempt(client, sqs, drain_queue, llm, monkeypatch, capsys):
    configure(monkeypatch, DOCPIPE_CHUNK_TOKENS="50", DOCPIPE_CHUNK_OVERLAP_TOKENS="0",
              DOCPIPE_LLM_CONCURRENCY="1", DOCPIPE_LLM_MAX_ATTEMPTS="1")
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    job_id = submit(client, {"text": TEXT}, {"type": "summarize"})
    message = receive(sqs, drain_queue, job_id)
    llm.script([("ok",), ("ok",), ("status", 500)])

    assert deliver_batch(client, [message])["batchItemFailures"]

    between = get_job(client, job_id)
    assert between["status"] == "RUNNING"
    assert between["usage"]["calls"] == 2 and between["usage"]["prompt_tokens"] > 0  # the released attempt's spend
    first_prompt_tokens = between["usage"]["prompt_tokens"]
    llm.reset()
    capsys.readouterr()

    assert deliver_batch(client, [message], receive_count=2) == {"batchItemFailures": []}

    job = get_job(client, job_id)
    assert job["status"] == "SUCCEEDED", job
    usage = job["usage"]
    assert usage["spent_by_earlier_attempts"]["calls"] == 2
    assert usage["calls"] == 2 + llm.calls  # every billed call, not only the last attempt's
    assert usage["prompt_tokens"] > first_prompt_tokens
    assert usage["cache_hits"] == 2
    # The metrics of the second attempt are its own calls: the first attempt emitted its two.
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"LLMCalls"' in line]
    assert [document["LLMCalls"] for document in emitted] in ([llm.calls], [[llm.calls]])


def test_the_budget_counts_what_earlier_attempts_spent():
    usage = Usage(model="gpt-4o-mini", provider="openai")
    usage.include_earlier({"prompt_tokens": 900, "completion_tokens": 100, "calls": 4, "retries": 1,
                           "cost_usd": 0.000195}, PRICES)
    budget_left_short = Budget(max_total_tokens=1000 + 500 - 1)

    refusal = budget_left_short.refusal(usage, PRICES, prompt_tokens=400, completion_tokens=100, calls=2)

    assert refusal is not None and refusal.code == "budget_exceeded"
    assert "1000 tokens" in refusal.message and "earlier attempts" in refusal.message
    assert Budget(max_total_tokens=1500).refusal(usage, PRICES, prompt_tokens=400, completion_tokens=100,
                                                 calls=2) is None
    with pytest.raises(Exception, match="reaching its budget"):
        Budget(max_total_tokens=1000).check_spent(usage)


def test_an_attempts_own_spend_excludes_what_came_before():
    usage = Usage(model="gpt-4o-mini", provider="openai")
    usage.include_earlier({"prompt_tokens": 900, "completion_tokens": 100, "calls": 4, "retries": 1,
                           "cost_usd": 0.000195}, PRICES)
    usage.add_call(300, 50, PRICES)

    assert (usage.prompt_tokens, usage.completion_tokens, usage.calls) == (1200, 150, 5)
    assert usage.attempt_spend(PRICES) == {"prompt_tokens": 300, "completion_tokens": 50, "calls": 1,
                                           "retries": 0, "cost_usd": 0.000075}
    assert usage.to_dict()["spent_by_earlier_attempts"]["calls"] == 4


def test_spends_add_up_and_an_unknown_price_makes_the_total_cost_unknown():
    one = {"prompt_tokens": 10, "completion_tokens": 5, "calls": 1, "retries": 0, "cost_usd": 0.5}
    two = {"prompt_tokens": 20, "completion_tokens": 5, "calls": 2, "retries": 1, "cost_usd": 0.25}

    assert total_spend({"a1": one, "a2": two}) == {"prompt_tokens": 30, "completion_tokens": 10, "calls": 3,
                                                   "retries": 1, "cost_usd": 0.75, "total_tokens": 40}
    assert total_spend({"a1": one, "a2": {**two, "cost_usd": None}})["cost_usd"] is None


def test_the_heartbeat_records_the_attempts_spend_on_the_jobs_row(services):
    job_id = uuid.uuid4().hex
    services.jobs.create(Job(job_id=job_id, status="QUEUED", task={"type": "summarize"},
                             document={"s3_key": "inputs/x"}, created_at=time.time()))
    attempt = services.lifecycle.claim(job_id, lease_seconds=30)
    usage = Usage(model="gpt-4o-mini", provider="openai")
    usage.add_call(100, 20, PRICES)
    usage.add_call(20, 10, PRICES)
    attempt.meter(usage, PRICES)
    spent = {"prompt_tokens": 120, "completion_tokens": 30, "calls": 2, "retries": 0, "cost_usd": 0.000036}
    beats = threading.Event()
    lifecycle = services.lifecycle

    class Watched:
        def hide(self, delivery, seconds):
            lifecycle.hide(delivery, seconds)

        def hold(self, attempt, seconds):
            lifecycle.hold(attempt, seconds)
            beats.set()

    delivery = Delivery(job_id, message_id="m", receipt_handle="r", queue_name="docpipe-test-jobs")
    with Heartbeat(Watched(), delivery, interval=0.05) as heartbeat:
        heartbeat.track(attempt)
        assert beats.wait(5)

    job = services.jobs.get(job_id)
    assert job.spend == {"a1": spent}
    assert job.to_view()["usage"]["calls"] == 2  # shown while the job runs
