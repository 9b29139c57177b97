"""Client-side rate limiting: stay under the provider's requests-per-minute and tokens-per-minute limits.

Providers enforce their per-minute limits over much shorter windows (OpenAI: "60,000 requests/minute may be enforced
as 1,000 requests/second"), so each limit is a token bucket that holds one second's worth and refills continuously:
the calls of a burst are spread evenly instead of all landing in the first second and drawing 429s.

A call reserves its share at once, going into debt when the bucket is short, and then sleeps until the debt is
repaid. Later callers see the debt and queue behind it, so calls leave in arrival order, and no lock is needed — the
state is touched only between awaits of one event loop, which also lets one ``Throttle`` outlive an ``asyncio.run``
(a Lambda container runs one loop per job)::

    throttle = Throttle(requests_per_minute=500, tokens_per_minute=200_000)
    await throttle.acquire(tokens=1_800, deadline=time.monotonic() + 60)
    throttle.pause(2.0)  # the provider answered 429 with Retry-After: 2 — nobody calls before then
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from chalicelib.errors import TransientError

BURST_SECONDS = 1.0


class OutOfTime(TransientError):
    """The invocation would end before the call could be made: the next delivery continues the job."""

    def __init__(self, message: str) -> None:
        super().__init__("out_of_time", message)


class TokenBucket:
    """``per_minute`` units a minute, at most ``BURST_SECONDS`` worth at once (but never less than one unit)."""

    def __init__(self, per_minute: int, now: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * BURST_SECONDS)
        self._level = self.capacity
        self._stamp = now

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` units are covered, without taking them."""
        level = self._refilled(now)
        return 0.0 if level >= amount else (amount - level) / self.rate

    def take(self, amount: float, now: float) -> None:
        self._level = self._refilled(now) - amount
        self._stamp = now

    def _refilled(self, now: float) -> float:
        return min(self.capacity, self._level + (now - self._stamp) * self.rate)


class Throttle:
    """One worker instance's share of the provider's limits; ``None`` means unlimited."""

    def __init__(self, *, requests_per_minute: int | None = None, tokens_per_minute: int | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._clock = clock
        self._sleep = sleep
        now = clock()
        self._requests = TokenBucket(requests_per_minute, now) if requests_per_minute else None
        self._tokens = TokenBucket(tokens_per_minute, now) if tokens_per_minute else None
        self._paused_until = 0.0

    @property
    def counts_tokens(self) -> bool:
        """Callers need to count a request's tokens only when a tokens-per-minute limit is set."""
        return self._tokens is not None

    def pause(self, seconds: float) -> None:
        """Hold every caller back for ``seconds`` (a 429's Retry-After applies to the whole account, not one call)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    async def acquire(self, *, tokens: int = 0, deadline: float | None = None) -> float:
        """Wait until one request of ``tokens`` tokens may go; returns the seconds waited.

        Raises ``OutOfTime`` — before reserving anything — when the wait would run past ``deadline``.
        """
        now = self._clock()
        wait = max(self._paused_until - now,
                   self._requests.wait_for(1, now) if self._requests else 0.0,
                   self._tokens.wait_for(tokens, now) if self._tokens else 0.0)
        if deadline is not None and now + wait > deadline:
            raise OutOfTime(f"the LLM rate limit would delay this call by {wait:.1f} s, past the time this "
                            f"invocation has left")
        if self._requests:
            self._requests.take(1, now)
        if self._tokens:
            self._tokens.take(tokens, now)
        waited = 0.0
        while wait > 0:
            await self._sleep(wait)
            waited += wait
            # A pause that began while this call slept (another call's 429) holds it back too.
            wait = self._paused_until - self._clock()
            if deadline is not None and wait > 0 and self._clock() + wait > deadline:
                raise OutOfTime("the provider asked to wait past the time this invocation has left")
        return waited
