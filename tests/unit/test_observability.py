"""Log correlation and the tracing helpers, without a stack: which keys each line carries, on which thread, and how
the local X-Ray context nests concurrent work."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import threading
import types

import pytest

from chalicelib import observability
from chalicelib.observability import invocation_logs, job_context, logger, traced


class Lines(logging.Handler):
    """The JSON lines docpipe's logger writes, formatted by its own formatter."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logger.registered_formatter)
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def lines():
    handler = Lines()
    logger._logger.addHandler(handler)
    logger.thread_safe_clear_keys()
    yield handler.lines
    logger._logger.removeHandler(handler)
    logger.thread_safe_clear_keys()


def event_of(function: str) -> types.SimpleNamespace:
    context = types.SimpleNamespace(function_name=function, aws_request_id=f"req-{function}",
                                    memory_limit_in_mb=512, invoked_function_arn=None)
    return types.SimpleNamespace(context=context)


def test_each_invocation_names_its_function_even_beside_another_on_the_same_process(lines):
    inside = threading.Barrier(2)

    def run(function: str) -> None:
        def handler(_event):
            inside.wait(5)  # both invocations are running when each writes its line
            logger.info(f"from {function}")
            inside.wait(5)

        invocation_logs(event_of(function), handler)

    threads = [threading.Thread(target=run, args=(name,)) for name in ("api_handler", "process_jobs")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    named = {line["message"]: line["function_name"] for line in lines}
    assert named == {"from api_handler": "api_handler", "from process_jobs": "process_jobs"}
    assert all(line["function_request_id"] == f"req-{line['function_name']}" for line in lines)


def test_a_jobs_id_is_on_every_line_it_writes_and_on_its_threads_and_coroutines_and_then_gone(lines):
    def worker_thread():
        logger.info("beat")

    async def chunk():
        await asyncio.to_thread(logger.info, "chunk answered")

    def handler(_event):
        with job_context("a" * 32):
            logger.info("document chunked")
            thread = threading.Thread(target=contextvars.copy_context().run, args=(worker_thread,))
            thread.start()
            thread.join()
            asyncio.run(chunk())
        logger.info("after the job")

    invocation_logs(event_of("process_jobs"), handler)

    by_message = {line["message"]: line for line in lines}
    for message in ("document chunked", "beat", "chunk answered"):
        assert by_message[message]["job_id"] == "a" * 32, message
        assert by_message[message]["function_name"] == "process_jobs"
    assert "job_id" not in by_message["after the job"]
    assert by_message["after the job"]["function_name"] == "process_jobs"


def test_no_key_of_an_invocation_outlives_it(lines):
    invocation_logs(event_of("process_jobs"), lambda _event: logger.info("inside"))
    logger.info("outside")
    assert lines[0]["function_name"] == "process_jobs"
    assert "function_name" not in lines[1]


def test_traced_handlers_keep_their_name_and_run_untraced_when_tracing_is_off(monkeypatch):
    monkeypatch.setattr(observability, "_tracer_made", True)
    monkeypatch.setattr(observability, "_tracer", None)

    @traced
    def process_jobs(event):
        return {"seen": event}

    assert process_jobs.__name__ == "process_jobs"
    assert process_jobs("event") == {"seen": "event"}
    observability.record_llm_call(model="m", attempt=1, outcome="ok", started=0.0)  # nothing to record into


def test_the_local_xray_context_nests_concurrent_coroutines_under_their_own_parents():
    from aws_xray_sdk.core.models.segment import Segment
    from aws_xray_sdk.core.models.subsegment import Subsegment

    from chalicelib.tracing import ContextVarContext

    context = ContextVarContext(context_missing="IGNORE_ERROR")
    segment = Segment("process_jobs")
    context.put_segment(segment)

    async def job(name: str) -> str:
        context.put_subsegment(Subsegment(name, "local", segment))
        await asyncio.sleep(0.01)  # the other job opens its own meanwhile
        inner = context.get_trace_entity().name
        context.end_subsegment()
        return inner

    async def both():
        return await asyncio.gather(job("## job a"), job("## job b"))

    assert asyncio.run(both()) == ["## job a", "## job b"]
    assert context.get_trace_entity() is segment
    assert [s.name for s in segment.subsegments] == ["## job a", "## job b"]
    assert all(not s.in_progress for s in segment.subsegments)
    # The stack lives in the context variable: a thread started without this context sees no segment.
    seen: list = []
    thread = threading.Thread(target=lambda: seen.append(context.get_trace_entity()))
    thread.start()
    thread.join()
    assert seen == [None]
    context.clear_trace_entities()
    assert context.get_trace_entity() is None
