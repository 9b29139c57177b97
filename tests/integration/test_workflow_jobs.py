"""A job on the Step Functions workflow, against the emulator: the hand-over by execution name, what no delivery can
take back, the client's retry as a new run, and what ``GET /jobs/{id}`` shows while the workflow runs."""

from __future__ import annotations

import dataclasses
import time
import uuid

import pytest

from chalicelib.aws import Executions
from chalicelib.jobs import FAILED, QUEUED, RUNNING, Job
from devstack.resources import client, provision_workflow
from tests.integration.conftest import EMULATOR_URL
from tests.support.taskflow import STAGE


@pytest.fixture(scope="module")
def executions():
    return Executions(client("stepfunctions", EMULATOR_URL), provision_workflow(EMULATOR_URL, stage=STAGE))


def _running(services, tasks=None) -> Job:
    job_id = uuid.uuid4().hex
    assert services.jobs.create(Job(job_id=job_id, status=QUEUED, task=(tasks or [{"type": "summarize"}])[0],
                                    document={}, created_at=time.time(), tasks=tasks))
    return services.jobs.claim(job_id, 60)


def test_a_run_is_started_once_whatever_the_redeliveries(services, executions):
    job = _running(services)
    first = executions.start(job.run_name, job.job_id)
    assert executions.start(job.run_name, job.job_id) == first == executions.execution_arn(job.job_id)
    listed = executions._sfn.list_executions(stateMachineArn=executions.state_machine_arn)["executions"]
    assert [e["name"] for e in listed].count(job.job_id) == 1


def test_a_handed_over_job_cannot_be_claimed_by_a_delivery_even_with_its_lease_gone(services, executions):
    job = _running(services)
    arn = executions.start(job.run_name, job.job_id)
    assert services.lifecycle.adopt_execution(job.job_id, execution_arn=arn)
    assert services.lifecycle.adopt_execution(job.job_id, execution_arn=arn)  # the worker's own record, again
    assert not services.lifecycle.adopt_execution(job.job_id, execution_arn=arn + "-other")
    assert services.jobs.claim(job.job_id, 60) is None
    assert services.jobs.get(job.job_id).status == RUNNING


def test_the_clients_retry_is_a_new_run_and_the_old_execution_cannot_fail_it(services, executions):
    job = _running(services)
    old = executions.start(job.run_name, job.job_id)
    services.lifecycle.adopt_execution(job.job_id, execution_arn=old)
    assert services.lifecycle.fail_execution(job.job_id, old, {"code": "x", "message": "y", "stage": "map"})
    assert services.lifecycle.retry(job.job_id)
    again = services.jobs.claim(job.job_id, 60)
    assert again.run_name == f"{job.job_id}-retry1" and again.execution_arn is None
    new = executions.start(again.run_name, job.job_id)
    assert new != old
    services.lifecycle.adopt_execution(job.job_id, execution_arn=new)
    assert not services.lifecycle.fail_execution(job.job_id, old, {"code": "late", "message": "old run"})
    assert services.jobs.get(job.job_id).status == RUNNING
    assert services.lifecycle.fail_execution(job.job_id, new, {"code": "x", "message": "y", "stage": "store"})
    assert services.jobs.get(job.job_id).status == FAILED


def test_the_view_shows_the_orchestrator_the_execution_the_stage_and_each_tasks_progress(services, executions):
    job = _running(services, tasks=[{"type": "summarize"}, {"type": "summarize", "target_words": 30}])
    arn = executions.start(job.run_name, job.job_id)
    services.lifecycle.adopt_execution(job.job_id, execution_arn=arn)
    services.lifecycle.workflow_chunks(job.job_id, 8, [])
    services.lifecycle.enter_stage(job.job_id, "map", task=0)
    services.lifecycle.record_workflow(job.job_id, progress={"0/0": 4, "0/4": 4, "1/0": 4})
    services.lifecycle.enter_stage(job.job_id, "aggregate", task=0)
    view = services.jobs.get(job.job_id).to_view()
    assert view["orchestrator"] == "stepfunctions" and view["execution_arn"] == arn and view["stage"] == "aggregate"
    assert view["progress"] == {"chunks_done": 4, "chunks_total": 8, "tasks": [
        {"chunks_done": 8, "stage": "aggregate"}, {"chunks_done": 4, "stage": None}]}
    assert view["tasks"][1] == {"type": "summarize", "target_words": 30} and "task" not in view


def test_without_a_state_machine_a_multi_task_job_is_refused_with_a_422_that_says_why(client):
    response = client.http.post("/jobs", headers={"Content-Type": "application/json"}, body=(
        '{"document": {"text": "Lighthouses."}, "tasks": [{"type": "summarize"}, {"type": "summarize"}]}'))
    assert response.status_code == 422, response.body
    assert b"workflow_unavailable" in response.body and b"DOCPIPE_STATE_MACHINE_ARN" in response.body


def test_an_aborted_execution_fails_its_job_through_the_status_event_or_else_the_sweep(services, executions,
                                                                                         monkeypatch):
    from chalicelib.entry.stages import handle_execution_event, sweep_executions

    monkeypatch.setattr(services, "executions", executions)
    monkeypatch.setattr(services, "settings", dataclasses.replace(services.settings,
                                                                  state_machine_arn=executions.state_machine_arn))
    by_event, by_sweep, still_running = (_running(services) for _ in range(3))
    for job in (by_event, by_sweep, still_running):
        arn = executions.start(job.run_name, job.job_id)
        services.lifecycle.adopt_execution(job.job_id, execution_arn=arn)
        services.lifecycle.enter_stage(job.job_id, "map", task=0)
    for job in (by_event, by_sweep):
        executions._sfn.stop_execution(executionArn=executions.execution_arn(job.job_id), cause="operator")

    event = {"source": "aws.states", "detail-type": "Step Functions Execution Status Change", "detail": {
        "status": "ABORTED", "stateMachineArn": executions.state_machine_arn, "name": by_event.job_id,
        "executionArn": executions.execution_arn(by_event.job_id), "input": f'{{"job_id": "{by_event.job_id}"}}'}}
    assert handle_execution_event(event, services)
    assert not handle_execution_event(event, services)  # delivered twice: the job is already FAILED
    assert sweep_executions(services) >= 1

    failed = services.jobs.get(by_event.job_id)
    assert failed.status == FAILED and failed.error["code"] == "execution_aborted"
    assert failed.error["stage"] == "map"
    assert services.jobs.get(by_sweep.job_id).error["code"] == "execution_aborted"
    assert services.jobs.get(still_running.job_id).status == RUNNING
