"""Talking to the local stack over HTTP as curl would: ``make demo``, the end-to-end tests and fault injection.

One request, its JSON answer and status, whatever the status (a 4xx or 5xx is an answer, not an exception)::

    status, job = request("POST", f"{api}/jobs", {"document": {"text": "..."}, "task": {"type": "summarize"}})
    status, job = request("POST", f"{api}/jobs?task=summarize", pdf_bytes, {"Content-Type": "application/pdf"})
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


def request(method: str, url: str, body: bytes | dict[str, Any] | None = None,
            headers: dict[str, str] | None = None, *, timeout: float = 30) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) of one request; a dict ``body`` is sent as JSON."""
    headers = dict(headers or {})
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    prepared = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(prepared, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
