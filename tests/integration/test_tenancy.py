"""Tenancy: a job, its documents, its result, its Idempotency-Keys and its map cache belong to the client that
created it, and every other client sees nothing of them.

Two clients are configured with local API keys (``DOCPIPE_API_KEYS``), as ``make serve`` can be; a request without a
key acts as the keyless client ``local``; a request as API Gateway sends it carries the key's id in its request
context. Another client's job answers exactly as a job that does not exist.
"""

from __future__ import annotations

import json
import uuid

import pytest

from tests.support.pdfs import make_pdf
from tests.support.taskflow import aws_client, configure, job_count, queued_job_ids, run_job

pytestmark = pytest.mark.timeout(120)

ALICE_KEY, BOB_KEY = "alice-local-key-7Hq2Vd9Lx", "bob-local-key-3Nw8Kc5Tz0"
TEXT = "The lock keeper opens the upper gate at dawn. Barges wait below the weir until the level rises. " * 4


@pytest.fixture
def two_clients(services, monkeypatch):
    configure(monkeypatch, DOCPIPE_API_KEYS=json.dumps({ALICE_KEY: "alice", BOB_KEY: "bob"}))


def as_client(key: str | None) -> dict[str, str]:
    return {"x-api-key": key} if key else {}


def post(client, payload, key: str | None, headers=None):
    headers = {"content-type": "application/json", **as_client(key), **(headers or {})}
    return client.http.post("/jobs", headers=headers, body=json.dumps(payload))


def submit_as(client, key: str | None, text: str = TEXT, task: dict | None = None, headers=None) -> str:
    response = post(client, {"document": {"text": text}, "task": task or {"type": "summarize"}}, key, headers)
    assert response.status_code == 202, response.body
    return response.json_body["job_id"]


def error_of(response) -> tuple[int, str]:
    return response.status_code, response.json_body["error"]["code"]


# --- jobs -------------------------------------------------------------------------------------------------------------

def test_another_clients_job_is_404_on_every_route_as_an_unknown_job_is(client, services, two_clients, drain_queue):
    job_id = submit_as(client, ALICE_KEY)
    services.jobs.mark_failed(job_id, {"code": "corrupt_pdf", "message": "broken"})  # so retry would apply
    unknown = uuid.uuid4().hex

    for key in (BOB_KEY, None):
        for path, method in ((f"/jobs/{job_id}", "get"), (f"/jobs/{job_id}/result", "get"),
                             (f"/jobs/{job_id}/retry", "post")):
            theirs = getattr(client.http, method)(path, headers=as_client(key))
            nobodys = getattr(client.http, method)(path.replace(job_id, unknown), headers=as_client(key))
            assert error_of(theirs) == error_of(nobodys) == (404, "not_found"), (path, key)

    assert client.http.get(f"/jobs/{job_id}", headers=as_client(ALICE_KEY)).json_body["status"] == "FAILED"
    assert queued_job_ids(aws_client("sqs"), drain_queue) == [job_id]  # bob's retry queued nothing


def test_a_request_without_a_key_acts_as_the_keyless_client(client, two_clients, drain_queue):
    job_id = submit_as(client, None)

    assert client.http.get(f"/jobs/{job_id}").status_code == 200
    assert client.http.get(f"/jobs/{job_id}", headers=as_client(ALICE_KEY)).status_code == 404


def test_without_a_keyless_client_a_request_needs_a_key(client, services, two_clients, monkeypatch, drain_queue):
    configure(monkeypatch, DOCPIPE_KEYLESS_CLIENT="")
    before = job_count(services)

    refused = post(client, {"document": {"text": TEXT}, "task": {"type": "summarize"}}, None)

    assert error_of(refused) == (401, "api_key_required")
    assert error_of(client.http.get(f"/jobs/{uuid.uuid4().hex}")) == (401, "api_key_required")
    assert submit_as(client, BOB_KEY) and job_count(services) == before + 1


@pytest.mark.parametrize("key", [
    pytest.param("not-a-key-anyone-has-0000", id="unknown"),
    pytest.param(ALICE_KEY[:-1], id="one-character-short"),
    pytest.param(ALICE_KEY.replace("a", "\u0430", 1), id="cyrillic-look-alike"),
])
def test_a_key_docpipe_does_not_know_is_403_and_creates_nothing(client, services, two_clients, drain_queue, key):
    before = job_count(services)

    refused = post(client, {"document": {"text": TEXT}, "task": {"type": "summarize"}}, key)

    assert error_of(refused) == (403, "invalid_api_key")
    assert ALICE_KEY not in refused.json_body["error"]["message"]
    assert job_count(services) == before


# --- documents by s3_key ----------------------------------------------------------------------------------------------

def test_s3_key_resolves_only_inside_the_callers_folder(client, services, two_clients, drain_queue):
    name = f"report-{uuid.uuid4().hex[:8]}.pdf"
    aws_client("s3").put_object(Bucket=services.settings.bucket, Key=f"uploads/alice/{name}",
                                Body=make_pdf(["Alice's staged report."]), ContentType="application/pdf")

    def submit_key(key: str, as_key: str):
        return post(client, {"document": {"s3_key": key}, "task": {"type": "summarize"}}, as_key)

    accepted = submit_key(f"uploads/{name}", ALICE_KEY)
    assert accepted.status_code == 202 and accepted.json_body["document"]["s3_key"] == f"uploads/alice/{name}"
    # Bob can name Alice's document neither as his own nor by her folder, and learns nothing from trying:
    # the answer is the same as for a document nobody uploaded.
    never_uploaded = error_of(submit_key(f"uploads/never-{name}", BOB_KEY))
    assert error_of(submit_key(f"uploads/{name}", BOB_KEY)) == never_uploaded == (404, "document_not_found")
    assert error_of(submit_key(f"uploads/alice/{name}", BOB_KEY)) == never_uploaded


# --- Idempotency-Keys -------------------------------------------------------------------------------------------------

def test_each_client_has_its_own_idempotency_keys(client, two_clients, drain_queue):
    shared = {"idempotency-key": f"order-{uuid.uuid4().hex[:12]}"}

    alices = submit_as(client, ALICE_KEY, TEXT + " for alice", headers=shared)
    bobs = submit_as(client, BOB_KEY, TEXT + " for bob", headers=shared)  # another body: not a reuse for bob

    assert bobs != alices
    assert submit_as(client, ALICE_KEY, TEXT + " for alice", headers=shared) == alices
    assert submit_as(client, BOB_KEY, TEXT + " for bob", headers=shared) == bobs


# --- the map cache ----------------------------------------------------------------------------------------------------

def test_the_map_cache_is_shared_only_within_one_client(client, sqs, two_clients, drain_queue, llm):
    text = f"{uuid.uuid4().hex} {TEXT}"
    first, _ = run_job(client_as(client, ALICE_KEY), sqs, drain_queue, submit_as(client, ALICE_KEY, text))
    calls = llm.calls

    bobs, _ = run_job(client_as(client, BOB_KEY), sqs, drain_queue, submit_as(client, BOB_KEY, text))
    again, _ = run_job(client_as(client, ALICE_KEY), sqs, drain_queue, submit_as(client, ALICE_KEY, text))

    assert first["status"] == bobs["status"] == again["status"] == "SUCCEEDED"
    assert bobs["usage"]["cache_hits"] == 0 and llm.calls > calls  # bob paid: nothing tells him alice asked
    assert again["usage"]["cache_hits"] == first["progress"]["chunks_total"] and again["usage"]["calls"] == 0


def test_an_operator_may_share_the_map_cache_between_clients(client, sqs, two_clients, drain_queue, llm,
                                                            monkeypatch):
    configure(monkeypatch, DOCPIPE_MAP_CACHE_SHARED="true")
    text = f"{uuid.uuid4().hex} {TEXT}"
    first, _ = run_job(client_as(client, ALICE_KEY), sqs, drain_queue, submit_as(client, ALICE_KEY, text))

    bobs, _ = run_job(client_as(client, BOB_KEY), sqs, drain_queue, submit_as(client, BOB_KEY, text))

    assert bobs["usage"]["cache_hits"] == first["progress"]["chunks_total"] and bobs["usage"]["calls"] == 0


class client_as:
    """The test client with one client's API key on every request (``run_job`` reads jobs back through it)."""

    def __init__(self, test_client, key: str) -> None:
        self.lambda_ = test_client.lambda_
        self.http = _KeyedHTTP(test_client.http, key)


class _KeyedHTTP:
    def __init__(self, http, key: str) -> None:
        self._http, self._key = http, key

    def get(self, path, headers=None):
        return self._http.get(path, headers={**(headers or {}), "x-api-key": self._key})


# --- uploads under incoming/ ------------------------------------------------------------------------------------------

def trigger(client, services, key: str) -> None:
    event = client.events.generate_s3_event(services.settings.bucket, key)
    client.lambda_.invoke("start_job_from_upload", event)


def job_tag(services, key: str) -> str | None:
    tags = aws_client("s3").get_object_tagging(Bucket=services.settings.bucket, Key=key)["TagSet"]
    return next((t["Value"] for t in tags if t["Key"] == "docpipe-job-id"), None)


def test_an_upload_belongs_to_the_client_of_its_folder_and_its_job_id_is_random(client, services, two_clients,
                                                                                drain_queue):
    pdf = make_pdf(["An upload with the same bytes twice."])
    keys = [f"incoming/alice/{uuid.uuid4().hex[:8]}-same.pdf" for _ in range(2)]
    for key in keys:
        aws_client("s3").put_object(Bucket=services.settings.bucket, Key=key, Body=pdf)
        trigger(client, services, key)
        trigger(client, services, key)  # S3 delivers at least once

    job_ids = [job_tag(services, key) for key in keys]
    assert len(set(job_ids)) == 2 and sorted(queued_job_ids(aws_client("sqs"), drain_queue)) == sorted(job_ids)
    etag = aws_client("s3").head_object(Bucket=services.settings.bucket, Key=keys[0])["ETag"].strip('"')
    # Not derived from the object's identity, as ids were (uuid5 of bucket, key and ETag): nobody can recompute it.
    namespace = uuid.UUID("5f0c2f54-4a8e-4d1b-9a7e-8f6a1c2d3b4e")
    derived = uuid.uuid5(namespace, f"{services.settings.bucket}/{keys[0]}/{etag}")
    assert job_ids[0] != derived.hex
    assert client.http.get(f"/jobs/{job_ids[0]}", headers=as_client(ALICE_KEY)).status_code == 200
    assert error_of(client.http.get(f"/jobs/{job_ids[0]}", headers=as_client(BOB_KEY))) == (404, "not_found")


def test_an_upload_in_no_clients_folder_starts_no_job(client, services, two_clients, drain_queue):
    key = f"incoming/{uuid.uuid4().hex[:8]}-loose.pdf"
    aws_client("s3").put_object(Bucket=services.settings.bucket, Key=key, Body=make_pdf(["Nobody's upload."]))
    before = job_count(services)

    trigger(client, services, key)

    assert job_count(services) == before and job_tag(services, key) is None


# --- on AWS: the API key's id from API Gateway's request context ------------------------------------------------------

def gateway_event(method: str, path: str, api_key_id: str, body: dict | None = None) -> dict:
    from tests.integration.test_api import _api_gateway_event

    event = _api_gateway_event()
    resource = "/jobs/{job_id}" if path != "/jobs" else "/jobs"
    event.update(resource=resource, path=path, httpMethod=method, isBase64Encoded=False,
                 queryStringParameters=None, multiValueQueryStringParameters=None,
                 pathParameters={"job_id": path.rsplit("/", 1)[-1]} if path != "/jobs" else None,
                 body=json.dumps(body) if body is not None else None)
    event["requestContext"].update(resourcePath=resource, httpMethod=method, path=f"/api{path}")
    event["requestContext"]["identity"]["apiKeyId"] = api_key_id
    event["headers"].pop("x-api-key", None)
    return event


def test_on_aws_the_client_is_the_api_key_id_api_gateway_names(client, services, drain_queue):
    from tests.integration.test_api import _invoke_api_handler

    created = _invoke_api_handler(gateway_event("POST", "/jobs", "gw7key1d01",
                                                {"document": {"text": TEXT}, "task": {"type": "summarize"}}))
    assert created["statusCode"] == 202, created
    job_id = json.loads(created["body"])["job_id"]

    own = _invoke_api_handler(gateway_event("GET", f"/jobs/{job_id}", "gw7key1d01"))
    other = _invoke_api_handler(gateway_event("GET", f"/jobs/{job_id}", "gw7key1d02"))

    assert own["statusCode"] == 200 and json.loads(own["body"])["job_id"] == job_id
    assert other["statusCode"] == 404 and json.loads(other["body"])["error"]["code"] == "not_found"
    assert services.jobs.get(job_id).client == "gw7key1d01"


# --- configuration ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variable, value", [
    pytest.param("DOCPIPE_API_KEYS", "not json", id="keys-not-json"),
    pytest.param("DOCPIPE_API_KEYS", '["a-key-of-twenty-chars"]', id="keys-not-an-object"),
    pytest.param("DOCPIPE_API_KEYS", '{"short": "alice"}', id="key-shorter-than-20"),
    pytest.param("DOCPIPE_API_KEYS", '{"a-key-of-twenty-chars": "../bob"}', id="client-id-with-a-path"),
    pytest.param("DOCPIPE_KEYLESS_CLIENT", "_shared", id="keyless-client-as-the-shared-cache-folder"),
    pytest.param("DOCPIPE_KEYLESS_CLIENT", "local/other", id="keyless-client-with-a-slash"),
])
def test_a_client_setting_that_could_cross_folders_is_refused_at_start(variable, value):
    from chalicelib.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match=variable):
        load_settings({variable: value})
