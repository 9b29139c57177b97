"""A job as docpipe knows it: its statuses, its id, and what ``GET /jobs/{job_id}`` shows of it.

A job goes QUEUED → RUNNING → SUCCEEDED | FAILED and never backwards (``jobs.lifecycle`` moves it; ``jobs.store``
keeps it). Its id is 128 random bits, unguessable, so knowing a job id is no way into anyone else's job.

A job runs on one of two orchestrators: the queue (the worker runs it in its invocation) or, once the worker has
handed it over, the Step Functions workflow (its ``execution_arn``, the ``stage`` it is in, and its progress kept
per task and per map batch in ``workflow_progress``).
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from chalicelib.llm import total_spend

QUEUED, RUNNING, SUCCEEDED, FAILED = "QUEUED", "RUNNING", "SUCCEEDED", "FAILED"
TERMINAL = (SUCCEEDED, FAILED)
QUEUE, STEP_FUNCTIONS = "queue", "stepfunctions"
JOB_ID_PATTERN = re.compile(r"[0-9a-f]{32}")


def new_job_id() -> str:
    """128 random bits: unguessable, so a job id is its own read capability."""
    return uuid.uuid4().hex


@dataclass
class Job:
    job_id: str
    status: str
    task: dict[str, Any]
    document: dict[str, Any]
    created_at: float
    source: str = "api"
    # The client that created the job and alone may see it (``entry.identity``); "" for rows older than tenancy.
    client: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    chunks_done: int = 0
    chunks_total: int | None = None
    attempts: int = 0
    lease_until: float = 0.0
    usage: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    error: dict[str, str] | None = None
    last_error: dict[str, str] | None = None
    result_key: str | None = None
    spend: dict[str, dict[str, Any]] = field(default_factory=dict)
    # A multi-task job's tasks, in the order asked (``task`` is the first); None for a job of one task.
    tasks: list[dict[str, Any]] | None = None
    orchestrator: str = QUEUE
    execution_arn: str | None = None
    stage: str | None = None
    # The workflow's progress: "<task>/<batch>" -> chunks that batch has answered, "<task>/known" -> chunks the map
    # cache answered, "<task>/stage" -> where that task's branch is.
    workflow_progress: dict[str, Any] = field(default_factory=dict)
    # How often the client has retried the job: each retry runs a new execution, named after it.
    retried: int = 0

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    @property
    def all_tasks(self) -> list[dict[str, Any]]:
        """Every task the job asks, in order: one, or a multi-task job's 2 to 5."""
        return self.tasks or [self.task]

    @property
    def run_name(self) -> str:
        """The name of this run's execution: the job id, then ``<job id>-retry<n>`` for the client's n-th retry.

        A redelivered message starts the same name again, which Step Functions refuses: a run cannot start twice.
        """
        return self.job_id if not self.retried else f"{self.job_id}-retry{self.retried}"

    def task_progress(self) -> list[int]:
        """Chunks answered so far for each task, by the workflow (the map cache's answers included)."""
        done = [0] * len(self.all_tasks)
        for key, value in self.workflow_progress.items():
            task, _, part = key.partition("/")
            if task.isdigit() and int(task) < len(done) and part != "stage":
                done[int(task)] += int(value)
        return done

    def to_view(self) -> dict[str, Any]:
        """What ``GET /jobs/{job_id}`` shows a client."""
        view: dict[str, Any] = {
            "job_id": self.job_id,
            "status": self.status,
            "source": self.source,
            **({"tasks": self.tasks} if self.tasks else {"task": self.task}),
            "document": self.document,
            "orchestrator": self.orchestrator,
            "progress": self._progress(),
            "attempts": self.attempts,
            "created_at": iso_time(self.created_at),
            "started_at": iso_time(self.started_at),
            "finished_at": iso_time(self.finished_at),
            "timings": self.timings,
            # Until the job ends, what its attempts have spent so far.
            "usage": self.usage or (total_spend(self.spend) if self.spend else {}),
            "warnings": self.warnings,
        }
        if self.execution_arn:
            view["execution_arn"] = self.execution_arn
        if self.stage and not self.finished:
            view["stage"] = self.stage
        if self.error:
            view["error"] = self.error
        elif self.last_error and not self.finished:
            view["last_error"] = self.last_error
        return view

    def to_summary(self) -> dict[str, Any]:
        """What ``GET /jobs`` lists of a job: enough to pick one out, from what the jobs table's client index holds."""
        summary: dict[str, Any] = {
            "job_id": self.job_id,
            "status": self.status,
            "task": (self.task or {}).get("type"),
            "source": self.source,
            "filename": (self.document or {}).get("filename"),
            "progress": {"chunks_done": self.chunks_done, "chunks_total": self.chunks_total},
            "created_at": iso_time(self.created_at),
            "finished_at": iso_time(self.finished_at),
        }
        if self.error:
            summary["error"] = self.error
        return summary

    def _progress(self) -> dict[str, Any]:
        if self.orchestrator != STEP_FUNCTIONS or self.finished:
            return {"chunks_done": self.chunks_done, "chunks_total": self.chunks_total}
        done = self.task_progress()
        progress: dict[str, Any] = {"chunks_done": min(done), "chunks_total": self.chunks_total}
        if self.tasks:
            progress["tasks"] = [{"chunks_done": count, "stage": self.workflow_progress.get(f"{index}/stage")}
                                 for index, count in enumerate(done)]
        return progress


def iso_time(ts: float | None) -> str | None:
    """A timestamp as the API shows it: ISO 8601 in UTC, to the millisecond."""
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"
