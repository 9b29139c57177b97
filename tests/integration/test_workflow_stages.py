"""The workflow's map and reduce stages called as the state machine calls them, against the emulator and a fake LLM:
what an invocation that fails part way leaves for its retry, so that nothing is paid for twice."""

from __future__ import annotations

import time
import uuid

import pytest

from chalicelib.jobs import QUEUED, Job
from chalicelib.llm import Completion
from chalicelib.pipeline import workflow
from tests.support.taskflow import configure, map_requests

PAGES = [f"Page {n}. " + " ".join(f"Keeper {n}.{i} wound the clockwork, trimmed the wick and logged the weather."
                                  for i in range(6)) for n in range(1, 9)]


ARN = "arn:aws:states:us-east-1:000000000000:execution:docpipe-test-workflow:"
_STARTED: list[str] = []


@pytest.fixture(autouse=True)
def _no_job_left_running():
    """Jobs on an execution that never existed end FAILED, so no other test's sweep ever meets them."""
    yield
    from chalicelib.bootstrap import get_services

    services = get_services()
    while _STARTED:
        job = services.jobs.get(_STARTED.pop())
        services.lifecycle.fail_execution(job.job_id, job.execution_arn, {"code": "test_over", "message": "done"})


def _queued(services) -> tuple[str, str]:
    """A job on the queue: (job id, its document's key)."""
    job_id = uuid.uuid4().hex
    _STARTED.append(job_id)
    key = services.documents.put_input(job_id, "\f".join(PAGES).encode(), "text/plain")
    services.jobs.create(Job(job_id=job_id, status=QUEUED, task={"type": "summarize"},
                             document={"s3_key": key, "declared_type": "text"}, created_at=time.time()))
    return job_id, key


def _started(services) -> tuple[str, str]:
    """A job handed to an execution, its document chunked: (job id, run)."""
    job_id, _key = _queued(services)
    run = services.jobs.claim(job_id, 60).run_name
    workflow.validate(services, job_id, run=run, execution_arn=ARN + job_id)
    return job_id, run


def _batch_size(services, job_id: str, run: str, start: int) -> int:
    return len(services.documents.get_json(workflow.work_key(job_id, run, f"chunks/batch-{start:06d}.json"))["chunks"])


def test_a_map_batch_that_ran_out_of_time_is_retried_without_asking_any_chunk_twice(llm, monkeypatch):
    configure(monkeypatch, DOCPIPE_CHUNK_TOKENS="60", DOCPIPE_CHUNK_OVERLAP_TOKENS="0", DOCPIPE_LLM_CONCURRENCY="1",
              DOCPIPE_STEP_FUNCTIONS_BATCH_CALLS="8", DOCPIPE_LLM_MAX_ATTEMPTS="1")
    from chalicelib.bootstrap import get_services

    services = get_services()
    job_id, run = _started(services)
    start = workflow.extract(services, job_id, run=run)["batches"][0]
    size = _batch_size(services, job_id, run, start)
    # One call at a time: three answers, then a call that outlasts what is left of the invocation, which ends it
    # with the batch's other chunks never asked.
    llm.script([("ok",), ("ok",), ("ok",), ("hang", 30)])
    with pytest.raises(Exception):  # noqa: B017 - whatever the out-of-time error is, the invocation ends with it
        workflow.map_batch(services, job_id, run=run, task=0, start=start,
                           deadline=time.monotonic() + workflow.FINISH_SECONDS + 4)
    first = [r["json"]["messages"][-1]["content"] for r in map_requests(llm)]
    assert size >= 6 and len(first) == 4
    workflow.map_batch(services, job_id, run=run, task=0, start=start)
    asked = [r["json"]["messages"][-1]["content"] for r in map_requests(llm)]
    # The retry asked the cut-off call's chunk and those never asked, none of the three answered.
    assert len(asked) - len(first) == size - 3
    assert not set(first[:3]) & set(asked[len(first):])
    assert len(set(asked)) == size


def test_a_later_run_of_the_same_document_finds_the_map_answers_in_the_cache(llm, monkeypatch):
    configure(monkeypatch, DOCPIPE_CHUNK_TOKENS="60", DOCPIPE_CHUNK_OVERLAP_TOKENS="0", DOCPIPE_LLM_CONCURRENCY="4",
              DOCPIPE_STEP_FUNCTIONS_BATCH_CALLS="8")
    from chalicelib.bootstrap import get_services

    services = get_services()
    job_id, run = _started(services)
    start = workflow.extract(services, job_id, run=run)["batches"][0]
    workflow.map_batch(services, job_id, run=run, task=0, start=start)
    asked = len(map_requests(llm))
    size = _batch_size(services, job_id, run, start)
    other_job, other_run = _started(services)
    workflow.map_batch(services, other_job, run=other_run, task=0,
                       start=workflow.extract(services, other_job, run=other_run)["batches"][0])
    assert asked == size > 1 and len(map_requests(llm)) == asked


def test_a_map_batch_reads_only_its_own_part_of_the_document_cache(llm, monkeypatch):
    """A batch's lookup stays the size of a batch: it lists its own part and the queue path's, never the parts the
    document's other batches stored (over N chunks those would cost N² / batch GETs)."""
    configure(monkeypatch, DOCPIPE_CHUNK_TOKENS="60", DOCPIPE_CHUNK_OVERLAP_TOKENS="0", DOCPIPE_LLM_CONCURRENCY="4",
              DOCPIPE_STEP_FUNCTIONS_BATCH_CALLS="4")
    from chalicelib.bootstrap import get_services

    services = get_services()
    job_id, run = _started(services)
    first, second = workflow.extract(services, job_id, run=run)["batches"][:2]
    workflow.map_batch(services, job_id, run=run, task=0, start=first)
    listed: list[str] = []
    real_load = services.map_cache.load

    def load(scope, parts=("",)):
        listed.extend(parts)
        return real_load(scope, parts)

    monkeypatch.setattr(services.map_cache, "load", load)
    workflow.map_batch(services, job_id, run=run, task=0, start=second)

    assert listed == ["job-", f"batch{second:07d}-"]
    stored = [item["Key"].rsplit("/", 1)[1] for item in services.documents._s3.list_objects_v2(
        Bucket=services.settings.bucket, Prefix="cache/")["Contents"]]
    assert {name.split("-")[0] for name in stored} >= {f"batch{first:07d}", f"batch{second:07d}"}


class _Chat:
    """A chat that answers by echoing, or fails on the prompts it is told to."""

    def __init__(self, failing: set[str]) -> None:
        self.failing, self.asked = failing, []

    async def complete(self, messages, *, max_tokens, response_format=None):
        prompt = messages[-1]["content"]
        self.asked.append(prompt)
        if prompt in self.failing:
            raise RuntimeError("the provider went away")
        return Completion(f"answer to {prompt}", 10, 5, "stop")


def test_a_reduce_level_that_failed_midway_keeps_its_answers_for_its_retry():
    import asyncio

    async def level(kept: workflow.KeptCalls) -> list[str]:
        return [(await kept.complete([{"role": "user", "content": p}], max_tokens=50)).text for p in ("a", "b")]

    first = workflow.KeptCalls()
    first.chat = _Chat(failing={"b"})
    with pytest.raises(RuntimeError):
        asyncio.run(level(first))
    retry = workflow.KeptCalls(first.all)
    retry.chat = chat = _Chat(failing=set())
    assert asyncio.run(level(retry)) == ["answer to a", "answer to b"]
    assert chat.asked == ["b"]


def test_the_extract_stage_takes_what_the_worker_read_and_never_reads_the_document_again(monkeypatch):
    from chalicelib.aws import clients
    from chalicelib.bootstrap import get_services
    from chalicelib.pipeline import Outcome, run_job
    from devstack.resources import provision_workflow
    from tests.integration.conftest import EMULATOR_URL
    from tests.support.taskflow import STAGE

    configure(monkeypatch, DOCPIPE_STATE_MACHINE_ARN=provision_workflow(EMULATOR_URL, stage=STAGE),
              DOCPIPE_STEP_FUNCTIONS_MIN_CHUNKS="4", DOCPIPE_CHUNK_TOKENS="60", DOCPIPE_CHUNK_OVERLAP_TOKENS="0")
    services = get_services()
    job_id, key = _queued(services)
    assert run_job(services.lifecycle.claim(job_id, lease_seconds=60), services) is Outcome.HANDED_OVER
    job = services.jobs.get(job_id)
    # Gone: an extract stage that read it again would fail.
    clients.client("s3").delete_object(Bucket=services.documents.bucket, Key=key)
    extracted = workflow.extract(services, job_id, run=job.run_name)
    assert extracted["chunks"] >= 4 and extracted["batches"][0] == 0
    assert services.jobs.get(job_id).chunks_total == extracted["chunks"]
