"""Tasks: what a client may ask of a document, checked at submit, and the implementation of each type.

``spec`` (a task checked and normalised before any job exists), ``registry`` (which implementation runs a type),
one module per type (``summarize``, ``extract``, ``classify``, ``prompt``) and what they share: ``jsonanswers``
(answers checked against a schema), ``jsonmerge`` (extract's merge), ``schemas`` (a client's JSON Schema as data,
never a network client), ``words``. Only ``spec`` loads with the API; the rest (and jsonschema, re2) with a job.
"""

from chalicelib.tasks.registry import task_for
from chalicelib.tasks.spec import MAX_TASKS, NEEDS_LLM, TASK_TYPES, parse_task, parse_tasks, task_from_query

__all__ = ["MAX_TASKS", "NEEDS_LLM", "TASK_TYPES", "parse_task", "parse_tasks", "task_for", "task_from_query"]
