"""Powertools Logger, Metrics and Tracer, shared by every handler.

Logs are JSON. Each invocation's keys (the function's name and request id, cold start) and each job's id are
thread-safe keys (a context variable): ``invocation_logs``, a middleware of every function, sets the first at the
start of each invocation, and ``job_context(job_id)`` the second for as long as the job runs. The records of a batch
run side by side, each on a thread of its own with a copy of the invocation's context, so every line a job writes
(its event loop's, and the threads' it starts with its context) carries its id and no other record's; a worker's
job id never leaks into a later HTTP log line, and each line names the function that really wrote it. No line is
longer than ``MAX_LOG_LINE`` characters: a field that would make it longer is cut (a traceback keeps its end, where
the error is), so no client input is ever logged whole.
Metrics are CloudWatch EMF lines in the ``docpipe`` namespace, flushed at the end of each worker invocation; the
concurrent records of a batch add to them under one lock.
Traces: ``@traced`` on a handler of app.py records its invocation in X-Ray (``chalicelib.tracing``); the X-Ray SDK
is imported at the first traced invocation, never by the API function, whose cold start it would lengthen.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

MAX_LOG_LINE = 16_000
_MAX_FIELD = 4_000
_TAIL_FIELDS = ("exception",)


class CappedFormatter(LambdaPowertoolsFormatter):
    """Powertools' JSON lines, each at most ``MAX_LOG_LINE`` characters."""

    def serialize(self, log: Any) -> str:
        line = super().serialize(log)
        if len(line) <= MAX_LOG_LINE:
            return line
        capped = {name: _cap(name, value, self.json_serializer) for name, value in log.items()}
        capped["truncated"] = True
        line = super().serialize(capped)
        return line if len(line) <= MAX_LOG_LINE else super().serialize(
            {name: capped[name] for name in ("level", "location", "message", "timestamp", "service", "truncated")
             if name in capped})


def _cap(name: str, value: Any, serialize: Any) -> Any:
    text = value if isinstance(value, str) else None
    if text is None:
        if isinstance(value, (int, float, bool)) or value is None:
            return value
        text = serialize(value)
        if len(text) <= _MAX_FIELD:
            return value
    if len(text) <= _MAX_FIELD:
        return text
    cut = len(text) - _MAX_FIELD
    return (f"…[{cut} characters cut]…" + text[-_MAX_FIELD:] if name in _TAIL_FIELDS
            else text[:_MAX_FIELD] + f"…[{cut} characters cut]")


# Powertools' own variables, read as Powertools documents them (the README's table lists them).
SERVICE_NAME = os.environ.get("POWERTOOLS_SERVICE_NAME", "docpipe")
METRICS_NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "docpipe")

class SharedMetrics(Metrics):
    """Powertools Metrics that the concurrent records of a batch may add to: Powertools' own update of a metric is a
    read, then a write, and two records counting the same metric at once would lose one."""

    _lock = threading.Lock()

    def add_metric(self, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            super().add_metric(*args, **kwargs)


logger = Logger(service=SERVICE_NAME, logger_formatter=CappedFormatter())
metrics = SharedMetrics(namespace=METRICS_NAMESPACE)


# What X-Ray needs, read as the X-Ray SDK and Powertools document it. Lambda sets LAMBDA_TASK_ROOT and the daemon's
# address; locally, setting AWS_XRAY_DAEMON_ADDRESS sends the local stack's segments there.
ON_LAMBDA = bool(os.environ.get("LAMBDA_TASK_ROOT"))
XRAY_DAEMON_ADDRESS = os.environ.get("AWS_XRAY_DAEMON_ADDRESS", "")
TRACE_DISABLED = os.environ.get("POWERTOOLS_TRACE_DISABLED", "false").lower() in ("1", "true", "yes", "on")

_started: set[str] = set()
_started_lock = threading.Lock()


def _first_invocation(function_name: str) -> bool:
    with _started_lock:
        cold = function_name not in _started
        _started.add(function_name)
        return cold


def invocation_logs(event: Any, get_response: Callable[[Any], Any]) -> Any:
    """Chalice middleware of every function: its log lines name the function and the invocation that wrote them."""
    context = getattr(event, "lambda_context", None) or getattr(event, "context", None)
    name = getattr(context, "function_name", None) or "unknown"
    logger.thread_safe_clear_keys()
    logger.thread_safe_append_keys(
        function_name=name, function_request_id=getattr(context, "aws_request_id", None),
        function_memory_size=getattr(context, "memory_limit_in_mb", None),
        function_arn=getattr(context, "invoked_function_arn", None), cold_start=_first_invocation(f"log:{name}"))
    try:
        return get_response(event)
    finally:
        logger.thread_safe_clear_keys()


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """While a job runs: its id on every log line and, when tracing, a ``## job`` subsegment annotated with it.

    The key lives in the current context: threads and event loops the job starts from it inherit it (started with
    ``contextvars.copy_context()``, as ``asyncio.to_thread`` does); another job's lines never carry it.
    """
    before = logger.thread_safe_get_current_keys()
    logger.thread_safe_append_keys(job_id=job_id)
    try:
        with trace_span("## job", annotations={"job_id": job_id}):
            yield
    finally:
        logger.thread_safe_clear_keys()
        if before:
            logger.thread_safe_append_keys(**before)


def with_log_keys(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function``, writing its log lines with the current log keys (the job's id) on whatever thread runs it: for
    pools whose threads must not run in a copy of the caller's whole context."""
    keys = logger.thread_safe_get_current_keys()

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        logger.thread_safe_clear_keys()
        logger.thread_safe_append_keys(**keys)
        try:
            return function(*args, **kwargs)
        finally:
            logger.thread_safe_clear_keys()

    return run


_tracer_lock = threading.Lock()
_tracer_made = False
_tracer: Any = None


def tracer() -> Any:
    """The Powertools Tracer, made at the first traced invocation; None when tracing is off (tests, the local stack
    without AWS_XRAY_DAEMON_ADDRESS, POWERTOOLS_TRACE_DISABLED)."""
    global _tracer, _tracer_made
    with _tracer_lock:
        if not _tracer_made:
            _tracer_made = True
            if not TRACE_DISABLED and (ON_LAMBDA or XRAY_DAEMON_ADDRESS):
                from chalicelib.tracing import make_tracer

                _tracer = make_tracer(SERVICE_NAME, local_daemon=None if ON_LAMBDA else XRAY_DAEMON_ADDRESS)
        return _tracer


def traced(handler: Callable[..., Any]) -> Callable[..., Any]:
    """An app.py handler whose every invocation is a ``## <name>`` subsegment (ColdStart and Service annotated),
    with its S3, DynamoDB and SQS calls inside. Goes under the Chalice decorator::

        @app.on_sqs_message(queue=...)
        @traced
        def process_jobs(event): ...
    """
    name = handler.__name__

    @functools.wraps(handler)
    def invoke(event: Any, *args: Any) -> Any:
        if tracer() is None:
            return handler(event, *args)
        with trace_span(f"## {name}", annotations={"ColdStart": _first_invocation(f"trace:{name}"),
                                                   "Service": SERVICE_NAME}):
            return handler(event, *args)

    return invoke


@contextmanager
def trace_span(name: str, *, annotations: dict[str, Any] | None = None) -> Iterator[None]:
    """A subsegment of the current trace for the block (nothing when tracing is off)."""
    if tracer() is None:
        yield
        return
    from chalicelib.tracing import subsegment

    with subsegment(name, annotations or {}):
        yield


@contextmanager
def function_segment(function_name: str) -> Iterator[None]:
    """What Lambda gives each invocation of a traced function (a trace id and the function's segment), for the
    local stack's dispatcher: the function's subsegments go into it and it is sent to AWS_XRAY_DAEMON_ADDRESS
    when the invocation ends. Nothing on Lambda, or when tracing is off."""
    if ON_LAMBDA or tracer() is None:
        yield
        return
    from chalicelib.tracing import local_segment

    with local_segment(function_name):
        yield


def record_llm_call(*, model: str, attempt: int, outcome: str, started: float, prompt_tokens: int = 0,
                    completion_tokens: int = 0) -> None:
    """One LLM call (``started`` a ``time.time()``), as a closed subsegment of the job's trace: model, attempt,
    outcome and tokens, never the prompt, the answer or the key. Safe from concurrent coroutines of one thread."""
    if tracer() is None:
        return
    from chalicelib.tracing import closed_subsegment

    closed_subsegment("llm.chat", started=started, ended=time.time(), annotations={
        "model": model, "attempt": attempt, "outcome": outcome, "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens})
