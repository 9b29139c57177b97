"""The ``docpipe`` command as a user runs it: ``.venv/bin/docpipe`` (installed by the Makefile) against the real local
stack, over HTTP, with the emulator's S3 taking the uploads."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from devstack.emulator import free_port
from devstack.stack import LOCAL_DIR, LocalStack
from tests.support import PROJECT
from tests.support.pdfs import make_pdf

pytestmark = pytest.mark.e2e

DOCPIPE = PROJECT / ".venv" / "bin" / "docpipe"
SAMPLE = PROJECT / "samples" / "lighthouse-keeping.pdf"
MAX_DOCUMENT_BYTES = 20_000
LOG = LOCAL_DIR / "e2e-cli.log"


@pytest.fixture(scope="module")
def stack():
    LOCAL_DIR.mkdir(exist_ok=True)
    LOG.unlink(missing_ok=True)
    with LocalStack(api_port=free_port(), emulator_port=free_port(), app_log=LOG,
                    extra_env={"DOCPIPE_MAX_DOCUMENT_BYTES": str(MAX_DOCUMENT_BYTES)}) as s:
        yield s


def docpipe(stack, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DOCPIPE_API_URL": stack.api_url}
    return subprocess.run([str(DOCPIPE), *args], capture_output=True, text=True, env=env, timeout=180)


def test_a_directory_of_pdfs_uploaded_and_followed_to_its_results(stack, tmp_path):
    for name in ("first.pdf", "second.pdf"):
        (tmp_path / name).write_bytes(SAMPLE.read_bytes())

    # Both files are over --upload-over: they go through POST /uploads and the presigned form to S3.
    done = docpipe(stack, "submit", str(tmp_path), "--wait", "--json", "--upload-over", "1000")

    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert sorted(s["file"].rsplit("/", 1)[-1] for s in shown) == ["first.pdf", "second.pdf"]
    assert all(s["status"] == "SUCCEEDED" and s["result"]["document"]["pages"] == 4 for s in shown)
    assert done.stderr.count("uploading") == 2 and all(s["job_id"] in done.stderr for s in shown)
    status = docpipe(stack, "status", shown[0]["job_id"], "--json")
    assert json.loads(status.stdout)["document"]["source"] == "s3"
    listed = json.loads(docpipe(stack, "jobs", "--status", "SUCCEEDED", "--json").stdout)
    assert {s["job_id"] for s in shown} <= {job["job_id"] for job in listed}
    # The local stack prints each job's event, which a rule on the stage's bus delivered.
    deadline = time.monotonic() + 30
    while not all(f"job event: Job Succeeded {s['job_id']}" in LOG.read_text() for s in shown):
        assert time.monotonic() < deadline, LOG.read_text()[-3000:]
        time.sleep(0.2)


def test_a_failed_job_exits_1_with_its_reason_and_a_retry_fails_again(stack, tmp_path):
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\n% nothing else\n%%EOF\n")

    done = docpipe(stack, "submit", str(broken), "--wait")

    assert done.returncode == 1 and "FAILED: corrupt_pdf" in done.stdout
    job_id = done.stderr.split("job ", 1)[1].split()[0]
    again = docpipe(stack, "retry", job_id, "--wait")
    assert again.returncode == 1 and "corrupt_pdf" in again.stdout


def test_a_document_over_the_deployments_limit_is_refused_before_any_job(stack, tmp_path):
    big = tmp_path / "big.pdf"
    big.write_bytes(make_pdf(["Lighthouse keepers wound the clockwork every night. " * 60] * 12))
    assert big.stat().st_size > MAX_DOCUMENT_BYTES

    # Through POST /uploads: the form's limit is the deployment's, so the file is refused before it is sent.
    done = docpipe(stack, "submit", str(big), "--upload-over", "1000")

    assert done.returncode == 1 and "too_large" in done.stderr + done.stdout
    assert "job " not in done.stderr


def test_usage_errors_exit_2_with_a_clear_message(stack, tmp_path):
    assert docpipe(stack, "submit", str(tmp_path / "missing.pdf")).returncode == 2
    empty = docpipe(stack, "submit", str(tmp_path))
    assert empty.returncode == 2 and "holds no PDF" in empty.stderr
