"""Fault injection against the real local stack, with a report a person can read.

Each scenario starts a fresh stack (emulator process + app process) wired to the fake OpenAI-compatible server,
injects one kind of fault, submits jobs over HTTP, and waits until every job has finished or the deadline passes.
It then counts what matters: jobs lost (accepted, then unknown), results written twice, jobs still unfinished at
the deadline, FAILED jobs without a reason, and LLM requests made against the minimum the finished jobs needed.

``make test`` runs the short versions (tests/e2e/test_faults.py); ``make soak`` runs
``python -m tests.support.faults --soak``.
Every scenario is bounded in requests and time, and every server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3

from devstack.emulator import free_port
from devstack.http import request
from devstack.stack import LOCAL_DIR, LocalStack
from tests.support.fake_openai import FakeOpenAI

BUCKET = "docpipe-local-documents"
SENTENCES = [
    "The harbour light was built after a winter of wrecks on the northern reef.",
    "Keepers trimmed the wick, filled the oil and polished the lens before dusk.",
    "A falling weight turned the lens, and the keeper wound it every few hours.",
    "Fog brought the horn, which sounded for as long as the fog lasted.",
    "Relief boats came every fortnight, but storms could delay them for a month.",
    "Electric lamps and automatic changers ended the keeper's watch at night.",
]
# Short timings so that retries, backoffs and takeovers happen within seconds.
# The queue hides a received message for this many worker timeouts (devstack/resources.py, scripts/deploy.py).
VISIBILITY_FACTOR = 6
STACK_ENV = {
    "OPENAI_API_KEY": "sk-fault-injection", "DOCPIPE_CHUNK_TOKENS": "120", "DOCPIPE_CHUNK_OVERLAP_TOKENS": "0",
    "DOCPIPE_LLM_TIMEOUT_SECONDS": "2", "DOCPIPE_LLM_MAX_ATTEMPTS": "2", "DOCPIPE_LLM_CONCURRENCY": "4",
    "DOCPIPE_HEARTBEAT_SECONDS": "1", "DOCPIPE_RETRY_BACKOFF_SECONDS": "1", "DOCPIPE_BREAKER_FAILURES": "5",
    "DOCPIPE_BREAKER_RECOVERY_SECONDS": "3",
}


def document(index: int, pages: int = 3) -> str:
    """About a chunk a page, different for every job so no two jobs share work."""
    rng = random.Random(index)
    return "\f".join(" ".join(rng.sample(SENTENCES, len(SENTENCES))) + f" Record {index}-{page}."
                     for page in range(pages))


@dataclass
class Report:
    scenario: str
    submitted: int = 0
    succeeded: int = 0
    failed_with_reason: int = 0
    failed_without_reason: int = 0
    lost: int = 0
    duplicated_results: int = 0
    stuck: int = 0
    llm_calls: int = 0
    llm_calls_needed: int = 0
    seconds: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return self.lost == 0 and self.duplicated_results == 0 and self.stuck == 0 and self.failed_without_reason == 0


# What the local stack needs beyond the governing timeouts to finish a scenario's jobs once they are back.
WORK_SECONDS = 60


@dataclass
class Scenario:
    name: str
    jobs: int = 6
    deadline_seconds: float = 120
    fault: Callable[[dict], Any] | None = None
    outage_seconds: float = 0
    kills_at: tuple[float, ...] = ()
    duplicate_deliveries: bool = False
    poison: bool = False
    latency: float = 0.1
    worker_timeout: int = 60

    @property
    def deadline(self) -> float:
        """How long the scenario may take, derived from the timeouts that govern its recovery.

        A kill that lands between a batch's receive and its first heartbeat strands that batch until the queue's
        visibility timeout (6 x the worker's timeout, as on AWS) hands it out again; no kill moment is avoided,
        so the deadline covers the last kill plus that timeout plus the work.
        """
        if not self.kills_at:
            return self.deadline_seconds
        return max(self.deadline_seconds, max(self.kills_at) + VISIBILITY_FACTOR * self.worker_timeout + WORK_SECONDS)


def run(scenario: Scenario) -> Report:
    report = Report(scenario.name)
    started = time.monotonic()
    with FakeOpenAI() as fake:
        fake.latency = scenario.latency
        outage_ends = started + scenario.outage_seconds
        outage_calls = [0]

        def fault(request: dict) -> Any:
            if time.monotonic() < outage_ends:
                outage_calls[0] += 1
                return ("status", 503)
            return scenario.fault(request) if scenario.fault else None

        fake.fault = fault
        env = {**STACK_ENV, "OPENAI_BASE_URL": fake.base_url}
        with LocalStack(api_port=free_port(), emulator_port=free_port(), extra_env=env,
                        worker_timeout=scenario.worker_timeout,
                        duplicate_deliveries=scenario.duplicate_deliveries,
                        app_log=LOCAL_DIR / f"faults-{scenario.name}.log") as stack:
            s3 = boto3.client("s3", endpoint_url=stack.emulator.url, region_name="us-east-1",
                              aws_access_key_id="local", aws_secret_access_key="local")
            s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
            job_ids = []
            for index in range(scenario.jobs):
                status, job = request("POST", f"{stack.api_url}/jobs",
                                    {"document": {"text": document(index)}, "task": {"type": "summarize"}})
                assert status == 202, job
                job_ids.append(job["job_id"])
            if scenario.poison:
                job_ids.append(_inject_poison(stack))
                report.notes["garbage_messages"] = _inject_garbage(stack)
            report.submitted = len(job_ids)
            killer = threading.Thread(target=_kill_and_restart, args=(stack, scenario.kills_at, started), daemon=True)
            killer.start()
            finished = _wait(stack, job_ids, started + scenario.deadline)
            killer.join()
            report.seconds = round(time.monotonic() - started, 1)
            _count(report, stack, s3, job_ids, finished)
        report.llm_calls = fake.calls
        report.notes["calls_during_outage"] = outage_calls[0]
    return report


def _kill_and_restart(stack: LocalStack, kills_at: tuple[float, ...], started: float) -> None:
    for moment in kills_at:
        time.sleep(max(0.0, started + moment - time.monotonic()))
        stack.kill_app()
        stack.start_app()


def _wait(stack: LocalStack, job_ids: list[str], deadline: float) -> dict[str, dict]:
    finished: dict[str, dict] = {}
    while len(finished) < len(job_ids) and time.monotonic() < deadline:
        for job_id in job_ids:
            if job_id in finished:
                continue
            try:
                status, job = request("GET", f"{stack.api_url}/jobs/{job_id}")
            except OSError:  # the app is being restarted
                continue
            if status == 200 and job["status"] in ("SUCCEEDED", "FAILED"):
                finished[job_id] = job
        time.sleep(0.3)
    return finished


def _count(report: Report, stack: LocalStack, s3: Any, job_ids: list[str], finished: dict[str, dict]) -> None:
    for job_id in job_ids:
        status, job = request("GET", f"{stack.api_url}/jobs/{job_id}")
        if status == 404:
            report.lost += 1
            continue
        if job_id not in finished:
            report.stuck += 1
            continue
        if job["status"] == "SUCCEEDED":
            report.succeeded += 1
            _, result = request("GET", f"{stack.api_url}/jobs/{job_id}/result")
            usage = result["usage"]
            # What one clean run needs: the last attempt's calls and the chunks it found answered in the cache.
            report.llm_calls_needed += (usage["calls"] - usage.get("spent_by_earlier_attempts", {}).get("calls", 0)
                                        + usage["cache_hits"])
            versions = s3.list_object_versions(Bucket=BUCKET, Prefix=f"results/{job_id}.json").get("Versions", [])
            report.duplicated_results += max(0, len(versions) - 1)
        elif job.get("error", {}).get("code") and job["error"].get("message"):
            report.failed_with_reason += 1
            report.notes.setdefault("failure_codes", []).append(job["error"]["code"])
        else:
            report.failed_without_reason += 1


def _inject_poison(stack: LocalStack) -> str:
    """A job whose every attempt crashes the worker (its row names no document): it must end FAILED, not loop."""
    job_id = uuid.uuid4().hex
    session = {"endpoint_url": stack.emulator.url, "region_name": "us-east-1", "aws_access_key_id": "local",
                   "aws_secret_access_key": "local"}
    boto3.client("dynamodb", **session).put_item(TableName="docpipe-local-jobs", Item={
        "job_id": {"S": job_id}, "status": {"S": "QUEUED"}, "source": {"S": "api"}, "client": {"S": "local"},
        "created_at": {"N": str(time.time())}, "chunks_done": {"N": "0"}, "attempts": {"N": "0"},
        "lease_until": {"N": "0"}, "task": {"S": '{"type": "summarize"}'}, "document": {"S": "{}"},
        "warnings": {"S": "[]"}})
    sqs = boto3.client("sqs", **session)
    sqs.send_message(QueueUrl=sqs.get_queue_url(QueueName="docpipe-local-jobs")["QueueUrl"],
                     MessageBody=json.dumps({"job_id": job_id}))
    return job_id


def _inject_garbage(stack: LocalStack) -> int:
    sqs = boto3.client("sqs", endpoint_url=stack.emulator.url, region_name="us-east-1",
                       aws_access_key_id="local", aws_secret_access_key="local")
    url = sqs.get_queue_url(QueueName="docpipe-local-jobs")["QueueUrl"]
    for body in ("Test message.", '{"message": "foo1"}'):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    return 2


def flaky(rate: float, seed: int = 7) -> Callable[[dict], Any]:
    """A share of requests fail: a third 429 with Retry-After, a third 500, a third hang past the client timeout."""
    rng = random.Random(seed)
    lock = threading.Lock()

    def fault(_request: dict) -> Any:
        with lock:
            roll = rng.random()
        if roll >= rate:
            return None
        return [("status", 429, {"Retry-After": "1"}), ("status", 500), ("hang", 3)][int(roll / rate * 3)]

    return fault


def scenarios(soak: bool) -> list[Scenario]:
    scale = 3 if soak else 1
    return [
        Scenario("flaky-llm-30pct", jobs=8 * scale, fault=flaky(0.3)),
        Scenario("llm-down-then-back", jobs=6 * scale, outage_seconds=60 if soak else 20, deadline_seconds=180),
        # Its deadline follows from the worker timeout (Scenario.deadline): a stranded batch is waited for. A 30 s
        # worker still finishes a batch of these jobs with time to spare and keeps that wait within pytest's limit.
        Scenario("app-sigkilled", jobs=6 * scale, latency=0.5, kills_at=(2.0, 6.0) if not soak else (2, 6, 12, 20),
                 worker_timeout=30),
        Scenario("every-message-twice", jobs=6 * scale, duplicate_deliveries=True),
        Scenario("poison-message", jobs=3 * scale, poison=True),
    ]


def table(reports: list[Report]) -> str:
    header = ("scenario", "submitted", "SUCCEEDED", "FAILED+reason", "lost", "dup results", "stuck",
              "LLM calls/needed", "s")
    rows = [header] + [(r.scenario, str(r.submitted), str(r.succeeded), str(r.failed_with_reason), str(r.lost),
                        str(r.duplicated_results), str(r.stuck), f"{r.llm_calls}/{r.llm_calls_needed}",
                        f"{r.seconds:.0f}") for r in reports]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description="docpipe fault injection")
    parser.add_argument("--soak", action="store_true", help="longer outages, more jobs, more kills")
    args = parser.parse_args()
    LOCAL_DIR.mkdir(exist_ok=True)
    reports = []
    for scenario in scenarios(args.soak):
        reports.append(run(scenario))
        print(table(reports[-1:]).splitlines()[-1], flush=True)
    print("\n" + table(reports))
    return 0 if all(r.clean for r in reports) else 1


if __name__ == "__main__":
    raise SystemExit(main())
