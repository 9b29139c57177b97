"""Waiting for a job on a running local stack, over HTTP as a client would."""

from __future__ import annotations

import time

from devstack.http import request as http
from devstack.stack import LocalStack


def wait_for(stack: LocalStack, job_id: str, timeout: float = 120, every: float = 0.2) -> dict:
    """The job's view once it has ended (SUCCEEDED or FAILED); past ``timeout``, an AssertionError with its view."""
    deadline = time.monotonic() + timeout
    while True:
        status, job = http("GET", f"{stack.api_url}/jobs/{job_id}")
        assert status == 200, job
        if job["status"] in ("SUCCEEDED", "FAILED"):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s: {job}")
        time.sleep(every)
