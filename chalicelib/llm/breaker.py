"""A circuit breaker around the LLM's attempts, shared by every concurrent worker through DynamoDB.

Powertools' circuit breaker keeps the state (closed, open, half-open with one elected prober) in DynamoDB, so when
the provider goes down every Lambda stops calling it after a few failed attempts, and only one probes it after the
recovery timeout. Its decorator is synchronous while the LLM calls are coroutines, so each attempt runs inside the
breaker on a worker thread that hands the coroutine back to the job's event loop and waits for it; the event loop
itself never blocks, and a thread is held only while the request is on the wire (``llm.gate`` admits it first).
Only the provider's failures (5xx, timeouts, unreachable) count: a 429 asks to slow down and is not an outage, a
rejected API key is a job's problem, and running out of invocation time is the worker's.

While the circuit is open an attempt raises docpipe's ``CircuitOpen`` (Powertools' ``CircuitBreakerOpenError`` is
translated here, at the adapter); the job is then put back on the queue with a delay instead of spending its
deliveries (``jobs.lifecycle``). Every bookkeeping future is read, whatever becomes of the call, so a cancelled job
leaves no "Future exception was never retrieved" behind.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache
from typing import Any

from chalicelib.errors import CircuitOpen
from chalicelib.llm.chat import EndpointBusy
from chalicelib.observability import logger, metrics, with_log_keys

CIRCUIT_NAME = "docpipe-llm"
# How long a worker trusts its last read of the shared state. Each re-read makes every call in flight read DynamoDB
# at once; a worker's own failures still count at once, and others' are seen within this many seconds.
STATE_CACHE_SECONDS = 5
# ``functools.cache`` does not serialise a first call: the records of a cold worker's first batch would each build a
# breaker, and a trip recorded in one's state cache would go unseen by the others for STATE_CACHE_SECONDS.
_GUARD_LOCK = threading.Lock()


@cache
def _guard(dynamodb: Any, table_name: str, failure_threshold: int, recovery_seconds: int) -> Any:
    """The breaker for these settings, made once per worker instance: its local counters live as long as it."""
    from aws_lambda_powertools.utilities.circuit_breaker import CircuitBreakerConfig, circuit_breaker
    from aws_lambda_powertools.utilities.circuit_breaker.persistence import CircuitBreakerDynamoDBPersistence

    def on_transition(transition: Any) -> None:
        logger.warning("LLM circuit changed state", extra={"from": str(transition.from_state),
                                                          "to": str(transition.to_state)})
        _circuit_seen(transition.to_state)

    persistence = CircuitBreakerDynamoDBPersistence(table_name=table_name, boto3_client=dynamodb)
    # One probe success closes the circuit: a recovered provider should drain the backlog at once.
    config = CircuitBreakerConfig(failure_threshold=failure_threshold, recovery_timeout=recovery_seconds,
                                  success_threshold=1, handled_exceptions=(EndpointBusy,),
                                  local_cache_max_age=STATE_CACHE_SECONDS)

    @circuit_breaker(name=CIRCUIT_NAME, persistence_store=persistence, config=config, on_transition=on_transition)
    def run(call: Any) -> Any:
        return call()

    return run, persistence


class CircuitGuard:
    """One job's attempts through the circuit breaker whose state is in ``table_name`` (reached through
    ``dynamodb``, a boto3 client), shared by every worker::

        guard = CircuitGuard(dynamodb=client, table_name="docpipe-dev-idempotency", failure_threshold=5,
                             recovery_seconds=30, concurrency=16)
        answer = await guard(lambda: send(request))     # CircuitOpen while the provider is out
    """

    def __init__(self, *, dynamodb: Any, table_name: str, failure_threshold: int, recovery_seconds: int,
                 concurrency: int) -> None:
        with _GUARD_LOCK:
            self._guarded, self._persistence = _guard(dynamodb, table_name, failure_threshold, recovery_seconds)
        # Twice the attempts at once: a finished attempt's thread may still be recording its success.
        self._threads = ThreadPoolExecutor(max_workers=2 * concurrency, thread_name_prefix="llm-breaker")
        self._in_flight = 0
        self._idle = asyncio.Event()

    async def prime(self) -> None:
        """Read the circuit's state now (it is cached for a few seconds), so the first calls need not wait for it."""
        record = await asyncio.get_running_loop().run_in_executor(self._threads, self._persistence.get_state,
                                                                  CIRCUIT_NAME)
        _circuit_seen(record.state)

    async def __call__(self, attempt: Callable[[], Awaitable[Any]]) -> Any:
        from aws_lambda_powertools.utilities.circuit_breaker import CircuitBreakerOpenError

        try:
            return await self._call(attempt)
        except CircuitBreakerOpenError:
            if self._in_flight == 0:
                _circuit_seen(None)
                raise CircuitOpen() from None
        # An attempt of this job may be the breaker's one probe: failing now would cancel it with the job, and the
        # circuit would never learn that the provider is back. Wait for this job's attempts, then ask once more.
        await self._idle.wait()
        try:
            return await self._call(attempt)
        except CircuitBreakerOpenError:
            _circuit_seen(None)
            raise CircuitOpen() from None

    async def _call(self, attempt: Callable[[], Awaitable[Any]]) -> Any:
        self._enter()
        try:
            return await self._run(attempt)
        finally:
            self._leave()

    def _enter(self) -> None:
        self._in_flight += 1
        self._idle.clear()

    def _leave(self, *_done: Any) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    async def _run(self, attempt: Callable[[], Awaitable[Any]]) -> Any:
        """The attempt, inside the breaker: its thread decides whether the attempt may run, the event loop runs it.

        A success is handed to the caller at once and the breaker records it on its thread meanwhile (a wave of
        answers would otherwise queue for those threads before the next calls start); a failure is handed back
        only after the breaker has counted it.
        """
        loop = asyncio.get_running_loop()
        allowed = loop.create_future()
        outcome: Future[Any] = Future()

        def call() -> Any:
            loop.call_soon_threadsafe(_settle, allowed)
            return outcome.result()  # the attempt's answer, or its error re-raised for the breaker to count

        # What the breaker logs on its thread carries the job's id.
        guarded = loop.run_in_executor(self._threads, with_log_keys(self._guarded), call)
        # However the attempt ends (answered, failed, cancelled with its job), the bookkeeping's outcome is read.
        guarded.add_done_callback(_retrieve)
        try:
            await asyncio.wait({allowed, guarded}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            outcome.cancel()
            raise
        if not allowed.done():
            return await guarded  # refused: the circuit is open
        try:
            answer = await attempt()
        except asyncio.CancelledError:
            # The job gave up on this attempt (another chunk failed for good): the breaker does not count it.
            outcome.cancel()
            raise
        except Exception as exc:
            outcome.set_exception(exc)
            return await guarded  # raises the same error, once counted
        outcome.set_result(answer)
        # Until the breaker has recorded the success (a probe's closes the circuit), the attempt counts as in flight.
        self._enter()
        guarded.add_done_callback(self._leave)
        return answer

    def close(self) -> None:
        self._threads.shutdown(wait=False)


def circuit_state(dynamodb: Any, table_name: str) -> str:
    """The shared circuit's state as stored (``CLOSED``, ``OPEN`` or ``HALF_OPEN``), for the operator's dashboard."""
    from aws_lambda_powertools.utilities.circuit_breaker.persistence import CircuitBreakerDynamoDBPersistence

    record = CircuitBreakerDynamoDBPersistence(table_name=table_name, boto3_client=dynamodb).get_state(CIRCUIT_NAME)
    return str(getattr(record.state, "value", record.state))


def _circuit_seen(state: Any) -> None:
    """The LLMCircuitOpen gauge (infra/METRICS.md): 0 for a closed circuit, 1 otherwise (None: a refused call)."""
    from aws_lambda_powertools.utilities.circuit_breaker import CircuitState

    metrics.add_metric(name="LLMCircuitOpen", unit="Count", value=0 if state == CircuitState.CLOSED else 1)


def _settle(allowed: asyncio.Future[None]) -> None:
    if not allowed.done():
        allowed.set_result(None)


def _retrieve(done: asyncio.Future[Any]) -> None:
    """Read a finished bookkeeping's outcome, so that no error of it is reported as never retrieved."""
    if not done.cancelled():
        done.exception()
