"""A job as docpipe knows it: its statuses, its id, and what ``GET /jobs/{job_id}`` shows of it.

A job goes QUEUED → RUNNING → SUCCEEDED | FAILED and never backwards (``jobs.lifecycle`` moves it; ``jobs.store``
keeps it). Its id is 128 random bits, unguessable, so knowing a job id is no way into anyone else's job.
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

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    def to_view(self) -> dict[str, Any]:
        """What ``GET /jobs/{job_id}`` shows a client."""
        view: dict[str, Any] = {
            "job_id": self.job_id,
            "status": self.status,
            "source": self.source,
            "task": self.task,
            "document": self.document,
            "progress": {"chunks_done": self.chunks_done, "chunks_total": self.chunks_total},
            "attempts": self.attempts,
            "created_at": iso_time(self.created_at),
            "started_at": iso_time(self.started_at),
            "finished_at": iso_time(self.finished_at),
            "timings": self.timings,
            # Until the job ends, what its attempts have spent so far.
            "usage": self.usage or (total_spend(self.spend) if self.spend else {}),
            "warnings": self.warnings,
        }
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


def iso_time(ts: float | None) -> str | None:
    """A timestamp as the API shows it: ISO 8601 in UTC, to the millisecond."""
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


