"""The Step Functions workflow's stage functions: each turns its state (the ASL's ``Parameters``) into a call to
``pipeline.workflow`` and docpipe's errors into the error names the state machine retries or catches.

Error names (a Lambda error's ``errorType`` is its exception's class name), as infra/workflow.asl.json uses them:
``StageRetryable`` (a ``TransientError``: retried with back-off), ``StageFailed`` (a ``JobFailure``: caught at once,
the job FAILED), ``RunSuperseded`` (the job finished or a later run carries it: the execution ends, the job is left
alone). Any other exception is a crash, retried as Step Functions retries ``States.TaskFailed``. The message of the
first two is docpipe's error as JSON, which the failure stage turns back into the job's ``error``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from chalicelib.bootstrap import Services
from chalicelib.errors import JobFailure, TransientError
from chalicelib.observability import job_context, logger, metrics


class StageRetryable(Exception):
    pass


class StageFailed(Exception):
    pass


class RunSuperseded(Exception):
    pass


def _deadline(context: Any) -> float | None:
    return time.monotonic() + context.get_remaining_time_in_millis() / 1000 if context else None


def run_stage(name: str, event: dict[str, Any], context: Any, services: Services) -> dict[str, Any]:
    """Run stage ``name`` for ``event`` (its state input); raise what the state machine should see."""
    from chalicelib.pipeline import workflow

    job_id, run = str(event["job_id"]), str(event["run"])
    stages: dict[str, Callable[[], dict[str, Any]]] = {
        "validate": lambda: workflow.validate(services, job_id, run=run, execution_arn=str(event["execution_arn"])),
        "extract": lambda: workflow.extract(services, job_id, run=run, deadline=_deadline(context)),
        "map": lambda: workflow.map_batch(services, job_id, run=run, task=int(event["task"]),
                                          start=int(event["start"]), deadline=_deadline(context)),
        "aggregate": lambda: workflow.aggregate(services, job_id, run=run, task=int(event["task"]),
                                                level=int(event.get("level") or 0), batches=list(event["batches"]),
                                                deadline=_deadline(context)),
        "store": lambda: workflow.store(services, job_id, run=run),
        "failed": lambda: workflow.failed(services, job_id, run=run, execution_arn=str(event["execution_arn"]),
                                          failure=dict(event.get("failure") or {})),
    }
    logger.thread_safe_append_keys(stage=name)
    with job_context(job_id):
        return _run(name, stages, workflow)


def _run(name: str, stages: dict[str, Callable[[], dict[str, Any]]], workflow: Any) -> dict[str, Any]:
    try:
        return stages[name]()
    except workflow.RunSuperseded as superseded:
        logger.info("stage skipped: the run no longer carries the job", extra={"reason": str(superseded)})
        raise RunSuperseded(str(superseded)) from None
    except JobFailure as failure:
        logger.warning("stage failed", extra={"error": failure.to_dict()})
        raise StageFailed(json.dumps(failure.to_dict())) from None
    except TransientError as error:
        logger.warning("stage failed; the workflow retries it", extra={"error": error.to_dict()})
        raise StageRetryable(json.dumps(error.to_dict())) from None


def handle_execution_event(event: dict[str, Any], services: Services) -> bool:
    """EventBridge's "Step Functions Execution Status Change" for this stage's state machine."""
    from chalicelib.pipeline import workflow

    detail = event.get("detail") or {}
    if detail.get("stateMachineArn") != services.settings.state_machine_arn:
        return False
    try:
        job_id = json.loads(detail.get("input") or "{}").get("job_id")
    except ValueError:
        job_id = None
    if not job_id:
        return False
    return workflow.execution_ended(services, str(job_id), execution_arn=str(detail.get("executionArn")),
                                    status=str(detail.get("status")), cause=detail.get("cause") or detail.get("error"))


def sweep_executions(services: Services) -> int:
    from chalicelib.pipeline import workflow

    failed = workflow.sweep(services)
    if failed:
        metrics.flush_metrics()  # a schedule has no metrics middleware (the keep-warm would flush nothing)
    return failed
