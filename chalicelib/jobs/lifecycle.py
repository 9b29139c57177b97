"""Every change of a job's state, in one place: the rules of when a job moves, and what its message does meanwhile.

A job goes QUEUED → RUNNING → SUCCEEDED | FAILED, and back to QUEUED only when its client retries a FAILED job.
SQS delivers at least once and a worker may die at any moment, so each move is a conditional write (``JobStore``)
and each delivery ends in one of two ways for its message: done with (deleted), or back on the queue at a moment
chosen here (``Message.AGAIN``). Who calls what::

    intake        open(job)                   a new job: its row QUEUED and its message sent, or neither
                  record_refused(job)         an upload refused after the fact: FAILED in the same write
    API           retry(job_id)               a client's retry: FAILED → QUEUED, and a new message
    worker        claim(job_id, ...)          QUEUED (or RUNNING with a dead worker's lease) → RUNNING: an Attempt
    heartbeat     hold(attempt, s), hide(d, s)  the lease and the message kept a few beats ahead, spend recorded
    pipeline      count_chunks, progress      what the job's row shows while it runs
                  succeed(attempt, ...)       RUNNING → SUCCEEDED
                  fail(attempt, failure, ...) RUNNING → FAILED, for a reason no retry can change
    worker        wait_for_holder(d)          another worker holds the job: the message waits for its lease
                  retry_or_fail(d, a, error)  an attempt failed: released for a later delivery, or FAILED on the last
                  defer(d, a, ...)            the LLM circuit is open, or the provider said to slow down: released
                                              and re-sent after the recovery window or the provider's wait
    dead letters  fail_dead_letter(job_id)    every delivery ended without an outcome: FAILED with the last reason
    worker        hand_over(a, arn)           a Step Functions execution carries the RUNNING job on (its message is
                                              done with; no later delivery can claim the job)
    workflow      adopt_execution(job_id,arn) the execution's first stage takes the job (if the worker died first)
                  enter_stage(job_id, ...)    where the execution is; None once the job has finished
                  workflow_chunks, succeed_workflow   the chunk count; RUNNING → SUCCEEDED
                  record_workflow(job_id,...) what a stage answered and spent
                  fail_execution(job_id, ...) a stage failed for good (its Catch), or the execution ended without an
                                              outcome (aborted, timed out): FAILED with the reason and the stage,
                                              unless a later run (the client's retry) carries the job

Every move into SUCCEEDED or FAILED is announced once, right after its write, as a ``Job Succeeded`` / ``Job
Failed`` event (``JobEvents``); an announcement that fails is logged and counted, and changes nothing of the job.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chalicelib.errors import JobFailure, ServiceUnavailable
from chalicelib.jobs.events import JobEvents
from chalicelib.jobs.model import RUNNING, Job
from chalicelib.jobs.queue import Delivery, JobQueue
from chalicelib.jobs.store import JobStore
from chalicelib.llm import Usage
from chalicelib.observability import logger, metrics

# A job waiting out an LLM outage gives up (FAILED llm_unavailable) once it is this old.
OUTAGE_MAX_WAIT_SECONDS = 6 * 3600
# SQS hides a message for at most 15 minutes per change of its visibility (and delays a new one as long).
_LONGEST_WAIT = 900


class Message(enum.Enum):
    """What becomes of the delivered message once the lifecycle has decided."""

    DONE = "done"      # delete it: the job has an outcome, or another message carries it on
    AGAIN = "again"    # keep it: it comes back when the visibility set here ends


@dataclass
class Attempt:
    """One delivery's hold on a job: the row as it was claimed and, once the pipeline meters it, what it spent."""

    job: Job
    usage: Usage | None = None
    prices: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def job_id(self) -> str:
        return self.job.job_id

    @property
    def number(self) -> int:
        """Which attempt this is (1 for the first claim): the key of its spend on the job's row."""
        return self.job.attempts

    def meter(self, usage: Usage, prices: Mapping[str, tuple[float, float]]) -> None:
        """From now on the heartbeat records ``usage``'s spend of this attempt on the job's row."""
        self.usage, self.prices = usage, prices

    def spent(self) -> dict[str, Any] | None:
        return None if self.usage is None else self.usage.attempt_spend(self.prices)


class Lifecycle:
    """The job rows of ``store`` and the messages of ``queue``, moved together by the rules above."""

    def __init__(self, store: JobStore, queue: JobQueue, *, retry_backoff_seconds: int, outage_wait_seconds: int,
                 events: JobEvents | None = None, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.queue = queue
        self.events = events
        self._backoff = retry_backoff_seconds
        self._outage_wait = min(_LONGEST_WAIT, outage_wait_seconds)
        self._clock = clock

    # --- starting -------------------------------------------------------------------------------------------------

    def open(self, job: Job) -> bool:
        """Record a new QUEUED job and queue it; False when a job with its id already exists (a repeat).

        A job the queue did not take would wait forever: it is withdrawn, so the client's (or S3's) retry creates it
        afresh, and the caller learns ``ServiceUnavailable``.
        """
        if not self.store.create(job):
            return False
        try:
            self.queue.send(job.job_id)
        except Exception as exc:
            self.store.withdraw(job.job_id)
            logger.exception("enqueue failed", extra={"job_id": job.job_id})
            raise ServiceUnavailable("the job could not be queued; retry the request") from exc
        return True

    def record_refused(self, job: Job) -> None:
        """Record a submission refused after the fact (an upload's bad metadata): FAILED with ``job.error`` at once,
        never queued."""
        if self.store.create(job):
            self._ended(dataclasses.replace(job, finished_at=job.created_at))  # as the row records it

    def retry(self, job_id: str) -> bool:
        """A client's retry: a FAILED job back to QUEUED, its error cleared, and queued again; False if not FAILED."""
        if self.store.requeue(job_id) is None:
            return False
        self.queue.send(job_id)
        return True

    # --- an attempt -----------------------------------------------------------------------------------------------

    def claim(self, job_id: str, *, lease_seconds: float) -> Attempt | None:
        """Take the job for this delivery: QUEUED, or RUNNING with an expired lease (its worker died).

        None when the job is finished or another live worker holds it (a duplicate delivery).
        """
        job = self.store.claim(job_id, lease_seconds)
        if job is None:
            current = self.store.get(job_id)
            logger.info("delivery skipped", extra={"job_status": current.status if current else None})
            return None
        return Attempt(job)

    def hold(self, attempt: Attempt, seconds: float) -> None:
        """The heartbeat: keep holding the job for ``seconds`` more, and record what the attempt has spent so far."""
        spent = attempt.spent()
        self.store.extend_lease(attempt.job_id, seconds, spend=None if spent is None else (attempt.number, spent))

    def hide(self, delivery: Delivery, seconds: int) -> None:
        """Keep ``delivery``'s message from coming back for ``seconds``."""
        self.queue.hide(delivery, seconds)

    def count_chunks(self, attempt: Attempt, total: int, warnings: list[str]) -> None:
        self.store.set_chunks_total(attempt.job_id, total, warnings)

    def progress(self, attempt: Attempt, chunks_done: int) -> None:
        self.store.record_progress(attempt.job_id, chunks_done)

    def succeed(self, attempt: Attempt, *, result_key: str, usage: dict[str, Any], warnings: list[str],
                timings: dict[str, float], chunks_total: int) -> bool:
        """RUNNING → SUCCEEDED; False when the job finished elsewhere while this attempt ran (its result is kept)."""
        stored = self.store.mark_succeeded(attempt.job_id, result_key=result_key, usage=usage, warnings=warnings,
                                           timings=timings, chunks_total=chunks_total)
        if stored is None:
            logger.warning("job finished elsewhere while this attempt ran; its result was kept")
            return False
        metrics.add_metric(name="JobsSucceeded", unit="Count", value=1)
        self._ended(stored)
        return True

    def hand_over(self, attempt: Attempt, *, execution_arn: str) -> bool:
        """The workflow execution ``execution_arn`` carries the job on; False if the job finished meanwhile (or its
        execution already took it over)."""
        if not self.store.hand_over(attempt.job_id, execution_arn=execution_arn):
            return False
        logger.info("job handed over to the workflow", extra={"execution_arn": execution_arn})
        metrics.add_metric(name="JobsToWorkflow", unit="Count", value=1)
        return True

    def adopt_execution(self, job_id: str, *, execution_arn: str) -> bool:
        """The execution's first stage takes the RUNNING job over, whether or not the worker lived to record the
        hand-over; False if another execution carries it."""
        return self.store.hand_over(job_id, execution_arn=execution_arn) or (
            (job := self.store.get(job_id)) is not None and job.execution_arn == execution_arn)

    def workflow_chunks(self, job_id: str, total: int, warnings: list[str]) -> None:
        self.store.set_chunks_total(job_id, total, warnings)

    def succeed_workflow(self, job_id: str, *, result_key: str, usage: dict[str, Any], warnings: list[str],
                         timings: dict[str, float], chunks_total: int) -> bool:
        """RUNNING → SUCCEEDED at the workflow's last stage; False when the job had finished already."""
        stored = self.store.mark_succeeded(job_id, result_key=result_key, usage=usage, warnings=warnings,
                                           timings=timings, chunks_total=chunks_total)
        if stored is None:
            return False
        metrics.add_metric(name="JobsSucceeded", unit="Count", value=1)
        self._ended(stored)
        return True

    def enter_stage(self, job_id: str, stage: str, *, task: int | None = None) -> Job | None:
        """The workflow reached ``stage`` (in task ``task``'s branch); None when the job is no longer RUNNING."""
        return self.store.set_stage(job_id, stage, task=task)

    def record_workflow(self, job_id: str, *, progress: dict[str, Any] | None = None,
                        spend: tuple[str, dict[str, Any]] | None = None) -> None:
        """A stage's progress and what it spent, shown while the job runs and counted against its budget."""
        self.store.record_workflow(job_id, progress=progress, spend=spend)

    def fail_execution(self, job_id: str, execution_arn: str, error: dict[str, Any]) -> bool:
        """The execution that carries the job ended without an outcome: FAILED with its reason. False when the job
        finished already, or a later run (after the client's retry) carries it."""
        failed = self.store.mark_failed_for_execution(job_id, execution_arn, error)
        if failed is None:
            return False
        logger.error("job failed: its workflow execution ended without an outcome",
                     extra={"job_id": job_id, "execution_arn": execution_arn, "error": error})
        metrics.add_metric(name="JobsFailed", unit="Count", value=1)
        self._ended(failed)
        return True

    def fail(self, attempt: Attempt, failure: JobFailure, *, usage: dict[str, Any], warnings: list[str]) -> None:
        """RUNNING → FAILED for a reason no retry can change, with what the attempt spent and found."""
        logger.warning("job failed", extra={"error": failure.to_dict()})
        self._ended(self.store.mark_failed(attempt.job_id, failure.to_dict(), usage=usage, warnings=warnings))
        metrics.add_metric(name="JobsFailed", unit="Count", value=1)

    # --- a delivery without an outcome ------------------------------------------------------------------------------

    def wait_for_holder(self, delivery: Delivery) -> Message:
        """A delivery of a job another worker holds comes back when that worker's lease ends.

        If the holder finishes first, that later delivery finds the job done and is deleted; if the holder died, it
        takes the job over. Deleting it now would leave a dead worker's job RUNNING for good.
        """
        job = self.store.get(delivery.job_id or "")
        if job is None or job.finished or job.execution_arn:
            # A workflow execution carries a handed-over job; its own end (or the sweep) decides the job's fate.
            return Message.DONE
        wait = max(1, int(job.lease_until - self._clock()) + 1)
        self.queue.hide(delivery, min(wait, _LONGEST_WAIT))
        logger.info("job held by another worker; this delivery waits for its lease", extra={"wait_seconds": wait})
        return Message.AGAIN

    def retry_or_fail(self, delivery: Delivery, attempt: Attempt | None, error: dict[str, str]) -> Message:
        """An attempt ended with ``error``: leave the message for another try, backing off — unless this was its
        last receive: then the job FAILS with ``error``."""
        job_id = delivery.job_id or ""
        self._keep_spend(attempt)
        if delivery.receives >= self.queue.max_receive_count():
            logger.error("job failed on its last delivery", extra={"error": error, "receives": delivery.receives})
            self._ended(self.store.mark_failed(job_id, error))
            metrics.add_metric(name="JobsFailed", unit="Count", value=1)
            return Message.DONE
        backoff = min(_LONGEST_WAIT, self._backoff * 2 ** (delivery.receives - 1))
        logger.warning("job attempt failed; SQS will deliver it again",
                       extra={"error": error, "receives": delivery.receives, "retry_in_seconds": backoff})
        self.store.release(job_id, error)
        metrics.add_metric(name="JobAttemptsRetried", unit="Count", value=1)
        self.queue.hide(delivery, backoff)
        return Message.AGAIN

    def defer(self, delivery: Delivery, attempt: Attempt | None, *, delay: float | None = None,
              reason: str | None = None) -> Message:
        """Put the job back on the queue, delayed: past the recovery window while the LLM circuit is open, or for
        ``delay`` seconds (the provider's Retry-After; None: the retry backoff) when the provider said to slow down
        (``reason``).

        A fresh message starts with a fresh receive count, so neither an outage nor throttling ever pushes jobs into
        the DLQ; the job's age bounds how long it may wait.
        """
        job_id = delivery.job_id or ""
        self._keep_spend(attempt)
        job = self.store.get(job_id)
        if job is None or job.finished:
            return Message.DONE
        if self._clock() - job.created_at > OUTAGE_MAX_WAIT_SECONDS:
            self._ended(self.store.mark_failed(job_id, {"code": "llm_unavailable", "message": "the LLM provider "
                                                        "stayed unavailable for hours; the job gave up"}))
            return Message.DONE
        if reason is None:
            wait = self._outage_wait
            why = "the LLM provider is failing"
        else:
            wait = min(_LONGEST_WAIT, max(1, math.ceil(self._backoff if delay is None else delay)))
            why = "the LLM provider asked to slow down"
        self.store.release(job_id, {"code": "llm_unavailable", "message": f"{why}; the job waits and tries again in "
                                                                          f"{wait} s"})
        self.queue.send(job_id, delay_seconds=wait)
        logger.warning(f"{why}: job deferred", extra={"delay_seconds": wait, "reason": (reason or "")[:300]})
        metrics.add_metric(name="JobsDeferred", unit="Count", value=1)
        return Message.DONE

    def fail_dead_letter(self, job_id: str) -> bool:
        """A message reached the DLQ (its worker died on every delivery): its job ends FAILED with the last reason.
        True when this call failed it."""
        job = self.store.get(job_id)
        if job is None or job.finished:
            return False
        if job.status == RUNNING and (job.lease_until > self._clock() or job.execution_arn):
            # A duplicate's copy ran out of deliveries while a live worker (or an execution) carries the job on.
            logger.info("dead letter for a job a live worker or execution holds; left to it", extra={"job_id": job_id})
            return False
        error = job.last_error or {"code": "delivery_exhausted",
                                   "message": "every delivery of this job ended without a result (the worker "
                                              "crashed or timed out)"}
        failed = self.store.mark_failed(job_id, error)
        if failed is None:
            return False
        logger.error("job failed from the dead-letter queue", extra={"job_id": job_id, "error": error})
        self._ended(failed)
        return True

    def _ended(self, job: Job | None) -> None:
        """Announce a job that has just ended (None: the write found it already ended, and so announced)."""
        if job is not None and self.events is not None:
            self.events.job_ended(job)

    def _keep_spend(self, attempt: Attempt | None) -> None:
        """An attempt that ends without an outcome keeps what it paid for on the job's row."""
        spent = None if attempt is None else attempt.spent()
        if attempt is None or spent is None:
            return
        try:
            self.store.record_spend(attempt.job_id, attempt.number, spent)
        except Exception as exc:  # the heartbeat's last record stands; the attempt's own error matters more
            logger.warning("could not record the attempt's spend", extra={"error": type(exc).__name__})
