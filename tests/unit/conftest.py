"""Unit tests: plain Python, no emulator, no network. AWS is unreachable here on purpose: a test that reaches for it
fails at once instead of waiting on the internet."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def no_aws(monkeypatch):
    # A closed port on the loopback interface: any boto3 call is refused immediately.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
