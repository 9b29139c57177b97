"""Job rows in DynamoDB (the emulator's): moved only by conditional writes, so a duplicate delivery cannot take a job
another worker holds and nothing changes a finished one."""

from __future__ import annotations

import time
import uuid

import pytest

from chalicelib.jobs import FAILED, QUEUED, RUNNING, SUCCEEDED, Job, JobStore


@pytest.fixture
def store(services):
    return services.jobs


def _new_job(store: JobStore) -> str:
    job_id = uuid.uuid4().hex
    assert store.create(Job(job_id=job_id, status=QUEUED, task={"type": "summarize"}, document={},
                            created_at=time.time()))
    return job_id


def test_a_job_id_can_be_created_only_once(store):
    job_id = _new_job(store)
    assert store.create(Job(job_id=job_id, status=QUEUED, task={}, document={}, created_at=time.time())) is False


def test_a_claimed_job_cannot_be_claimed_again_until_its_lease_expires(store):
    job_id = _new_job(store)
    assert store.claim(job_id, 0.2).status == RUNNING
    assert store.claim(job_id, 60) is None
    time.sleep(0.3)
    assert store.claim(job_id, 60).attempts == 2


def test_a_finished_job_never_changes_again(store):
    job_id = _new_job(store)
    store.claim(job_id, 60)
    assert store.mark_succeeded(job_id, result_key="results/x.json", usage={}, warnings=[], timings={},
                                chunks_total=1)
    assert store.mark_failed(job_id, {"code": "late", "message": "too late"}) is None
    assert store.claim(job_id, 60) is None
    assert store.get(job_id).status == SUCCEEDED


def test_progress_only_moves_forward(store):
    job_id = _new_job(store)
    store.claim(job_id, 60)
    store.record_progress(job_id, 5)
    store.record_progress(job_id, 3)
    assert store.get(job_id).chunks_done == 5


def test_a_released_job_keeps_its_reason_and_can_be_claimed_at_once(store):
    job_id = _new_job(store)
    store.claim(job_id, 600)
    store.release(job_id, {"code": "llm_unavailable", "message": "429"})
    job = store.claim(job_id, 600)
    assert job is not None and job.last_error["code"] == "llm_unavailable"
    store.mark_failed(job_id, job.last_error)
    assert store.get(job_id).to_view()["error"] == {"code": "llm_unavailable", "message": "429"}
    assert store.get(job_id).status == FAILED
