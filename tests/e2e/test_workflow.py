"""The Step Functions workflow end to end on the local stack: moto's interpreter runs infra/workflow.asl.json and
every Task's Lambda invoke runs the app's stage function in the app process (devstack.lambdas → dispatcher)."""

from __future__ import annotations

import json
import time

import boto3
import pytest

from devstack.emulator import free_port
from devstack.http import request as http
from devstack.stack import LOCAL_DIR, LocalStack
from tests.support.pdfs import make_pdf

pytestmark = pytest.mark.e2e

PAGES = [
    "Harbour lights were built where ships kept breaking on the rocks. The first ones burned wood and coal.",
    "Keepers trimmed the wick and polished the lens every evening. The clockwork was wound by hand at night.",
    "Automation arrived with electric lamps. The last keepers left their stations late in the last century.",
] * 4


def wait_for(stack: LocalStack, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, job = http("GET", f"{stack.api_url}/jobs/{job_id}")
        assert status == 200, job
        if job["status"] in ("SUCCEEDED", "FAILED"):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s: {job}")
        time.sleep(0.3)


def submit(stack: LocalStack, body: dict) -> tuple[int, dict]:
    return http("POST", f"{stack.api_url}/jobs", json.dumps(body).encode(), {"Content-Type": "application/json"})


@pytest.fixture(scope="module")
def stack():
    LOCAL_DIR.mkdir(exist_ok=True)
    # Small chunks and batches so a short document spans several batches, and routes to the workflow by length.
    env = {"DOCPIPE_CHUNK_TOKENS": "60", "DOCPIPE_CHUNK_OVERLAP_TOKENS": "0", "DOCPIPE_STEP_FUNCTIONS_MIN_CHUNKS": "6",
           "DOCPIPE_STEP_FUNCTIONS_BATCH_CALLS": "2"}
    with LocalStack(api_port=free_port(), emulator_port=free_port(), app_log=LOCAL_DIR / "e2e-workflow.log",
                    extra_env=env) as s:
        yield s


def sfn(stack: LocalStack):
    return boto3.client("stepfunctions", endpoint_url=stack.emulator.url, region_name="us-east-1",
                        aws_access_key_id="local", aws_secret_access_key="local")


def test_multi_task_job_runs_one_branch_per_task_and_answers_in_order(stack):
    status, job = submit(stack, {"document": {"pdf_base64": __import__("base64").b64encode(make_pdf(PAGES)).decode()},
                                 "tasks": [{"type": "summarize", "target_words": 40},
                                           {"type": "classify", "labels": ["keepers", "cooking"]}]})
    assert status == 202, job
    finished = wait_for(stack, job["job_id"])
    assert finished["status"] == "SUCCEEDED", finished
    assert finished["orchestrator"] == "stepfunctions"
    assert finished["execution_arn"].endswith(f":execution:docpipe-local-workflow:{job['job_id']}")
    _, result = http("GET", f"{stack.api_url}/jobs/{job['job_id']}/result")
    assert [r["task"]["type"] for r in result["results"]] == ["summarize", "classify"]
    assert result["results"][1]["label"] == "keepers"
    assert "summary" in result["results"][0]
    execution = sfn(stack).describe_execution(executionArn=finished["execution_arn"])
    assert execution["status"] == "SUCCEEDED"
