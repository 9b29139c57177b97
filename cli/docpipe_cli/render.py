"""How ``docpipe`` shows what the API answers, with rich: a result read as prose, a job's state, a table of jobs.

Everything the server sends is printed as plain text (``Text``), never as rich markup, so a document that contains
``[bold]`` is shown as it is.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

FINISHED = ("SUCCEEDED", "FAILED")
_STATUS_STYLE = {"SUCCEEDED": "green", "FAILED": "red", "RUNNING": "yellow", "QUEUED": "cyan"}


def stage_of(job: dict[str, Any]) -> str:
    """Where a job is, in a few words, from ``GET /jobs/{id}``."""
    status, progress = job.get("status"), job.get("progress") or {}
    if status == "QUEUED":
        return "queued"
    if status == "RUNNING":
        retrying = job.get("last_error")
        if retrying:
            return f"retrying after {retrying.get('code')}"
        total = progress.get("chunks_total")
        return "reading the document" if total is None else "reading chunks"
    if status == "FAILED":
        error = job.get("error") or {}
        return f"FAILED: {error.get('code')}"
    return str(status or "?")


def failure_line(name: str, job: dict[str, Any]) -> str:
    error = job.get("error") or {}
    return f"{name}: job {job.get('job_id')} FAILED: {error.get('code')}: {error.get('message')}"


def print_result(console: Console, result: dict[str, Any]) -> None:
    """The result document of a job, readably: what the task found, then where it came from and what it cost."""
    kind = (result.get("task") or {}).get("type")
    if kind == "summarize":
        console.print(Text(str(result.get("summary", "")).strip()))
        _pages(console, result)
    elif kind == "extract":
        console.print(Text(json.dumps(result.get("data"), indent=2, ensure_ascii=False)))
        if not result.get("valid", True):
            console.print(Text("Not valid for the schema: " + "; ".join(map(str, result.get("errors") or [])),
                               style="yellow"))
    elif kind == "classify":
        confidence = result.get("confidence")
        line = f"Label: {result.get('label')}" + (f" (confidence {confidence:.2f})"
                                                  if isinstance(confidence, (int, float)) else "")
        console.print(Text(line, style="bold"))
        scores = result.get("scores") or {}
        if scores:
            console.print(Text("Scores: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, (int, float)) else f"{k} {v}"
                                                      for k, v in scores.items())))
        _pages(console, result)
    elif kind == "prompt":
        console.print(Text(str(result.get("answer", "")).strip()))
        _pages(console, result)
    else:
        console.print(Text(json.dumps(result, indent=2, ensure_ascii=False)))
        return
    _footer(console, result)


def _pages(console: Console, result: dict[str, Any]) -> None:
    pages = result.get("pages_cited") or result.get("pages")
    if pages:
        console.print(Text("Pages cited: " + ", ".join(map(str, pages)), style="dim"))


def _footer(console: Console, result: dict[str, Any]) -> None:
    usage, document = result.get("usage") or {}, result.get("document") or {}
    source = ", ".join(str(p) for p in (result.get("provider"), result.get("model")) if p)
    cost = usage.get("cost_usd")
    console.print(Text(f"{source} · {document.get('pages', '?')} pages, {document.get('chunks', '?')} chunks · "
                       f"{usage.get('calls', 0)} LLM calls, {usage.get('total_tokens', 0)} tokens"
                       + ("" if cost is None else f", {cost:.6f} USD"), style="dim"))
    if result.get("note"):
        console.print(Text(f"Note: {result['note']}", style="dim"))
    for warning in result.get("warnings") or []:
        console.print(Text(f"Warning: {warning}", style="yellow"))


def print_job(console: Console, job: dict[str, Any]) -> None:
    """A job's state, as ``GET /jobs/{id}`` shows it."""
    progress, usage = job.get("progress") or {}, job.get("usage") or {}
    rows = [("job", job.get("job_id")), ("status", job.get("status")),
            ("task", (job.get("task") or {}).get("type")),
            ("document", (job.get("document") or {}).get("filename") or (job.get("document") or {}).get("source")),
            ("progress", f"{progress.get('chunks_done', 0)}/{progress.get('chunks_total') or '?'} chunks"
                         f" · {stage_of(job)}"),
            ("attempts", job.get("attempts")), ("created", job.get("created_at")),
            ("finished", job.get("finished_at")),
            ("usage", f"{usage.get('calls', 0)} LLM calls, {usage.get('total_tokens', 0)} tokens"
                      + ("" if usage.get("cost_usd") is None else f", {usage['cost_usd']:.6f} USD"))]
    error = job.get("error") or job.get("last_error")
    if error:
        rows.append(("error" if job.get("error") else "last error", f"{error.get('code')}: {error.get('message')}"))
    for warning in job.get("warnings") or []:
        rows.append(("warning", warning))
    table = Table.grid(padding=(0, 2))
    for name, value in rows:
        if value is not None:
            table.add_row(Text(name, style="dim"), Text(str(value), style=_STATUS_STYLE.get(str(value), "")))
    console.print(table)


def print_jobs(console: Console, jobs: list[dict[str, Any]]) -> None:
    """A table of jobs, as ``GET /jobs`` lists them (newest first)."""
    if not jobs:
        console.print(Text("No jobs.", style="dim"))
        return
    table = Table(box=None, pad_edge=False)
    for column in ("JOB ID", "STATUS", "TASK", "DOCUMENT", "CHUNKS", "CREATED", "ERROR"):
        table.add_column(column, no_wrap=column not in ("DOCUMENT", "ERROR"))
    for job in jobs:
        progress = job.get("progress") or {}
        error = job.get("error") or {}
        table.add_row(Text(str(job.get("job_id"))), Text(str(job.get("status")),
                                                         style=_STATUS_STYLE.get(str(job.get("status")), "")),
                      Text(str(job.get("task") or "")), Text(str(job.get("filename") or job.get("source") or "")),
                      Text(f"{progress.get('chunks_done', 0)}/{progress.get('chunks_total') or '?'}"),
                      Text(str(job.get("created_at") or "")[:19].replace("T", " ")), Text(str(error.get("code") or "")))
    console.print(table)
