"""The SQS worker: job messages in batches, the records of a batch side by side, partial batch failures reported.

The records of a batch run at once (Powertools' AsyncBatchProcessor), each on a thread of its own with its own
event loop: the fifth job of a batch starts with the first instead of after the four before it, and the time the
others spend waiting on the LLM is shared. Each record keeps its own heartbeat, its own outcome and the one deadline
of the invocation; its LLM calls take turns with the other records' on the worker's gate (``llm.gate``). One failing
job never forces the others of its batch to run again: the handler answers ``{"batchItemFailures": [...]}``, which
Lambda honours only when the event source mapping has ReportBatchItemFailures switched on (the deploy step does
that; Chalice cannot). A record whose message must come back is reported failed; when it comes back is decided by
``jobs.lifecycle``. When the batch is done, the worker gives back its unused share of the provider's limits: Lambda
freezes the container as soon as the handler returns.

The batch's messages are held (``BatchHeartbeat``) before the pipeline or Powertools' batch processor is imported:
a worker killed after its first beat strands its batch for a few heartbeats, not for the queue's visibility timeout.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from chalicelib.bootstrap import Services
from chalicelib.errors import CircuitOpen, Throttled, TransientError
from chalicelib.jobs import Attempt, BatchHeartbeat, Delivery, Heartbeat, Message
from chalicelib.observability import job_context, logger, metrics

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse


class _ComesBack(Exception):
    """Raised to the BatchProcessor for a record whose message must not be deleted (the lifecycle set when it comes
    back)."""


def handle_job_batch(event: dict[str, Any], context: Any, services: Services) -> PartialItemFailureResponse:
    records = event.get("Records", [])
    deliveries = [d for d in map(Delivery.of_event_record, records) if d is not None]
    with BatchHeartbeat(services.lifecycle, deliveries, interval=services.settings.heartbeat_seconds) as batch:
        from aws_lambda_powertools.utilities.batch import AsyncBatchProcessor, EventType, async_process_partial_response

        threads = ThreadPoolExecutor(max_workers=max(1, len(records)), thread_name_prefix="job")

        async def record_handler(record: Any) -> None:
            held = batch.started(record.receipt_handle)
            # A copy of the invocation's context per record (its function name, its trace): the record's job id is
            # then a key of its own log lines, and of no other record's.
            await asyncio.get_running_loop().run_in_executor(threads, contextvars.copy_context().run,
                                                             handle_job_record, record, context, services, held)

        # A batch that failed whole is still answered, not raised: it is an expected case.
        processor = AsyncBatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        try:
            return async_process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                                  context=context)
        finally:
            threads.shutdown(wait=True)
            services.llm.settle()


def handle_job_record(record: Any, context: Any, services: Services, held: bool = False) -> None:
    """One record. ``held``: the batch's heartbeat has just hidden its message, so its own first beat can wait."""
    delivery = Delivery.of(record)
    if delivery.job_id is None:
        # Not a docpipe job: no retry can fix it, so it is logged and dropped instead of cycling into the DLQ.
        logger.error("rejected a message that is not a docpipe job",
                     extra={"message_id": record.message_id, "body": record.body[:500]})
        metrics.add_metric(name="RejectedMessages", unit="Count", value=1)
        return
    with job_context(delivery.job_id):
        _handle_delivery(delivery.job_id, delivery, context, services, held)


def _handle_delivery(job_id: str, delivery: Delivery, context: Any, services: Services, held: bool) -> None:
    lifecycle = services.lifecycle
    deadline = time.monotonic() + context.get_remaining_time_in_millis() / 1000 if context else None
    attempt: Attempt | None = None
    try:
        with Heartbeat(lifecycle, delivery, interval=services.settings.heartbeat_seconds, held=held) as heartbeat:
            # The stage's LLM key, from its secret on AWS (cached across invocations; a rotated key arrives within
            # DOCPIPE_LLM_SECRET_MAX_AGE_SECONDS).
            services.llm.refresh()
            attempt = lifecycle.claim(job_id, lease_seconds=heartbeat.hold)
            if attempt is not None:
                heartbeat.track(attempt)
                from chalicelib.pipeline import run_job

                run_job(attempt, services, deadline=deadline)
        # Decided once the heartbeat has stopped, so that no beat hides the message again afterwards.
        message = Message.DONE if attempt is not None else lifecycle.wait_for_holder(delivery)
    except CircuitOpen:
        message = lifecycle.defer(delivery, attempt)
    except Throttled as exc:
        message = lifecycle.defer(delivery, attempt, delay=exc.retry_after, reason=exc.message)
    except TransientError as exc:
        message = lifecycle.retry_or_fail(delivery, attempt, exc.to_dict())
    except Exception as exc:
        logger.exception("job attempt crashed")
        message = lifecycle.retry_or_fail(delivery, attempt, {"code": "internal_error",
                                                             "message": f"{type(exc).__name__}: {str(exc)[:300]}"})
    if message is Message.AGAIN:
        raise _ComesBack(f"job {delivery.job_id} is delivered again later")
