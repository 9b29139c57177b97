"""``docpipe``: submit documents of any size, watch jobs, read results, from a shell.

    docpipe submit report.pdf --wait                 # a job, a live progress bar, then the summary
    docpipe submit scans/ --task classify --labels invoice,contract --wait --json
    docpipe jobs --status FAILED ; docpipe retry <job id> --wait

The API's URL and key come from ``--api-url``/``--api-key`` or ``DOCPIPE_API_URL``/``DOCPIPE_API_KEY`` (the local
stack, ``http://127.0.0.1:8000`` without a key, when neither is given). Exit codes: 0 when every job succeeded (or
every request did), 1 when one failed (its reason is printed), 2 for a usage error, 130 when interrupted. Each job's
id is printed on standard error the moment it is created, so it is never lost; results go to standard output.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from docpipe_cli.api import ApiError, DocpipeAPI
from docpipe_cli.inputs import TASKS, Document, UsageError, build_task, find_documents
from docpipe_cli.render import FINISHED, failure_line, print_job, print_jobs, print_result, stage_of

LOCAL_API = "http://127.0.0.1:8000"
# Above this a file goes through POST /uploads and S3: base64 makes it 4/3 larger, and a request body may be 4.5 MB.
UPLOAD_OVER_BYTES = 3_000_000
POLL_SECONDS = 1.0
SUBMITTING_AT_ONCE = 8
OK, FAILED, USAGE, INTERRUPTED = 0, 1, 2, 130


@dataclass
class Run:
    """What a command works with: the API's address and key, and where its output goes."""

    api_url: str
    api_key: str | None
    out: Console
    err: Console
    sleep: Any = time.sleep
    transport: Any = None

    def api(self, **options: Any) -> DocpipeAPI:
        return DocpipeAPI(self.api_url, self.api_key, transport=self.transport, sleep=self.sleep, **options)

    def say(self, text: str, style: str = "") -> None:
        self.err.print(Text(text, style=style))


@dataclass
class Submitted:
    name: str
    job: dict[str, Any] = field(default_factory=dict)
    error: ApiError | None = None
    result: dict[str, Any] | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None or self.job.get("status") == "FAILED"

    def as_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"file": self.name, "job_id": self.job.get("job_id"), "status": self.job.get("status")}
        if self.error is not None:
            shown.update(status="REFUSED", error={"code": self.error.code, "message": self.error.message})
        elif self.job.get("error"):
            shown["error"] = self.job["error"]
        if self.result is not None:
            shown["result"] = self.result
        return shown


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--api-url", default=argparse.SUPPRESS,
                        help=f"docpipe's API (default: $DOCPIPE_API_URL, else {LOCAL_API})")
    common.add_argument("--api-key", default=argparse.SUPPRESS, help="your API key (default: $DOCPIPE_API_KEY)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print what the API answers as JSON")
    top = argparse.ArgumentParser(prog="docpipe", parents=[common], description="docpipe from the command line.")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    submit = commands.add_parser("submit", parents=[common], help="submit documents (files, or directories of PDFs)")
    submit.add_argument("paths", nargs="+", metavar="FILE|DIR", help="a PDF, .txt or .md file, or a directory whose "
                                                                      "PDFs are each submitted")
    submit.add_argument("--task", choices=TASKS, help="what to do (default: summarize, or what the options imply)")
    submit.add_argument("--schema", metavar="FILE", help="extract: a JSON Schema of what to extract")
    submit.add_argument("--labels", metavar="A,B,...", help="classify: the labels to choose from")
    submit.add_argument("--map", dest="map_text", metavar="TEXT", help="prompt: what to ask of each chunk")
    submit.add_argument("--reduce", dest="reduce_text", metavar="TEXT", help="prompt: how to combine the answers")
    submit.add_argument("--target-words", type=int, metavar="N", help="summarize: about how long the summary is")
    submit.add_argument("--model", help="the model to use (default: the deployment's)")
    submit.add_argument("--max-cost-usd", type=float, metavar="USD", help="the job's budget")
    submit.add_argument("--upload-over", type=int, default=UPLOAD_OVER_BYTES, metavar="BYTES",
                        help=f"files larger than this go through POST /uploads (default {UPLOAD_OVER_BYTES:,})")
    submit.add_argument("--wait", action="store_true", help="follow each job with a progress bar, then print results")
    for name, what in (("status", "a job's state, progress, usage and error"), ("result", "a finished job's result")):
        command = commands.add_parser(name, parents=[common], help=what)
        command.add_argument("job_id", metavar="ID")
    jobs = commands.add_parser("jobs", parents=[common], help="your jobs, newest first")
    jobs.add_argument("--status", type=str.upper, choices=["QUEUED", "RUNNING", "SUCCEEDED", "FAILED"])
    jobs.add_argument("--limit", type=int, default=20, metavar="N", help="how many (default 20)")
    jobs.add_argument("--all", action="store_true", help="every job, however many")
    retry = commands.add_parser("retry", parents=[common], help="queue a FAILED job again")
    retry.add_argument("job_id", metavar="ID")
    retry.add_argument("--wait", action="store_true", help="follow the job, then print its result")
    return top


def main(argv: Sequence[str] | None = None, *, out: Console | None = None, err: Console | None = None,
         environ: dict[str, str] | None = None, sleep: Any = time.sleep, transport: Any = None) -> int:
    env = os.environ if environ is None else environ
    arguments = parser().parse_args(argv)
    run = Run(api_url=getattr(arguments, "api_url", None) or env.get("DOCPIPE_API_URL") or LOCAL_API,
              api_key=getattr(arguments, "api_key", None) or env.get("DOCPIPE_API_KEY") or None,
              # Soft wrap: prose is left for the terminal to wrap; piped, tables get room and lines stay whole.
              out=out or Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200),
              err=err or Console(stderr=True, highlight=False, soft_wrap=True),
              sleep=sleep, transport=transport)
    as_json = getattr(arguments, "json", False)
    try:
        if arguments.command == "submit":
            return submit(run, arguments, as_json)
        if arguments.command == "status":
            return status(run, arguments.job_id, as_json)
        if arguments.command == "result":
            return result(run, arguments.job_id, as_json)
        if arguments.command == "jobs":
            return list_jobs(run, arguments.status, None if arguments.all else max(1, arguments.limit), as_json)
        return retry(run, arguments.job_id, arguments.wait, as_json)
    except UsageError as exc:
        run.say(f"docpipe: {exc}", "red")
        return USAGE
    except ApiError as exc:
        run.say(f"docpipe: {exc.code}: {exc.message}", "red")
        return FAILED
    except KeyboardInterrupt:
        run.say("docpipe: interrupted; the jobs go on (docpipe jobs lists them)")
        return INTERRUPTED


# --- the commands -------------------------------------------------------------------------------------------------

def submit(run: Run, arguments: argparse.Namespace, as_json: bool) -> int:
    documents = find_documents(arguments.paths)
    task = build_task(arguments.task, schema=arguments.schema, labels=arguments.labels, map_text=arguments.map_text,
                      reduce_text=arguments.reduce_text, model=arguments.model, target_words=arguments.target_words,
                      max_cost_usd=arguments.max_cost_usd)
    api = run.api(on_retry=lambda reason, delay: run.say(f"docpipe: {reason}; retrying in {delay:.1f} s", "dim"))
    with ThreadPoolExecutor(max_workers=min(SUBMITTING_AT_ONCE, len(documents))) as pool:
        submitted = list(pool.map(lambda document: _submit_one(run, api, document, task, arguments.upload_over),
                                  documents))
    accepted = [s for s in submitted if s.error is None]
    if arguments.wait and accepted:
        _wait(run, accepted)
    several = len(documents) > 1 or any(os.path.isdir(path) for path in arguments.paths)
    _report(run, submitted, as_json, several=several, waited=arguments.wait)
    return FAILED if any(s.failed for s in submitted) else OK


def status(run: Run, job_id: str, as_json: bool) -> int:
    job = run.api().job(job_id)
    if as_json:
        run.out.print_json(data=job)
    else:
        print_job(run.out, job)
    return FAILED if job.get("status") == "FAILED" else OK


def result(run: Run, job_id: str, as_json: bool) -> int:
    answer = run.api().result(job_id)
    if as_json:
        run.out.print_json(data=answer)
    else:
        print_result(run.out, answer)
    return OK


def list_jobs(run: Run, status_filter: str | None, limit: int | None, as_json: bool) -> int:
    api, cursor = run.api(), None
    listed: list[dict[str, Any]] = []
    while limit is None or len(listed) < limit:
        page = api.jobs(status=status_filter, limit=min(100, limit - len(listed)) if limit else 100, cursor=cursor)
        listed += page["jobs"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    if as_json:
        run.out.print_json(data=listed)
    else:
        print_jobs(run.out, listed)
    return OK


def retry(run: Run, job_id: str, wait: bool, as_json: bool) -> int:
    job = run.api().retry(job_id)
    run.say(f"job {job_id} queued again")
    submitted = Submitted(job_id, job)
    if wait:
        _wait(run, [submitted])
    _report(run, [submitted], as_json, several=False, waited=wait)
    return FAILED if submitted.failed else OK


# --- how ----------------------------------------------------------------------------------------------------------

def _submit_one(run: Run, api: DocpipeAPI, document: Document, task: dict[str, Any], upload_over: int) -> Submitted:
    name = str(document.path)
    try:
        if document.size > upload_over:
            run.say(f"{name}: uploading {document.size:,} bytes")
            form = api.upload(document.path, document.content_type)
            source: dict[str, Any] = {"s3_key": form["s3_key"]}
        elif document.content_type == "application/pdf":
            source = {"pdf_base64": base64.b64encode(document.path.read_bytes()).decode()}
        else:
            source = {"text": document.path.read_text(encoding="utf-8-sig")}
        # One key per document: a retried request finds the job its first attempt created.
        job = api.submit({**source, "filename": document.path.name}, task, idempotency_key=str(uuid.uuid4()))
    except ApiError as exc:
        run.say(f"{name}: refused: {exc.code}: {exc.message}", "red")
        return Submitted(name, error=exc)
    except UnicodeDecodeError:
        error = ApiError("unsupported_type", "text files must be UTF-8")
        run.say(f"{name}: refused: {error.code}: {error.message}", "red")
        return Submitted(name, error=error)
    run.say(f"{name}: job {job['job_id']} {job.get('status', 'QUEUED')}")
    return Submitted(name, job)


def _wait(run: Run, submitted: list[Submitted]) -> None:
    """Follow every job to its end with a progress bar each (chunks done of total, and the stage), then fetch the
    results of those that succeeded. A lost connection is retried with backoff for as long as it takes."""
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[stage]}"), TimeElapsedColumn())
    with Progress(*columns, console=run.err, transient=False) as progress:
        bars = {id(s): progress.add_task(s.name, total=None, stage="queued") for s in submitted}

        def follow(item: Submitted) -> None:
            bar = bars[id(item)]

            def on_retry(reason: str, delay: float) -> None:
                progress.update(bar, stage=f"{reason}; retrying in {delay:.0f} s")

            api = run.api(on_retry=on_retry)
            try:
                while item.job.get("status") not in FINISHED:
                    run.sleep(POLL_SECONDS)
                    item.job = api.job(item.job["job_id"], patient=True)
                    chunks = item.job.get("progress") or {}
                    progress.update(bar, total=chunks.get("chunks_total"), completed=chunks.get("chunks_done") or 0,
                                    stage=stage_of(item.job))
                done = item.job.get("status") == "SUCCEEDED"
                if done:
                    item.result = api.result(item.job["job_id"], patient=True)
                total = (item.job.get("progress") or {}).get("chunks_total") or 1
                progress.update(bar, total=total, completed=total if done else (item.job.get("progress") or {}).get(
                    "chunks_done", 0), stage=item.job.get("status"))
            except ApiError as exc:
                item.error = exc
                progress.update(bar, stage=f"{exc.code}")
            finally:
                api.close()

        with ThreadPoolExecutor(max_workers=min(16, len(submitted))) as pool:
            list(pool.map(follow, submitted))


def _report(run: Run, submitted: list[Submitted], as_json: bool, *, several: bool, waited: bool) -> None:
    if as_json:
        shown = [s.as_json() for s in submitted]
        run.out.print_json(data=shown if several else shown[0])
        return
    for item in submitted:
        if item.error is not None:
            run.out.print(Text(f"{item.name}: {item.error.code}: {item.error.message}", style="red"))
        elif item.job.get("status") == "FAILED":
            run.out.print(Text(failure_line(item.name, item.job), style="red"))
        elif not waited:
            run.out.print(Text(f"{item.job.get('job_id')}  {item.name}"))
        elif item.result is not None:
            if several:
                run.out.print(Text(f"== {item.name} · job {item.job.get('job_id')}", style="bold"))
            print_result(run.out, item.result)
