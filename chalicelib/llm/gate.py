"""Which of a worker's LLM calls may start now: the deployment's limits as this worker's share, the provider's pauses,
and an adaptive window, with the worker's jobs taking turns.

Every call to one endpoint and model in a worker (a Lambda container) goes through one ``CallGate``, whichever job
and thread it comes from: the records of a batch run side by side, each on its own event loop. A call waits in its
job's line; when a unit is free (``SharedLimits``: the worker's share of ``DOCPIPE_LLM_MAX_IN_FLIGHT``), its share
of the requests and tokens per minute allows, and no pause is in force, the job with the fewest calls at the gate
(waiting and in flight) goes next, the longest-waiting call among equals. A job shows the gate at most its own
calls in flight (``DOCPIPE_LLM_CONCURRENCY``), so this favours what is near its end — a one-chunk job in the same
container as a 1,000-chunk one is served at the next free unit, a job's reduce goes before other jobs' maps, a job
down to its last maps before one with many left — and takes turns among jobs with more work than that::

    ticket = await gate.admit(job, tokens=1_800, deadline=time.monotonic() + 60)   # Throttled past the deadline
    try:
        ...                                            # the HTTP request
    finally:
        gate.release(ticket, throttled=False)

The adaptive part reads what the provider answers. A 429 pauses every call of the pool, in this worker at once and
in every worker through the shared item, for as long as its Retry-After or the named limit's reset says; a
remaining count of zero on any answer does the same; the limits the provider states replace configured ones that
are higher. A 429 also halves the worker's window of calls in flight, which then grows by one per window of
successes (additive increase, multiplicative decrease): without shared limits (``DOCPIPE_LLM_MAX_IN_FLIGHT=0``)
this window is all that keeps a worker off the provider's limit, starting at ``INITIAL_WINDOW`` and doubling per
window of successes until its first 429. A gate made with ``window=math.inf`` (a chat model used on its own) sets
no window until the provider's first 429.

The scheduling itself is ``Admission`` (plain, clock-driven, tested on a fake clock); ``CallGate`` adds the lock,
the waiting futures of many event loops and a timer thread.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chalicelib.errors import Throttled
from chalicelib.llm.ratelimit import ProviderLimits, TokenBucket
from chalicelib.llm.sharedlimits import Allowance, Demand, SharedLimits

INITIAL_WINDOW = 4.0
_ORDER = itertools.count()


@dataclass(eq=False)
class Ticket:
    """One call's place: waiting in its job's line, then admitted (``sent_at``) until released."""

    job: object
    tokens: int
    order: int = field(default_factory=lambda: next(_ORDER))
    sent_at: float | None = None
    loop: Any = None
    future: Any = None


class Admission:
    """The scheduling of one worker's calls to one pool, with no threads or clocks of its own (not thread-safe)."""

    def __init__(self, *, requests_per_minute: int | None, tokens_per_minute: int | None, shared: bool,
                 now: float, window: float | None = None) -> None:
        self._configured = (requests_per_minute, tokens_per_minute)
        self._learned: tuple[int | None, int | None] = (None, None)
        # Without shared limits every unit is this worker's and so is the whole rate.
        self.units: float = 0 if shared else math.inf
        self.target: float = 0 if shared else math.inf
        self.fraction = 0.0 if shared else 1.0
        self.window = window if window is not None else math.inf if shared else INITIAL_WINDOW
        self._threshold = math.inf
        self._last_decrease = -math.inf
        self.paused_until = 0.0
        self._requests: TokenBucket | None = None
        self._tokens: TokenBucket | None = None
        self._lines: dict[object, deque[Ticket]] = {}
        self._in_flight: dict[object, int] = {}
        self.busy = 0
        self._rebuild(now)

    # --- what limits this worker ------------------------------------------------------------------------------------

    @property
    def tokens_per_minute(self) -> int | None:
        """The pool's tokens-per-minute limit, configured or stated by the provider (the lower one)."""
        return _lower(self._configured[1], self._learned[1])

    @property
    def requests_per_minute(self) -> int | None:
        return _lower(self._configured[0], self._learned[0])

    def share(self, allowance: Allowance, now: float) -> None:
        self.units, self.target, self.fraction = allowance.units, allowance.target, allowance.fraction
        self._rebuild(now)

    def learn(self, limits: ProviderLimits, now: float) -> None:
        learned = (limits.limit_requests or self._learned[0], limits.limit_tokens or self._learned[1])
        if learned != self._learned:
            self._learned = learned
            self._rebuild(now)

    def pause(self, until: float) -> None:
        self.paused_until = max(self.paused_until, until)

    def _rebuild(self, now: float) -> None:
        for name, limit in (("_requests", self.requests_per_minute), ("_tokens", self.tokens_per_minute)):
            bucket: TokenBucket | None = getattr(self, name)
            rate = 0.0 if limit is None else limit * self.fraction
            if limit is None:
                setattr(self, name, None)
            elif bucket is None:
                setattr(self, name, TokenBucket(rate, now))
            else:
                bucket.set_rate(rate, now)

    # --- calls ------------------------------------------------------------------------------------------------------

    def add(self, ticket: Ticket) -> None:
        self._lines.setdefault(ticket.job, deque()).append(ticket)

    def withdraw(self, ticket: Ticket) -> bool:
        """Take a waiting ticket out of its line; False when it was admitted already."""
        line = self._lines.get(ticket.job)
        if line is None or ticket not in line:
            return False
        line.remove(ticket)
        if not line:
            del self._lines[ticket.job]
        return True

    def admit(self, now: float) -> tuple[list[Ticket], float | None]:
        """The tickets that may go now, and when to look again (None: when something changes)."""
        admitted: list[Ticket] = []
        while self._lines:
            if now < self.paused_until:
                return admitted, self.paused_until
            if self.busy >= self.cap:
                return admitted, None
            # The job closest to its end goes first (its calls waiting and in flight): a job's reduce, a started
            # job's last maps and a small job all come before a long job's next map, which shortens a burst's tail
            # and a small job's wait without leaving a unit idle.
            job = min(self._lines, key=lambda j: (len(self._lines[j]) + self._in_flight.get(j, 0),
                                                  self._lines[j][0].order))
            ticket = self._lines[job][0]
            wait = max(self._requests.wait_for(1, now) if self._requests else 0.0,
                       self._tokens.wait_for(ticket.tokens, now) if self._tokens else 0.0)
            if wait > 0:
                return admitted, None if math.isinf(wait) else now + wait
            if self._requests:
                self._requests.take(1, now)
            if self._tokens:
                self._tokens.take(ticket.tokens, now)
            self.withdraw(ticket)
            self._in_flight[job] = self._in_flight.get(job, 0) + 1
            self.busy += 1
            ticket.sent_at = now
            admitted.append(ticket)
        return admitted, None

    @property
    def cap(self) -> float:
        """Calls this worker may have in flight now: its units, no more than its fair share, within the window."""
        window = self.window if math.isinf(self.window) else max(1.0, math.floor(self.window))
        return min(self.units, self.target, window)

    def done(self, ticket: Ticket, *, throttled: bool, now: float) -> None:
        """An admitted call ended; ``throttled``: the provider answered 429."""
        self.busy -= 1
        left = self._in_flight[ticket.job] - 1
        if left:
            self._in_flight[ticket.job] = left
        else:
            del self._in_flight[ticket.job]
        if throttled:
            # One decrease per congestion: calls sent before the last decrease saw the old window.
            if ticket.sent_at is not None and ticket.sent_at >= self._last_decrease:
                self.window = max(1.0, min(self.window, self.busy + 1) / 2)
                self._threshold = self.window
                self._last_decrease = now
        elif not math.isinf(self.window):
            self.window += 1.0 if self.window < self._threshold else 1.0 / self.window

    def demand(self) -> Demand:
        jobs = set(self._lines) | set(self._in_flight)
        return Demand(waiting=sum(len(line) for line in self._lines.values()), busy=self.busy, jobs=len(jobs))


def _lower(configured: int | None, learned: int | None) -> int | None:
    known = [limit for limit in (configured, learned) if limit]
    return min(known) if known else None


class CallGate:
    """One pool's gate in this worker: ``Admission`` behind a lock, for calls on any thread's event loop."""

    def __init__(self, *, requests_per_minute: int | None = None, tokens_per_minute: int | None = None,
                 shared: SharedLimits | None = None, window: float | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._admission = Admission(requests_per_minute=requests_per_minute, tokens_per_minute=tokens_per_minute,
                                    shared=shared is not None, now=clock(), window=window)
        self._shared = shared
        self._timer = threading.Condition(self._lock)
        self._wake_at: float | None = None
        self._thread: threading.Thread | None = None
        if shared is not None:
            shared.subscribe(self._on_share, hold=self._hold)
            shared.start()

    @property
    def tokens_per_minute(self) -> int | None:
        with self._lock:
            return self._admission.tokens_per_minute

    async def admit(self, job: object, *, tokens: int, deadline: float | None) -> Ticket:
        """Wait for this call's turn; ``Throttled`` when it would not come before ``deadline`` (monotonic)."""
        loop = asyncio.get_running_loop()
        ticket = Ticket(job, tokens, loop=loop, future=loop.create_future())
        with self._lock:
            self._admission.add(ticket)
        self._dispatch()
        try:
            if deadline is None:
                await ticket.future
            else:
                await asyncio.wait_for(ticket.future, timeout=max(0.0, deadline - self._clock()))
        except (TimeoutError, asyncio.CancelledError) as stopped:
            with self._lock:
                waiting = self._admission.withdraw(ticket)
            if not waiting:  # admitted in the meantime: the place is given back
                self.release(ticket)
            else:
                self._dispatch()
            if isinstance(stopped, asyncio.TimeoutError):
                raise Throttled("the LLM provider's limits, shared by every worker, leave this call no room "
                                "before the invocation ends") from None
            raise
        return ticket

    async def prime(self) -> None:
        """Read the shared limits' item now, unless this worker has a recent copy (see ``SharedLimits.prime``)."""
        if self._shared is not None:
            await asyncio.to_thread(self._shared.prime)

    def release(self, ticket: Ticket, *, throttled: bool = False) -> None:
        with self._lock:
            self._admission.done(ticket, throttled=throttled, now=self._clock())
        self._dispatch()

    def observe(self, limits: ProviderLimits) -> None:
        """What an answer's headers say: the provider's real limits, and a pause while one is exhausted."""
        with self._lock:
            self._admission.learn(limits, self._clock())
        wait = limits.exhausted_for()
        if wait:
            self.pause(wait)
        else:
            self._dispatch()

    def pause(self, seconds: float) -> None:
        """No call of this pool starts for ``seconds``, in this worker and, through the shared item, in every one."""
        with self._lock:
            self._admission.pause(self._clock() + seconds)
        if self._shared is not None:
            self._shared.publish_pause(self._wall() + seconds)
        self._dispatch()

    def settle(self) -> None:
        """The invocation ends: give this worker's unused units back to the others."""
        if self._shared is not None:
            self._shared.settle()

    def _on_share(self, allowance: Allowance) -> None:
        with self._lock:
            self._admission.share(allowance, self._clock())
            if allowance.paused_until > self._wall():
                self._admission.pause(self._clock() + allowance.paused_until - self._wall())
        self._dispatch()

    def _hold(self, units: int) -> int:
        """No call starts beyond ``units`` from now on (until the next share); returns the units in use, more than
        ``units`` while more calls are in flight (they keep theirs until they end)."""
        with self._lock:
            admission = self._admission
            admission.units = min(admission.units, units)
            return max(units, admission.busy)

    def _dispatch(self) -> None:
        with self._lock:
            admitted, wake = self._admission.admit(self._clock())
            demand = self._admission.demand()
            if wake is not None and (self._wake_at is None or wake < self._wake_at):
                self._wake_at = wake
                self._start_timer()
                self._timer.notify_all()
        for ticket in admitted:
            try:
                ticket.loop.call_soon_threadsafe(self._hand_over, ticket)
            except RuntimeError:  # its event loop is gone (the job ended): the place is given back
                self.release(ticket)
        if self._shared is not None:
            self._shared.want(demand)

    def _hand_over(self, ticket: Ticket) -> None:
        """On the waiting call's own loop: wake it, unless it stopped waiting meanwhile."""
        if not ticket.future.done():
            ticket.future.set_result(None)

    def _start_timer(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run_timer, name="llm-gate", daemon=True)
            self._thread.start()

    def _run_timer(self) -> None:
        while True:
            with self._lock:
                while self._wake_at is None or self._clock() < self._wake_at:
                    self._timer.wait(None if self._wake_at is None else self._wake_at - self._clock())
                self._wake_at = None
            self._dispatch()
