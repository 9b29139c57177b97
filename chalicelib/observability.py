"""Powertools Logger and Metrics, shared by every handler.

Logs are JSON with the job id on every line of a job. The records of a batch run side by side, each on a thread of
its own, so a job's id is a thread-safe key (``logger.thread_safe_append_keys(job_id=…)``: a context variable,
which the job's event loop and the threads it starts inherit); keys are cleared at the start of each invocation so
a worker's job id never leaks into a later HTTP log line of the same container. No line
is longer than ``MAX_LOG_LINE`` characters: a field that would make it longer is cut (a traceback keeps its end,
where the error is), so no client input is ever logged whole.
Metrics are CloudWatch EMF lines in the ``docpipe`` namespace, flushed at the end of each worker invocation; the
concurrent records of a batch add to them under one lock.
"""

from __future__ import annotations

import os
import threading
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
