"""What rate limits are made of: token buckets, and what a provider says about its limits in each answer.

Providers enforce their per-minute limits over much shorter windows (OpenAI: "60,000 requests/minute may be enforced
as 1,000 requests/second"), so each limit is a token bucket that holds one second's worth and refills continuously:
the calls of a burst are spread evenly instead of all landing in the first second and drawing 429s. A bucket's rate
can change (a worker's share of the deployment's limit grows and shrinks); a larger share refills faster but never
adds a burst at once.

OpenAI-compatible endpoints describe their limits on every answer, 200s included::

    x-ratelimit-limit-requests: 500         x-ratelimit-remaining-requests: 0    x-ratelimit-reset-requests: 120ms
    x-ratelimit-limit-tokens: 200000        x-ratelimit-remaining-tokens: 1800   x-ratelimit-reset-tokens: 6m0s
    retry-after-ms: 450                     retry-after: 1   (429s)

``ProviderLimits.of(headers)`` reads them: the limits tell docpipe the account's real figures, a remaining count of
zero says to hold back until its reset, and a 429's wait is the longest of what it names.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from dataclasses import dataclass
from typing import Any

from chalicelib.errors import TransientError

BURST_SECONDS = 1.0
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|h|m|s))+")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# A reset given as a number this large is a Unix time (some providers send one), not a number of seconds.
_EPOCH_AFTER = 1_000_000_000


class OutOfTime(TransientError):
    """The invocation would end before the call could be made: the next delivery continues the job."""

    def __init__(self, message: str) -> None:
        super().__init__("out_of_time", message)


class TokenBucket:
    """``per_minute`` units a minute, at most ``BURST_SECONDS`` worth at once (but never less than one unit)."""

    def __init__(self, per_minute: float, now: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * BURST_SECONDS)
        self._level = self.capacity
        self._stamp = now

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` units are covered, without taking them (a request larger than the bucket waits
        until the bucket is full, then goes into debt)."""
        level = self._refilled(now)
        amount = min(amount, self.capacity)
        if level >= amount:
            return 0.0
        return math.inf if self.rate <= 0 else (amount - level) / self.rate

    def take(self, amount: float, now: float) -> None:
        self._level = self._refilled(now) - amount
        self._stamp = now

    def set_rate(self, per_minute: float, now: float) -> None:
        """Refill at ``per_minute`` from now on; what is in the bucket stays (capped to the new size)."""
        self._level = self._refilled(now)
        self._stamp = now
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * BURST_SECONDS)
        self._level = min(self._level, self.capacity)

    def _refilled(self, now: float) -> float:
        return min(self.capacity, self._level + (now - self._stamp) * self.rate)


@dataclass(frozen=True)
class ProviderLimits:
    """What one answer's headers say (None: not said). Times are seconds from now."""

    retry_after: float | None = None
    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens: float | None = None

    @classmethod
    def of(cls, headers: Any, *, now: float | None = None) -> ProviderLimits:
        """From a response's headers (any mapping with ``get``, keys case-insensitive as httpx has them)."""
        if headers is None:
            return cls()
        now = time.time() if now is None else now
        return cls(retry_after=retry_after(headers, now=now),
                   limit_requests=_count(headers.get("x-ratelimit-limit-requests")),
                   remaining_requests=_count(headers.get("x-ratelimit-remaining-requests")),
                   reset_requests=_seconds(headers.get("x-ratelimit-reset-requests"), now),
                   limit_tokens=_count(headers.get("x-ratelimit-limit-tokens")),
                   remaining_tokens=_count(headers.get("x-ratelimit-remaining-tokens")),
                   reset_tokens=_seconds(headers.get("x-ratelimit-reset-tokens"), now))

    def exhausted_for(self) -> float | None:
        """Seconds to hold back because a limit has nothing left (remaining 0 until its reset), else None."""
        waits = [reset for remaining, reset in ((self.remaining_requests, self.reset_requests),
                                                (self.remaining_tokens, self.reset_tokens))
                 if remaining is not None and remaining <= 0 and reset is not None]
        return max(waits) if waits else None

    def wait_after_429(self, kind: str | None) -> float | None:
        """How long a 429 asks to wait: its Retry-After, or the reset of the limit it names (``kind``: requests or
        tokens, from the error's type), or of whichever limit is exhausted."""
        named = {"requests": self.reset_requests, "tokens": self.reset_tokens}.get(kind or "")
        candidates = [w for w in (self.retry_after, named, self.exhausted_for()) if w is not None]
        return max(candidates) if candidates else None


def retry_after(headers: Any, *, now: float | None = None) -> float | None:
    """Seconds the server asked to wait: ``retry-after-ms``, then ``retry-after`` (seconds or an HTTP date)."""
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            continue
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    parsed = email.utils.parsedate_tz(headers.get("retry-after") or "")
    if parsed is None:
        return None
    return max(0.0, email.utils.mktime_tz(parsed) - (time.time() if now is None else now))


def _count(value: Any) -> int | None:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if number >= 0 else None


def _seconds(value: Any, now: float) -> float | None:
    """A reset as OpenAI sends it (``1s``, ``6m0s``, ``20ms``, ``1h2m3.5s``), as plain seconds, or as a Unix time."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if _DURATION.fullmatch(text):
        return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(text))
    try:
        number = float(text)
    except ValueError:
        return None
    if not math.isfinite(number) or number < 0:
        return None
    return max(0.0, number - now) if number > _EPOCH_AFTER else number
