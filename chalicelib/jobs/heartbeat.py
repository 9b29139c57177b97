"""While a batch is in a worker's hands, its messages and its running job's lease stay held a few beats ahead.

A running job then never gets redelivered while its worker is alive, however long it runs, and a job whose worker
died is taken over within ``LEASE_BEATS`` beats instead of after the queue's long visibility timeout (six times the
worker's timeout, as AWS recommends). The messages of a batch that wait their turn are held the same way, so a
worker that dies mid-batch strands none of them for that long::

    with BatchHeartbeat(lifecycle, deliveries, interval=20) as batch:     # its first beat at once
        for delivery in deliveries:
            held = batch.started(delivery.receipt_handle)
            with Heartbeat(lifecycle, delivery, interval=20, held=held) as beat:  # the message, the lease once claimed
                beat.track(lifecycle.claim(...))
"""

from __future__ import annotations

import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from chalicelib.jobs.lifecycle import Attempt, Lifecycle
from chalicelib.jobs.queue import Delivery
from chalicelib.observability import logger

# Heartbeats a job may miss before its lease (and its message's visibility) lapse and another delivery takes over.
LEASE_BEATS = 3


def hold_seconds(interval: float) -> int:
    """How far ahead each beat holds a message and a lease."""
    return int(LEASE_BEATS * interval)


class _Beating:
    """A daemon thread that calls ``beat()`` every ``interval`` seconds between ``__enter__`` and ``__exit__``."""

    def __init__(self, name: str, interval: float, *, held: bool = False) -> None:
        self._interval = interval
        self._held = held
        self._stop = threading.Event()
        # With the context it was made in: what a beat logs carries the job's id.
        self._thread = threading.Thread(target=contextvars.copy_context().run, args=(self._run,), name=name,
                                        daemon=True)

    def __enter__(self) -> Any:
        # The first beat at once: from the start, a message stays hidden exactly as long as a lease holds. Unless a
        # beat less than one interval old already holds it that long: the next one is then soon enough.
        if not self._held:
            self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.beat()

    def beat(self) -> None:
        raise NotImplementedError


class BatchHeartbeat(_Beating):
    """The messages of a batch that wait their turn stay hidden only a few beats ahead, like a running one.

    Records of a batch run one after another; without this, the later ones would keep the queue's long visibility
    timeout and, if the worker died, come back only after it.
    """

    def __init__(self, lifecycle: Lifecycle, deliveries: list[Delivery], *, interval: float) -> None:
        super().__init__("batch-heartbeat", interval)
        self._lifecycle = lifecycle
        self._hold = hold_seconds(interval)
        self._pending = {d.receipt_handle: d for d in deliveries}
        self._lock = threading.Lock()

    def started(self, receipt_handle: str) -> bool:
        """The record with this receipt handle is running now: its own ``Heartbeat`` holds it from here. True if this
        heartbeat held it until now (its last beat, less than an interval ago, holds it for ``LEASE_BEATS``)."""
        with self._lock:
            return self._pending.pop(receipt_handle, None) is not None

    def beat(self) -> None:
        with self._lock:
            pending = list(self._pending.values())
        if len(pending) < 2:
            for delivery in pending:
                self._lifecycle.hide(delivery, self._hold)  # a missed beat only means that message comes back later
            return
        # All at once: every record of the batch waits for this first beat before it starts. (IAM grants the batch
        # call under ChangeMessageVisibility, but policy linters and the emulator's IAM know only the single one.)
        with ThreadPoolExecutor(max_workers=len(pending), thread_name_prefix="batch-beat") as beats:
            for delivery in pending:
                beats.submit(self._lifecycle.hide, delivery, self._hold)


class Heartbeat(_Beating):
    """While a job runs: keep its message hidden and, once claimed, its lease held and its spend recorded."""

    def __init__(self, lifecycle: Lifecycle, delivery: Delivery, *, interval: float, held: bool = False) -> None:
        super().__init__(f"heartbeat-{delivery.job_id}", interval, held=held)
        self._lifecycle = lifecycle
        self._delivery = delivery
        self._hold = hold_seconds(interval)
        self._attempt: Attempt | None = None

    @property
    def hold(self) -> int:
        """Seconds each beat holds the message and the lease for: the lease a claim should take."""
        return self._hold

    def track(self, attempt: Attempt) -> None:
        """Hold ``attempt``'s lease with every beat from now on, and record what it has spent."""
        self._attempt = attempt

    def beat(self) -> None:
        # The lease first, then the message: a message that comes back always finds the lease it outlived expired.
        if self._attempt is not None:
            try:
                self._lifecycle.hold(self._attempt, self._hold)
            except Exception as exc:  # a missed beat is survivable; the next one tries again
                logger.warning("heartbeat failed", extra={"job_id": self._attempt.job_id, "reason": str(exc)[:200]})
        self._lifecycle.hide(self._delivery, self._hold)
