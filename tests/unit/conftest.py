"""Unit tests: plain Python, no emulator, no network. Any connection a unit test tries is refused at once, AWS's
included, so a test that reaches for a server fails here instead of waiting on one."""

from __future__ import annotations

import socket

import pytest


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(sock: socket.socket, address: object, *args: object) -> None:
        raise ConnectionRefusedError(f"a unit test opens no connection (it tried {address!r})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    # boto3 then fails on its first call, without retries, rather than looking for credentials and endpoints.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
