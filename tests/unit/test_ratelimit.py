"""The client-side rate limiter and the one owner of retries (ChatModel), on a fake clock where time matters."""

from __future__ import annotations

import asyncio

import httpx2
import openai
import pytest

from chalicelib.errors import JobFailure, TransientError
from chalicelib.llm.chat import MIN_ATTEMPT_SECONDS, ChatModel, EndpointBusy
from chalicelib.llm.ratelimit import OutOfTime, Throttle

pytestmark = pytest.mark.timeout(60)


class FakeClock:
    """Time that moves only when someone sleeps; every sleep is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


def start_times(throttle: Throttle, clock: FakeClock, tokens: list[int]) -> list[float]:
    """When each request, made one after another, may go (seconds after the first)."""
    begun = clock.now
    times = []
    for amount in tokens:
        asyncio.run(throttle.acquire(tokens=amount))
        times.append(round(clock.now - begun, 6))
    return times


# --- Throttle --------------------------------------------------------------------------------------------------------

def test_without_limits_no_request_waits():
    clock = FakeClock()
    throttle = Throttle(clock=clock, sleep=clock.sleep)

    assert start_times(throttle, clock, [10_000] * 50) == [0.0] * 50
    assert clock.sleeps == []
    assert not throttle.counts_tokens


def test_requests_per_minute_are_spread_evenly_not_sent_in_a_burst():
    clock = FakeClock()
    throttle = Throttle(requests_per_minute=60, clock=clock, sleep=clock.sleep)

    assert start_times(throttle, clock, [0] * 5) == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_tokens_per_minute_count_each_request_by_its_own_tokens():
    clock = FakeClock()
    throttle = Throttle(tokens_per_minute=6_000, clock=clock, sleep=clock.sleep)  # 100 tokens a second

    assert throttle.counts_tokens
    # 100 tokens are in the bucket; 300 more take 3 s to earn; the next 100 one more second.
    assert start_times(throttle, clock, [100, 300, 100]) == [0.0, 3.0, 4.0]


def test_a_request_larger_than_a_seconds_worth_still_goes_once_its_tokens_are_earned():
    clock = FakeClock()
    throttle = Throttle(tokens_per_minute=600, clock=clock, sleep=clock.sleep)  # 10 tokens a second

    assert start_times(throttle, clock, [10, 50, 10]) == [0.0, 5.0, 6.0]


def test_the_tighter_of_both_limits_decides():
    clock = FakeClock()
    throttle = Throttle(requests_per_minute=600, tokens_per_minute=60_000, clock=clock, sleep=clock.sleep)

    # 10 requests/s would allow 0.1 s spacing; 2,000-token requests at 1,000 tokens/s need 2 s each.
    assert start_times(throttle, clock, [1_000, 2_000, 2_000]) == [0.0, 2.0, 4.0]


def test_concurrent_callers_leave_in_arrival_order_one_interval_apart():
    clock = FakeClock()

    async def clock_stands_still(seconds: float) -> None:
        await asyncio.sleep(0)

    throttle = Throttle(requests_per_minute=30, clock=clock, sleep=clock_stands_still)

    async def all_at_once() -> list[float]:
        return await asyncio.gather(*(throttle.acquire() for _ in range(6)))

    # Each reservation is made before the caller's first await, so the queue order is the arrival order.
    assert asyncio.run(all_at_once()) == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]


def test_a_pause_holds_back_every_caller_until_it_ends():
    clock = FakeClock()
    throttle = Throttle(clock=clock, sleep=clock.sleep)

    throttle.pause(2.5)
    throttle.pause(1.0)  # a shorter pause never shortens the one in force

    assert start_times(throttle, clock, [0, 0]) == [2.5, 2.5]


def test_a_pause_that_begins_while_a_caller_sleeps_holds_it_back_too():
    clock = FakeClock()

    async def sleep(seconds: float) -> None:
        await clock.sleep(seconds)
        if len(clock.sleeps) == 1:
            throttle.pause(3.0)  # another call got a 429 with Retry-After: 3 while this one waited

    throttle = Throttle(requests_per_minute=60, clock=clock, sleep=sleep)

    assert start_times(throttle, clock, [0, 0]) == [0.0, 4.0]


def test_a_wait_past_the_deadline_fails_at_once_and_reserves_nothing():
    clock = FakeClock()
    throttle = Throttle(requests_per_minute=60, clock=clock, sleep=clock.sleep)
    asyncio.run(throttle.acquire())

    with pytest.raises(OutOfTime) as refused:
        asyncio.run(throttle.acquire(deadline=clock.now + 0.5))

    assert isinstance(refused.value, TransientError) and refused.value.code == "out_of_time"
    assert clock.sleeps == []
    assert start_times(throttle, clock, [0]) == [1.0]  # the refused call took no place in the queue


# --- ChatModel: the one owner of retries ---------------------------------------------------------------------------

class ScriptedClient:
    """An AsyncOpenAI stand-in: each chat completion POST takes the next outcome (an exception or a response)."""

    def __init__(self, outcomes: list) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[dict] = []

    async def post(self, path: str, *, cast_to, body: dict, options: dict):
        assert path == "/chat/completions"
        return await self.create(**body, timeout=options["timeout"])

    async def create(self, **request):
        self.calls.append(request)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def close(self) -> None:
        pass


def status_error(cls, status: int, headers: dict | None = None, code: str | None = None):
    request = httpx2.Request("POST", "http://llm.invalid/v1/chat/completions")
    body = {"error": {"message": f"HTTP {status}", "type": "x", "param": None, "code": code}}
    return cls(f"HTTP {status}", response=httpx2.Response(status, headers=headers or {}, request=request), body=body)


def ok_response(text: str = "fine"):
    from openai.types.chat import ChatCompletion

    return ChatCompletion.model_validate({
        "id": "c", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}})


def model_with(outcomes: list, clock: FakeClock, *, max_retries: int = 2, timeout: float = 60,
               throttle: Throttle | None = None) -> tuple[ChatModel, ScriptedClient]:
    client = ScriptedClient(outcomes)
    return ChatModel(model="m", api_key=None, base_url=None, timeout=timeout, max_retries=max_retries, client=client,
                     throttle=throttle or Throttle(clock=clock, sleep=clock.sleep), clock=clock,
                     sleep=clock.sleep), client


def complete(model: ChatModel, **options):
    return asyncio.run(model.complete([{"role": "user", "content": "hi"}], max_tokens=5, **options))


def test_a_429_waits_exactly_its_retry_after_and_pauses_the_shared_throttle():
    clock = FakeClock()
    throttle = Throttle(clock=clock, sleep=clock.sleep)
    model, client = model_with([status_error(openai.RateLimitError, 429, {"retry-after": "7"}), ok_response()],
                               clock, throttle=throttle)

    completion = complete(model)

    assert completion.text == "fine" and completion.retries == 1
    assert len(client.calls) == 2 and clock.sleeps == [7.0]


def test_retry_after_ms_takes_precedence_over_retry_after():
    clock = FakeClock()
    model, _client = model_with([status_error(openai.InternalServerError, 500,
                                              {"retry-after-ms": "250", "retry-after": "9"}), ok_response()], clock)

    complete(model)

    assert clock.sleeps == [0.25]


def test_server_errors_back_off_exponentially_without_a_header():
    clock = FakeClock()
    model, client = model_with([status_error(openai.InternalServerError, 500),
                                status_error(openai.InternalServerError, 503), ok_response()], clock)

    completion = complete(model)

    assert completion.retries == 2 and len(client.calls) == 3
    first, second = clock.sleeps
    assert 0.375 <= first <= 0.5 and 0.75 <= second <= 1.0  # 0.5 s then 1 s, less up to 25 % jitter


def test_transient_errors_end_after_the_configured_attempts():
    clock = FakeClock()
    model, client = model_with([status_error(openai.InternalServerError, 502)] * 5, clock, max_retries=2)

    with pytest.raises(EndpointBusy) as failure:
        complete(model)

    assert len(client.calls) == 3 and failure.value.code == "llm_unavailable"


def test_a_retry_after_longer_than_the_cap_hands_the_job_back_to_sqs_at_once():
    clock = FakeClock()
    model, client = model_with([status_error(openai.RateLimitError, 429, {"retry-after": "600"})], clock)

    with pytest.raises(TransientError):
        complete(model)

    assert len(client.calls) == 1 and clock.sleeps == []


def test_an_exhausted_quota_is_a_429_that_is_never_retried():
    clock = FakeClock()
    model, client = model_with([status_error(openai.RateLimitError, 429, code="insufficient_quota")], clock)

    with pytest.raises(JobFailure) as failure:
        complete(model)

    assert failure.value.code == "llm_unavailable" and "insufficient_quota" in failure.value.message
    assert len(client.calls) == 1


def test_each_attempt_gets_only_the_time_left_before_the_deadline():
    clock = FakeClock()
    model, client = model_with([ok_response()], clock, timeout=60)

    complete(model, deadline=clock.now + 25)

    assert client.calls[0]["timeout"] == pytest.approx(25)


def test_no_attempt_starts_when_too_little_time_is_left():
    clock = FakeClock()
    model, client = model_with([ok_response()], clock)

    with pytest.raises(OutOfTime):
        complete(model, deadline=clock.now + MIN_ATTEMPT_SECONDS / 2)

    assert client.calls == []


def test_a_backoff_that_would_pass_the_deadline_is_not_slept_through():
    clock = FakeClock()
    model, client = model_with([status_error(openai.InternalServerError, 500, {"retry-after": "5"}), ok_response()],
                               clock)

    with pytest.raises(EndpointBusy):
        complete(model, deadline=clock.now + 6)

    assert len(client.calls) == 1 and clock.sleeps == []


def test_tokens_per_minute_are_charged_with_the_real_prompt_and_the_answer_budget():
    clock = FakeClock()
    throttle = Throttle(tokens_per_minute=60, clock=clock, sleep=clock.sleep)  # 1 token a second
    counted: list[str] = []
    model = ChatModel(model="m", api_key=None, base_url=None, timeout=60, max_retries=0,
                      client=ScriptedClient([ok_response(), ok_response()]), throttle=throttle,
                      count_tokens=lambda text: counted.append(text) or 7, clock=clock, sleep=clock.sleep)

    complete(model)
    complete(model)

    assert counted == ["hi", "hi"]
    # 7 content + 3 per message + 3 priming + 5 max_tokens = 18 tokens; 1 was in the bucket, then 18 more to earn.
    assert clock.sleeps == [pytest.approx(17.0), pytest.approx(18.0)]


def test_the_measured_latency_of_a_call_is_reported():
    clock = FakeClock()

    class SlowClient(ScriptedClient):
        async def create(self, **request):
            clock.now += 0.75
            return await super().create(**request)

    model = ChatModel(model="m", api_key=None, base_url=None, timeout=60, max_retries=0,
                      client=SlowClient([ok_response()]), clock=clock, sleep=clock.sleep)

    assert complete(model).latency_seconds == pytest.approx(0.75)


# --- configuration and wiring ---------------------------------------------------------------------------------------

def test_limits_come_from_the_environment_and_are_unlimited_when_unset():
    from chalicelib.config import ConfigError, load_settings

    configured = load_settings({"DOCPIPE_LLM_RPM": "500", "DOCPIPE_LLM_TPM": "200000"})
    assert (configured.llm_requests_per_minute, configured.llm_tokens_per_minute) == (500, 200_000)
    unset = load_settings({})
    assert (unset.llm_requests_per_minute, unset.llm_tokens_per_minute) == (None, None)
    with pytest.raises(ConfigError, match="DOCPIPE_LLM_RPM"):
        load_settings({"DOCPIPE_LLM_RPM": "0"})
