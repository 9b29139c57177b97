"""X-Ray through the Powertools Tracer: what ``observability`` builds at the first traced invocation, never before.

On Lambda the X-Ray SDK takes each invocation's trace from Lambda (a facade segment) and the Tracer patches
botocore, so every S3, DynamoDB and SQS call is a subsegment. On the local stack the dispatcher plays Lambda's part
(``local_segment``) and the SDK sends to ``AWS_XRAY_DAEMON_ADDRESS`` over UDP, as the daemon receives it on Lambda.
Locally the open subsegments are kept in a context variable rather than per thread: the local stack runs every
function in one process, and a job's coroutines and the threads it starts with its context (``asyncio.to_thread``)
then nest under that job, not under whatever ran last on the thread.
A call made while nothing is traced (a heartbeat thread between invocations) is not an error: it is not recorded.
"""

from __future__ import annotations

import contextvars
import logging
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aws_xray_sdk.core import xray_recorder
from aws_xray_sdk.core.context import Context
from aws_xray_sdk.core.models.dummy_entities import DummySegment, DummySubsegment
from aws_xray_sdk.core.models.segment import Segment
from aws_xray_sdk.core.models.subsegment import Subsegment

# Only botocore: the LLM calls get subsegments of their own (``closed_subsegment``), with what a trace may show.
PATCHED = ("botocore",)

_ENTITIES: contextvars.ContextVar[tuple[Any, ...]] = contextvars.ContextVar("docpipe_xray_entities", default=())


class ContextVarContext(Context):
    """The SDK's context, its stack of open entities in a context variable: a tuple, replaced and never changed in
    place, so a copied context (a coroutine, a thread started with it) pushes and pops on its own stack."""

    def put_segment(self, segment: Any) -> None:
        _ENTITIES.set((segment,))

    def put_subsegment(self, subsegment: Any) -> None:
        entity = self.get_trace_entity()
        if not entity:
            return
        entity.add_subsegment(subsegment)
        _ENTITIES.set((*_ENTITIES.get(), subsegment))

    def end_subsegment(self, end_time: float | None = None) -> bool:
        entity = self.get_trace_entity()
        if not self._is_subsegment(entity):
            return False
        entity.close(end_time)
        _ENTITIES.set(_ENTITIES.get()[:-1])
        return True

    def get_trace_entity(self) -> Any:
        entities = _ENTITIES.get()
        return entities[-1] if entities else self.handle_context_missing()

    def set_trace_entity(self, trace_entity: Any) -> None:
        _ENTITIES.set((trace_entity,))

    def clear_trace_entities(self) -> None:
        _ENTITIES.set(())


def make_tracer(service: str, *, local_daemon: str | None) -> Any:
    """The Tracer, with botocore patched. ``local_daemon`` (host:port) configures the SDK for the local stack."""
    if local_daemon:
        # One process runs every local function and its own polling, and only the traced ones have a segment: the
        # others' calls are not recorded, which the SDK would warn about at every call.
        logging.getLogger("aws_xray_sdk.core.recorder").setLevel(logging.ERROR)
        # Every invocation sampled, as an active-tracing function's first requests are; no sampling rules fetched.
        xray_recorder.configure(context=ContextVarContext(context_missing="IGNORE_ERROR"),
                                daemon_address=local_daemon, sampling=False, service=service)
    else:
        xray_recorder.configure(context_missing="IGNORE_ERROR")
    from aws_lambda_powertools import Tracer

    return Tracer(service=service, disabled=False if local_daemon else None, patch_modules=PATCHED)


def _current() -> Any:
    entity = xray_recorder.get_trace_entity()
    return None if entity is None or isinstance(entity, (DummySegment, DummySubsegment)) else entity


@contextmanager
def subsegment(name: str, annotations: dict[str, Any]) -> Iterator[None]:
    if _current() is None:
        yield
        return
    with xray_recorder.in_subsegment(name) as entity:
        for key, value in annotations.items():
            entity.put_annotation(key, value)
        yield


def closed_subsegment(name: str, *, started: float, ended: float, annotations: dict[str, Any]) -> None:
    """A finished piece of work attached to the current entity, without entering the context's stack: coroutines
    of one event loop may each record theirs at any time."""
    parent = _current()
    if parent is None:
        return
    segment = parent if isinstance(parent, Segment) else parent.parent_segment
    child = Subsegment(name, "remote", segment)
    child.start_time = started
    for key, value in annotations.items():
        child.put_annotation(key, value)
    parent.add_subsegment(child)
    child.close(ended)


@contextmanager
def local_segment(function_name: str) -> Iterator[None]:
    """The function's segment for one local invocation, with a new trace id in X-Ray's format; sent when it ends."""
    trace_id = f"1-{int(time.time()):08x}-{secrets.token_hex(12)}"
    xray_recorder.begin_segment(function_name, traceid=trace_id, sampling=1)
    try:
        yield
    finally:
        xray_recorder.end_segment()
