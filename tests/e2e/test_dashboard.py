"""The operator's page on the real local stack, in a real browser: headless Chromium loads ``/dashboard`` after jobs
have finished, runs its script against the API, and what it rendered is read back from the DOM; a screenshot is
kept in build/ as the test's artefact.

Chromium comes from Debian's ``chromium`` package, which ``make test`` installs when it is missing.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from devstack.emulator import free_port
from devstack.http import request as http
from devstack.stack import LOCAL_DIR, LocalStack
from tests.e2e.test_local_stack import PAGES, wait_for
from tests.support import PROJECT

pytestmark = pytest.mark.e2e

SCREENSHOT = PROJECT / "build" / "dashboard.png"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=15000", "--window-size=1280,1100"]


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.skip("chromium is not installed and apt could not install it (make test runs "
                    "`apt-get install -y chromium`)")
    return found


def browse(chromium: str, url: str, *args: str) -> str:
    with tempfile.TemporaryDirectory(prefix="docpipe-chromium-") as profile:
        done = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", *args, url],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class Cells(HTMLParser):
    """The text of each table's rows, by table id, and the body's attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.body: dict[str, str | None] = {}
        self._table: str | None = None
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self.body = dict(attrs)
        elif tag == "table":
            self._table = dict(attrs).get("id") or ""
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag == "td" and self._table is not None:
            self._in_cell = True
            self.tables[self._table][-1].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._in_cell = False
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._in_cell and self._table is not None:
            self.tables[self._table][-1][-1] += data


@pytest.fixture(scope="module")
def stack_with_jobs():
    LOCAL_DIR.mkdir(exist_ok=True)
    with LocalStack(api_port=free_port(), emulator_port=free_port(), app_log=LOCAL_DIR / "e2e-dashboard.log") as stack:
        jobs = []
        for document in ({"text": "\f".join(PAGES)}, {"text": " ".join(PAGES)},
                         {"pdf_base64": base64.b64encode(b"%PDF-1.4\n% nothing else\n%%EOF\n").decode()}):
            status, job = http("POST", f"{stack.api_url}/jobs", json.dumps({
                "document": document, "task": {"type": "summarize"}}).encode(), {"Content-Type": "application/json"})
            assert status == 202, job
            jobs.append(wait_for(stack, job["job_id"]))
        yield stack, jobs


def test_the_dashboard_renders_the_finished_jobs_in_a_browser(chromium, stack_with_jobs):
    stack, jobs = stack_with_jobs
    assert [job["status"] for job in jobs] == ["SUCCEEDED", "SUCCEEDED", "FAILED"]

    page = Cells()
    page.feed(browse(chromium, f"{stack.api_url}/dashboard", "--dump-dom"))

    assert page.body.get("data-loaded") == "true", "the page's script never rendered the data"
    statuses = {row[0]: int(row[1]) for row in page.tables["statuses"] if row}
    assert statuses == {"QUEUED": 0, "RUNNING": 0, "SUCCEEDED": 2, "FAILED": 1}
    latest = [row for row in page.tables["latest"] if row]
    assert {row[0] for row in latest} == {job["job_id"][:12] for job in jobs}
    failed = next(row for row in latest if row[2] == "FAILED")
    assert "corrupt_pdf" in failed[3]
    health = {row[0]: row[1] for row in page.tables["health"] if row}
    assert health["LLM circuit"] == "CLOSED" and health["queue waiting"] == "0"
    stages = {row[0] for row in page.tables["stages"] if row}
    assert {"extract", "chunk", "total"} <= stages

    SCREENSHOT.parent.mkdir(exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    browse(chromium, f"{stack.api_url}/dashboard", f"--screenshot={SCREENSHOT}")
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_dashboard_data_is_the_job_tables(stack_with_jobs):
    stack, _ = stack_with_jobs
    status, data = http("GET", f"{stack.api_url}/dashboard/data")
    assert status == 200, data
    assert data["jobs_by_status"] == {"SUCCEEDED": 2, "FAILED": 1}
    assert data["queue"] == {"waiting": 0, "in_flight": 0, "delayed": 0}
    assert data["llm"]["cost_usd"] == 0  # the offline provider


def test_the_dashboard_exists_only_where_it_is_turned_on():
    """On AWS stages the setting is off, so app.py declares no such route (API Gateway would not have it)."""
    config = json.loads((PROJECT / ".chalice" / "config.json").read_text())
    assert config["stages"]["local"]["environment_variables"]["DOCPIPE_DASHBOARD"] == "true"
    for stage in ("dev", "prod"):
        merged = {**config["environment_variables"], **config["stages"][stage]["environment_variables"]}
        assert merged.get("DOCPIPE_DASHBOARD", "false") == "false"
    code = ("import app, json; print(json.dumps(sorted(app.app.routes)))")
    done = subprocess.run([str(PROJECT / ".venv" / "bin" / "python"), "-c", code], cwd=str(PROJECT),
                          env={"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "us-east-1", "DOCPIPE_STAGE": "dev"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert not any(route.startswith("/dashboard") for route in json.loads(done.stdout.splitlines()[-1]))
    assert Path(PROJECT / "chalicelib" / "entry" / "dashboard.html").exists()
