"""The Step Functions workflow beside the queue path, on the generated book (bench/documents.py), on the local stack.

Both paths run the same job — summarize the book — through ``make serve``'s stack (emulator with moto's Step Functions
interpreter, the app process running each stage function through its dispatcher) against the fake OpenAI server
with a fixed latency per call (0.5 s) and C = 16 calls in flight. The LLM phase is timed at the provider (first
request to last answer) and compared with its physical limit, ceil(map calls / C)·L + reduce levels·L; the job's
whole latency (submit to SUCCEEDED) shows what the state machine adds. The workflow's cost drivers are counted from
its execution history: state transitions (Step Functions Standard bills each) and the stage functions' time.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from typing import Any

from bench.documents import book_pdf
from bench.mapreduce import FakeProvider

LATENCY_SECONDS = 0.5
CONCURRENCY = 16
REPEATS = 3
# Step Functions Standard, us-east-1: per state transition; Lambda arm64 per GB-second (the stage functions' price).
USD_PER_TRANSITION = 0.000025
USD_PER_GB_SECOND = 0.0000133334


def _run_path(fake: FakeProvider, *, workflow: bool) -> list[dict[str, Any]]:
    import boto3

    from devstack.emulator import free_port
    from devstack.http import request as http
    from devstack.stack import LOCAL_DIR, LocalStack

    env = {"OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "sk-bench", "DOCPIPE_LLM_CONCURRENCY": str(CONCURRENCY),
           "DOCPIPE_MAP_CACHE": "false", "POWERTOOLS_LOG_LEVEL": "WARNING",
           "DOCPIPE_STEP_FUNCTIONS_MIN_CHUNKS": "1" if workflow else "1000000"}
    rows = []
    with LocalStack(api_port=free_port(), emulator_port=free_port(), extra_env=env, worker_timeout=900,
                    app_log=LOCAL_DIR / f"bench-workflow-{'sfn' if workflow else 'queue'}.log") as stack:
        aws = {"endpoint_url": stack.emulator.url, "region_name": "us-east-1", "aws_access_key_id": "local",
               "aws_secret_access_key": "local"}
        s3, sfn = boto3.client("s3", **aws), boto3.client("stepfunctions", **aws)
        s3.put_object(Bucket="docpipe-local-documents", Key="uploads/local/book.pdf", Body=book_pdf())
        for _ in range(REPEATS):
            fake.reset()
            started = time.monotonic()
            _, job = http("POST", f"{stack.api_url}/jobs", json.dumps({
                "document": {"s3_key": "uploads/book.pdf"}, "task": {"type": "summarize"}}).encode(),
                {"Content-Type": "application/json"})
            while True:
                _, view = http("GET", f"{stack.api_url}/jobs/{job['job_id']}")
                if view["status"] in ("SUCCEEDED", "FAILED"):
                    break
                time.sleep(0.1)
            seconds = time.monotonic() - started
            if view["status"] != "SUCCEEDED":
                raise RuntimeError(f"the bench job failed: {view.get('error')}")
            counts = fake.counts()
            calls, maps, llm_seconds = counts["requests"], counts["maps"], counts["llm_seconds"]
            _, result = http("GET", f"{stack.api_url}/jobs/{job['job_id']}/result")
            row = {"calls": calls, "maps": maps, "levels": result["reduce_levels"], "llm_seconds": llm_seconds,
                   "job_seconds": seconds, "chunks": result["document"]["chunks"]}
            if workflow:
                row.update(_execution_costs(sfn, view["execution_arn"]))
            rows.append(row)
    return rows


def _execution_costs(sfn: Any, execution_arn: str) -> dict[str, Any]:
    """State transitions and the stage functions' seconds, from the execution's history."""
    events, token = [], None
    while True:
        page = sfn.get_execution_history(executionArn=execution_arn, maxResults=1000,
                                         **({"nextToken": token} if token else {}))
        events += page["events"]
        token = page.get("nextToken")
        if not token:
            break
    transitions = sum(1 for e in events if e["type"].endswith("StateEntered"))
    started: dict[int, Any] = {}
    lambda_seconds = 0.0
    for event in events:
        if event["type"] == "LambdaFunctionStarted":
            started[event["id"]] = event["timestamp"]
        elif event["type"] in ("LambdaFunctionSucceeded", "LambdaFunctionFailed") and \
                event.get("previousEventId") in started:
            lambda_seconds += (event["timestamp"] - started[event["previousEventId"]]).total_seconds()
    invocations = sum(1 for e in events if e["type"] == "LambdaFunctionStarted")
    return {"transitions": transitions, "lambda_seconds": lambda_seconds, "invocations": invocations}


def run() -> str:
    with FakeProvider(LATENCY_SECONDS) as fake:
        paths = {"queue (one worker invocation)": _run_path(fake, workflow=False),
                 "Step Functions workflow": _run_path(fake, workflow=True)}
    lines = [f"Generated book, summarize, fake provider at {LATENCY_SECONDS} s per call, C = {CONCURRENCY}; medians of "
             f"{REPEATS} runs on a shared 2-core machine.", "",
             "| path | chunks | map calls | reduce levels | LLM phase | physical limit | ratio | job latency |",
             "|---|---|---|---|---|---|---|---|"]
    for name, rows in paths.items():
        llm = statistics.median(r["llm_seconds"] for r in rows)
        job = statistics.median(r["job_seconds"] for r in rows)
        first = rows[0]
        limit = (math.ceil(first["maps"] / CONCURRENCY) + first["levels"]) * LATENCY_SECONDS
        lines.append(f"| {name} | {first['chunks']} | {first['maps']} | {first['levels']} | {llm:.2f} s | "
                     f"{limit:.2f} s | {llm / limit:.2f}× | {job:.2f} s |")
    sfn_rows = paths["Step Functions workflow"]
    transitions = statistics.median(r["transitions"] for r in sfn_rows)
    seconds = statistics.median(r["lambda_seconds"] for r in sfn_rows)
    invocations = statistics.median(r["invocations"] for r in sfn_rows)
    queue_job = statistics.median(r["job_seconds"] for r in paths["queue (one worker invocation)"])
    sfn_job = statistics.median(r["job_seconds"] for r in sfn_rows)
    lines += ["", f"Workflow cost drivers per job: {transitions:.0f} state transitions "
                  f"(${transitions * USD_PER_TRANSITION:.4f}), {invocations:.0f} stage invocations, "
                  f"{seconds:.1f} s of stage-function time (${seconds * 0.5 * USD_PER_GB_SECOND:.5f} at 512 MB); "
                  f"latency the state machine added: {sfn_job - queue_job:+.2f} s."]
    return "\n".join(lines)
