"""Fault injection on the real local stack (short versions; ``make soak`` runs longer ones).

Required in every scenario: nothing lost, no result written twice, nothing stuck, every FAILED job with a reason.
"""

from __future__ import annotations

import math

import pytest

from devstack.stack import LOCAL_DIR
from tests.support import faults

pytestmark = pytest.mark.e2e
SCENARIOS = {s.name: s for s in faults.scenarios(soak=False)}
REPORTS: list[faults.Report] = []


@pytest.fixture(scope="module", autouse=True)
def report_table():
    yield
    if REPORTS:
        LOCAL_DIR.mkdir(exist_ok=True)
        (LOCAL_DIR / "faults-report.txt").write_text(faults.table(REPORTS) + "\n")


def run(name: str, capsys) -> faults.Report:
    report = faults.run(SCENARIOS[name])
    REPORTS.append(report)
    with capsys.disabled():
        print("\n" + faults.table([report]))
    assert report.clean, report
    return report


def test_flaky_llm_calls_are_retried_until_every_job_succeeds(capsys):
    report = run("flaky-llm-30pct", capsys)
    assert report.succeeded == report.submitted


def test_an_llm_outage_is_waited_out_with_calls_bounded_by_the_breaker(capsys):
    report = run("llm-down-then-back", capsys)
    assert report.succeeded == report.submitted
    env = faults.STACK_ENV
    outage = SCENARIOS["llm-down-then-back"].outage_seconds
    probes = math.ceil(outage / int(env["DOCPIPE_BREAKER_RECOVERY_SECONDS"])) + 1
    # While the circuit is closed, each job attempt ends at its first failure, which the breaker counts; the calls
    # that failure cancels are not counted (a cancelled call says nothing about the provider). So at most
    # `failures` job attempts, each with up to `concurrency` calls, run before the circuit opens; after that, one
    # probe per recovery window. Every call is up to `attempts` requests.
    bound = int(env["DOCPIPE_LLM_MAX_ATTEMPTS"]) * (
        int(env["DOCPIPE_BREAKER_FAILURES"]) * int(env["DOCPIPE_LLM_CONCURRENCY"]) + probes)
    assert report.notes["calls_during_outage"] <= bound


def test_jobs_survive_the_app_being_killed_mid_run(capsys):
    report = run("app-sigkilled", capsys)
    assert report.succeeded == report.submitted


def test_duplicate_deliveries_never_pay_twice(capsys):
    report = run("every-message-twice", capsys)
    assert report.succeeded == report.submitted
    assert report.llm_calls == report.llm_calls_needed


def test_a_poison_message_ends_failed_with_its_reason_and_garbage_is_dropped(capsys):
    report = run("poison-message", capsys)
    assert report.failed_with_reason == 1 and report.notes["failure_codes"] == ["internal_error"]
    assert report.succeeded == report.submitted - 1
