"""The one owner of retries (ChatModel) and the rate limiter against a real HTTP exchange: the openai SDK talking to the
fake OpenAI-compatible server on 127.0.0.1, and a whole job's calls through the worker."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from chalicelib.llm import CallGate, ChatModel
from tests.support.fake_openai import FakeOpenAI
from tests.support.taskflow import configure, run_job, submit

pytestmark = pytest.mark.timeout(60)


def test_the_sdk_never_retries_by_itself(fake_server):
    fake_server.script([("status", 500, {"retry-after-ms": "10"}), ("status", 500, {"retry-after-ms": "10"})])

    async def call():
        model = ChatModel(model="gpt-4o-mini", api_key="sk-x", base_url=fake_server.base_url, timeout=5,
                          max_retries=2)
        try:
            return await model.complete([{"role": "user", "content": "hello"}], max_tokens=5)
        finally:
            await model.close()

    completion = asyncio.run(call())

    assert completion.retries == 2 and fake_server.calls == 3
    # Every request is an SDK first attempt: the retries are ChatModel's, which the gate admits.
    assert [r["headers"].get("x-stainless-retry-count") for r in fake_server.chat_requests] == ["0", "0", "0"]


def test_a_429_with_retry_after_holds_back_a_call_that_starts_during_the_wait(fake_server):
    fake_server.script([("status", 429, {"retry-after-ms": "600"})])
    gate = CallGate()

    async def scenario():
        first = ChatModel(model="gpt-4o-mini", api_key="sk-x", base_url=fake_server.base_url, timeout=5,
                          max_retries=1, gate=gate)
        second = ChatModel(model="gpt-4o-mini", api_key="sk-x", base_url=fake_server.base_url, timeout=5,
                           max_retries=1, gate=gate)
        try:
            throttled = asyncio.create_task(first.complete([{"role": "user", "content": "a"}], max_tokens=5))
            while fake_server.calls == 0:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)  # the 429 has arrived; the other call starts while it is in force
            await second.complete([{"role": "user", "content": "b"}], max_tokens=5)
            await throttled
        finally:
            await first.close()
            await second.close()

    asyncio.run(scenario())

    times = {r["json"]["messages"][0]["content"]: r["time"] for r in reversed(fake_server.chat_requests)}
    first_429 = fake_server.chat_requests[0]["time"]
    assert times["b"] - first_429 >= 0.55  # without the shared pause it would have gone at once (lower bound only)


@pytest.fixture
def fake_server():
    with FakeOpenAI() as server:
        yield server
    assert not server.errors


def test_a_jobs_calls_keep_to_the_configured_requests_per_minute(client, sqs, drain_queue, llm, monkeypatch):
    configure(monkeypatch, DOCPIPE_LLM_RPM="120", DOCPIPE_CHUNK_TOKENS="50", DOCPIPE_CHUNK_OVERLAP_TOKENS="0")
    text = "\f".join(f"Page {n}: the ferry crosses the strait twice a day, weather permitting, all year." * 2
                     for n in range(3))

    job, _result = run_job(client, sqs, drain_queue, submit(client, {"text": text}, {"type": "summarize"}))

    assert job["status"] == "SUCCEEDED"
    times = [r["time"] for r in llm.chat_requests]
    assert len(times) >= 4
    # Two requests a second, one second's worth at once: the fourth cannot leave before 1 s (lower bound only).
    assert times[3] - times[0] >= 0.95


# --- the provider's limits shared by every worker -------------------------------------------------------------------

def test_the_fake_provider_refuses_calls_over_its_limits_as_openai_does(fake_server):
    import httpx2

    fake_server.max_in_flight, fake_server.latency = 2, 0.5
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    with httpx2.Client(timeout=10) as http:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(5) as threads:
            answers = list(threads.map(lambda _: http.post(f"{fake_server.base_url}/chat/completions", json=body),
                                       range(5)))

    refused = [a for a in answers if a.status_code == 429]
    assert fake_server.peak_admitted == 2 and len(refused) == fake_server.refused >= 1
    assert all(int(a.headers["retry-after-ms"]) > 0 and "retry-after" in a.headers for a in refused)
    assert refused[0].json()["error"]["code"] == "rate_limit_exceeded"


def test_requests_per_minute_are_refused_with_the_reset_headers(fake_server):
    import httpx2

    fake_server.requests_per_minute = 60  # one a second
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    with httpx2.Client(timeout=10) as http:
        first = http.post(f"{fake_server.base_url}/chat/completions", json=body)
        second = http.post(f"{fake_server.base_url}/chat/completions", json=body)

    assert first.status_code == 200 and first.headers["x-ratelimit-limit-requests"] == "60"
    assert second.status_code == 429 and second.headers["x-ratelimit-remaining-requests"] == "0"
    assert second.headers["x-ratelimit-reset-requests"].endswith("ms") and fake_server.refused == 1


def test_workers_sharing_the_limits_in_dynamodb_keep_together_to_the_providers_calls_in_flight(services,
                                                                                             fake_server):
    """Three workers (three gates, as three Lambda containers have) send 12 calls each at once; the deployment's
    limit of 4 in flight is theirs together, so the provider never has to refuse one."""
    from chalicelib.aws import VersionedItems
    from chalicelib.aws import clients as aws
    from chalicelib.llm.gate import CallGate
    from chalicelib.llm.sharedlimits import SharedLimits

    fake_server.max_in_flight, fake_server.latency = 4, 0.2
    items = VersionedItems(aws.client("dynamodb"), services.settings.idempotency_table)
    pool = f"llm-limits#test#{uuid.uuid4().hex[:8]}"
    gates = [CallGate(shared=SharedLimits(items, pool, capacity=4, fallback_units=1)) for _ in range(3)]

    async def worker(gate: CallGate) -> list:
        model = ChatModel(model="gpt-4o-mini", api_key="sk-x", base_url=fake_server.base_url, timeout=10,
                          max_retries=0, gate=gate)
        try:
            return await asyncio.gather(*(model.complete([{"role": "user", "content": f"call {n}"}], max_tokens=5)
                                          for n in range(12)))
        finally:
            await model.close()

    def run(gate: CallGate) -> list:
        answers = asyncio.run(worker(gate))
        gate.settle()
        return answers

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as threads:
        answers = [a for batch in threads.map(run, gates) for a in batch]

    assert len(answers) == 36 and fake_server.calls == 36
    assert fake_server.refused == 0 and fake_server.peak_admitted <= 4
    assert items.read(pool).state["holders"] == {}, "every worker gave its units back when it was done"
