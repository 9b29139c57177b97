"""What a client may ask docpipe to do with a document, validated before any job exists.

A task is stored on the job exactly as normalised here, so the worker never re-validates client input.
"""

from __future__ import annotations

from typing import Any, Mapping

from chalicelib.errors import RequestError

TASK_TYPES = ("summarize",)

# Options every task type takes: which model, and the job's budget.
_COMMON = {"type", "model", "max_total_tokens", "max_cost_usd"}
_SPECIFIC = {"summarize": {"target_words"}}
_MAX_MODEL_NAME = 100


def _bad(message: str) -> RequestError:
    return RequestError("invalid_task", message)


def _positive_int(task: dict, name: str, upper: int) -> None:
    value = task.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= upper:
        raise _bad(f"task.{name} must be an integer between 1 and {upper}")


def parse_task(raw: Any) -> dict[str, Any]:
    """Normalise and validate a task object from a JSON body."""
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, dict):
        raise _bad('task must be an object such as {"type": "summarize"}')
    task_type = raw.get("type")
    if task_type not in TASK_TYPES:
        raise RequestError("unknown_task", f"task.type must be one of: {', '.join(TASK_TYPES)}; got {task_type!r}")
    unknown = set(raw) - _COMMON - _SPECIFIC[task_type]
    if unknown:
        raise _bad(f"unknown field(s) in task: {', '.join(sorted(unknown))}")
    task = {k: v for k, v in raw.items() if v is not None}
    model = task.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip() or len(model) > _MAX_MODEL_NAME):
        raise _bad(f"task.model must be a model name of at most {_MAX_MODEL_NAME} characters")
    _positive_int(task, "max_total_tokens", 100_000_000)
    _positive_int(task, "target_words", 5000)
    cost = task.get("max_cost_usd")
    if cost is not None and (isinstance(cost, bool) or not isinstance(cost, (int, float)) or not 0 < cost <= 10_000):
        raise _bad("task.max_cost_usd must be a number between 0 and 10000")
    return task


def task_from_query(query: Mapping[str, str] | None) -> dict[str, Any]:
    """The task of a raw-body submission: ``POST /jobs?task=summarize&target_words=150``."""
    query = dict(query or {})
    raw: dict[str, Any] = {"type": query.pop("task", "summarize")}
    for name, value in query.items():
        if name in ("max_total_tokens", "target_words"):
            try:
                raw[name] = int(value)
            except ValueError:
                raise _bad(f"query parameter {name} must be an integer") from None
        elif name == "max_cost_usd":
            try:
                raw[name] = float(value)
            except ValueError:
                raise _bad("query parameter max_cost_usd must be a number") from None
        else:
            raw[name] = value
    return parse_task(raw)
