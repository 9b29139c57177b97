"""The provider's limits: what its headers say, how a worker's calls are admitted (on a fake clock), how the
deployment's capacity is divided between workers, and the one owner of retries (ChatModel)."""

from __future__ import annotations

import asyncio
import math
import threading
import time

import httpx2
import openai
import pytest

from chalicelib.errors import JobFailure, Throttled, TransientError
from chalicelib.llm.chat import MIN_ATTEMPT_SECONDS, ChatModel, EndpointBusy, RequestTooLarge
from chalicelib.llm.fairshare import Claim, fair_shares
from chalicelib.llm.gate import Admission, CallGate, Ticket
from chalicelib.llm.ratelimit import OutOfTime, ProviderLimits, retry_after
from chalicelib.llm.sharedlimits import (
    HOLDER_POLL_SECONDS,
    LEASE_SECONDS,
    STARVED_POLL_SECONDS,
    Allowance,
    Demand,
    SharedLimits,
    plan,
)

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


# --- what the provider's headers say --------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "seconds"), [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5),
                                                ("0.5", 0.5), ("soon", None)])
def test_reset_headers_are_read_as_openai_writes_them(value, seconds):
    limits = ProviderLimits.of({"x-ratelimit-reset-requests": value})

    assert limits.reset_requests == (pytest.approx(seconds) if seconds is not None else None)


def test_a_reset_given_as_a_unix_time_is_a_time_from_now():
    assert ProviderLimits.of({"x-ratelimit-reset-tokens": "1700000042"}, now=1_700_000_000).reset_tokens == 42


def test_retry_after_ms_takes_precedence_over_retry_after_and_a_date_is_understood():
    assert retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:05 GMT"}, now=1445412480) == 5


def test_a_limit_with_nothing_remaining_holds_back_until_its_reset():
    limits = ProviderLimits.of({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "120ms",
                                "x-ratelimit-remaining-tokens": "1800", "x-ratelimit-reset-tokens": "6m0s"})

    assert limits.exhausted_for() == pytest.approx(0.12)


def test_a_429_waits_for_the_reset_of_the_limit_it_names():
    limits = ProviderLimits.of({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"})

    assert limits.wait_after_429("tokens") == 360
    assert limits.wait_after_429("requests") == 1
    assert ProviderLimits.of({"retry-after": "3", "x-ratelimit-reset-requests": "1s"}).wait_after_429("requests") == 3


# --- admission of one worker's calls --------------------------------------------------------------------------------

def admission(clock: FakeClock, **limits) -> Admission:
    return Admission(requests_per_minute=limits.get("rpm"), tokens_per_minute=limits.get("tpm"), shared=False,
                     now=clock())


def test_requests_per_minute_are_spread_evenly_not_sent_in_a_burst():
    clock = FakeClock()
    gate = admission(clock, rpm=60)
    for _ in range(3):
        gate.add(Ticket("job", 0))
    gate.window = math.inf

    first, wake = gate.admit(clock())
    assert len(first) == 1 and wake == pytest.approx(clock() + 1.0)
    clock.now += 1.0
    second, _ = gate.admit(clock())
    assert len(second) == 1


def test_a_one_chunk_job_goes_next_whatever_a_large_job_has_waiting():
    clock = FakeClock()
    gate = admission(clock)
    gate.window = 4
    big = [Ticket("big", 0) for _ in range(1000)]
    for ticket in big:
        gate.add(ticket)
    admitted, _ = gate.admit(clock())
    assert [t.job for t in admitted] == ["big"] * 4
    small = Ticket("small", 0)
    gate.add(small)

    gate.done(admitted[0], throttled=False, now=clock())
    next_up, _ = gate.admit(clock())

    assert next_up[0] is small


def test_a_jobs_reduce_and_a_started_jobs_last_maps_go_before_other_jobs_maps():
    clock = FakeClock()
    gate = Admission(requests_per_minute=None, tokens_per_minute=None, shared=True, now=clock())
    gate.share(Allowance(2, 2, 1.0), clock())  # two units of the deployment's limit
    first = [Ticket("first", 0) for _ in range(3)]
    later = [Ticket("later", 0) for _ in range(8)]
    for ticket in first + later:
        gate.add(ticket)
    admitted, _ = gate.admit(clock())
    assert [t.job for t in admitted] == ["first", "first"]

    gate.done(admitted[0], throttled=False, now=clock())
    next_up, _ = gate.admit(clock())
    assert next_up == [first[2]]  # two calls left against eight: the first job finishes before the next starts
    gate.done(admitted[1], throttled=False, now=clock())
    gate.done(next_up[0], throttled=False, now=clock())
    maps, _ = gate.admit(clock())
    assert [t.job for t in maps] == ["later", "later"]
    reduce = Ticket("first", 0)
    gate.add(reduce)

    gate.done(maps[0], throttled=False, now=clock())
    after, _ = gate.admit(clock())

    assert after == [reduce]


def test_a_pause_holds_back_every_call_until_it_ends():
    clock = FakeClock()
    gate = admission(clock)
    gate.add(Ticket("job", 0))
    gate.pause(clock() + 7)

    assert gate.admit(clock()) == ([], clock() + 7)
    clock.now += 7
    assert len(gate.admit(clock())[0]) == 1


def test_a_429_halves_the_window_once_per_congestion_and_successes_grow_it_back():
    clock = FakeClock()
    gate = admission(clock)
    gate.window = 8
    tickets = [Ticket("job", 0) for _ in range(8)]
    for ticket in tickets:
        gate.add(ticket)
    admitted, _ = gate.admit(clock())
    assert len(admitted) == 8

    clock.now += 1
    gate.done(admitted[0], throttled=True, now=clock())
    gate.done(admitted[1], throttled=True, now=clock())  # sent before the decrease: no second halving
    assert gate.window == 4

    for ticket in admitted[2:]:
        gate.done(ticket, throttled=False, now=clock())
    assert gate.window > 4


# --- dividing the deployment's capacity -----------------------------------------------------------------------------

def test_fair_shares_give_a_small_job_what_it_needs_and_the_rest_to_the_large_one():
    assert fair_shares(16, {"a": Claim(demand=16), "b": Claim(demand=1)}) == {"a": 15, "b": 1}
    assert fair_shares(16, {"a": Claim(demand=100), "b": Claim(demand=100)}) == {"a": 8, "b": 8}
    assert fair_shares(16, {"a": Claim(demand=100, jobs=3), "b": Claim(demand=100, jobs=1)}) == {"a": 12, "b": 4}


@pytest.mark.parametrize("claims", [{"a": 5, "b": 7, "c": 100}, {"a": 1, "b": 1}, {"a": 40, "b": 40, "c": 40}])
def test_fair_shares_never_exceed_the_capacity(claims):
    shares = fair_shares(16, {name: Claim(demand=d) for name, d in claims.items()})

    assert sum(shares.values()) <= 16
    assert all(shares[name] <= demand for name, demand in claims.items())


def test_a_worker_takes_only_free_units_and_a_crashed_workers_units_come_back_after_its_lease():
    state = {"holders": {"dead": {"units": 16, "demand": 16, "jobs": 1, "until": 1000.0 + LEASE_SECONDS}}}

    while_alive = plan(state, me="me", capacity=16, demand=Demand(waiting=8, jobs=1), now=1001.0)
    after_lease = plan(state, me="me", capacity=16, demand=Demand(waiting=8, jobs=1), now=1001.0 + LEASE_SECONDS)

    assert (while_alive.units, while_alive.target) == (0, 8)
    assert after_lease.units == 8 and "dead" not in after_lease.state["holders"]


class MemoryItems:
    """``VersionedItems`` in memory, with the same compare-and-set."""

    def __init__(self) -> None:
        self.items: dict[str, tuple[dict, int]] = {}
        self.writes = 0

    def read(self, key):
        from chalicelib.aws.versioned import Versioned

        state, version = self.items.get(key, ({}, 0))
        return Versioned(state, version)

    def replace(self, key, state, *, version, expires_at):
        from chalicelib.aws.versioned import Versioned

        if self.items.get(key, ({}, 0))[1] != version:
            return False, self.read(key)
        self.writes += 1
        self.items[key] = (state, version + 1)
        return True, Versioned(state, version + 1)


def test_workers_sharing_an_item_never_hold_more_than_the_capacity_together():
    items = MemoryItems()
    clock = FakeClock()
    workers = [SharedLimits(items, "pool", capacity=16, fallback_units=2, clock=clock, owner=f"w{i}")
               for i in range(5)]
    for worker in workers:
        worker.want(Demand(waiting=10, jobs=1))

    for _ in range(4):
        allowances = [worker.sync() for worker in workers]
        clock.now += 0.1

    assert sum(a.units for a in allowances) == 16
    assert sorted(a.units for a in allowances) == [3, 3, 3, 3, 4]


def test_a_worker_whose_share_was_decided_for_fewer_calls_asks_again_at_once_when_its_next_jobs_arrive():
    items = MemoryItems()
    worker = SharedLimits(items, "pool", capacity=16, fallback_units=2, owner="w")
    worker.want(Demand(waiting=8, jobs=1))
    assert worker.sync().units == 8  # the whole provider was free, and the first job wanted 8

    worker.want(Demand(waiting=1, busy=7, jobs=1))  # a call of the same job ends: nothing to ask
    assert not worker._local.urgent
    worker.want(Demand(waiting=33, busy=7, jobs=5))  # four more jobs: its share of 8 was decided for one

    assert worker._local.urgent and worker._next_due() is not None
    assert worker.sync().units == 16


class CountedReads(MemoryItems):
    """The reads a worker makes of its own accord (a refused write returns the item: that is no read)."""

    reads = 0

    def read(self, key):
        self.reads += 1
        return super().read(key)

    def replace(self, key, state, *, version, expires_at):
        reads = self.reads
        try:
            return super().replace(key, state, version=version, expires_at=expires_at)
        finally:
            self.reads = reads


def test_a_workers_own_change_is_written_onto_the_item_as_last_seen_and_read_again_only_when_refused():
    items = CountedReads()
    worker = SharedLimits(items, "pool", capacity=16, fallback_units=2, owner="w")
    other = SharedLimits(items, "pool", capacity=16, fallback_units=2, owner="o")
    worker.want(Demand(waiting=4, jobs=1))
    worker.sync()
    assert (items.reads, items.writes) == (1, 1)

    worker.want(Demand(waiting=4, busy=4, jobs=2))  # a second job: more units wanted, straight onto the item seen
    assert worker.sync().units == 8 and (items.reads, items.writes) == (1, 2)
    other.want(Demand(waiting=8, jobs=1))
    other.sync()  # the item changed behind the worker's back
    worker.want(Demand(waiting=8, busy=4, jobs=3))

    allowance = worker.sync()  # refused, decided again on the item the refusal returned, with no read

    assert items.reads == 2 and allowance.units + other.sync().units <= 16


def test_a_copy_of_the_item_older_than_a_lease_is_read_again_before_a_change():
    """An item idle long enough expires and restarts its versions: an old copy could then match a new version."""
    now = [1_000.0]
    items = CountedReads()
    worker = SharedLimits(items, "pool", capacity=16, fallback_units=2, owner="w", clock=lambda: now[0])
    worker.want(Demand(waiting=4, jobs=1))
    worker.sync()
    worker.want(Demand(waiting=4, busy=4, jobs=2))
    worker.sync()
    assert items.reads == 1
    now[0] += LEASE_SECONDS + 1

    worker.want(Demand(waiting=8, busy=4, jobs=3))
    worker.sync()

    assert items.reads == 2


def test_without_dynamodb_a_worker_keeps_to_its_fallback_share():
    class Unreachable(MemoryItems):
        def read(self, key):
            raise ConnectionError("no DynamoDB")

    worker = SharedLimits(Unreachable(), "pool", capacity=16, fallback_units=2, owner="w")
    worker.want(Demand(waiting=10, jobs=1))

    assert worker.sync() == Allowance(2, 2, 2 / 16)


# --- ChatModel: the one owner of retries ---------------------------------------------------------------------------

class ScriptedClient:
    """An AsyncOpenAI stand-in: each chat completion POST takes the next outcome (an exception or a response)."""

    def __init__(self, outcomes: list) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[dict] = []

    async def post(self, path: str, *, cast_to, body: dict, options: dict):
        assert path == "/chat/completions"
        return Raw(await self.create(**body, timeout=options["timeout"]))

    async def create(self, **request):
        self.calls.append(request)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def close(self) -> None:
        pass


class Raw:
    def __init__(self, response, headers: dict | None = None) -> None:
        self._response = response
        self.headers = headers or {}

    def parse(self):
        return self._response


class FakeGate:
    """A gate that admits every call at once and records what the model tells it."""

    def __init__(self, tokens_per_minute: int | None = None) -> None:
        self.tokens_per_minute = tokens_per_minute
        self.pauses: list[float] = []
        self.released: list[bool] = []
        self.admitted: list[int] = []

    async def admit(self, job, *, tokens, deadline):
        self.admitted.append(tokens)
        return Ticket(job, tokens)

    def release(self, ticket, *, throttled=False):
        self.released.append(throttled)

    def observe(self, limits):
        pass

    def pause(self, seconds):
        self.pauses.append(seconds)


def status_error(cls, status: int, headers: dict | None = None, code: str | None = None, message: str | None = None,
                 type_: str = "x"):
    request = httpx2.Request("POST", "http://llm.invalid/v1/chat/completions")
    body = {"error": {"message": message or f"HTTP {status}", "type": type_, "param": None, "code": code}}
    return cls(message or f"HTTP {status}", response=httpx2.Response(status, headers=headers or {}, request=request),
               body=body)


def ok_response(text: str = "fine"):
    from openai.types.chat import ChatCompletion

    return ChatCompletion.model_validate({
        "id": "c", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}})


def model_with(outcomes: list, clock: FakeClock, *, max_retries: int = 2, timeout: float = 60,
               gate: FakeGate | None = None, guard=None) -> tuple[ChatModel, ScriptedClient, FakeGate]:
    client = ScriptedClient(outcomes)
    gate = gate or FakeGate()
    return ChatModel(model="m", api_key=None, base_url=None, timeout=timeout, max_retries=max_retries, client=client,
                     gate=gate, guard=guard, clock=clock, sleep=clock.sleep), client, gate  # type: ignore[arg-type]


def complete(model: ChatModel, **options):
    return asyncio.run(model.complete([{"role": "user", "content": "hi"}], max_tokens=5, **options))


def test_a_429_pauses_the_whole_pool_for_its_retry_after_and_is_retried():
    clock = FakeClock()
    model, client, gate = model_with([status_error(openai.RateLimitError, 429, {"retry-after": "7"}), ok_response()],
                                     clock)

    completion = complete(model)

    assert completion.text == "fine" and completion.retries == 1
    assert len(client.calls) == 2 and gate.pauses == [7.0] and gate.released == [True, False]


def test_a_429_never_reaches_the_circuit_breaker_as_a_failure():
    failures: list[BaseException] = []

    async def guard(attempt):
        try:
            return await attempt()
        except EndpointBusy as exc:  # what the breaker counts (its handled_exceptions)
            failures.append(exc)
            raise

    clock = FakeClock()
    outcomes = [status_error(openai.RateLimitError, 429, {"retry-after-ms": "10"})] * 5 + [ok_response()]
    model, client, _gate = model_with(outcomes, clock, guard=guard)

    complete(model)

    assert failures == [] and len(client.calls) == 6


def test_a_429_naming_the_tokens_limit_waits_for_its_reset_and_a_long_wait_goes_back_to_the_queue():
    clock = FakeClock()
    refusal = status_error(openai.RateLimitError, 429, {"x-ratelimit-reset-tokens": "6m0s",
                                                        "x-ratelimit-reset-requests": "1s"}, type_="tokens",
                           code="rate_limit_exceeded")
    model, client, gate = model_with([refusal], clock)

    with pytest.raises(Throttled) as throttled:
        complete(model)

    assert throttled.value.retry_after == 360 and len(client.calls) == 1 and gate.pauses == []


def test_a_request_the_provider_can_never_accept_fails_at_once_with_the_reason():
    clock = FakeClock()
    message = ("Request too large for gpt-4o in organization org-x on tokens per min (TPM): Limit 30000, Requested "
               "45000. The input or output tokens must be reduced in order to run successfully.")
    model, client, _gate = model_with([status_error(openai.RateLimitError, 429, message=message,
                                                    code="rate_limit_exceeded", type_="tokens")], clock)

    with pytest.raises(RequestTooLarge) as refused:
        complete(model)

    assert isinstance(refused.value, JobFailure) and "Requested 45000" in refused.value.message
    assert len(client.calls) == 1


def test_a_request_larger_than_the_known_tokens_per_minute_is_never_sent():
    clock = FakeClock()
    model, client, _gate = model_with([ok_response()], clock, gate=FakeGate(tokens_per_minute=10))

    with pytest.raises(RequestTooLarge, match="more than the provider's limit of 10"):
        complete(model)

    assert client.calls == []


def test_retry_after_ms_takes_precedence_over_retry_after():
    clock = FakeClock()
    model, _client, _gate = model_with([status_error(openai.InternalServerError, 500,
                                                     {"retry-after-ms": "250", "retry-after": "9"}), ok_response()],
                                       clock)

    complete(model)

    assert clock.sleeps == [0.25]


def test_server_errors_back_off_exponentially_without_a_header():
    clock = FakeClock()
    model, client, _gate = model_with([status_error(openai.InternalServerError, 500),
                                       status_error(openai.InternalServerError, 503), ok_response()], clock)

    completion = complete(model)

    assert completion.retries == 2 and len(client.calls) == 3
    first, second = clock.sleeps
    assert 0.375 <= first <= 0.5 and 0.75 <= second <= 1.0  # 0.5 s then 1 s, less up to 25 % jitter


def test_transient_errors_end_after_the_configured_attempts():
    clock = FakeClock()
    model, client, _gate = model_with([status_error(openai.InternalServerError, 502)] * 5, clock, max_retries=2)

    with pytest.raises(EndpointBusy) as failure:
        complete(model)

    assert len(client.calls) == 3 and failure.value.code == "llm_unavailable"


def test_a_retry_after_longer_than_the_cap_hands_the_job_back_to_sqs_with_that_delay():
    clock = FakeClock()
    model, client, _gate = model_with([status_error(openai.RateLimitError, 429, {"retry-after": "600"})], clock)

    with pytest.raises(Throttled) as throttled:
        complete(model)

    assert throttled.value.retry_after == 600 and isinstance(throttled.value, TransientError)
    assert len(client.calls) == 1 and clock.sleeps == []


def test_an_exhausted_quota_is_a_429_that_is_never_retried():
    clock = FakeClock()
    model, client, _gate = model_with([status_error(openai.RateLimitError, 429, code="insufficient_quota")], clock)

    with pytest.raises(JobFailure) as failure:
        complete(model)

    assert failure.value.code == "llm_unavailable" and "insufficient_quota" in failure.value.message
    assert len(client.calls) == 1


def test_each_attempt_gets_only_the_time_left_before_the_deadline():
    clock = FakeClock()
    model, client, _gate = model_with([ok_response()], clock, timeout=60)

    complete(model, deadline=clock.now + 25)

    assert client.calls[0]["timeout"] == pytest.approx(25)


def test_no_attempt_starts_when_too_little_time_is_left():
    clock = FakeClock()
    model, client, _gate = model_with([ok_response()], clock)

    with pytest.raises(OutOfTime):
        complete(model, deadline=clock.now + MIN_ATTEMPT_SECONDS / 2)

    assert client.calls == []


def test_a_backoff_that_would_pass_the_deadline_is_not_slept_through():
    clock = FakeClock()
    model, client, _gate = model_with([status_error(openai.InternalServerError, 500, {"retry-after": "5"}),
                                       ok_response()], clock)

    with pytest.raises(EndpointBusy):
        complete(model, deadline=clock.now + 6)

    assert len(client.calls) == 1 and clock.sleeps == []


def test_tokens_per_minute_are_charged_with_the_real_prompt_and_the_answer_budget():
    clock = FakeClock()
    gate = FakeGate(tokens_per_minute=1000)
    counted: list[str] = []
    model = ChatModel(model="m", api_key=None, base_url=None, timeout=60, max_retries=0,
                      client=ScriptedClient([ok_response()]), gate=gate,  # type: ignore[arg-type]
                      count_tokens=lambda text: counted.append(text) or 7, clock=clock, sleep=clock.sleep)

    complete(model)

    # 7 content + 3 per message + 3 priming + 5 max_tokens = 18 tokens.
    assert counted == ["hi"] and gate.admitted == [18]


def test_a_call_waiting_past_its_deadline_for_the_gate_is_throttled_and_takes_no_place():
    from chalicelib.llm.gate import CallGate

    async def scenario():
        gate = CallGate(requests_per_minute=60)
        first = await gate.admit("job", tokens=0, deadline=None)
        with pytest.raises(Throttled):
            await gate.admit("job", tokens=0, deadline=asyncio.get_running_loop().time() + 0.05)
        gate.release(first)
        return gate

    gate = asyncio.run(scenario())

    assert gate._admission.busy == 0 and gate._admission.demand().waiting == 0


# --- configuration ----------------------------------------------------------------------------------------------------

def test_limits_come_from_the_environment_and_are_unlimited_when_unset():
    from chalicelib.config import ConfigError, load_settings

    configured = load_settings({"DOCPIPE_LLM_RPM": "500", "DOCPIPE_LLM_TPM": "200000",
                                "DOCPIPE_LLM_MAX_IN_FLIGHT": "16"})
    assert (configured.llm_requests_per_minute, configured.llm_tokens_per_minute) == (500, 200_000)
    assert configured.llm_max_in_flight == 16
    unset = load_settings({})
    assert (unset.llm_requests_per_minute, unset.llm_tokens_per_minute) == (None, None)
    assert load_settings({"DOCPIPE_LLM_MAX_IN_FLIGHT": "0"}).llm_max_in_flight is None
    with pytest.raises(ConfigError, match="DOCPIPE_LLM_RPM"):
        load_settings({"DOCPIPE_LLM_RPM": "0"})


def test_the_records_of_a_cold_worker_share_one_circuit_breaker_and_so_one_view_of_its_state(monkeypatch):
    import threading
    import time

    from aws_lambda_powertools.utilities.circuit_breaker.persistence import dynamodb

    from chalicelib.llm import breaker

    # A slow first build (a cold import, a client being made) leaves every record of the batch inside it at once.
    build = dynamodb.CircuitBreakerDynamoDBPersistence.__init__

    def slow_build(self, *args, **kwargs):
        time.sleep(0.2)
        build(self, *args, **kwargs)

    monkeypatch.setattr(dynamodb.CircuitBreakerDynamoDBPersistence, "__init__", slow_build)
    breaker._guard.cache_clear()
    client = object()  # never called: no record is made to run
    together = threading.Barrier(3)
    guards: list[breaker.CircuitGuard] = []

    def record() -> None:
        together.wait()
        guards.append(breaker.CircuitGuard(dynamodb=client, table_name="t", failure_threshold=2, recovery_seconds=2,
                                           concurrency=1))

    threads = [threading.Thread(target=record) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    breaker._guard.cache_clear()
    for guard in guards:
        guard.close()

    # One state cache for all: a trip one record's call recorded is what the next call of any record reads.
    assert len(guards) == 3 and len({id(guard._persistence) for guard in guards}) == 1


# --- the start of a job and the end of a burst ---------------------------------------------------------------------

def test_a_primed_worker_writes_its_first_share_onto_the_item_it_read_ahead():
    items = CountedReads()
    worker = SharedLimits(items, "pool", capacity=16, fallback_units=2, owner="w")

    worker.prime()  # while the job's chunk count is written and the circuit read
    assert (items.reads, items.writes) == (1, 0)
    worker.want(Demand(waiting=8, jobs=1))
    assert worker._local.urgent
    allowance = worker.sync()

    assert allowance.units == 8 and (items.reads, items.writes) == (1, 1)  # the sync read nothing itself
    worker.prime()  # a copy younger than a poll is kept: the next job's priming costs nothing
    assert items.reads == 1


def test_the_circuit_and_the_shared_limits_are_read_side_by_side_before_a_jobs_first_call():
    both = threading.Barrier(2, timeout=5)  # each read waits for the other: read one after the other, both fail

    class Guard:
        async def prime(self):
            await asyncio.to_thread(both.wait)

    class Gate(FakeGate):
        async def prime(self):
            await asyncio.to_thread(both.wait)

    model, _, _ = model_with([], FakeClock(), gate=Gate(), guard=Guard())

    asyncio.run(model.prime())


def _beside_a_waiter() -> tuple[MemoryItems, SharedLimits]:
    """A worker "w" beside one waiting below its share ("waiter") and one holding 8 units for 5 jobs ("busy")."""
    clock = FakeClock()
    items = MemoryItems()
    until = clock() + LEASE_SECONDS
    items.items["pool"] = ({"holders": {"waiter": {"units": 0, "demand": 8, "jobs": 1, "until": until},
                                        "busy": {"units": 8, "demand": 40, "jobs": 5, "until": until}}}, 1)
    return items, SharedLimits(items, "pool", capacity=16, fallback_units=2, clock=clock, owner="w")


def test_units_a_worker_no_longer_needs_go_back_at_once_while_another_worker_waits():
    items, worker = _beside_a_waiter()
    worker.want(Demand(waiting=40, jobs=5))
    allowance = worker.sync()
    assert allowance.units == allowance.target == 7  # below its share of what is free: it keeps all it holds

    worker.want(Demand(busy=5, jobs=1))  # its last calls are in flight, two units idle, and a worker waits

    assert worker._local.urgent
    assert worker.sync().units == 5 and items.items["pool"][0]["holders"]["w"]["units"] == 5


def test_a_worker_looks_at_the_item_more_often_at_a_bursts_end_than_in_its_middle():
    clock = FakeClock()
    items = MemoryItems()
    workers = [SharedLimits(items, "pool", capacity=16, fallback_units=2, clock=clock, owner=f"w{i}")
               for i in range(4)]
    worker, others = workers[0], workers[1:]
    for each in workers:
        each.want(Demand(waiting=40, jobs=5))
    for _ in range(3):
        for each in workers:
            each.sync()
    assert worker._local.units == worker._local.target == 4
    assert worker._next_due() == clock() + HOLDER_POLL_SECONDS  # at its share in the middle of a burst

    for other in others:
        other.want(Demand(busy=2, jobs=1))  # the other workers are down to their last calls
        other.sync()
    worker.want(Demand(waiting=16, busy=4, jobs=5))
    assert worker.sync().units == 10  # at its share again: all that is free

    assert worker._next_due() == clock() + STARVED_POLL_SECONDS


def test_units_given_back_are_only_those_no_call_uses_when_the_item_is_written():
    """The demand a give-back is decided on may be older than the gate: calls started since keep their units."""
    items, worker = _beside_a_waiter()
    held_to: list[int] = []
    worker.subscribe(lambda allowance: None, hold=lambda units: held_to.append(units) or 7)  # 7 calls in flight
    worker.want(Demand(waiting=40, jobs=5))
    assert worker.sync().units == 7

    worker.want(Demand(busy=5, jobs=1))  # as the gate saw it a moment ago; two more calls started since

    assert worker.sync().units == 7 and held_to == [5]
    assert items.items["pool"][0]["holders"]["w"]["units"] == 7


def test_a_gate_held_to_fewer_units_starts_no_call_beyond_them():
    async def scenario():
        gate = CallGate(window=math.inf)
        first = [await gate.admit("job", tokens=1, deadline=None) for _ in range(2)]

        assert gate._hold(3) == 3
        third = await gate.admit("job", tokens=1, deadline=None)
        with pytest.raises(Throttled):  # a fourth call would use a unit being given back
            await gate.admit("job", tokens=1, deadline=time.monotonic() + 0.05)
        assert gate._hold(1) == 3  # calls in flight keep their units: the item must still count them
        gate.release(first[0])
        with pytest.raises(Throttled):  # two still in flight, held to one: a call that ends frees no place
            await gate.admit("job", tokens=1, deadline=time.monotonic() + 0.05)
        for ticket in [first[1], third]:
            gate.release(ticket)

    asyncio.run(scenario())
