"""What a client may ask docpipe to do with a document, validated before any job exists.

A task is stored on the job exactly as normalised here, so the worker never re-validates client input. Each bad
option has its own 400 code: ``unknown_task``, ``invalid_task`` (a common or summarize option), ``invalid_schema``
(extract), ``invalid_labels`` (classify), ``invalid_prompt`` (prompt). A multi-task job asks 2 to ``MAX_TASKS``
of them at once (``parse_tasks``); a bad member keeps its own code and is named by its index.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping
from typing import Any

from chalicelib.errors import RequestError
from chalicelib.jsontext import loads_bounded

TASK_TYPES = ("summarize", "extract", "classify", "prompt")
# The task types only a language model can do (what docpipe's offline provider cannot), refused at submit without one.
NEEDS_LLM = {"extract": "fill a JSON Schema from a document", "prompt": "follow instructions"}

# Options every task type takes: which model, and the job's budget.
_COMMON = {"type", "model", "max_total_tokens", "max_cost_usd"}
_SPECIFIC = {"summarize": {"target_words"}, "extract": {"schema"}, "classify": {"labels"},
             "prompt": {"map", "reduce"}}
_MAX_MODEL_NAME = 100
MAX_SCHEMA_BYTES = 20_000
MAX_LABELS = 50
MAX_LABEL_NAME = 100
MAX_LABEL_DESCRIPTION = 500
MAX_INSTRUCTION = 4_000
# A multi-task job runs one Parallel branch per task, and the workflow has this many branches.
MAX_TASKS = 5


def _bad(message: str, code: str = "invalid_task") -> RequestError:
    return RequestError(code, message)


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
        raise RequestError("unknown_task", f"task.type must be one of: {', '.join(TASK_TYPES)}; got {task_type!r:.40}")
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
    if task_type == "extract":
        _check_schema(task.get("schema"))
    elif task_type == "classify":
        _check_labels(task.get("labels"))
    elif task_type == "prompt":
        _check_instructions(task)
    return task


def parse_tasks(raw: Any) -> list[dict[str, Any]]:
    """The ``tasks`` of a multi-task job: 2 to ``MAX_TASKS`` task objects, each checked as ``task`` is, in order.

    A member that is wrong keeps its own code (``invalid_schema``, ``unknown_task``, ...) and is named by its index::

        parse_tasks([{"type": "summarize"}, {"type": "classify", "labels": ["a"]}])
        # RequestError invalid_labels: "tasks[1]: the classify task needs task.labels, ..."
    """
    if not isinstance(raw, list):
        raise _bad(f'tasks must be a list of 2 to {MAX_TASKS} task objects, such as [{{"type": "summarize"}}, '
                   f'{{"type": "classify", "labels": ["invoice", "contract"]}}]')
    if not 2 <= len(raw) <= MAX_TASKS:
        raise _bad(f"tasks must hold 2 to {MAX_TASKS} tasks, got {len(raw)}: a job with one task sends it as task")
    tasks = []
    for index, member in enumerate(raw):
        try:
            tasks.append(parse_task(member))
        except RequestError as refused:
            raise RequestError(refused.code, f"tasks[{index}]: {refused.message}", status=refused.status) from None
    return tasks


def _check_schema(schema: Any) -> None:
    """A JSON Schema whose root is an object (structured outputs need one), of a sensible size, safe to use
    (``schemas.check_client_schema``: self-contained, bounded, its patterns runnable in linear time)."""
    def bad(message: str) -> RequestError:
        return _bad(message, "invalid_schema")

    if schema is None:
        raise bad('the extract task needs task.schema, a JSON Schema such as {"type": "object", "properties": '
                  '{"title": {"type": "string"}}}')
    if not isinstance(schema, dict):
        raise bad("task.schema must be a JSON Schema object")
    if len(json.dumps(schema)) > MAX_SCHEMA_BYTES:
        raise bad(f"task.schema must be at most {MAX_SCHEMA_BYTES} bytes of JSON")
    if schema.get("type") != "object":
        raise bad('task.schema must describe an object: its root needs "type": "object"')
    from chalicelib.tasks.schemas import SchemaRefused, check_client_schema

    try:
        check_client_schema(schema)
    except SchemaRefused as refused:
        raise bad(str(refused)) from None


def _check_labels(labels: Any) -> None:
    def bad(message: str) -> RequestError:
        return _bad(message, "invalid_labels")

    if not isinstance(labels, list) or not 2 <= len(labels) <= MAX_LABELS:
        raise bad(f"the classify task needs task.labels, a list of 2 to {MAX_LABELS} labels: names, or objects "
                  f'{{"name", "description"}}')
    names = []
    for position, label in enumerate(labels):
        if isinstance(label, dict):
            if set(label) - {"name", "description"}:
                raise bad(f"task.labels[{position}] may only have name and description")
            name, description = label.get("name"), label.get("description")
            if description is not None and (not isinstance(description, str)
                                            or len(description) > MAX_LABEL_DESCRIPTION):
                raise bad(f"task.labels[{position}].description must be text of at most {MAX_LABEL_DESCRIPTION} "
                          f"characters")
        else:
            name = label
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_LABEL_NAME:
            raise bad(f"task.labels[{position}] needs a name of 1 to {MAX_LABEL_NAME} characters")
        # Look-alikes ("Invoice" and the full-width "Ｉｎｖｏｉｃｅ") are one label to a model.
        names.append(unicodedata.normalize("NFKC", name).strip().casefold())
    if len(set(names)) != len(names):
        raise bad("task.labels must have distinct names")


def _check_instructions(task: dict[str, Any]) -> None:
    for name in ("map", "reduce"):
        value = task.get(name)
        if not isinstance(value, str) or not value.strip() or len(value) > MAX_INSTRUCTION:
            raise _bad(f"the prompt task needs task.{name}, an instruction of 1 to {MAX_INSTRUCTION} characters "
                       f"(the document is given to the model separately, as data)", "invalid_prompt")


def task_from_query(query: Mapping[str, str] | None) -> dict[str, Any]:
    """The task of a raw-body submission: ``POST /jobs?task=summarize&target_words=150``.

    ``labels`` is comma-separated (``?task=classify&labels=invoice,contract``) and ``schema`` is JSON text.
    """
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
        elif name == "labels":
            raw[name] = [label.strip() for label in value.split(",") if label.strip()]
        elif name == "schema":
            try:
                raw[name] = loads_bounded(value)
            except ValueError as exc:
                raise _bad(f"query parameter schema must be a JSON Schema as JSON text ({str(exc)[:100]})",
                           "invalid_schema") from None
        else:
            raw[name] = value
    return parse_task(raw)
