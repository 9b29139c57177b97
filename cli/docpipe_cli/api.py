"""docpipe's REST API over HTTP (httpx), with the retries a command line needs.

Connection failures and the answers that mean "try again" (429, 502, 503, 504) are retried with a doubling,
jittered backoff: a few times for a submission (which carries an ``Idempotency-Key``, so a retry never makes a
second job), without end while waiting for a job (the job goes on whether or not we can see it). Any other answer
is final: a 2xx is returned, a 4xx or 5xx raised as ``ApiError`` with docpipe's code and message::

    api = DocpipeAPI("http://127.0.0.1:8000", api_key=None)
    job = api.submit({"text": "..."}, {"type": "summarize"}, idempotency_key=str(uuid.uuid4()))
    api.job(job["job_id"])["status"]
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

RETRYABLE = {429, 502, 503, 504}
SUBMIT_ATTEMPTS = 5
_FIRST_DELAY, _LONGEST_DELAY = 0.5, 8.0
_S3_ERROR = re.compile(r"<Code>([^<]+)</Code>.*?<Message>([^<]*)</Message>", re.S)


class ApiError(Exception):
    """docpipe (or S3) answered with an error: its stable ``code`` and human ``message``."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status = code, message, status


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, …): doubling from 0.5 s to 8 s, with jitter so that
    many waiting commands do not retry in step."""
    return min(_LONGEST_DELAY, _FIRST_DELAY * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


class DocpipeAPI:
    """One docpipe deployment at ``base_url``, as the client whose key is ``api_key`` (None: no key, as locally).

    ``on_retry(reason, seconds)`` hears of each retry; ``transport`` and ``sleep`` let tests run it without a network
    or a clock.
    """

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 30.0,
                 on_retry: Callable[[str, float], None] | None = None, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        headers = {"User-Agent": "docpipe-cli"} | ({"x-api-key": api_key} if api_key else {})
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout,
                                  transport=transport)
        # Uploads go to S3, which must never see the API key.
        self._s3 = httpx.Client(timeout=httpx.Timeout(timeout, write=None), transport=transport)
        self._on_retry = on_retry
        self._sleep = sleep

    def close(self) -> None:
        self._http.close()
        self._s3.close()

    # --- the routes ---------------------------------------------------------------------------------------------

    def submit(self, document: dict[str, Any], task: dict[str, Any], *, idempotency_key: str) -> dict[str, Any]:
        """``POST /jobs``: the accepted job (202)."""
        return self._call("POST", "/jobs", attempts=SUBMIT_ATTEMPTS, json={"document": document, "task": task},
                          headers={"Idempotency-Key": idempotency_key})

    def upload(self, path: Path, content_type: str) -> dict[str, Any]:
        """The file through ``POST /uploads`` and S3's presigned form; the upload's answer (its ``s3_key`` …)."""
        form = self._call("POST", "/uploads", attempts=SUBMIT_ATTEMPTS,
                          json={"filename": path.name, "content_type": content_type})
        size = path.stat().st_size
        if size > form["max_bytes"]:
            raise ApiError("too_large", f"{path.name} is {size:,} bytes; this docpipe takes documents of at most "
                                        f"{form['max_bytes']:,} bytes")

        def post() -> httpx.Response:
            with path.open("rb") as file:  # opened again for each attempt: a retry sends the file from its start
                return self._s3.post(form["url"], data=form["fields"], files={"file": (path.name, file, content_type)})

        response = self._retrying(post, attempts=SUBMIT_ATTEMPTS)
        if response.status_code >= 300:
            found = _S3_ERROR.search(response.text)
            code, message = found.groups() if found else (f"http_{response.status_code}", response.text[:300])
            raise ApiError(code, f"S3 refused the upload: {message}", response.status_code)
        return form

    def job(self, job_id: str, *, patient: bool = False) -> dict[str, Any]:
        """``GET /jobs/{id}``; ``patient``: retry a lost connection until it comes back (while waiting on a job)."""
        return self._call("GET", f"/jobs/{job_id}", attempts=None if patient else SUBMIT_ATTEMPTS)

    def result(self, job_id: str, *, patient: bool = False) -> dict[str, Any]:
        return self._call("GET", f"/jobs/{job_id}/result", attempts=None if patient else SUBMIT_ATTEMPTS)

    def jobs(self, *, status: str | None = None, limit: int = 20, cursor: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit} | ({"status": status} if status else {}) \
            | ({"cursor": cursor} if cursor else {})
        return self._call("GET", "/jobs", attempts=SUBMIT_ATTEMPTS, params=params)

    def retry(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/jobs/{job_id}/retry", attempts=SUBMIT_ATTEMPTS)

    # --- how -----------------------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, *, attempts: int | None, **request: Any) -> dict[str, Any]:
        response = self._retrying(lambda: self._http.request(method, path, **request), attempts=attempts)
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code >= 400:
            error = body.get("error") if isinstance(body, dict) else None
            if isinstance(error, dict):
                raise ApiError(str(error.get("code")), str(error.get("message")), response.status_code)
            raise ApiError(f"http_{response.status_code}", response.text[:300] or response.reason_phrase,
                           response.status_code)
        return body

    def _retrying(self, send: Callable[[], httpx.Response], *, attempts: int | None) -> httpx.Response:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = send()
            except httpx.TransportError as exc:
                reason = f"cannot reach {exc.request.url.host if _has_request(exc) else 'the API'}: " \
                         f"{type(exc).__name__}"
                if attempts is not None and attempt >= attempts:
                    raise ApiError("unreachable", reason) from None
            else:
                if response.status_code not in RETRYABLE or (attempts is not None and attempt >= attempts):
                    return response
                reason = f"the API answered {response.status_code}"
            delay = backoff(attempt)
            if self._on_retry:
                self._on_retry(reason, delay)
            self._sleep(delay)


def _has_request(exc: httpx.TransportError) -> bool:
    try:
        exc.request  # noqa: B018 (httpx raises when the error has no request)
    except RuntimeError:
        return False
    return True
