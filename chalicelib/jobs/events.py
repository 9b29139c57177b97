"""Telling the world that a job has ended: one EventBridge event per ending, on the stage's bus.

A client routes them with a rule, to e-mail, a queue or a function, instead of polling ``GET /jobs/{id}``. The
event's source is ``docpipe``, its detail-type ``Job Succeeded`` or ``Job Failed``, and its detail says which job,
whose, how it ended and what it spent — never a word of the document::

    events = JobEvents(lambda: boto3.client("events"), bus="default", stage="dev")
    events.job_ended(job)   # False (logged and counted) when EventBridge did not take it; the job stays as it is

Only ``jobs.lifecycle`` calls ``job_ended``, right after the write that finished the job, so each ending is
announced once. A worker that dies between the two loses that one event: the job itself is never affected.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from chalicelib.jobs.model import FAILED, SUCCEEDED, Job, iso_time
from chalicelib.observability import logger, metrics

SOURCE = "docpipe"
DETAIL_TYPES = {SUCCEEDED: "Job Succeeded", FAILED: "Job Failed"}


def event_detail(job: Job, stage: str) -> dict[str, Any]:
    """What a ``Job Succeeded`` / ``Job Failed`` event says: ids, outcome, spend, timing; no document content."""
    document = job.document or {}
    return {
        "job_id": job.job_id,
        "client": job.client,
        "stage": stage,
        "status": job.status,
        "task": (job.task or {}).get("type"),
        "source": job.source,
        "document": {k: document.get(k) for k in ("filename", "bytes", "declared_type") if document.get(k)},
        "error": job.error,
        "usage": job.usage or {},
        "attempts": job.attempts,
        "created_at": iso_time(job.created_at),
        "finished_at": iso_time(job.finished_at),
        "links": {"self": f"/jobs/{job.job_id}", "result": f"/jobs/{job.job_id}/result"},
    }


class JobEvents:
    """Job endings published to the EventBridge bus ``bus``; ``client`` gives the boto3 client on first use, so a
    function that never ends a job (the API) never builds it."""

    def __init__(self, client: Callable[[], Any], *, bus: str, stage: str) -> None:
        self._client = client
        self.bus = bus
        self._stage = stage

    def job_ended(self, job: Job) -> bool:
        """Publish the ending of ``job`` (SUCCEEDED or FAILED); never raises."""
        if job.status not in DETAIL_TYPES:
            return False
        entry = {"Source": SOURCE, "DetailType": DETAIL_TYPES[job.status], "EventBusName": self.bus,
                 "Detail": json.dumps(event_detail(job, self._stage), ensure_ascii=False)}
        try:
            answer = self._client().put_events(Entries=[entry])
            if answer.get("FailedEntryCount"):
                failed = answer["Entries"][0]
                raise RuntimeError(f"{failed.get('ErrorCode')}: {failed.get('ErrorMessage')}")
        except Exception as exc:  # the job has ended whatever happens to its announcement
            logger.warning("job event not published", extra={"job_id": job.job_id, "bus": self.bus,
                                                              "reason": f"{type(exc).__name__}: {str(exc)[:200]}"})
            metrics.add_metric(name="JobEventsFailed", unit="Count", value=1)
            return False
        return True
