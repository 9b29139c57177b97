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
# The Map's batches in flight at once (pipeline.workflow.map_concurrency at C = 16).
MAP_SLOTS = 4
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
            row["in_flight"] = _in_flight(counts["starts"])
            row["reduce_gaps"] = _reduce_gaps(counts["starts"], [t for t, _ in counts["map_starts"]])
            if workflow:
                events = _history(sfn, view["execution_arn"])
                row.update(_execution_costs(events))
                row["batches"] = _batch_timings(events, _chunk_batches(s3, job["job_id"]), counts["map_starts"])
            rows.append(row)
    return rows


def _history(sfn: Any, execution_arn: str) -> list[dict[str, Any]]:
    events, token = [], None
    while True:
        page = sfn.get_execution_history(executionArn=execution_arn, maxResults=1000,
                                         **({"nextToken": token} if token else {}))
        events += page["events"]
        token = page.get("nextToken")
        if not token:
            return events


def _in_flight(starts: list[float]) -> dict[str, Any]:
    """Calls in flight at the provider per 100 ms, from the first request to the last answer: how much of the
    phase ran below C, and the calls' share of the C·phase slot-seconds."""
    if not starts:
        return {"below_c_share": 0.0, "busy_share": 0.0, "timeline": ""}
    first, last = starts[0], starts[-1] + LATENCY_SECONDS
    ticks = [first + 0.05 + 0.1 * i for i in range(int((last - first) / 0.1))]
    counts = [sum(1 for s in starts if s <= t < s + LATENCY_SECONDS) for t in ticks]
    return {"below_c_share": sum(1 for c in counts if c < CONCURRENCY) / max(1, len(counts)),
            "busy_share": len(starts) * LATENCY_SECONDS / (CONCURRENCY * (last - first)),
            "timeline": "".join("0123456789abcdefghijklmnopqrstuvwxyz"[min(c, 35)] for c in counts)}


def _reduce_gaps(starts: list[float], map_starts: list[float]) -> list[float]:
    """Seconds from the last map answer to the first reduce call, and between reduce levels' first calls' answers."""
    maps = set(map_starts)
    reduces = [t for t in starts if t not in maps]
    gaps, previous = [], max(map_starts) + LATENCY_SECONDS if map_starts else None
    for t in reduces:
        if previous is not None and t >= previous:
            gaps.append(round(t - previous, 3))
            previous = t + LATENCY_SECONDS
    return gaps


def _chunk_batches(s3: Any, job_id: str) -> dict[str, int]:
    """The first words of each chunk → the start of the map batch that asks it (from the run's batch objects)."""
    owner: dict[str, int] = {}
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket="docpipe-local-documents", Prefix=f"work/{job_id}/")
    for page in pages:
        for item in page.get("Contents", []):
            if "/chunks/batch-" in item["Key"]:
                stored = json.loads(s3.get_object(Bucket="docpipe-local-documents", Key=item["Key"])["Body"].read())
                for row in stored["chunks"]:
                    owner[row[1][:80]] = int(item["Key"].rsplit("-", 1)[-1].split(".")[0])
    return owner


def _batch_timings(events: list[dict[str, Any]], owner: dict[str, int],
                   map_starts: list[tuple[float, str]]) -> dict[str, float]:
    """Where a map batch's time goes, medians over its invocations: state entered → function started (the
    interpreter and the Lambda dispatch), started → first call at the provider (reading the batch, the chat client),
    last answer → function returned (storing the answers, recording), and the time a freed Map slot stays idle
    (a batch returned → the next batch's first call)."""
    calls: dict[int, list[float]] = {}
    for started, excerpt in map_starts:
        start = next((owner[k] for k in owner if k.startswith(excerpt[:60]) or excerpt.startswith(k[:60])), None)
        if start is not None:
            calls.setdefault(start, []).append(started)
    by_id = {e["id"]: e for e in events}
    batches = []
    for event in events:
        if event["type"] != "LambdaFunctionSucceeded":
            continue
        begun = by_id.get(event.get("previousEventId"))
        scheduled = by_id.get(begun.get("previousEventId")) if begun else None
        entered = by_id.get(scheduled.get("previousEventId")) if scheduled else None
        details = (entered or {}).get("stateEnteredEventDetails", {})
        if not (begun and scheduled and entered) or "Answer batch" not in details.get("name", ""):
            continue
        start = json.loads(details.get("input") or "{}").get("start")
        mine = sorted(calls.get(start, []))
        if mine:
            batches.append((entered["timestamp"].timestamp(), begun["timestamp"].timestamp(), mine[0],
                            mine[-1] + LATENCY_SECONDS, event["timestamp"].timestamp()))
    if not batches:
        return {}
    batches.sort()
    # The Map starts its next item when one returns: each return frees a slot, the next entered batch takes it.
    idle = [later[2] - earlier[4] for earlier, later in zip(sorted(batches, key=lambda b: b[4]),
                                                              batches[MAP_SLOTS:], strict=False)]
    return {"dispatch": statistics.median(b[1] - b[0] for b in batches),
            "to_first_call": statistics.median(b[2] - b[1] for b in batches),
            "after_last_answer": statistics.median(b[4] - b[3] for b in batches),
            "slot_idle": statistics.median(idle) if idle else 0.0, "count": len(batches)}


def _execution_costs(events: list[dict[str, Any]]) -> dict[str, Any]:
    """State transitions and the stage functions' seconds, from the execution's history."""
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
    batches = [r["batches"] for r in sfn_rows if r.get("batches")]
    if batches:
        def median(name: str) -> float:
            return statistics.median(b[name] for b in batches)

        lines += ["", f"Where a map batch's time goes (medians over {median('count'):.0f} batches a run): "
                      f"state entered → function started {median('dispatch') * 1000:.0f} ms, → first call "
                      f"{median('to_first_call') * 1000:.0f} ms, last answer → returned "
                      f"{median('after_last_answer') * 1000:.0f} ms, a freed Map slot idle "
                      f"{median('slot_idle') * 1000:.0f} ms. Gaps before each reduce level: "
                      + "; ".join(", ".join(f"{g:.2f}" for g in r["reduce_gaps"]) for r in sfn_rows) + " s."]
    for name, rows in paths.items():
        share = statistics.median(r["in_flight"]["busy_share"] for r in rows)
        middle = sorted(rows, key=lambda r: r["llm_seconds"])[len(rows) // 2]
        lines.append(f"{name}: the calls filled {share:.0%} of C × the LLM phase; calls in flight per 100 ms "
                     f"(g = 16) in the median run: {middle['in_flight']['timeline']}")
    return "\n".join(lines)
