"""The operator's live page: ``GET /dashboard`` (the page) and ``GET /dashboard/data`` (what it shows, as JSON).

It reads what everything else reads: the job table (statuses, each job's stage, progress, cost, timings and LLM
usage as the lifecycle recorded them), the jobs queue and its dead-letter queue, and the shared LLM circuit's
state in DynamoDB. It shows every client's jobs, so app.py declares its routes only where ``DOCPIPE_DASHBOARD`` is
on (the local stage); on AWS an operator must turn it on, and then deploy.
"""

from __future__ import annotations

import statistics
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from chalice import Response

from chalicelib.bootstrap import Services
from chalicelib.jobs import Job

LATEST = 20
STAGES = ("extract", "ocr", "chunk", "map", "reduce", "total")


@lru_cache(maxsize=1)
def _page() -> str:
    return (Path(__file__).with_name("dashboard.html")).read_text()


def page() -> Response:
    return Response(body=_page(), status_code=200, headers={
        "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store",
        "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"})


def snapshot(services: Services) -> dict[str, Any]:
    jobs = services.jobs.recent()
    by_status: dict[str, int] = {}
    for job in jobs:
        by_status[job.status] = by_status.get(job.status, 0) + 1
    queue = services.lifecycle.queue
    try:
        circuit = services.llm.circuit()
    except Exception as exc:  # the page still shows the rest
        circuit = f"unknown ({type(exc).__name__})"
    return {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "jobs_by_status": by_status,
        "jobs_seen": len(jobs),
        "latest": [_row(job) for job in jobs[:LATEST]],
        "stage_seconds": _stage_seconds(jobs),
        "llm": _llm(jobs),
        "circuit": circuit,
        "queue": queue.depth(),
        "dead_letters": queue.depth(services.settings.dead_letter_queue),
    }


def _stage(job: Job) -> str:
    """Where the job is: the stage a running job works on, from what the lifecycle recorded of it."""
    if job.status != "RUNNING":
        return job.status.lower()
    if job.chunks_total is None:
        return "extract"
    return "map" if job.chunks_done < job.chunks_total else "reduce"


def _usage(job: Job) -> dict[str, Any]:
    return job.to_view()["usage"] or {}


def _row(job: Job) -> dict[str, Any]:
    usage = _usage(job)
    return {"job_id": job.job_id, "status": job.status, "task": job.task.get("type"), "stage": _stage(job),
            "progress": {"chunks_done": job.chunks_done, "chunks_total": job.chunks_total},
            "cost_usd": usage.get("cost_usd"), "llm_calls": usage.get("calls"),
            "created_at": job.to_view()["created_at"], "error": (job.error or {}).get("code")}


def _stage_seconds(jobs: list[Job]) -> dict[str, dict[str, float]]:
    timings: dict[str, dict[str, float]] = {}
    for stage in STAGES:
        values = sorted(v for job in jobs if isinstance(v := job.timings.get(f"{stage}_seconds"), (int, float)))
        if values:
            timings[stage] = {"jobs": len(values), "p50": round(statistics.median(values), 3),
                              "p95": round(values[min(len(values) - 1, int(0.95 * len(values)))], 3)}
    return timings


def _llm(jobs: list[Job]) -> dict[str, Any]:
    totals = {"calls": 0, "retries": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
    for job in jobs:
        usage = _usage(job)
        for name in totals:
            value = usage.get(name)
            if isinstance(value, (int, float)):
                totals[name] += value
    totals["cost_usd"] = round(totals["cost_usd"], 6)
    return totals
