"""What a client gets beyond one job: its own jobs listed (GET /jobs), a presigned upload for a document of any size
(POST /uploads), and an EventBridge event when a job ends — against the emulator, through the app's routes and the
worker.
"""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest

from chalicelib.entry.cursors import encode_cursor
from tests.integration.conftest import RESOURCES
from tests.support.pdfs import make_pdf
from tests.support.taskflow import aws_client, configure, run_job

pytestmark = pytest.mark.timeout(120)

ALICE_KEY, BOB_KEY = "alice-list-key-5Rq8Wm2Xz", "bob-list-key-9Tv4Hn6Jc1"
TEXT = "The ferry leaves the north pier at six. Tickets are sold aboard. Bicycles travel free on weekdays. " * 3


@pytest.fixture
def two_clients(services, monkeypatch):
    configure(monkeypatch, DOCPIPE_API_KEYS=json.dumps({ALICE_KEY: "alice", BOB_KEY: "bob"}))


def submit(client, key: str, text: str = TEXT) -> str:
    response = client.http.post("/jobs", headers={"content-type": "application/json", "x-api-key": key},
                                body=json.dumps({"document": {"text": text}, "task": {"type": "summarize"}}))
    assert response.status_code == 202, response.body
    return response.json_body["job_id"]


def listing(client, key: str, query: str = "") -> tuple[int, dict]:
    response = client.http.get(f"/jobs{query}", headers={"x-api-key": key})
    return response.status_code, response.json_body


class NoScans:
    """The jobs table, refusing scans: a listing must read the client index."""

    def __init__(self, table):
        self._table = table
        self.queries = []

    def scan(self, **request):
        raise AssertionError("GET /jobs scanned the jobs table")

    def query(self, **request):
        self.queries.append(request)
        return self._table.query(**request)

    def __getattr__(self, name):
        return getattr(self._table, name)


# --- GET /jobs ----------------------------------------------------------------------------------------------------

def test_a_client_lists_only_its_own_jobs_newest_first_a_page_at_a_time(client, services, two_clients, monkeypatch):
    mine = [submit(client, ALICE_KEY, f"{TEXT} Copy {n}.") for n in range(5)]
    theirs = submit(client, BOB_KEY)
    table = NoScans(services.jobs._table)
    monkeypatch.setattr(services.jobs, "_table", table)

    seen, cursor = [], None
    while True:
        status, page = listing(client, ALICE_KEY, "?limit=2" + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200, page
        assert len(page["jobs"]) <= 2
        seen += [job["job_id"] for job in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert [j for j in seen if j in mine] == mine[::-1] and theirs not in seen
    assert all(q["IndexName"] == "client-created" for q in table.queries)


def test_the_status_filter_lists_only_jobs_in_that_status(client, services, two_clients):
    failed, queued = submit(client, ALICE_KEY), submit(client, ALICE_KEY)
    services.lifecycle.store.mark_failed(failed, {"code": "corrupt_pdf", "message": "broken"})

    status, page = listing(client, ALICE_KEY, "?status=failed&limit=100")

    assert status == 200
    listed = {job["job_id"]: job for job in page["jobs"]}
    assert failed in listed and queued not in listed
    assert listed[failed]["error"]["code"] == "corrupt_pdf" and listed[failed]["status"] == "FAILED"
    assert listed[failed]["links"] == {"self": f"/jobs/{failed}", "result": f"/jobs/{failed}/result"}


def test_a_cursor_never_reaches_another_clients_jobs(client, two_clients):
    submit(client, ALICE_KEY), submit(client, ALICE_KEY)
    _, page = listing(client, ALICE_KEY, "?limit=1")
    alices_cursor = page["next_cursor"]
    bobs_job = submit(client, BOB_KEY)

    assert listing(client, BOB_KEY, f"?cursor={alices_cursor}")[1]["error"]["code"] == "invalid_cursor"
    # A cursor Alice forges to start just above Bob's job still reads Alice's jobs alone.
    forged = encode_cursor("alice", None, ("9999999999.999", bobs_job))
    status, page = listing(client, ALICE_KEY, f"?cursor={forged}&limit=100")
    assert status == 200 and bobs_job not in [job["job_id"] for job in page["jobs"]]
    assert page["jobs"], "the forged position is still inside Alice's own jobs"


@pytest.mark.parametrize("query, code", [("?limit=0", "invalid_request"), ("?limit=101", "invalid_request"),
                                         ("?limit=ten", "invalid_request"), ("?status=DONE", "invalid_request"),
                                         ("?status=", "invalid_request"), ("?status=Failed", "invalid_request"),
                                         ("?page=2", "invalid_request"), ("?cursor=not-a-cursor", "invalid_cursor")])
def test_a_bad_listing_request_is_a_400_with_its_code(client, two_clients, query, code):
    status, body = listing(client, ALICE_KEY, query)
    assert (status, body["error"]["code"]) == (400, code)


def test_a_cursor_made_for_one_status_is_refused_for_another(client, services, two_clients):
    for _ in range(2):
        services.lifecycle.store.mark_failed(submit(client, ALICE_KEY), {"code": "empty", "message": "empty"})
    _, page = listing(client, ALICE_KEY, "?status=FAILED&limit=1")

    status, body = listing(client, ALICE_KEY, f"?cursor={page['next_cursor']}")

    assert (status, body["error"]["code"]) == (400, "invalid_cursor") and "status=FAILED" in body["error"]["message"]


# --- POST /uploads ------------------------------------------------------------------------------------------------

def upload_form(client, headers=None, **wanted) -> dict:
    response = client.http.post("/uploads", headers={"content-type": "application/json", **(headers or {})},
                                body=json.dumps(wanted))
    assert response.status_code == 201, response.body
    return response.json_body


def test_an_upload_form_pins_the_key_the_type_the_size_and_a_short_expiry(client, services):
    form = upload_form(client, filename="annual report.pdf")

    policy = json.loads(base64.b64decode(form["fields"]["policy"]))
    conditions = {next(iter(c)): c[next(iter(c))] for c in policy["conditions"] if isinstance(c, dict)}
    ranges = [c for c in policy["conditions"] if isinstance(c, list)]
    assert form["s3_key"].startswith("uploads/") and form["s3_key"].endswith("/annual-report.pdf")
    assert conditions["key"] == "uploads/local/" + form["s3_key"].removeprefix("uploads/")
    assert conditions["Content-Type"] == form["fields"]["Content-Type"] == "application/pdf"
    assert conditions["bucket"] == services.settings.bucket
    assert ranges == [["content-length-range", 1, services.settings.max_document_bytes]]
    expires = time.mktime(time.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert 0 < expires - time.time() <= services.settings.upload_url_seconds + 5
    # On the emulator the form's URL is the emulator's own, where a client can send the file.
    assert form["url"].startswith(aws_client("s3").meta.endpoint_url)


def test_a_document_uploaded_through_the_form_becomes_a_job_that_succeeds(client, sqs, drain_queue):
    form = upload_form(client, filename="ferry.pdf")
    pdf = make_pdf([TEXT, TEXT.replace("north", "south")])

    sent = httpx.post(form["url"], data=form["fields"], files={"file": ("ferry.pdf", pdf, "application/pdf")})
    assert sent.status_code == 204, sent.text
    response = client.http.post("/jobs", headers={"content-type": "application/json"},
                                body=json.dumps({"document": form["submit"]["document"],
                                                 "task": {"type": "summarize"}}))
    assert response.status_code == 202, response.body

    job, result = run_job(client, sqs, drain_queue, response.json_body["job_id"])
    assert job["status"] == "SUCCEEDED" and result["document"]["pages"] == 2


def test_a_document_over_the_limit_that_reached_the_bucket_is_refused_at_submit(client, monkeypatch):
    """S3 refuses such an upload by the form's content-length-range. moto 5.2.5 checks no POST policy (neither the
    range nor the type, the key or the expiry), so this tests the check behind it: the submission is refused."""
    configure(monkeypatch, DOCPIPE_MAX_DOCUMENT_BYTES="2000")
    form = upload_form(client, filename="big.pdf")
    assert ["content-length-range", 1, 2000] in json.loads(base64.b64decode(form["fields"]["policy"]))["conditions"]
    httpx.post(form["url"], data=form["fields"], files={"file": ("big.pdf", make_pdf([TEXT] * 4), "application/pdf")})

    response = client.http.post("/jobs", headers={"content-type": "application/json"},
                                body=json.dumps({"document": form["submit"]["document"],
                                                 "task": {"type": "summarize"}}))

    assert (response.status_code, response.json_body["error"]["code"]) == (413, "too_large")


@pytest.mark.parametrize("body, status, code", [
    ({"content_type": "image/png"}, 415, "unsupported_type"),
    ({"filename": 7}, 400, "invalid_request"),
    ({"content_type": {}}, 400, "invalid_request"),  # found by the fuzzer: once a 500
    ({"content_type": None}, 400, "invalid_request"), ({"filename": None}, 400, "invalid_request"),
    ({"name": "x.pdf"}, 400, "invalid_request")])
def test_a_bad_upload_request_is_refused_with_its_code(client, body, status, code):
    response = client.http.post("/uploads", headers={"content-type": "application/json"}, body=json.dumps(body))
    assert (response.status_code, response.json_body["error"]["code"]) == (status, code)


def test_each_client_uploads_into_its_own_folder_only(client, two_clients):
    form = upload_form(client, headers={"x-api-key": BOB_KEY}, content_type="text/plain")
    assert form["fields"]["key"].startswith("uploads/bob/") and form["s3_key"].endswith(".txt")


# --- job events ---------------------------------------------------------------------------------------------------

def job_events(sqs, wanted: set[str], timeout: float = 10) -> dict[str, dict]:
    """The events of the jobs ``wanted`` that the rule on the stage's bus delivered to its queue."""
    url = sqs.get_queue_url(QueueName=RESOURCES.job_events_queue)["QueueUrl"]
    found: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while not wanted <= set(found) and time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
                "Messages", []):
            event = json.loads(message["Body"])  # other tests' events too: nobody else reads this queue
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            if event["detail"]["job_id"] in wanted:
                found[event["detail"]["job_id"]] = event
    return found


def test_a_job_that_ends_is_announced_on_the_bus_without_its_text(client, sqs, drain_queue):
    secret_words = "Zanzibar-marmalade-7731"
    good = client.http.post("/jobs", headers={"content-type": "application/json"}, body=json.dumps(
        {"document": {"text": f"{TEXT} {secret_words}.", "filename": "ferry.txt"}, "task": {"type": "summarize"}}))
    bad = client.http.post("/jobs", headers={"content-type": "application/json"}, body=json.dumps(
        {"document": {"pdf_base64": base64.b64encode(b"%PDF-1.4\n%%EOF\n").decode()}, "task": {"type": "summarize"}}))
    good_id, bad_id = good.json_body["job_id"], bad.json_body["job_id"]
    run_job(client, sqs, drain_queue, good_id)
    run_job(client, sqs, drain_queue, bad_id)

    events = job_events(sqs, {good_id, bad_id})

    succeeded, failed = events[good_id], events[bad_id]
    assert (succeeded["source"], succeeded["detail-type"]) == ("docpipe", "Job Succeeded")
    assert (failed["detail-type"], failed["detail"]["error"]["code"]) == ("Job Failed", "corrupt_pdf")
    detail = succeeded["detail"]
    assert detail["client"] == "local" and detail["status"] == "SUCCEEDED" and detail["task"] == "summarize"
    assert detail["document"]["filename"] == "ferry.txt" and detail["usage"]["document_tokens"] > 0
    assert detail["links"]["result"] == f"/jobs/{good_id}/result"
    assert secret_words not in json.dumps(succeeded) and "ferry leaves" not in json.dumps(succeeded)


def test_a_job_whose_event_bus_is_gone_still_succeeds(client, sqs, drain_queue, monkeypatch, caplog):
    configure(monkeypatch, DOCPIPE_EVENT_BUS="docpipe-no-such-bus")
    job_id = client.http.post("/jobs", headers={"content-type": "application/json"}, body=json.dumps(
        {"document": {"text": TEXT}, "task": {"type": "summarize"}})).json_body["job_id"]

    job, _ = run_job(client, sqs, drain_queue, job_id)

    assert job["status"] == "SUCCEEDED"
    assert "job event not published" in caplog.text
