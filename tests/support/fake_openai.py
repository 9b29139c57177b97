"""A fake OpenAI-compatible HTTP server for the test suite and the benchmarks (standard library only).

It speaks the wire format of ``POST /v1/chat/completions`` (non-streaming) and ``GET /v1/models`` well enough for
the real ``openai`` SDK, so tests exercise the SDK's own HTTP, retry and timeout code::

    with FakeOpenAI() as fake:
        model = ChatModel(model="gpt-4o-mini", api_key="sk-...", base_url=fake.base_url, timeout=5, max_retries=0)
        fake.script([("status", 429, {"Retry-After": "1"}), ("ok",)])
        fake.latency = 0.2

The default answer echoes evidence of its input, so a test can tell that the document reached the model:
``Summary of 412 words (p. 3): Lorem ipsum dolor sit amet, consectetur adipiscing elit,`` (word count of the text
inside ``<document>``/``<partial>`` tags, the first page of the first ``pages="..."`` attribute, the first 8 words).
Set ``fake.responder = lambda request_json: "text"`` to choose the content yourself.

Script steps, consumed one per chat-completion request in arrival order (then requests succeed normally):

* ``("ok",)`` or ``("ok", content)`` — a normal answer (optionally with this content);
* ``("status", code)``, ``("status", code, headers)``, ``("status", code, headers, body)`` — an error (or any status)
  with the real OpenAI error body for ``code`` unless ``body`` is given (a dict is sent as JSON, a str/bytes as is,
  with the Content-Type from ``headers`` or text/plain);
* ``("hang", seconds)`` — wait that long (longer than the client's timeout) before answering normally;
* ``("drop",)`` — close the connection without answering.

``fake.fault = lambda request_json: step_or_None`` injects faults by rule (random, time-based, by content) when no
scripted step is pending.

Shared limits, as a provider enforces them on one API key whoever calls: ``fake.max_in_flight`` (calls answered at
once) and ``fake.requests_per_minute`` (a bucket holding one second's worth, refilled continuously, as OpenAI enforces
its per-minute limits over short windows). A request over either is answered 429 the way OpenAI answers it, with
``retry-after-ms``, ``Retry-After`` and the ``x-ratelimit-*`` headers (which every answer carries while a per-minute
limit is set), and counted in ``fake.refused``; ``fake.peak_admitted`` is the most calls answered at once::

    fake.max_in_flight, fake.requests_per_minute, fake.latency = 16, 1200, 0.5

Every request is recorded in ``fake.requests``; ``fake.max_concurrency`` is the most requests ever in flight at once.
Request headers carry the API key: they are recorded for assertions but never logged or printed.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import socket
import string
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"

# The real 401 body: newrelic/newrelic-python-agent tests/mlmodel_openai/cassette.yaml (interactions[2].response),
# copied in /work/shared/corpus/openai/newrelic__chat-401-invalid_api_key.response.json.
INVALID_API_KEY_BODY: dict[str, Any] = {
    "error": {
        "message": "Incorrect API key provided: DEADBEEF. You can find your API key at "
                   "https://platform.openai.com/account/api-keys.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
}


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's ``ErrorResponse`` schema: ``{"error": {"message", "type", "param", "code"}}``, all four required."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def default_error_body(status: int, model: str = "gpt-4o-mini") -> dict[str, Any]:
    """The body OpenAI sends with ``status`` (401 is the recorded one; the others follow the API's wording)."""
    if status == 401:
        return INVALID_API_KEY_BODY
    if status == 400:
        return error_body("Invalid request.", "invalid_request_error")
    if status == 403:
        return error_body("You are not allowed to sample from this model", "invalid_request_error",
                          "unsupported_country_region_territory")
    if status == 404:
        return error_body(f"The model `{model}` does not exist or you do not have access to it.",
                          "invalid_request_error", "model_not_found")
    if status == 429:
        return error_body(f"Rate limit reached for {model} in organization org-fake on requests per min (RPM): "
                          "Limit 3, Used 3, Requested 1. Please try again in 1s.", "requests", "rate_limit_exceeded")
    if status == 503:
        return error_body("The engine is currently overloaded, please try again later.", "server_error")
    if status >= 500:
        return error_body("The server had an error while processing your request. Sorry about that!", "server_error")
    return error_body(f"HTTP {status}", "invalid_request_error")


_TAG = re.compile(r"<(document|partial)\b([^>]*)>(.*?)</\1>", re.DOTALL)
_PAGES = re.compile(r'pages="(\d+)')


def message_text(message: dict[str, Any]) -> str:
    """The text of one chat message (plain string content or a list of ``{"type": "text", "text": ...}`` parts)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def default_reply(request: dict[str, Any]) -> str:
    """``Summary of <N> words (p. X): <first 8 words>`` built from the last user message."""
    users = [message_text(m) for m in request.get("messages", []) if isinstance(m, dict) and m.get("role") == "user"]
    text = users[-1] if users else ""
    tagged = _TAG.findall(text)
    body = "\n".join(inner for _name, _attrs, inner in tagged) if tagged else text
    words = body.split()
    pages = _PAGES.search(text)
    cite = f" (p. {pages.group(1)})" if pages else ""
    return f"Summary of {len(words)} words{cite}: {' '.join(words[:8])}"


def approx_tokens(text: str) -> int:
    return len(text) // 4 + 1


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 makes the kernel drop bursts of connections (client retries ~1 s later)
    daemon_threads = True
    allow_reuse_address = True

    fake: FakeOpenAI

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and went away is expected; anything else is recorded, never printed with headers.
        import sys
        exc = sys.exc_info()[1]
        if exc is None or isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            return
        self.fake.errors.append(exc)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    server_version = "fake-openai/1"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body are separate writes: with Nagle on, the body waits ~40 ms for the client's delayed ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._track(self.connection, False)

    # --- routing -------------------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        fake = self.server.fake
        path = urlsplit(self.path).path
        with fake._entered():
            fake._record("GET", path, self.headers, None)
            if path == MODELS_PATH:
                self._send_json(200, {"object": "list", "data": [
                    {"id": fake.model_id, "object": "model", "created": 1721172741, "owned_by": "system"}]})
            else:
                self._send_json(404, error_body(f"Invalid URL (GET {path})", "invalid_request_error"))

    def do_POST(self) -> None:
        fake = self.server.fake
        path = urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        with fake._entered():
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
                fake._record("POST", path, self.headers, None)
                self._send_json(400, error_body("We could not parse the JSON body of your request.",
                                                "invalid_request_error"))
                return
            fake._record("POST", path, self.headers, body)
            if path != CHAT_PATH:
                self._send_json(404, error_body(f"Invalid URL (POST {path})", "invalid_request_error"))
                return
            self._chat(body)

    # --- chat completions ----------------------------------------------------------------------------------------

    def _chat(self, request: Any) -> None:
        fake = self.server.fake
        model = request.get("model") if isinstance(request, dict) else None
        refusal, limit_headers = fake._admit(model or fake.model_id)
        if refusal is not None:
            self._send_json(429, refusal, limit_headers)
            return
        try:
            self._answer(request, limit_headers)
        finally:
            fake._leave()

    def _answer(self, request: Any, limit_headers: dict[str, str]) -> None:
        fake = self.server.fake
        step = fake._next_step() or (fake.fault(request) if fake.fault else None) or ("ok",)
        if fake.latency:
            fake._stopping.wait(fake.latency)
        kind = step[0]
        if kind == "hang":
            fake._stopping.wait(float(step[1]))
            kind, step = "ok", ("ok",)
        if kind == "drop":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        model = request.get("model") if isinstance(request, dict) else None
        if kind == "status":
            status = int(step[1])
            headers = dict(step[2]) if len(step) > 2 and step[2] else {}
            if len(step) > 3 and step[3] is not None:
                self._send_raw(status, step[3], headers)
            else:
                self._send_json(status, default_error_body(status, model or fake.model_id), headers)
            return
        # kind == "ok": validate like the real API, then answer.
        if not isinstance(request, dict) or not isinstance(model, str) or not model:
            self._send_json(400, error_body("you must provide a model parameter", "invalid_request_error"))
            return
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            self._send_json(400, error_body("[] is too short - 'messages'", "invalid_request_error", None,
                                            "messages"))
            return
        if request.get("stream"):
            self._send_json(400, error_body("streaming is not supported by the fake server",
                                            "invalid_request_error", None, "stream"))
            return
        if len(step) > 1 and step[1] is not None:
            content = str(step[1])
        else:
            try:
                content = (fake.responder or default_reply)(request)
            except Exception as exc:  # a broken responder is a test bug: surface it, answer 500
                fake.errors.append(exc)
                self._send_json(500, default_error_body(500))
                return
        self._send_json(200, fake._completion(request, content), limit_headers)

    # --- writing -------------------------------------------------------------------------------------------------

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        headers = {"Content-Type": "application/json", **(headers or {})}
        self._send_raw(status, json.dumps(payload).encode(), headers)

    def _send_raw(self, status: int, body: Any, headers: dict[str, str]) -> None:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **headers}
        elif isinstance(body, str):
            body = body.encode()
        if not any(k.lower() == "content-type" for k in headers):
            headers = {"Content-Type": "text/plain; charset=utf-8", **headers}
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, str(value))
            self.send_header("x-request-id", "req_" + secrets.token_hex(16))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:  # the client gave up (timeout) before the answer
            self.close_connection = True


Step = tuple


class FakeOpenAI:
    """A local OpenAI-compatible server on 127.0.0.1 (``port=0``: a free port), run in a background thread."""

    def __init__(self, port: int = 0, *, model_id: str = "gpt-4o-mini") -> None:
        self.port = port
        self.model_id = model_id
        self.latency: float = 0.0
        self.responder: Callable[[dict[str, Any]], str] | None = None
        # Consulted when no scripted step is pending: returns a step (fault) for this request, or None to answer.
        self.fault: Callable[[dict[str, Any]], Step | None] | None = None
        self.requests: list[dict[str, Any]] = []
        self.errors: list[BaseException] = []
        self.max_concurrency = 0
        self._in_flight = 0
        # The provider's shared limits (None: unlimited) and what they refused.
        self.max_in_flight: int | None = None
        self.requests_per_minute: int | None = None
        self.refused = 0
        self.peak_admitted = 0
        self._admitted = 0
        self._bucket: tuple[float, float] | None = None  # (level, when)
        self._steps: deque[Step] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.fake = self
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fake-openai-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes sleeping "hang"/latency requests
        server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # end keep-alive connections so no handler thread outlives the server
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:  # never the recorded headers
        return f"<FakeOpenAI {self.base_url if self._server else 'stopped'} calls={self.calls}>"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # --- control -------------------------------------------------------------------------------------------------

    def script(self, steps: Iterable[Step]) -> None:
        """Queue fault steps (appended to any still pending); each chat-completion request consumes one."""
        checked = []
        for step in steps:
            step = tuple(step)
            kind = step[0] if step else None
            if kind not in ("ok", "status", "hang", "drop"):
                raise ValueError(f"unknown fake step {step!r}")
            if kind in ("status", "hang") and len(step) < 2:
                raise ValueError(f"fake step {step!r} needs an argument")
            checked.append(step)
        with self._lock:
            self._steps.extend(checked)

    @property
    def pending_steps(self) -> int:
        with self._lock:
            return len(self._steps)

    def reset(self) -> None:
        """Forget recorded requests, pending steps and the concurrency peak (latency and responder are kept)."""
        with self._lock:
            self.requests.clear()
            self.errors.clear()
            self._steps.clear()
            self.max_concurrency = self._in_flight
            self.refused = 0
            self.peak_admitted = self._admitted

    @property
    def calls(self) -> int:
        """Number of chat-completion requests received (retries included)."""
        with self._lock:
            return sum(1 for r in self.requests if r["path"] == CHAT_PATH and r["method"] == "POST")

    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if r["path"] == CHAT_PATH and r["method"] == "POST"]

    @property
    def in_flight(self) -> int:
        return self._in_flight

    # --- used by the handler -------------------------------------------------------------------------------------

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(conn)

    def _record(self, method: str, path: str, headers: Any, body: Any) -> None:
        entry = {"method": method, "path": path, "headers": {k.lower(): v for k, v in headers.items()},
                 "json": body, "time": time.monotonic()}
        with self._lock:
            self.requests.append(entry)

    def _next_step(self) -> Step | None:
        with self._lock:
            return self._steps.popleft() if self._steps else None

    def _entered(self) -> _InFlight:
        return _InFlight(self)

    def _admit(self, model: str) -> tuple[dict[str, Any] | None, dict[str, str]]:
        """Whether the shared limits let this call in: (None, headers) and it counts as in flight until ``_leave``,
        or (a 429 body, its headers)."""
        with self._lock:
            now = time.monotonic()
            headers: dict[str, str] = {}
            wait = 0.0
            if self.requests_per_minute:
                rate = self.requests_per_minute / 60.0
                capacity = max(1.0, rate)
                level, when = self._bucket if self._bucket is not None else (capacity, now)
                level = min(capacity, level + (now - when) * rate)
                wait = 0.0 if level >= 1 else (1 - level) / rate
                if not wait:
                    level -= 1
                self._bucket = (level, now)
                reset_ms = math.ceil(max(wait, (1 - level) / rate if level < 1 else 0.0) * 1000)
                headers = {"x-ratelimit-limit-requests": str(self.requests_per_minute),
                           "x-ratelimit-remaining-requests": str(max(0, math.floor(level))),
                           "x-ratelimit-reset-requests": f"{reset_ms}ms"}
                if wait:
                    self.refused += 1
                    return self._refusal(model, wait, headers, f"on requests per min (RPM): Limit "
                                         f"{self.requests_per_minute}, Used {self.requests_per_minute}, Requested 1.")
            if self.max_in_flight is not None and self._admitted >= self.max_in_flight:
                if self._bucket is not None:  # the request was not served: its unit of the bucket goes back
                    self._bucket = (self._bucket[0] + 1, self._bucket[1])
                self.refused += 1
                return self._refusal(model, max(self.latency, 0.05), headers, f"on concurrent requests: Limit "
                                     f"{self.max_in_flight}, Used {self.max_in_flight}, Requested 1.")
            self._admitted += 1
            self.peak_admitted = max(self.peak_admitted, self._admitted)
            return None, headers

    def _refusal(self, model: str, wait: float, headers: dict[str, str], what: str
                 ) -> tuple[dict[str, Any], dict[str, str]]:
        milliseconds = max(1, math.ceil(wait * 1000))
        body = error_body(f"Rate limit reached for {model} in organization org-fake {what} Please try again in "
                          f"{milliseconds}ms.", "requests", "rate_limit_exceeded")
        return body, {**headers, "retry-after-ms": str(milliseconds), "retry-after": str(math.ceil(wait))}

    def _leave(self) -> None:
        with self._lock:
            self._admitted -= 1

    def _completion(self, request: dict[str, Any], content: str) -> dict[str, Any]:
        prompt = "".join(message_text(m) for m in request.get("messages", []) if isinstance(m, dict))
        prompt_tokens = approx_tokens(prompt)
        completion_tokens = approx_tokens(content)
        finish_reason = "stop"
        limit = request.get("max_completion_tokens") or request.get("max_tokens")
        if isinstance(limit, int) and 0 < limit < completion_tokens:
            content, completion_tokens, finish_reason = content[:limit * 4], limit, "length"
        return {
            "id": "chatcmpl-" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(29)),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model"),
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": finish_reason,
            }],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
            },
            "service_tier": "default",
        }


class _InFlight:
    """Counts a request as in flight while it is being answered, and keeps the peak."""

    def __init__(self, fake: FakeOpenAI) -> None:
        self.fake = fake

    def __enter__(self) -> None:
        fake = self.fake
        with fake._lock:
            fake._in_flight += 1
            fake.max_concurrency = max(fake.max_concurrency, fake._in_flight)

    def __exit__(self, *exc: object) -> None:
        with self.fake._lock:
            self.fake._in_flight -= 1


if __name__ == "__main__":  # python -m tests.support.fake_openai: serve until Ctrl-C
    with FakeOpenAI(port=int(__import__("os").environ.get("PORT", "0"))) as _fake:
        print(f"fake OpenAI at {_fake.base_url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
