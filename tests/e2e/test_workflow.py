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
from tests.support.fake_openai import FakeOpenAI
from tests.support.jobwait import wait_for
from tests.support.pdfs import make_pdf

pytestmark = pytest.mark.e2e

PAGES = [
    "Harbour lights were built where ships kept breaking on the rocks. The first ones burned wood and coal.",
    "Keepers trimmed the wick and polished the lens every evening. The clockwork was wound by hand at night.",
    "Automation arrived with electric lamps. The last keepers left their stations late in the last century.",
] * 4


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


def test_a_long_single_task_document_goes_to_the_workflow_and_a_short_one_stays_on_the_queue(stack):
    _, long_job = submit(stack, {"document": {"text": "\f".join(PAGES)}, "task": {"type": "summarize"}})
    _, short_job = submit(stack, {"document": {"text": PAGES[0]}, "task": {"type": "summarize"}})
    long_view, short_view = wait_for(stack, long_job["job_id"]), wait_for(stack, short_job["job_id"])
    assert long_view["status"] == short_view["status"] == "SUCCEEDED", (long_view, short_view)
    assert long_view["orchestrator"] == "stepfunctions" and long_view["progress"]["chunks_total"] >= 6
    assert short_view["orchestrator"] == "queue" and "execution_arn" not in short_view
    _, result = http("GET", f"{stack.api_url}/jobs/{long_job['job_id']}/result")
    assert result["summary"] and result["document"]["chunks"] == long_view["progress"]["chunks_total"]
    assert "results" not in result  # a job of one task keeps the one-task result shape


def execution_when_ended(stack, arn: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        execution = sfn(stack).describe_execution(executionArn=arn)
        if execution["status"] != "RUNNING" or time.monotonic() > deadline:
            return execution
        time.sleep(0.1)


def test_a_failing_stage_ends_the_job_failed_with_its_reason_and_the_stage(stack):
    status, job = submit(stack, {"document": {"pdf_base64": __import__("base64").b64encode(
        b"%PDF-1.4\n% nothing else\n%%EOF\n").decode()}, "tasks": [{"type": "summarize"}, {"type": "summarize",
                                                                                          "target_words": 30}]})
    assert status == 202, job
    finished = wait_for(stack, job["job_id"])
    assert finished["status"] == "FAILED"
    assert finished["error"]["code"] == "corrupt_pdf" and finished["error"]["stage"] == "extract", finished
    # The failure stage ends the job first; the execution reaches its Fail state a moment later.
    execution = execution_when_ended(stack, finished["execution_arn"])
    assert execution["status"] == "FAILED" and execution.get("error") == "JobFailed"


def test_a_redelivered_message_finds_the_execution_started_and_starts_none(stack):
    _, job = submit(stack, {"document": {"text": "\f".join(PAGES)},
                            "tasks": [{"type": "summarize"}, {"type": "summarize", "target_words": 30}]})
    finished = wait_for(stack, job["job_id"])
    assert finished["status"] == "SUCCEEDED"
    # The same message once more, as SQS may deliver it: the job is finished, nothing starts.
    sqs = boto3.client("sqs", endpoint_url=stack.emulator.url, region_name="us-east-1",
                       aws_access_key_id="local", aws_secret_access_key="local")
    url = sqs.get_queue_url(QueueName="docpipe-local-jobs")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"job_id": job["job_id"]}))
    machine = finished["execution_arn"].rsplit(":", 1)[0].replace(":execution:", ":stateMachine:")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and int(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"][
            "ApproximateNumberOfMessages"]):
        time.sleep(0.2)
    runs = [e["name"] for e in sfn(stack).list_executions(stateMachineArn=machine)["executions"]
            if e["name"].startswith(job["job_id"])]
    assert runs == [job["job_id"]]
    assert wait_for(stack, job["job_id"])["status"] == "SUCCEEDED"


@pytest.mark.parametrize("tasks, code", [
    ([{"type": "summarize"}], "invalid_task"),
    ([{"type": "summarize"}] * 6, "invalid_task"),
    ("summarize", "invalid_task"),
    ([{"type": "summarize"}, {"type": "extract"}], "invalid_schema"),
    ([{"type": "summarize"}, {"type": "translate"}], "unknown_task"),
])
def test_a_malformed_tasks_list_is_refused_with_a_clear_400(stack, tasks, code):
    status, body = submit(stack, {"document": {"text": PAGES[0]}, "tasks": tasks})
    assert status == 400 and body["error"]["code"] == code, body
    if isinstance(tasks, list) and len(tasks) == 2:
        assert body["error"]["message"].startswith("tasks[1]: ")


def test_task_and_tasks_together_are_refused(stack):
    status, body = submit(stack, {"document": {"text": PAGES[0]}, "task": {"type": "summarize"},
                                  "tasks": [{"type": "summarize"}, {"type": "summarize"}]})
    assert status == 400 and body["error"]["code"] == "invalid_request", body


LONG_PAGES = [f"Page {n}. " + " ".join(f"Keeper {n}.{i} wound the clockwork, trimmed the wick and logged the weather."
                                       for i in range(6)) for n in range(1, 41)]


def test_a_long_document_through_the_workflow_asks_each_chunk_once_and_waits_when_the_provider_throttles():
    with FakeOpenAI() as fake:
        fake.latency = 0.05
        env = {"OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "sk-e2e-test", "DOCPIPE_LLM_MAX_ATTEMPTS": "1",
               "DOCPIPE_CHUNK_TOKENS": "200", "DOCPIPE_CHUNK_OVERLAP_TOKENS": "0",
               "DOCPIPE_STEP_FUNCTIONS_MIN_CHUNKS": "10", "DOCPIPE_STEP_FUNCTIONS_BATCH_CALLS": "4",
               "DOCPIPE_LLM_CONCURRENCY": "8"}
        with LocalStack(api_port=free_port(), emulator_port=free_port(), extra_env=env, worker_timeout=30,
                        app_log=LOCAL_DIR / "e2e-workflow-openai.log") as stack:
            # The provider's first answer is a 429 asking for a wait longer than a call waits by itself (30 s): the
            # batch hands the wait to the workflow (a Wait state, no Lambda running) and asks again after it.
            fake.script([("status", 429, {"Retry-After": "31"})])
            _, job = submit(stack, {"document": {"text": "\f".join(LONG_PAGES)}, "task": {"type": "summarize"}})
            finished = wait_for(stack, job["job_id"], timeout=180)
            history = sfn(stack).get_execution_history(executionArn=finished["execution_arn"],
                                                       maxResults=1000)["events"]
            _, result = http("GET", f"{stack.api_url}/jobs/{job['job_id']}/result")
        # (A call cancelled while its body was being sent reached the server without one: it was never answered.)
        asked = [json.dumps(r["json"]["messages"]) for r in fake.chat_requests if r["json"]]
    assert finished["status"] == "SUCCEEDED", finished
    chunks = result["document"]["chunks"]
    assert chunks >= 10 and finished["orchestrator"] == "stepfunctions"
    assert any(e["type"] == "WaitStateEntered" for e in history)
    # Each distinct prompt was answered and paid for once: a chunk answered twice would count twice. (Throttled or
    # cancelled requests got no answer; they were asked again after the wait.)
    assert result["usage"]["calls"] == len(set(asked)) < len(asked)


SECOND = "Second copy."


def test_with_short_function_timeouts_the_workflow_finishes_a_document_the_queue_alone_cannot():
    """Each invocation may spend about 6 s on LLM calls (a 16 s timeout less the 10 s kept to store the outcome);
    the document needs about 12 s of calls at 2 in flight. One worker invocation never has the time, and without the
    map cache each delivery starts over; the workflow's batches each fit one invocation."""
    pages = LONG_PAGES[:12]
    with FakeOpenAI() as fake:
        fake.latency = 1.0
        env = {"OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "sk-e2e-test", "DOCPIPE_LLM_CONCURRENCY": "2",
               "DOCPIPE_CHUNK_TOKENS": "200", "DOCPIPE_CHUNK_OVERLAP_TOKENS": "0", "DOCPIPE_MAP_CACHE": "false",
               "DOCPIPE_RETRY_BACKOFF_SECONDS": "1", "DOCPIPE_STEP_FUNCTIONS_MIN_CHUNKS": "1000",
               "DOCPIPE_STEP_FUNCTIONS_BATCH_CALLS": "4", "DOCPIPE_HEARTBEAT_SECONDS": "2"}
        with LocalStack(api_port=free_port(), emulator_port=free_port(), extra_env=env, worker_timeout=16,
                        app_log=LOCAL_DIR / "e2e-workflow-timeouts.log") as stack:
            # Forced through the queue alone (the document is under DOCPIPE_STEP_FUNCTIONS_MIN_CHUNKS).
            _, queued = submit(stack, {"document": {"text": "\f".join(pages)}, "task": {"type": "summarize"}})
            on_queue = wait_for(stack, queued["job_id"], timeout=240)
            # The same pages, each marked as the second copy, as a multi-task job, which always takes the workflow.
            # The mark tells its requests from the queue job's whenever they arrive (the fake's answers quote a
            # chunk's first words, so the reduce prompts carry it too).
            _, flowed = submit(stack, {"document": {"text": "\f".join(f"{SECOND} {page}" for page in pages)},
                                       "tasks": [{"type": "summarize"}, {"type": "summarize", "target_words": 60}]})
            on_workflow = wait_for(stack, flowed["job_id"], timeout=240)
            # (A request cancelled while its body was being sent reached the server without one: never answered.)
            prompts = [json.dumps(r["json"]["messages"]) for r in fake.chat_requests if r["json"]]
            asked = [prompt for prompt in prompts if SECOND in prompt]
            queue_requests = len(prompts) - len(asked)
            _, result = http("GET", f"{stack.api_url}/jobs/{flowed['job_id']}/result")
    assert on_queue["orchestrator"] == "queue" and on_queue["status"] == "FAILED", on_queue
    assert on_queue["attempts"] >= 2 and queue_requests > on_queue["progress"]["chunks_total"]
    assert on_workflow["status"] == "SUCCEEDED", on_workflow
    assert result["usage"]["calls"] == len(set(asked)) == len(asked)  # no chunk asked twice
