"""Each function's cold import, measured as Lambda pays it: a fresh interpreter that imports app.py with the
function's environment (LAMBDA_TASK_ROOT, its name, its handler, X-Ray's daemon address, as Lambda sets them).

The API function's import may cost at most ``API_BUDGET_MS`` more than a bare ``import chalice``; medians of several
fresh interpreters, of the CPU time the import takes (what a busy machine's other processes do not lengthen the
way they lengthen wall time), so one slow start on a busy machine does not decide. No function loads the X-Ray SDK
at import: the Tracer is made at the first traced invocation, which the API function never has.
"""

from __future__ import annotations

import json
import statistics
import subprocess

import pytest

from tests.support import PROJECT

API_BUDGET_MS = 150
RUNS = 5
FUNCTIONS = ("api_handler", "process_jobs", "fail_dead_letters", "start_job_from_upload", "keep_warm")

_MEASURE = """
import json, sys, time
started = time.process_time()
import {module}
ms = (time.process_time() - started) * 1000
print(json.dumps({{"ms": ms, "xray": "aws_xray_sdk" in sys.modules}}))
"""


def _import_ms(module: str, function: str) -> list[dict]:
    env = {"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "us-east-1", "DOCPIPE_STAGE": "test",
           "LAMBDA_TASK_ROOT": str(PROJECT), "AWS_LAMBDA_FUNCTION_NAME": f"docpipe-test-{function}",
           "_HANDLER": f"app.{function}", "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
           "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512"}
    runs = []
    for _ in range(RUNS):
        done = subprocess.run([str(PROJECT / ".venv" / "bin" / "python"), "-c", _MEASURE.format(module=module)],
                              cwd=str(PROJECT), env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return runs


@pytest.fixture(scope="module")
def chalice_ms() -> float:
    return statistics.median(run["ms"] for run in _import_ms("chalice", "api_handler"))


@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_function_imports_app_without_the_tracer(function, chalice_ms, record_property):
    runs = _import_ms("app", function)
    median = statistics.median(run["ms"] for run in runs)
    record_property("import_ms_median", round(median, 1))
    record_property("over_chalice_ms", round(median - chalice_ms, 1))
    print(f"{function}: import app {median:.0f} ms (median of {RUNS}), bare chalice {chalice_ms:.0f} ms")
    assert not any(run["xray"] for run in runs), "importing app.py loaded the X-Ray SDK"
    if function == "api_handler":
        assert median - chalice_ms <= API_BUDGET_MS, (median, chalice_ms)
