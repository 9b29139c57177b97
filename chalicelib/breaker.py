"""A circuit breaker around the LLM, shared by every concurrent worker through DynamoDB.

Powertools' circuit breaker keeps the state (closed, open, half-open with one elected prober) in DynamoDB, so when
the provider goes down every Lambda stops calling it after a few failures, and only one probes it after the
recovery timeout. Its decorator is synchronous while the LLM calls are coroutines, so each call runs inside the
breaker on a worker thread that hands the coroutine back to the job's event loop and waits for it; the event loop
itself never blocks. Only the provider's transient errors (throttling, 5xx, timeouts, unreachable) count as
failures: a rejected API key is a job's problem, and running out of invocation time is the worker's, not outages.

While the circuit is open a call raises ``CircuitBreakerOpenError``; the worker then puts the job back on the queue
with a delay instead of spending its deliveries (see ``worker.py``).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any

CIRCUIT_NAME = "docpipe-llm"
# How long a worker trusts its last read of the shared state. Each re-read makes every call in flight read DynamoDB
# at once; a worker's own failures still count at once, and others' are seen within this many seconds.
STATE_CACHE_SECONDS = 5


@lru_cache(maxsize=None)
def _guard(table_name: str, failure_threshold: int, recovery_seconds: int) -> Any:
    from aws_lambda_powertools.utilities.circuit_breaker import CircuitBreakerConfig, circuit_breaker
    from aws_lambda_powertools.utilities.circuit_breaker.persistence import CircuitBreakerDynamoDBPersistence

    from chalicelib import aws
    from chalicelib.llm import EndpointBusy
    from chalicelib.observability import logger

    def on_transition(transition: Any) -> None:
        logger.warning("LLM circuit changed state", extra={"from": str(transition.from_state),
                                                          "to": str(transition.to_state)})

    persistence = CircuitBreakerDynamoDBPersistence(table_name=table_name, boto3_client=aws.client("dynamodb"))
    # One probe success closes the circuit: a recovered provider should drain the backlog at once.
    config = CircuitBreakerConfig(failure_threshold=failure_threshold, recovery_timeout=recovery_seconds,
                                  success_threshold=1, handled_exceptions=(EndpointBusy,),
                                  local_cache_max_age=STATE_CACHE_SECONDS)

    @circuit_breaker(name=CIRCUIT_NAME, persistence_store=persistence, config=config, on_transition=on_transition)
    def run(call: Any) -> Any:
        return call()

    return run, persistence


class GuardedChat:
    """A chat model whose calls go through the shared circuit breaker."""

    def __init__(self, chat: Any, *, table_name: str, failure_threshold: int, recovery_seconds: int,
                 concurrency: int) -> None:
        self._chat = chat
        self._guarded, self._persistence = _guard(table_name, failure_threshold, recovery_seconds)
        self._threads = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="llm-breaker")
        self.model = getattr(chat, "model", None)
        self._in_flight = 0
        self._idle = asyncio.Event()

    async def prime(self) -> None:
        """Read the circuit's state now (it is cached for a few seconds), so the first calls need not wait for it."""
        await asyncio.get_running_loop().run_in_executor(self._threads, self._persistence.get_state, CIRCUIT_NAME)

    async def complete(self, messages: list[dict[str, str]], **options: Any) -> Any:
        from aws_lambda_powertools.utilities.circuit_breaker import CircuitBreakerOpenError

        try:
            return await self._call(messages, options)
        except CircuitBreakerOpenError:
            if self._in_flight == 0:
                raise
        # A call of this job may be the breaker's one probe: failing now would cancel it with the job, and the
        # circuit would never learn that the provider is back. Wait for this job's calls, then ask once more.
        await self._idle.wait()
        return await self._call(messages, options)

    async def _call(self, messages: list[dict[str, str]], options: dict[str, Any]) -> Any:
        self._in_flight += 1
        self._idle.clear()
        try:
            return await self._run(messages, options)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def _run(self, messages: list[dict[str, str]], options: dict[str, Any]) -> Any:
        loop = asyncio.get_running_loop()
        started: list[Any] = []

        def call() -> Any:
            future = asyncio.run_coroutine_threadsafe(self._chat.complete(messages, **options), loop)
            started.append(future)
            return future.result()

        try:
            return await loop.run_in_executor(self._threads, self._guarded, call)
        except asyncio.CancelledError:
            # The job gave up on this call (another chunk failed for good): stop the request itself too.
            for future in started:
                future.cancel()
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._chat, name)

    async def close(self) -> None:
        self._threads.shutdown(wait=False)
        await self._chat.close()
