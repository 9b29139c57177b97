"""What an on-call engineer reads about a job, from a real job on the local stack: its log lines and its trace.

One stack runs one LLM job (against a fake OpenAI-compatible server) while a client polls it, as a dashboard or the
CLI would. Its app log is then read as CloudWatch Logs Insights would (one JSON line per record), and the X-Ray
segments its functions sent are read from a UDP socket this test owns (``AWS_XRAY_DAEMON_ADDRESS``), as the X-Ray
daemon receives them on Lambda.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import pytest

from devstack.emulator import free_port
from devstack.http import request as http
from devstack.stack import LOCAL_DIR, LocalStack
from tests.e2e.test_local_stack import PAGES, wait_for
from tests.support.fake_openai import FakeOpenAI

pytestmark = pytest.mark.e2e

API_KEY = "sk-observability-test-key"


class SegmentSink:
    """A UDP socket on 127.0.0.1 that keeps every X-Ray document sent to it (header line, then the JSON)."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.2)
        self.address = f"127.0.0.1:{self.socket.getsockname()[1]}"
        self.raw: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SegmentSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.socket.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.raw.append(self.socket.recv(65536))
            except TimeoutError:
                continue

    def documents(self) -> list[dict[str, Any]]:
        found = []
        for packet in list(self.raw):
            header, _, body = packet.partition(b"\n")
            assert json.loads(header) == {"format": "json", "version": 1}
            found.append(json.loads(body))
        return found


def entities(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every segment and subsegment, however the SDK sent them (whole, or streamed one by one)."""
    found: list[dict[str, Any]] = []

    def walk(entity: dict[str, Any]) -> None:
        found.append(entity)
        for child in entity.get("subsegments", []):
            walk(child)

    for document in documents:
        walk(document)
    return found


@pytest.fixture(scope="module")
def traced_job():
    log = LOCAL_DIR / "e2e-observability.log"
    LOCAL_DIR.mkdir(exist_ok=True)
    log.unlink(missing_ok=True)
    with FakeOpenAI() as fake, SegmentSink() as sink:
        fake.latency = 0.2
        env = {"OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": API_KEY, "DOCPIPE_CHUNK_TOKENS": "60",
               "DOCPIPE_CHUNK_OVERLAP_TOKENS": "0", "AWS_XRAY_DAEMON_ADDRESS": sink.address}
        with LocalStack(api_port=free_port(), emulator_port=free_port(), extra_env=env, app_log=log) as stack:
            status, job = http("POST", f"{stack.api_url}/jobs", json.dumps({
                "document": {"text": "\f".join(PAGES)}, "task": {"type": "summarize"}}).encode(),
                {"Content-Type": "application/json"})
            assert status == 202, job
            # wait_for polls the API all along: its requests run beside the worker in the app process.
            finished = wait_for(stack, job["job_id"], timeout=120)
            deadline = time.monotonic() + 10
            while not any(d.get("name") == "process_jobs" for d in sink.documents()) and time.monotonic() < deadline:
                time.sleep(0.1)
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        yield {"job": finished, "lines": lines, "documents": sink.documents(), "raw": b"".join(sink.raw)}


def test_every_line_the_worker_writes_for_the_job_carries_its_id_and_names_the_worker(traced_job):
    job_id = traced_job["job"]["job_id"]
    assert traced_job["job"]["status"] == "SUCCEEDED"
    worker_lines = [line for line in traced_job["lines"] if line.get("function_name") == "process_jobs"]
    assert worker_lines, "the worker wrote no line"
    assert all(line.get("job_id") == job_id for line in worker_lines), \
        [line for line in worker_lines if line.get("job_id") != job_id]
    story = [line["message"] for line in traced_job["lines"] if line.get("job_id") == job_id]
    assert {"job queued", "document chunked", "job succeeded"} <= set(story), story
    # The API's own line names the API; no worker line says api_handler.
    queued = next(line for line in traced_job["lines"] if line["message"] == "job queued")
    assert queued["function_name"] == "api_handler"
    assert not any(line.get("function_name") == "api_handler" for line in traced_job["lines"]
                   if line["message"] in ("document chunked", "job succeeded"))


def test_the_worker_sends_its_segment_with_the_job_its_aws_calls_and_its_llm_calls(traced_job):
    job_id = traced_job["job"]["job_id"]
    found = entities(traced_job["documents"])
    names = [e.get("name") for e in found]
    assert "process_jobs" in names and "## process_jobs" in names, names
    jobs = [e for e in found if e.get("name") == "## job"]
    assert any(e.get("annotations", {}).get("job_id") == job_id for e in jobs), jobs
    aws_calls = {(e.get("name"), e.get("aws", {}).get("operation")) for e in found if e.get("namespace") == "aws"}
    assert {"dynamodb", "s3", "sqs"} <= {name.lower() for name, _ in aws_calls}, aws_calls
    llm_calls = [e for e in found if e.get("name") == "llm.chat"]
    assert len(llm_calls) >= traced_job["job"]["usage"]["calls"] >= 2
    for call in llm_calls:
        assert call["annotations"]["model"] == "gpt-4o-mini"
        assert call["annotations"]["outcome"] == "ok" and call["annotations"]["attempt"] == 1
        assert call["annotations"]["prompt_tokens"] > 0 and call["end_time"] >= call["start_time"]


def test_no_trace_holds_the_document_or_the_key(traced_job):
    raw = traced_job["raw"]
    assert raw, "no segment was sent"
    assert API_KEY.encode() not in raw
    for page in PAGES:
        assert page[:40].encode() not in raw
