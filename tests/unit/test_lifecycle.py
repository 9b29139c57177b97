"""The lifecycle's rules, on an in-memory store and queue: what becomes of a job and of its message when an attempt
succeeds, fails for good, fails for now, meets an open circuit or finds the job held by another worker.

The DynamoDB conditions themselves are tested against the emulator (tests/integration/test_jobstore.py); here the
store answers as those conditions do.
"""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from typing import Any

import pytest

from chalicelib.errors import JobFailure, ServiceUnavailable
from chalicelib.jobs import (
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    BatchHeartbeat,
    Delivery,
    Heartbeat,
    Job,
    JobEvents,
    Lifecycle,
    Message,
)
from chalicelib.llm import Usage

NOW = 1_800_000_000.0
PRICES = {"gpt-4o-mini": (0.15, 0.60)}


class Store:
    """The JobStore's answers, without DynamoDB."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.calls: list[tuple[str, Any]] = []

    def create(self, job: Job) -> bool:
        if job.job_id in self.jobs:
            return False
        self.jobs[job.job_id] = job
        return True

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def claim(self, job_id: str, lease_seconds: float) -> Job | None:
        job = self.jobs.get(job_id)
        if job is None or not (job.status == QUEUED or (job.status == RUNNING and job.lease_until < NOW)):
            return None
        self.jobs[job_id] = replace(job, status=RUNNING, lease_until=NOW + lease_seconds, attempts=job.attempts + 1)
        return self.jobs[job_id]

    def extend_lease(self, job_id: str, seconds: float, *, spend: Any = None) -> bool:
        self.calls.append(("extend_lease", (job_id, seconds, spend)))
        return True

    def record_spend(self, job_id: str, attempt: int, spend: dict[str, Any]) -> None:
        self.calls.append(("record_spend", (attempt, spend)))

    def release(self, job_id: str, error: dict[str, str]) -> None:
        self.calls.append(("release", error))
        self.jobs[job_id] = replace(self.jobs[job_id], last_error=error, lease_until=0)

    def mark_failed(self, job_id: str, error: dict[str, str], **found: Any) -> Job | None:
        job = self.jobs.get(job_id)
        if job is None or job.finished:
            return None
        self.calls.append(("mark_failed", error))
        self.jobs[job_id] = replace(job, status=FAILED, error=error, finished_at=NOW)
        return self.jobs[job_id]

    def mark_succeeded(self, job_id: str, **outcome: Any) -> Job | None:
        job = self.jobs.get(job_id)
        if job is None or job.status != RUNNING:
            return None
        self.jobs[job_id] = replace(job, status=SUCCEEDED, result_key=outcome["result_key"], finished_at=NOW)
        return self.jobs[job_id]

    def withdraw(self, job_id: str) -> None:
        self.calls.append(("withdraw", job_id))
        self.jobs.pop(job_id, None)


class Queue:
    def __init__(self, *, max_receives: int = 3, refuses: bool = False) -> None:
        self.sent: list[tuple[str, int]] = []
        self.hidden: list[int] = []
        self._max_receives = max_receives
        self._refuses = refuses

    def send(self, job_id: str, *, delay_seconds: int = 0) -> None:
        if self._refuses:
            raise ConnectionError("the queue is unreachable")
        self.sent.append((job_id, delay_seconds))

    def hide(self, delivery: Delivery, seconds: int) -> bool:
        self.hidden.append(seconds)
        return True

    def max_receive_count(self) -> int:
        return self._max_receives


class Events:
    """The job events published, as (detail-type, job id, status); ``fails`` makes EventBridge refuse them all."""

    def __init__(self, *, fails: bool = False) -> None:
        self.published: list[tuple[str, str, str]] = []
        self._fails = fails
        self.calls = 0

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls += 1
        if self._fails:
            raise ConnectionError("EventBridge is unreachable")
        for entry in Entries:
            detail = json.loads(entry["Detail"])
            self.published.append((entry["DetailType"], detail["job_id"], detail["status"]))
        return {"FailedEntryCount": 0, "Entries": [{"EventId": "e"} for _ in Entries]}


def lifecycle(store: Store, queue: Queue, events: Events | None = None) -> Lifecycle:
    announcer = JobEvents(lambda: events, bus="default", stage="test") if events is not None else None
    return Lifecycle(store, queue, retry_backoff_seconds=30, outage_wait_seconds=45,  # type: ignore[arg-type]
                     events=announcer, clock=lambda: NOW)


def queued(store: Store, **fields: Any) -> str:
    job = replace(Job(job_id="a" * 32, status=QUEUED, task={"type": "summarize"}, document={}, created_at=NOW - 60),
                  **fields)
    store.jobs[job.job_id] = job
    return job.job_id


def delivery(job_id: str, receives: int = 1) -> Delivery:
    return Delivery(job_id, message_id="m", receipt_handle="r", queue_name="docpipe-test-jobs", receives=receives)


def metered(attempt: Any) -> dict[str, Any]:
    usage = Usage(model="gpt-4o-mini", provider="openai")
    usage.add_call(100, 20, PRICES)
    attempt.meter(usage, PRICES)
    return attempt.spent()


@pytest.mark.parametrize("receives, backoff", [(1, 30), (2, 60)])
def test_a_failed_attempt_is_released_and_its_message_comes_back_after_a_doubling_backoff(receives, backoff):
    store, queue = Store(), Queue(max_receives=3)
    jobs = lifecycle(store, queue)
    attempt = jobs.claim(queued(store), lease_seconds=60)
    spent = metered(attempt)

    message = jobs.retry_or_fail(delivery(attempt.job_id, receives), attempt, {"code": "llm_unavailable",
                                                                               "message": "429"})

    assert message is Message.AGAIN and queue.hidden == [backoff]
    assert store.calls == [("record_spend", (1, spent)), ("release", {"code": "llm_unavailable", "message": "429"})]
    assert store.jobs[attempt.job_id].status == RUNNING and store.jobs[attempt.job_id].lease_until == 0


def test_the_last_delivery_fails_the_job_with_its_reason_and_its_message_is_done():
    store, queue = Store(), Queue(max_receives=3)
    jobs = lifecycle(store, queue)
    attempt = jobs.claim(queued(store), lease_seconds=60)

    message = jobs.retry_or_fail(delivery(attempt.job_id, receives=3), attempt, {"code": "internal_error",
                                                                                 "message": "boom"})

    assert message is Message.DONE and queue.hidden == []
    assert store.jobs[attempt.job_id].status == FAILED
    assert store.jobs[attempt.job_id].error == {"code": "internal_error", "message": "boom"}


def test_an_open_circuit_puts_the_job_back_on_the_queue_after_the_recovery_window_without_spending_a_delivery():
    store, queue = Store(), Queue()
    jobs = lifecycle(store, queue)
    attempt = jobs.claim(queued(store), lease_seconds=60)

    message = jobs.defer(delivery(attempt.job_id, receives=3), attempt)

    assert message is Message.DONE and queue.sent == [(attempt.job_id, 45)]
    assert store.jobs[attempt.job_id].status == RUNNING
    assert "waits and tries again in 45 s" in store.jobs[attempt.job_id].last_error["message"]


def test_a_job_that_waited_out_outages_for_hours_gives_up():
    store, queue = Store(), Queue()
    jobs = lifecycle(store, queue)
    attempt = jobs.claim(queued(store, created_at=NOW - 7 * 3600), lease_seconds=60)

    assert jobs.defer(delivery(attempt.job_id), attempt) is Message.DONE

    assert queue.sent == [] and store.jobs[attempt.job_id].error["code"] == "llm_unavailable"


def test_a_delivery_of_a_job_another_worker_holds_waits_for_its_lease_and_a_finished_one_is_done():
    store, queue = Store(), Queue()
    jobs = lifecycle(store, queue)
    job_id = queued(store, status=RUNNING, lease_until=NOW + 20)

    assert jobs.claim(job_id, lease_seconds=60) is None
    assert jobs.wait_for_holder(delivery(job_id)) is Message.AGAIN and queue.hidden == [21]

    store.jobs[job_id] = replace(store.jobs[job_id], status=SUCCEEDED)
    assert jobs.wait_for_holder(delivery(job_id)) is Message.DONE and queue.hidden == [21]


def test_a_new_job_the_queue_refuses_is_withdrawn_so_that_a_retry_creates_it_afresh():
    store = Store()
    job = Job(job_id="b" * 32, status=QUEUED, task={"type": "summarize"}, document={}, created_at=NOW)

    with pytest.raises(ServiceUnavailable):
        lifecycle(store, Queue(refuses=True)).open(job)

    assert store.calls == [("withdraw", job.job_id)] and store.jobs == {}


def test_a_permanent_failure_and_a_success_finish_the_job_once():
    store, queue = Store(), Queue()
    jobs = lifecycle(store, queue)
    attempt = jobs.claim(queued(store), lease_seconds=60)

    assert jobs.succeed(attempt, result_key="results/x.json", usage={}, warnings=[], timings={}, chunks_total=1)
    jobs.fail(attempt, JobFailure("corrupt_pdf", "too late"), usage={}, warnings=[])

    assert store.jobs[attempt.job_id].status == SUCCEEDED
    assert not jobs.succeed(attempt, result_key="results/y.json", usage={}, warnings=[], timings={},
                            chunks_total=1)


def test_a_dead_letter_fails_its_job_with_the_last_reason_unless_a_live_worker_holds_it():
    store, queue = Store(), Queue()
    jobs = lifecycle(store, queue)
    held = queued(store, status=RUNNING, lease_until=NOW + 30)

    jobs.fail_dead_letter(held)
    assert store.jobs[held].status == RUNNING

    store.jobs[held] = replace(store.jobs[held], lease_until=NOW - 1,
                               last_error={"code": "ocr_unavailable", "message": "Textract throttled"})
    jobs.fail_dead_letter(held)
    assert store.jobs[held].error == {"code": "ocr_unavailable", "message": "Textract throttled"}


def test_the_heartbeat_holds_the_message_at_once_and_a_claimed_lease_before_its_message():
    order: list[str] = []
    beaten = threading.Event()

    class Recorder:
        def hide(self, delivery: Delivery, seconds: int) -> None:
            order.append("hide")
            if "hold" in order:
                beaten.set()

        def hold(self, attempt: Any, seconds: float) -> None:
            order.append("hold")

    store = Store()
    attempt = lifecycle(store, Queue()).claim(queued(store), lease_seconds=3)
    with Heartbeat(Recorder(), delivery(attempt.job_id), interval=0.05) as heartbeat:  # type: ignore[arg-type]
        assert order[0] == "hide" and "hold" not in order  # the first beat, at once, before any claim
        heartbeat.track(attempt)
        assert beaten.wait(5)

    first_hold = order.index("hold")
    assert set(order[:first_hold]) == {"hide"} and order[first_hold + 1] == "hide"


def test_a_batch_is_held_by_one_beat_for_all_its_records_and_a_record_it_held_skips_its_own_first_beat():
    hidden: list[str] = []
    together = threading.Barrier(3, timeout=5)

    class Recorder:
        def hide(self, delivery: Delivery, seconds: int) -> None:
            together.wait()  # every message of the batch is being hidden at the same time, or this times out
            hidden.append(delivery.receipt_handle)

    deliveries = [Delivery(f"{n}" * 32, message_id=f"m{n}", receipt_handle=f"r{n}", queue_name="q") for n in range(3)]
    with BatchHeartbeat(Recorder(), deliveries, interval=60) as batch:  # type: ignore[arg-type]
        assert sorted(hidden) == ["r0", "r1", "r2"]
        assert batch.started("r0") is True and batch.started("r0") is False

    class Counter:
        hides = 0

        def hide(self, delivery: Delivery, seconds: int) -> None:
            Counter.hides += 1

    with Heartbeat(Counter(), deliveries[0], interval=60, held=True):  # type: ignore[arg-type]
        assert Counter.hides == 0  # the batch's beat holds it for LEASE_BEATS intervals; its own comes in one
    with Heartbeat(Counter(), deliveries[1], interval=60):  # type: ignore[arg-type]
        assert Counter.hides == 1


# --- job events -------------------------------------------------------------------------------------------------

def test_every_way_a_job_ends_is_announced_once_and_nothing_else_is():
    store, queue, events = Store(), Queue(max_receives=3), Events()
    jobs = lifecycle(store, queue, events)
    succeeded = jobs.claim(queued(store), lease_seconds=60)
    jobs.succeed(succeeded, result_key="results/x.json", usage={}, warnings=[], timings={}, chunks_total=1)
    jobs.fail(succeeded, JobFailure("corrupt_pdf", "too late"), usage={}, warnings=[])  # already ended: no event
    broken = jobs.claim(queued(store, job_id="b" * 32), lease_seconds=60)
    jobs.fail(broken, JobFailure("corrupt_pdf", "broken"), usage={}, warnings=[])
    retried = jobs.claim(queued(store, job_id="c" * 32), lease_seconds=60)
    jobs.retry_or_fail(delivery(retried.job_id, receives=1), retried, {"code": "llm_unavailable", "message": "429"})
    jobs.retry_or_fail(delivery(retried.job_id, receives=3), retried, {"code": "llm_unavailable", "message": "429"})
    jobs.fail_dead_letter(queued(store, job_id="d" * 32))
    jobs.record_refused(Job(job_id="e" * 32, status=FAILED, task={"type": "summarize"}, document={},
                            created_at=NOW, error={"code": "invalid_task", "message": "no such task"}))

    assert events.published == [("Job Succeeded", "a" * 32, SUCCEEDED), ("Job Failed", "b" * 32, FAILED),
                                 ("Job Failed", "c" * 32, FAILED), ("Job Failed", "d" * 32, FAILED),
                                 ("Job Failed", "e" * 32, FAILED)]


def test_a_job_whose_event_cannot_be_published_still_ends_as_it_should(caplog):
    store, queue, events = Store(), Queue(), Events(fails=True)
    jobs = lifecycle(store, queue, events)
    attempt = jobs.claim(queued(store), lease_seconds=60)

    assert jobs.succeed(attempt, result_key="results/x.json", usage={}, warnings=[], timings={}, chunks_total=1)

    assert events.calls == 1 and store.jobs[attempt.job_id].status == SUCCEEDED
    assert "job event not published" in caplog.text
