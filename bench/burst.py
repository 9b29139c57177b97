"""Bursts: many jobs submitted at once to the local stack, against a provider that enforces shared limits.

The stack is ``make serve``'s (emulator process, app process, a container process per concurrent invocation), wired
to the fake OpenAI-compatible server of the tests with the provider's limits on (tests/support/fake_openai.py:
calls in flight, requests per minute, 429s with ``retry-after-ms`` as OpenAI sends them). Jobs are distinct texts of
about eight chunks each, submitted over HTTP all at once; each is polled until it ends.

The provider's floor is the least time any client could take: every call, maps and reduces alike, in waves of the
in-flight cap, or at the requests-per-minute rate once the provider's initial allowance is spent, whichever is
slower (``floor_seconds``). Makespan is from the first submission to the last job's end, as a client sees it (polled
every 0.2 s). "Refused" counts the provider's 429s.

``python -m bench burst`` runs it; ``BURST_QUICK=1`` runs the first line only.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from devstack.emulator import free_port
from devstack.http import request
from devstack.stack import LOCAL_DIR, LocalStack
from tests.support.fake_openai import FakeOpenAI
from tests.support.faults import document as fault_document

PAGES_PER_JOB = 8
LATENCY = 0.5
POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Case:
    name: str
    jobs: int
    in_flight: int = 16
    requests_per_minute: int | None = None
    shared: bool = True  # DOCPIPE_LLM_MAX_IN_FLIGHT set to the provider's cap; False: 0, each worker adapts alone
    big_job_pages: int = 0  # a large job submitted first (the small ones after it)


CASES = [
    Case("40 jobs, 16 in flight", 40),
    Case("40 jobs, 16 in flight, 1,200 RPM", 40, requests_per_minute=1200),
    Case("40 jobs, 16 in flight, no shared limits (429s only)", 40, shared=False),
    Case("200 jobs, 16 in flight", 200),
    Case("1 job of 1,000 chunks, then 10 one-chunk jobs", 10, big_job_pages=1000),
]


def document(index: int, pages: int = PAGES_PER_JOB) -> str:
    return fault_document(index, pages)  # the fault suites' text: distinct per job, about a chunk a page


def run() -> str:
    cases = CASES[:1] if os.environ.get("BURST_QUICK") else CASES
    lines = ["| burst | calls | provider's floor | makespan | × floor | job p50 | job p95 | refused |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for case in cases:
        lines.append(_line(case, measure(case)))
    return "\n".join(lines)


def _line(case: Case, m: dict) -> str:
    if case.big_job_pages:
        return (f"| {case.name} | {m['answered']} | – | large job {m['big']:.1f} s | – | small p50 {m['p50']:.1f} s | "
                f"small p95 {m['p95']:.1f} s | {m['refused']} ({m['refused_pct']:.1f} %) |")
    return (f"| {case.name} | {m['answered']} | {m['floor']:.1f} s | {m['makespan']:.1f} s | "
            f"{m['makespan'] / m['floor']:.2f} | {m['p50']:.1f} s | {m['p95']:.1f} s | "
            f"{m['refused']} ({m['refused_pct']:.1f} %) |")


def measure(case: Case) -> dict:
    with FakeOpenAI() as fake:
        fake.latency = LATENCY
        fake.max_in_flight = case.in_flight
        fake.requests_per_minute = case.requests_per_minute
        env = {"OPENAI_API_KEY": "sk-burst", "OPENAI_BASE_URL": fake.base_url, "DOCPIPE_CHUNK_TOKENS": "120",
               "DOCPIPE_CHUNK_OVERLAP_TOKENS": "0", "DOCPIPE_MAP_CACHE": "false",
               "DOCPIPE_LLM_MAX_IN_FLIGHT": str(case.in_flight if case.shared else 0),
               "DOCPIPE_MAX_DOCUMENT_PAGES": "2000"}
        if case.requests_per_minute:
            env["DOCPIPE_LLM_RPM"] = str(case.requests_per_minute)
        with LocalStack(api_port=free_port(), emulator_port=free_port(), extra_env=env,
                        app_log=LOCAL_DIR / "bench-burst.log") as stack:
            _warm(stack, fake)
            fake.reset()
            documents = [document(1_000 + n) for n in range(case.jobs)]
            started = time.monotonic()
            big_id = None
            if case.big_job_pages:
                big_id = _submit(stack, document(0, case.big_job_pages))
                _wait_for_calls(fake, case.in_flight)
                documents = [document(2_000 + n, 1) for n in range(case.jobs)]
            submitted_at: dict[str, float] = {}
            with ThreadPoolExecutor(16) as threads:
                for job_id, at in threads.map(lambda text: (_submit(stack, text), time.monotonic()), documents):
                    submitted_at[job_id] = at
            ended = _wait(stack, [*submitted_at, *([big_id] if big_id else [])])
        answered = fake.calls - fake.refused
    latencies = sorted(ended[j] - submitted_at[j] for j in submitted_at)
    return {"answered": answered, "refused": fake.refused, "refused_pct": 100 * fake.refused / max(1, fake.calls),
            "floor": floor_seconds(answered, case.in_flight, case.requests_per_minute),
            "makespan": max(ended.values()) - started,
            "p50": statistics.median(latencies), "p95": latencies[max(0, math.ceil(0.95 * len(latencies)) - 1)],
            "big": (ended[big_id] - started) if big_id else 0.0}


def floor_seconds(calls: int, in_flight: int, requests_per_minute: int | None = None, *,
                  latency: float = LATENCY) -> float:
    """The least time ``calls`` calls of ``latency`` each can take at the provider's limits, whoever sends them: in
    waves of ``in_flight``; with a requests-per-minute limit, the fake provider's bucket (a second's worth at once,
    then the rate) lets the last call start no sooner than the calls beyond the first second's worth allow.

    A job's reduce waits for its maps, but other jobs' calls fill the waves meanwhile, so the reduces are calls like
    any other here. (Counting the reduces as one extra wave instead gave 10.5 s for 40 jobs of 8 chunks at 16 in
    flight, less than any client can take: 40 reduces at 16 in flight are three waves, not one.)"""
    waves = math.ceil(calls / in_flight) * latency
    if not requests_per_minute:
        return waves
    rate = requests_per_minute / 60
    return max(waves, max(0.0, calls - max(1.0, rate)) / rate + latency)


def _submit(stack: LocalStack, text: str) -> str:
    status, job = request("POST", f"{stack.api_url}/jobs", {"document": {"text": text}, "task": {"type": "summarize"}})
    assert status == 202, job
    return job["job_id"]


def _warm(stack: LocalStack, fake: FakeOpenAI) -> None:
    """One job first, so that the imports and the first clients of a process are not in the figures."""
    _wait(stack, [_submit(stack, document(0, 1))])


def _wait_for_calls(fake: FakeOpenAI, calls: int) -> None:
    deadline = time.monotonic() + 120
    while fake.calls < calls and time.monotonic() < deadline:
        time.sleep(0.05)


def _wait(stack: LocalStack, job_ids: list[str], timeout: float = 900) -> dict[str, float]:
    ended: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(ended) < len(job_ids) and time.monotonic() < deadline:
        for job_id in job_ids:
            if job_id in ended:
                continue
            status, job = request("GET", f"{stack.api_url}/jobs/{job_id}")
            if status == 200 and job["status"] in ("SUCCEEDED", "FAILED"):
                if job["status"] == "FAILED":
                    raise RuntimeError(f"job {job_id} failed: {job.get('error')}")
                ended[job_id] = time.monotonic()
        time.sleep(POLL_SECONDS)
    if len(ended) < len(job_ids):
        raise RuntimeError(f"{len(job_ids) - len(ended)} jobs unfinished after {timeout:.0f} s")
    return ended
