"""The SQS side: job messages in batches, partial batch failures, and the dead-letter backstop.

Each record is handled on its own (Powertools BatchProcessor), so one failing job never forces the others of its
batch to run again; the handler answers ``{"batchItemFailures": [...]}``, which Lambda honours only when the event
source mapping has ReportBatchItemFailures switched on (the deploy step does that; Chalice cannot).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable

from chalicelib.aws import clients as aws
from chalicelib.errors import CircuitOpen, TransientError
from chalicelib.jobs.intake import JOB_ID_PATTERN
from chalicelib.observability import logger, metrics
from chalicelib.pipeline.run import process_job
from chalicelib.bootstrap import Services

# Heartbeats a job may miss before its lease (and its message's visibility) lapse and another delivery takes over.
LEASE_BEATS = 3
# A job waiting out an LLM outage gives up (FAILED llm_unavailable) once it is this old.
OUTAGE_MAX_WAIT_SECONDS = 6 * 3600


def job_id_from(body: str) -> str | None:
    """The job id of a well-formed job message, else None."""
    try:
        message = json.loads(body)
    except ValueError:
        return None
    job_id = message.get("job_id") if isinstance(message, dict) else None
    return job_id if isinstance(job_id, str) and JOB_ID_PATTERN.fullmatch(job_id) else None


def handle_job_batch(event: dict[str, Any], context: Any, services: Services) -> dict[str, Any]:
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

    waiting = Waiting(services, event.get("Records", []), interval=services.settings.heartbeat_seconds)

    def record_handler(record: Any) -> None:
        waiting.started(record.receipt_handle)
        handle_job_record(record, context, services)

    # A batch that failed whole is still answered, not raised: it is an expected case.
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    with waiting:
        return process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                        context=context)


def handle_job_record(record: Any, context: Any, services: Services) -> None:
    logger.remove_keys(["job_id"])
    job_id = job_id_from(record.body)
    if job_id is None:
        # Not a docpipe job: no retry can fix it, so it is logged and dropped instead of cycling into the DLQ.
        logger.error("rejected a message that is not a docpipe job",
                     extra={"message_id": record.message_id, "body": record.body[:500]})
        metrics.add_metric(name="RejectedMessages", unit="Count", value=1)
        return
    logger.append_keys(job_id=job_id)
    receives = int(record.attributes.approximate_receive_count or 1)
    interval = services.settings.heartbeat_seconds
    heartbeat = Heartbeat(services, job_id, queue_url=aws.queue_url(record.event_source_arn.rsplit(":", 1)[-1]),
                          receipt_handle=record.receipt_handle, interval=interval)
    deadline = time.monotonic() + context.get_remaining_time_in_millis() / 1000 if context else None
    try:
        with heartbeat:
            # The stage's LLM key, from its secret on AWS (cached across invocations; a rotated key arrives within
            # DOCPIPE_LLM_SECRET_MAX_AGE_SECONDS).
            services.refresh_llm_endpoint()
            outcome = process_job(job_id, services, lease_seconds=LEASE_BEATS * interval, deadline=deadline,
                                  on_claim=heartbeat.record_spend_from)
        if outcome == "skipped":
            _leave_to_live_worker(job_id, services, heartbeat)
    except JobBusy:
        raise
    except CircuitOpen:
        _wait_out_outage(job_id, services)
    except TransientError as exc:
        _retry_or_fail(job_id, exc.to_dict(), receives, services, heartbeat)
    except Exception as exc:
        logger.exception("job attempt crashed")
        _retry_or_fail(job_id, {"code": "internal_error", "message": f"{type(exc).__name__}: {str(exc)[:300]}"},
                       receives, services, heartbeat)


def _retry_or_fail(job_id: str, error: dict[str, str], receives: int, services: Services,
                   heartbeat: "Heartbeat") -> None:
    """Leave the message for another try, backing off — unless this was its last receive: then the job FAILS."""
    if receives >= services.queue.max_receive_count():
        logger.error("job failed on its last delivery", extra={"error": error, "receives": receives})
        services.jobs.mark_failed(job_id, error)
        metrics.add_metric(name="JobsFailed", unit="Count", value=1)
        return
    backoff = min(900, services.settings.retry_backoff_seconds * 2 ** (receives - 1))
    logger.warning("job attempt failed; SQS will deliver it again",
                   extra={"error": error, "receives": receives, "retry_in_seconds": backoff})
    services.jobs.release(job_id, error)
    metrics.add_metric(name="JobAttemptsRetried", unit="Count", value=1)
    heartbeat.hide_message(backoff)
    raise TransientError(error["code"], error["message"])


class JobBusy(TransientError):
    """Another worker holds the job: this delivery must neither run it nor be deleted."""


def _leave_to_live_worker(job_id: str, services: Services, heartbeat: "Heartbeat") -> None:
    """A delivery of a job another worker holds comes back when that worker's lease ends.

    If the holder finishes first, that later delivery finds the job done and is deleted; if the holder died, it
    takes the job over. Deleting it now would leave a dead worker's job RUNNING for good.
    """
    job = services.jobs.get(job_id)
    if job is None or job.finished:
        return
    wait = max(1, int(job.lease_until - time.time()) + 1)
    heartbeat.hide_message(min(wait, 900))
    logger.info("job held by another worker; this delivery waits for its lease", extra={"wait_seconds": wait})
    raise JobBusy("job_busy", f"job {job_id} is held by another worker")


def _wait_out_outage(job_id: str, services: Services) -> None:
    """The LLM circuit is open: put the job back on the queue, delayed past the recovery window.

    A fresh message starts with a fresh receive count, so an outage never pushes jobs into the DLQ; the job's age
    bounds how long it may wait.
    """
    job = services.jobs.get(job_id)
    if job is None or job.finished:
        return
    if time.time() - job.created_at > OUTAGE_MAX_WAIT_SECONDS:
        services.jobs.mark_failed(job_id, {"code": "llm_unavailable", "message": "the LLM provider stayed "
                                           "unavailable for hours; the job gave up"})
        return
    delay = min(900, services.settings.breaker_recovery_seconds)
    services.jobs.release(job_id, {"code": "llm_unavailable", "message": f"the LLM provider is failing; the job "
                                   f"waits and tries again in {delay} s"})
    services.queue.send(job_id, delay_seconds=delay)
    logger.warning("LLM circuit open: job deferred", extra={"delay_seconds": delay})
    metrics.add_metric(name="JobsDeferred", unit="Count", value=1)


class Waiting:
    """The messages of a batch that wait their turn stay hidden only a few beats ahead, like a running one.

    Records of a batch run one after another; without this, the later ones would keep the queue's long visibility
    timeout and, if the worker died, come back only after it.
    """

    def __init__(self, services: Services, records: list[dict[str, Any]], *, interval: float) -> None:
        self._services = services
        self._pending = {r["receiptHandle"]: r["eventSourceARN"].rsplit(":", 1)[-1]
                         for r in records if r.get("receiptHandle") and r.get("eventSourceARN")}
        self._lock = threading.Lock()
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="batch-heartbeat", daemon=True)

    def started(self, receipt_handle: str) -> None:
        with self._lock:
            self._pending.pop(receipt_handle, None)

    def __enter__(self) -> "Waiting":
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._beat()

    def _beat(self) -> None:
        with self._lock:
            pending = list(self._pending.items())
        for receipt_handle, queue_name in pending:
            try:
                self._services.queue.sqs.change_message_visibility(
                    QueueUrl=aws.queue_url(queue_name), ReceiptHandle=receipt_handle,
                    VisibilityTimeout=int(LEASE_BEATS * self._interval))
            except Exception as exc:  # a missed beat only means that message comes back later
                logger.warning("batch heartbeat failed", extra={"reason": str(exc)[:200]})


class Heartbeat:
    """While a job runs: keep its SQS message hidden and its lease held, a few beats ahead.

    A job then never gets redelivered while its worker is alive, however long it runs, and a job whose worker died
    is taken over within ``LEASE_BEATS`` beats instead of after the queue's long visibility timeout.
    """

    def __init__(self, services: Services, job_id: str, *, queue_url: str, receipt_handle: str,
                 interval: float) -> None:
        self._services = services
        self._job_id = job_id
        self._queue_url = queue_url
        self._receipt_handle = receipt_handle
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)
        self._spend: Callable[[], tuple[int, dict[str, Any]]] | None = None

    def record_spend_from(self, spend: Callable[[], tuple[int, dict[str, Any]]]) -> None:
        """Record ``spend()`` — (attempt, what it spent) — with every beat from now on."""
        self._spend = spend

    def __enter__(self) -> "Heartbeat":
        # The first beat at once: from the start, the message stays hidden exactly as long as the lease holds.
        self.hide_message(int(LEASE_BEATS * self._interval))
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def hide_message(self, seconds: int) -> None:
        """Set when the message comes back (a failed attempt's backoff), instead of the queue's long default."""
        try:
            self._services.queue.sqs.change_message_visibility(
                QueueUrl=self._queue_url, ReceiptHandle=self._receipt_handle, VisibilityTimeout=seconds)
        except Exception as exc:  # then the queue's visibility timeout applies: later, but still redelivered
            logger.warning("could not set the retry delay", extra={"reason": str(exc)[:200]})

    def _run(self) -> None:
        hold = int(LEASE_BEATS * self._interval)
        while not self._stop.wait(self._interval):
            self.hide_message(hold)
            try:
                self._services.jobs.extend_lease(self._job_id, hold,
                                                 spend=self._spend() if self._spend is not None else None)
            except Exception as exc:  # a missed beat is survivable; the next one tries again
                logger.warning("heartbeat failed", extra={"job_id": self._job_id, "reason": str(exc)[:200]})


def handle_dead_letters(event: dict[str, Any], services: Services) -> None:
    """A message reached the DLQ (its worker died on every delivery): its job ends FAILED with the last reason."""
    for record in event.get("Records", []):
        job_id = job_id_from(record.get("body", ""))
        if job_id is None:
            logger.error("dead letter that is not a docpipe job", extra={"body": record.get("body", "")[:500]})
            continue
        job = services.jobs.get(job_id)
        if job is None or job.finished:
            continue
        if job.status == "RUNNING" and job.lease_until > time.time():
            # A duplicate's copy ran out of deliveries while a live worker holds the job: that worker finishes it.
            logger.info("dead letter for a job a live worker holds; left to it", extra={"job_id": job_id})
            continue
        error = job.last_error or {"code": "delivery_exhausted",
                                   "message": "every delivery of this job ended without a result (the worker "
                                              "crashed or timed out)"}
        if services.jobs.mark_failed(job_id, error):
            logger.error("job failed from the dead-letter queue", extra={"job_id": job_id, "error": error})
