"""The provider's limits as limits of the whole deployment: every worker's share held in one DynamoDB item.

An endpoint and model (a *pool*) allows ``capacity`` calls in flight (``DOCPIPE_LLM_MAX_IN_FLIGHT``), and its
requests and tokens per minute. Workers divide the capacity into *units*: a worker holding 3 units may have 3 calls
in flight, and sends its share of the requests and tokens per minute in proportion to its units. Who holds what is
one item (``VersionedItems``): each worker reads it, takes its fair share of what is free (``fair_shares``: by
jobs, never more than it can use), gives back what it holds above its share as its calls end, and writes its entry
only if nobody wrote in between. A worker's calls then take turns on its units without any further write.

Every entry is a lease: a worker renews it while it holds units, and one that dies or is frozen holding them
loses them ``LEASE_SECONDS`` later. A worker with nothing left to run gives its units back at once (after a short
linger for a job's next call, unless another worker is below its share), and at the end of each invocation
(``settle``), since Lambda freezes the container as soon as the handler returns. Units its calls no longer use go
back at once while another worker is below its share; before any unit goes back, the worker's gate stops starting
calls on it (``subscribe``'s ``hold``), so the item never gives another worker a unit a call still uses.

Reading instead of being told: a worker looks at the item every ``HOLDER_POLL_SECONDS`` while it holds units (to
give back what another worker's jobs now need) and every ``STARVED_POLL_SECONDS`` while it waits below its share,
or wants more than it holds while the workers' demand together is under twice the capacity (a burst's end, when
units come free as workers finish). So a one-chunk job that arrives while a 1,000-chunk job holds the whole
provider gets its unit within about one poll and one call. A job about to call the model has the item read ahead
(``prime``), beside its other first reads, so its worker's first change is one conditional write. When DynamoDB
cannot be reached, a worker falls back to ``fallback_units`` (the capacity divided by the most workers that may
run) until it can.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chalicelib.aws.versioned import Versioned, VersionedItems
from chalicelib.llm.fairshare import Claim, fair_shares
from chalicelib.observability import logger

LEASE_SECONDS = 15.0
RENEW_SECONDS = 5.0
HOLDER_POLL_SECONDS = 0.5
STARVED_POLL_SECONDS = 0.2
LINGER_SECONDS = 0.25
RETRY_SECONDS = 1.0
# Writes refused because another worker wrote first: each refusal returns the item as it is now, to decide again.
_WRITE_ATTEMPTS = 8
_ITEM_DAYS = 1


@dataclass(frozen=True)
class Demand:
    """What this worker's calls want now: ``waiting`` for a unit, ``busy`` on one, for ``jobs`` jobs."""

    waiting: int = 0
    busy: int = 0
    jobs: int = 0

    @property
    def calls(self) -> int:
        return self.waiting + self.busy


@dataclass(frozen=True)
class Allowance:
    """What this worker may do: ``units`` calls in flight (starting new ones only below ``target``, its fair share:
    units above it go back as their calls end), ``fraction`` of the pool's requests and tokens per minute, nothing
    before ``paused_until`` (epoch seconds; the provider said to wait)."""

    units: int
    target: int
    fraction: float
    paused_until: float = 0.0


@dataclass(frozen=True)
class Plan:
    """One decision on the item: its next state, and what it leaves this worker."""

    state: dict[str, Any]
    units: int
    target: int
    fraction: float
    paused_until: float
    write: bool
    others_short: bool = False  # another live worker holds fewer units than its fair share
    ending: bool = False  # every live worker's demand together is under twice the capacity (a burst's end)


def plan(state: dict[str, Any], *, me: str, capacity: int, demand: Demand, now: float, renew: bool = False,
         pause_until: float = 0.0) -> Plan:
    """This worker's next entry in the pool ``state`` (as read at wall-clock ``now``).

    Expired entries are dropped. The worker's share is computed from every live entry's claim and its own; it takes
    free units up to that share, and above it keeps only the units its calls are using. The item needs writing only
    when something another worker would decide differently on has changed (a demand above the share is as good as
    any other above it), when the lease needs renewing, or when the provider's pause is news.
    """
    holders: dict[str, dict[str, Any]] = state.get("holders", {})
    live = {name: entry for name, entry in holders.items() if name != me and entry["until"] > now}
    mine = holders.get(me) if holders.get(me, {}).get("until", 0) > now else None
    held = int(mine["units"]) if mine else 0
    wanted = min(capacity, demand.calls)
    claims = {name: Claim(int(e["demand"]), int(e["jobs"]), int(e["units"])) for name, e in live.items()}
    claims[me] = Claim(wanted, demand.jobs, held)
    shares = fair_shares(capacity, claims)
    target = shares[me]
    free = capacity - held - sum(int(e["units"]) for e in live.values())
    units = held + max(0, min(target - held, free)) if target > held else max(target, demand.busy)
    entry = {"units": units, "demand": wanted, "jobs": demand.jobs} if units or wanted else None
    stored_pause = float(state.get("paused_until", 0.0))
    paused_until = max(stored_pause, pause_until)
    new_holders = dict(live)
    if entry is not None:
        new_holders[me] = {**entry, "until": round(now + LEASE_SECONDS, 3)}
    write = (not _same_claim(mine, entry, target) or (me in holders and mine is None)
             or len(live) != len(holders) - (me in holders) or (renew and entry is not None)
             or (paused_until > stored_pause and paused_until > now))
    total = sum(int(e["units"]) for e in new_holders.values())
    return Plan(state={"holders": new_holders, "paused_until": paused_until}, units=units, target=target,
                fraction=units / total if units else 0.0, paused_until=paused_until, write=write,
                others_short=any(shares[name] > claim.held for name, claim in claims.items() if name != me),
                ending=sum(claim.demand for claim in claims.values()) < 2 * capacity)


def _held(state: dict[str, Any], me: str, now: float) -> int:
    entry = state.get("holders", {}).get(me)
    return int(entry["units"]) if entry and entry["until"] > now else 0


def _same_claim(old: dict[str, Any] | None, new: dict[str, Any] | None, target: int) -> bool:
    if old is None or new is None:
        return old is None and new is None
    if (int(old["units"]), int(old["jobs"])) != (new["units"], new["jobs"]):
        return False
    return int(old["demand"]) == new["demand"] or min(int(old["demand"]), new["demand"]) >= target


@dataclass
class _Local:
    """What this worker knows between reads (guarded by ``SharedLimits._lock``)."""

    demand: Demand = Demand()
    units: int = 0
    target: int | None = None
    claimed: int = 0  # the demand ``target`` was decided for: a larger one may deserve a larger share
    idle_since: float | None = None
    last_sync: float = 0.0
    last_write: float = 0.0
    urgent: bool = False
    # From the item as last seen: another worker holds less than its share; the workers' demand together is under
    # twice the capacity (shares move as workers finish).
    others_waiting: bool = False
    ending: bool = False
    pause_until: float = 0.0
    settled: threading.Event = field(default_factory=threading.Event)


class SharedLimits:
    """This worker's share of the pool ``key`` in ``items``, kept by a background thread once ``start()`` is called.

    ``subscribe(callback)`` hands every new ``Allowance`` to the admission of this worker's calls
    (``llm.gate.CallGate``), which reports what its calls want through ``want(demand)``. ``sync()`` is one round of
    reading and writing the item; the thread calls it when due, tests call it directly.
    """

    def __init__(self, items: VersionedItems, key: str, *, capacity: int, fallback_units: int,
                 clock: Callable[[], float] = time.time, owner: str | None = None) -> None:
        self.key = key
        self.capacity = capacity
        self.owner = owner or uuid.uuid4().hex[:12]
        self._items = items
        self._fallback = max(1, min(capacity, fallback_units))
        self._clock = clock
        self._lock = threading.Condition()
        self._local = _Local()
        self._listeners: list[Callable[[Allowance], None]] = []
        self._hold: Callable[[int], int] = lambda units: units
        self._started = False
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._failing_since: float | None = None
        self._seen: Versioned | None = None  # the item as this worker last read or wrote it
        self._seen_at = 0.0

    def subscribe(self, listener: Callable[[Allowance], None], *, hold: Callable[[int], int] | None = None) -> None:
        """``listener`` gets every new ``Allowance``. ``hold(units)``, called before units are given back, stops
        this worker's calls from starting beyond ``units`` at once and returns what they now use (more than
        ``units`` when more calls are already in flight): only that is written, so a unit is never given to another
        worker while a call started meanwhile still uses it."""
        self._listeners.append(listener)
        if hold is not None:
            self._hold = hold

    def want(self, demand: Demand) -> None:
        """What this worker's calls want now. A change that needs the item at once (more units while below the
        share, units above the share to give back) wakes the thread; otherwise the next poll carries it."""
        with self._lock:
            local = self._local
            before, local.demand = local.demand, demand
            if demand.calls == 0:
                if local.idle_since is None:
                    local.idle_since = self._clock()
            else:
                local.idle_since = None
                local.settled.clear()
            asks = min(self.capacity, demand.calls) > local.claimed >= min(self.capacity, before.calls)
            if (demand.calls > local.units and self._may_grow() and (before.calls <= local.units or asks)) or \
                    (local.target is not None and local.units > max(local.target, demand.busy)) or \
                    (local.others_waiting and local.units > demand.calls):
                local.urgent = True
            if demand != before:
                self._wake()

    def publish_pause(self, until: float) -> None:
        """Every worker holds back until ``until`` (epoch seconds): the provider asked one of them to wait."""
        with self._lock:
            if until > self._local.pause_until:
                self._local.pause_until = until
                self._local.urgent = True
                self._wake()

    def settle(self, timeout: float = 2.0) -> None:
        """Give back every unit not in use now: the invocation ends, and a frozen container cannot."""
        with self._lock:
            local = self._local
            if local.units == 0 or local.demand.calls or self._thread is None:
                return
            local.idle_since = self._clock() - LINGER_SECONDS
            local.urgent = True
            local.settled.clear()
            self._wake()
        local.settled.wait(timeout)

    def prime(self) -> None:
        """Read the item ahead of this worker's first want (a job is about to call the model): the first change is
        then written onto this copy at once. A copy younger than a poll is kept; an unreadable item is left to
        ``sync``'s own handling."""
        with self._lock:
            if self._seen is not None and self._clock() - self._seen_at < HOLDER_POLL_SECONDS:
                return
        now = self._clock()
        try:
            seen = self._items.read(self.key)
        except Exception:  # sync reads again, and falls back if it must
            return
        with self._lock:  # a copy the limits thread read or wrote meanwhile may be newer
            if self._seen is None or seen.version > self._seen.version or now - self._seen_at > LEASE_SECONDS:
                self._seen, self._seen_at = seen, now

    def sync(self) -> Allowance:
        """One round: read the item, decide, write if anything changed; returns what this worker may do now."""
        now = self._clock()
        with self._lock:
            local = self._local
            demand = local.demand
            if demand.calls == 0 and local.idle_since is not None and now - local.idle_since < LINGER_SECONDS \
                    and not local.others_waiting:
                demand = Demand(busy=local.units, jobs=1)  # kept a moment for the job's next call (map, reduce)
            pause = local.pause_until
            renew = now - local.last_write > RENEW_SECONDS
            urgent, local.urgent = local.urgent, False
        try:
            allowance = self._decide(demand, now, renew, pause, urgent)
        except Exception as exc:  # DynamoDB unreachable or throttled: work on alone, politely, and retry
            allowance = self._fall_back(exc, demand)
        with self._lock:
            local.units = allowance.units
            local.claimed = min(self.capacity, demand.calls)
            local.last_sync = now
            if allowance.units == 0 and local.demand.calls == 0:
                local.settled.set()
        for listener in self._listeners:
            listener(allowance)
        return allowance

    def _decide(self, demand: Demand, now: float, renew: bool, pause: float, urgent: bool = False) -> Allowance:
        # A change of this worker's own (more units wanted, units to give back) is written onto the item as last seen,
        # without reading it first: a refused write returns the item as it is now, to decide again.
        # Only a recent copy: an item idle long enough to expire restarts its versions, and an old copy could match.
        with self._lock:
            seen, seen_at, using = self._seen, self._seen_at, self._local.units
        fresh = not urgent or seen is None or now - seen_at > LEASE_SECONDS
        current = self._items.read(self.key) if fresh or seen is None else seen
        for _ in range(_WRITE_ATTEMPTS):
            decided = plan(current.state, me=self.owner, capacity=self.capacity, demand=demand, now=now,
                           renew=renew, pause_until=pause)
            # Giving units back (or holding fewer than the gate uses, after a fallback): first stop using them,
            # then write what is still used.
            if decided.units < max(_held(current.state, self.owner, now), using):
                used = self._hold(decided.units)
                if used > decided.units:
                    demand = Demand(waiting=demand.waiting, busy=used, jobs=demand.jobs)
                    decided = plan(current.state, me=self.owner, capacity=self.capacity, demand=demand, now=now,
                                   renew=renew, pause_until=pause)
            if not decided.write:
                if fresh:
                    break
                current, fresh = self._items.read(self.key), True  # nothing to write on the old item: look again
                continue
            written, current = self._items.replace(self.key, decided.state, version=current.version,
                                                   expires_at=int(now) + _ITEM_DAYS * 86_400)
            fresh = True
            if written:
                with self._lock:
                    self._local.last_write = now
                break
        else:  # the item is too busy this round: keep what the item says this worker holds, and look again soon
            held = _held(current.state, self.owner, now)
            decided = dataclasses.replace(decided, units=held, target=held, write=False, others_short=False)
        with self._lock:
            self._seen, self._seen_at = current, now
            self._local.target = decided.target
            self._local.others_waiting = decided.others_short
            self._local.ending = decided.ending
        if self._failing_since is not None:
            logger.info("shared LLM limits reachable again", extra={"pool": self.key})
            self._failing_since = None
        return Allowance(decided.units, decided.target, decided.fraction, decided.paused_until)

    def _fall_back(self, exc: Exception, demand: Demand) -> Allowance:
        if self._failing_since is None:
            self._failing_since = self._clock()
            logger.warning("shared LLM limits unreachable: this worker keeps to its fallback share",
                           extra={"pool": self.key, "units": self._fallback, "error": type(exc).__name__})
        units = self._fallback if demand.calls else 0
        with self._lock:
            self._local.target = units
        return Allowance(units, units, units / self.capacity)

    # --- the thread ------------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Keep the share from now on: a thread looks at the item whenever this worker's calls need it to."""
        with self._lock:
            self._started = True

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._lock.notify_all()

    def _wake(self) -> None:
        """(Lock held.) Let the thread look at what changed; started on first need, so a worker that never calls the
        model never has one."""
        if self._started and self._thread is None and not self._stopped:
            self._thread = threading.Thread(target=self._run, name=f"llm-limits-{self.owner}", daemon=True)
            self._thread.start()
        self._lock.notify_all()

    def _next_due(self) -> float | None:
        """When the item must be looked at next (on ``clock``), None while this worker has no part in it."""
        local = self._local
        if local.demand.calls == 0:
            if local.units == 0:
                return None
            return (local.idle_since or local.last_sync) + LINGER_SECONDS
        if self._failing_since is not None:
            return local.last_sync + RETRY_SECONDS
        # Below its share, or at a burst's end (units come free as other workers finish): looked at more often.
        poll = STARVED_POLL_SECONDS if local.demand.calls > local.units and (self._may_grow() or local.ending) \
            else HOLDER_POLL_SECONDS
        return local.last_sync + min(poll, RENEW_SECONDS)

    def _may_grow(self) -> bool:
        """(Lock held.) Whether more units may come: below the share, or asking for more than the share was decided
        for (a worker whose first job wanted 8 units got a share of 8, and its next jobs want more)."""
        local = self._local
        return local.target is None or local.units < local.target or \
            min(self.capacity, local.demand.calls) > local.claimed

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stopped:
                    due = self._next_due()
                    now = self._clock()
                    if self._local.urgent or (due is not None and now >= due):
                        break
                    self._lock.wait(None if due is None else due - now)
                if self._stopped:
                    return
            self.sync()


def pool_key(base_url: str | None, model: str) -> str:
    """The item of one endpoint and model: the limits are the provider's, per model, whoever calls it."""
    import hashlib

    endpoint = hashlib.sha256((base_url or "https://api.openai.com/v1").encode()).hexdigest()[:16]
    return f"llm-limits#{endpoint}#{model}"

