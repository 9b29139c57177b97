"""Each function's cold import of app.py, measured as Lambda pays it: a fresh interpreter with the function's
environment (LAMBDA_TASK_ROOT, its name, its handler, X-Ray's daemon address, as Lambda sets them).

CPU time of the import (what other processes on a busy machine lengthen least), median of ``RUNS`` fresh
interpreters, beside a bare ``import chalice``. The goal for the API function: at most ``API_BUDGET_MS`` over bare
Chalice. ``tests/integration/test_coldstart.py`` checks, without a clock, what each import may not load.
"""

from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
API_BUDGET_MS = 150
RUNS = 7
FUNCTIONS = ("api_handler", "process_jobs", "fail_dead_letters", "start_job_from_upload", "keep_warm",
             "workflow_map")

_MEASURE = """
import json, sys, time
started = time.process_time()
import {module}
print(json.dumps({{"ms": (time.process_time() - started) * 1000, "modules": len(sys.modules)}}))
"""


def lambda_env(function: str) -> dict[str, str]:
    """The variables Lambda sets that app.py's import reads, for one function of the ``test`` stage."""
    return {"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "us-east-1", "DOCPIPE_STAGE": "test",
            "LAMBDA_TASK_ROOT": str(PROJECT), "AWS_LAMBDA_FUNCTION_NAME": f"docpipe-test-{function}",
            "_HANDLER": f"app.{function}", "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512"}


def import_once(module: str, function: str, script: str = _MEASURE) -> dict:
    done = subprocess.run([str(PROJECT / ".venv" / "bin" / "python"), "-c", script.format(module=module)],
                          cwd=str(PROJECT), env=lambda_env(function), capture_output=True, text=True, timeout=60)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def run() -> str:
    lines = [f"| function | import app (CPU ms, median of {RUNS}) | over bare chalice | modules loaded |",
             "|---|---|---|---|"]
    # Interleaved, so a busy moment slows every function alike.
    samples: dict[str, list[dict]] = {name: [] for name in ("chalice", *FUNCTIONS)}
    for _ in range(RUNS):
        samples["chalice"].append(import_once("chalice", "api_handler"))
        for function in FUNCTIONS:
            samples[function].append(import_once("app", function))
    bare = statistics.median(s["ms"] for s in samples["chalice"])
    lines.append(f"| bare `import chalice` | {bare:.0f} | – | {samples['chalice'][0]['modules']} |")
    for function in FUNCTIONS:
        ms = statistics.median(s["ms"] for s in samples[function])
        lines.append(f"| {function} | {ms:.0f} | {ms - bare:+.0f} | {samples[function][0]['modules']} |")
    api_over = statistics.median(s["ms"] for s in samples["api_handler"]) - bare
    verdict = "within" if api_over <= API_BUDGET_MS else "OVER"
    summary = f"API function: {api_over:.0f} ms over bare chalice, {verdict} its {API_BUDGET_MS} ms goal."
    return "\n".join(lines) + "\n\n" + summary
