"""The SQS side: job messages in batches, partial batch failures, and the dead-letter backstop.

Each record is handled on its own (Powertools BatchProcessor), so one failing job never forces the others of its
batch to run again; the handler answers ``{"batchItemFailures": [...]}``, which Lambda honours only when the event
source mapping has ReportBatchItemFailures switched on (the deploy step does that; Chalice cannot).
"""

from __future__ import annotations

import json
from typing import Any

from chalicelib.errors import TransientError
from chalicelib.intake import JOB_ID_PATTERN
from chalicelib.observability import logger, metrics
from chalicelib.pipeline import process_job
from chalicelib.services import Services

# A job whose worker dies keeps its lease this much past the invocation's end before another delivery may take it.
# The lease (at most twice the function timeout) stays shorter than the queue's visibility timeout (six times the
# function timeout), so a redelivered message always finds the lease of a dead worker expired.
LEASE_MARGIN_SECONDS = 30


def job_id_from(body: str) -> str | None:
    """The job id of a well-formed job message, else None."""
    try:
        message = json.loads(body)
    except ValueError:
        return None
    job_id = message.get("job_id") if isinstance(message, dict) else None
    return job_id if isinstance(job_id, str) and JOB_ID_PATTERN.match(job_id) else None


def handle_job_batch(event: dict[str, Any], context: Any, services: Services) -> dict[str, Any]:
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

    def record_handler(record: Any) -> None:
        handle_job_record(record, context, services)

    return process_partial_response(event=event, record_handler=record_handler,
                                    processor=BatchProcessor(event_type=EventType.SQS), context=context)


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
    remaining = context.get_remaining_time_in_millis() / 1000 if context else 900
    try:
        process_job(job_id, services, lease_seconds=remaining + min(LEASE_MARGIN_SECONDS, remaining))
    except TransientError as exc:
        _retry_or_fail(job_id, exc.to_dict(), receives, services)
    except Exception as exc:
        logger.exception("job attempt crashed")
        _retry_or_fail(job_id, {"code": "internal_error", "message": f"{type(exc).__name__}: {str(exc)[:300]}"},
                       receives, services)


def _retry_or_fail(job_id: str, error: dict[str, str], receives: int, services: Services) -> None:
    """Leave the message for another try — unless this was its last receive, then the job ends FAILED here."""
    if receives >= services.queue.max_receive_count():
        logger.error("job failed on its last delivery", extra={"error": error, "receives": receives})
        services.jobs.mark_failed(job_id, error)
        metrics.add_metric(name="JobsFailed", unit="Count", value=1)
        return
    logger.warning("job attempt failed; SQS will deliver it again", extra={"error": error, "receives": receives})
    services.jobs.release(job_id, error)
    raise TransientError(error["code"], error["message"])


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
        error = job.last_error or {"code": "delivery_exhausted",
                                   "message": "every delivery of this job ended without a result (the worker "
                                              "crashed or timed out)"}
        if services.jobs.mark_failed(job_id, error):
            logger.error("job failed from the dead-letter queue", extra={"job_id": job_id, "error": error})
