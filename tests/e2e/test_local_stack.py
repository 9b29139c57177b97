"""End to end on the real local stack: the emulator process, the app process with its dispatcher, HTTP in.

These start exactly what ``make serve`` starts (on free ports) and talk to it as curl would.
"""

from __future__ import annotations

import base64
import json
import time

import boto3
import pytest

from devstack.emulator import PortInUse, free_port
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
]


# Two local API keys, as DOCPIPE_API_KEYS configures them for make serve; requests without a key act as "local".
KEYS = {"alice-e2e-key-4Rt8Wq1Zp": "alice", "bob-e2e-key-6Ym3Jd7Kx2": "bob"}


@pytest.fixture(scope="module")
def stack():
    LOCAL_DIR.mkdir(exist_ok=True)
    with LocalStack(api_port=free_port(), emulator_port=free_port(), app_log=LOCAL_DIR / "e2e-offline.log",
                    extra_env={"DOCPIPE_API_KEYS": json.dumps(KEYS)}) as s:
        yield s


def test_two_clients_over_http_see_only_their_own_jobs_and_keyless_requests_still_work(stack):
    alice, bob = list(KEYS)
    submitted = {}
    for key in (alice, None):
        status, job = http("POST", f"{stack.api_url}/jobs", json.dumps({
            "document": {"text": " ".join(PAGES)}, "task": {"type": "summarize"}}).encode(),
            {"Content-Type": "application/json", **({"x-api-key": key} if key else {})})
        assert status == 202, job
        submitted[key] = job["job_id"]

    for owner, job_id in submitted.items():
        for reader in (alice, bob, None):
            status, shown = http("GET", f"{stack.api_url}/jobs/{job_id}", headers={"x-api-key": reader} if reader
                                 else {})
            assert status == (200 if reader == owner else 404), (owner, reader, shown)
    assert http("GET", f"{stack.api_url}/jobs/{submitted[alice]}", headers={"x-api-key": "x" * 30})[0] == 403
    assert wait_for(stack, submitted[None])["status"] == "SUCCEEDED"


def test_text_document_submitted_over_http_is_summarized(stack):
    status, job = http("POST", f"{stack.api_url}/jobs", json.dumps({
        "document": {"text": "\f".join(PAGES)}, "task": {"type": "summarize"}}).encode(),
        {"Content-Type": "application/json"})
    assert status == 202
    finished = wait_for(stack, job["job_id"])
    assert finished["status"] == "SUCCEEDED"
    _, result = http("GET", f"{stack.api_url}/jobs/{job['job_id']}/result")
    assert result["provider"] == "offline-extractive"
    assert set(result["pages_cited"]) <= {1, 2, 3} and result["pages_cited"]
    assert "keepers" in result["summary"].lower() or "lights" in result["summary"].lower()


def test_base64_pdf_is_summarized_with_its_page_count(stack):
    pdf = make_pdf(PAGES)
    status, job = http("POST", f"{stack.api_url}/jobs", json.dumps({
        "document": {"pdf_base64": base64.b64encode(pdf).decode()}, "task": {"type": "summarize"}}).encode(),
        {"Content-Type": "application/json"})
    assert status == 202
    assert wait_for(stack, job["job_id"])["status"] == "SUCCEEDED"
    _, result = http("GET", f"{stack.api_url}/jobs/{job['job_id']}/result")
    assert result["document"]["pages"] == 3


def test_raw_pdf_body_with_task_in_query_is_summarized(stack):
    status, job = http("POST", f"{stack.api_url}/jobs?task=summarize&target_words=40", make_pdf(PAGES),
                       {"Content-Type": "application/pdf"})
    assert status == 202, job
    assert wait_for(stack, job["job_id"])["task"] == {"type": "summarize", "target_words": 40}


def test_upload_to_incoming_starts_a_job_by_itself(stack):
    s3 = boto3.client("s3", endpoint_url=stack.emulator.url, region_name="us-east-1",
                      aws_access_key_id="local", aws_secret_access_key="local")
    s3.put_object(Bucket="docpipe-local-documents", Key="incoming/local/field guide.pdf", Body=make_pdf(PAGES),
                  ContentType="application/pdf", Metadata={"task": "summarize"})
    deadline = time.monotonic() + 60
    job_id = None
    while job_id is None and time.monotonic() < deadline:
        tags = s3.get_object_tagging(Bucket="docpipe-local-documents", Key="incoming/local/field guide.pdf")["TagSet"]
        job_id = next((t["Value"] for t in tags if t["Key"] == "docpipe-job-id"), None)
        time.sleep(0.2)
    assert job_id, "the upload never became a job"
    job = wait_for(stack, job_id)
    assert job["status"] == "SUCCEEDED" and job["source"] == "s3"


def test_unreadable_pdf_ends_failed_with_its_code_not_stuck(stack):
    status, job = http("POST", f"{stack.api_url}/jobs", json.dumps({
        "document": {"pdf_base64": base64.b64encode(b"%PDF-1.4\n% nothing else\n%%EOF\n").decode()},
        "task": {"type": "summarize"}}).encode(), {"Content-Type": "application/json"})
    assert status == 202
    finished = wait_for(stack, job["job_id"])
    assert finished["status"] == "FAILED"
    assert finished["error"]["code"] == "corrupt_pdf"


def test_second_stack_on_a_busy_port_fails_with_a_clear_message(stack):
    with pytest.raises(PortInUse, match="already in use"):
        LocalStack(api_port=stack.api_port, emulator_port=free_port()).start()


def test_openai_path_and_a_killed_app_lose_no_job():
    """The openai SDK against a fake OpenAI-compatible server; the app is SIGKILLed mid-job and restarted."""
    with FakeOpenAI() as fake:
        fake.latency = 1.5
        env = {"OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "sk-e2e-test",
               "DOCPIPE_CHUNK_TOKENS": "60", "DOCPIPE_CHUNK_OVERLAP_TOKENS": "0", "DOCPIPE_HEARTBEAT_SECONDS": "2"}
        with LocalStack(api_port=free_port(), emulator_port=free_port(), extra_env=env, worker_timeout=30,
                        app_log=LOCAL_DIR / "e2e-openai.log") as stack:
            status, job = http("POST", f"{stack.api_url}/jobs", json.dumps({
                "document": {"text": "\f".join(PAGES)}, "task": {"type": "summarize"}}).encode(),
                {"Content-Type": "application/json"})
            assert status == 202
            deadline = time.monotonic() + 60
            while fake.calls == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert fake.calls > 0, "the worker never called the LLM"
            stack.kill_app()
            calls_before_restart = fake.calls
            stack.start_app()
            finished = wait_for(stack, job["job_id"], timeout=120)
            _, result = http("GET", f"{stack.api_url}/jobs/{job['job_id']}/result")
    assert finished["status"] == "SUCCEEDED"
    assert finished["attempts"] == 2
    assert fake.calls > calls_before_restart
    assert result["provider"] == "openai" and result["usage"]["calls"] >= 2
    assert result["document"]["chunks"] >= 2
