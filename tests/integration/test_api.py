"""The REST API as a client sees it: what POST /jobs accepts, how it refuses, and what GET /jobs shows.

Every request goes through Chalice's test client (the same request → event → route path API Gateway drives), against
the session's emulator with docpipe's real table, bucket and queue. "No job" is checked by counting the jobs table,
"no message" by reading the jobs queue after purging it.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess

import pytest

from chalicelib.bootstrap import get_services
from tests.support import PROJECT
from tests.support.corpus import corpus_file
from tests.support.pdfs import make_pdf
from tests.support.taskflow import aws_client, configure, job_count, queued_job_ids

JSON_HEADERS = {"content-type": "application/json"}
HEX32 = re.compile(r"^[0-9a-f]{32}$")
TEXT = "Lighthouses guide ships at night. Their keepers trim the wick and wind the clockwork. " * 5


# --- helpers ---------------------------------------------------------------------------------------------------------

def post_json(client, payload, headers=None):
    return client.http.post("/jobs", headers={**JSON_HEADERS, **(headers or {})}, body=json.dumps(payload))


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.body
    body = response.json_body
    assert isinstance(body, dict) and set(body) == {"error"}, response.body
    assert set(body["error"]) == {"code", "message"}, response.body
    assert body["error"]["code"] == code, response.body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"].strip()
    return body["error"]


def assert_accepted(response) -> str:
    assert response.status_code == 202, response.body
    body = response.json_body
    job_id = body["job_id"]
    assert HEX32.match(job_id), job_id
    assert body["status"] == "QUEUED"
    assert response.headers.get("Location") == f"/jobs/{job_id}"
    return job_id


# --- accepted submissions --------------------------------------------------------------------------------------------

def test_json_text_submission_is_queued_once_and_stored_under_inputs(client, services, sqs, drain_queue):
    response = post_json(client, {"document": {"text": TEXT}, "task": {"type": "summarize"}})

    job_id = assert_accepted(response)
    assert queued_job_ids(sqs, drain_queue) == [job_id]
    stored = aws_client("s3").get_object(Bucket=services.settings.bucket, Key=f"inputs/{job_id}")
    assert stored["Body"].read().decode("utf-8") == TEXT
    assert response.json_body["document"]["s3_key"] == f"inputs/{job_id}"


def test_json_pdf_base64_submission_stores_the_pdf_bytes(client, services, sqs, drain_queue):
    pdf = make_pdf(["A page about harbours.", "A page about keepers."])

    response = post_json(client, {"document": {"pdf_base64": base64.b64encode(pdf).decode()},
                                  "task": {"type": "summarize"}})

    job_id = assert_accepted(response)
    assert queued_job_ids(sqs, drain_queue) == [job_id]
    stored = aws_client("s3").get_object(Bucket=services.settings.bucket, Key=f"inputs/{job_id}")
    assert stored["Body"].read() == pdf
    assert stored["ContentType"] == "application/pdf"


def test_raw_pdf_body_takes_its_task_from_the_query_string(client, services, sqs, drain_queue):
    pdf = make_pdf(["Raw PDF body, task in the query string."])

    response = client.http.post("/jobs?task=summarize&target_words=120",
                                headers={"content-type": "application/pdf"}, body=pdf)

    job_id = assert_accepted(response)
    assert queued_job_ids(sqs, drain_queue) == [job_id]
    assert aws_client("s3").get_object(Bucket=services.settings.bucket, Key=f"inputs/{job_id}")["Body"].read() == pdf
    shown = client.http.get(f"/jobs/{job_id}")
    assert shown.status_code == 200
    assert shown.json_body["task"] == {"type": "summarize", "target_words": 120}


def test_raw_text_plain_body_is_accepted(client, services, sqs, drain_queue):
    response = client.http.post("/jobs", headers={"content-type": "text/plain; charset=utf-8"},
                                body=TEXT.encode("utf-8"))

    job_id = assert_accepted(response)
    assert queued_job_ids(sqs, drain_queue) == [job_id]
    stored = aws_client("s3").get_object(Bucket=services.settings.bucket, Key=f"inputs/{job_id}")
    assert stored["Body"].read().decode("utf-8") == TEXT
    assert client.http.get(f"/jobs/{job_id}").json_body["task"] == {"type": "summarize"}


def test_s3_key_submission_references_the_staged_upload_in_the_clients_folder(client, services, sqs, drain_queue):
    stored_key = "uploads/local/test-api/staged-report.pdf"  # the keyless client "local" names it without its folder
    pdf = make_pdf(["Staged upload referenced by key."])
    bucket = services.settings.bucket
    aws_client("s3").put_object(Bucket=bucket, Key=stored_key, Body=pdf, ContentType="application/pdf")

    response = post_json(client, {"document": {"s3_key": "uploads/test-api/staged-report.pdf"},
                                  "task": {"type": "summarize"}})

    job_id = assert_accepted(response)
    assert queued_job_ids(sqs, drain_queue) == [job_id]
    document = client.http.get(f"/jobs/{job_id}").json_body["document"]
    assert document["s3_key"] == stored_key
    assert document["bytes"] == len(pdf)
    assert aws_client("s3").list_objects_v2(Bucket=bucket, Prefix=f"inputs/{job_id}").get("KeyCount", 0) == 0


# --- client mistakes: documented 4xx, no job, no message ------------------------------------------------------------

NOT_BASE64 = "this is not base64 at all!!"
NOT_A_PDF_B64 = base64.b64encode(b"GIF89a definitely an image, not a PDF").decode()
GOOD_DOC = {"text": TEXT}
GOOD_TASK = {"type": "summarize"}

BAD_JSON_REQUESTS = [
    pytest.param(b'{"document": {"text": "hi"}, "task": ', 400, "invalid_json", id="malformed-json"),
    pytest.param([{"document": GOOD_DOC, "task": GOOD_TASK}], 400, "invalid_request", id="body-is-array"),
    pytest.param({"document": GOOD_DOC, "task": GOOD_TASK, "priority": "high"}, 400, "invalid_request",
                 id="unknown-top-level-field"),
    pytest.param({"document": GOOD_DOC}, 400, "invalid_task", id="missing-task"),
    pytest.param({"document": GOOD_DOC, "task": {"type": "translate"}}, 400, "unknown_task", id="unknown-task-type"),
    pytest.param({"document": GOOD_DOC, "task": {"type": "summarize", "tone": "funny"}}, 400, "invalid_task",
                 id="unknown-task-field"),
    pytest.param({"document": GOOD_DOC, "task": {"type": "summarize", "target_words": 0}}, 400, "invalid_task",
                 id="target-words-zero"),
    pytest.param({"document": GOOD_DOC, "task": {"type": "summarize", "target_words": "many"}}, 400,
                 "invalid_task", id="target-words-string"),
    pytest.param({"document": {"text": TEXT, "s3_key": "uploads/x.pdf"}, "task": GOOD_TASK}, 400,
                 "invalid_document", id="two-sources"),
    pytest.param({"document": {}, "task": GOOD_TASK}, 400, "invalid_document", id="no-source"),
    pytest.param({"task": GOOD_TASK}, 400, "invalid_document", id="no-document"),
    pytest.param({"document": {"text": ""}, "task": GOOD_TASK}, 400, "empty", id="empty-text"),
    pytest.param({"document": {"text": " \n\t  "}, "task": GOOD_TASK}, 400, "empty", id="whitespace-text"),
    pytest.param({"document": {"pdf_base64": NOT_BASE64}, "task": GOOD_TASK}, 400, "invalid_document",
                 id="pdf-base64-not-base64"),
    pytest.param({"document": {"pdf_base64": NOT_A_PDF_B64}, "task": GOOD_TASK}, 415, "unsupported_type",
                 id="pdf-base64-not-a-pdf"),
    pytest.param({"document": {"s3_key": "uploads/../results/secret.json"}, "task": GOOD_TASK}, 400,
                 "invalid_document", id="s3-key-traversal"),
    pytest.param({"document": {"s3_key": "/uploads/report.pdf"}, "task": GOOD_TASK}, 400, "invalid_document",
                 id="s3-key-absolute"),
    pytest.param({"document": {"s3_key": "inputs/0123456789abcdef0123456789abcdef"}, "task": GOOD_TASK}, 400,
                 "invalid_document", id="s3-key-inputs-prefix"),
    pytest.param({"document": {"s3_key": "results/0123456789abcdef0123456789abcdef.json"}, "task": GOOD_TASK},
                 400, "invalid_document", id="s3-key-results-prefix"),
    pytest.param({"document": {"s3_key": "uploads/"}, "task": GOOD_TASK}, 400, "invalid_document",
                 id="s3-key-bare-prefix"),
]


@pytest.mark.parametrize("payload, status, code", BAD_JSON_REQUESTS)
def test_bad_json_submission_is_refused_without_a_job(client, services, sqs, drain_queue, payload, status, code):
    body = payload if isinstance(payload, bytes) else json.dumps(payload)
    before = job_count(services)

    response = client.http.post("/jobs", headers=JSON_HEADERS, body=body)

    assert_error(response, status, code)
    assert job_count(services) == before
    assert queued_job_ids(sqs, drain_queue) == []


BAD_RAW_REQUESTS = [
    pytest.param("application/pdf", "pdfs/qpdf__not-a-pdf__bad.pdf", 415, "unsupported_type", id="pdf-not-a-pdf"),
    pytest.param("application/pdf", "pdfs/zero-byte__empty.pdf", 400, "empty", id="pdf-zero-bytes"),
    pytest.param("image/png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", 415, "unsupported_media_type", id="png"),
    pytest.param("application/x-www-form-urlencoded", b"document=hello&task=summarize", 415,
                 "unsupported_media_type", id="form-urlencoded"),
]


@pytest.mark.parametrize("content_type, source, status, code", BAD_RAW_REQUESTS)
def test_bad_raw_body_is_refused_without_a_job(client, services, sqs, drain_queue, content_type, source, status,
                                               code):
    body = corpus_file(source).read_bytes() if isinstance(source, str) else source
    before = job_count(services)

    response = client.http.post("/jobs", headers={"content-type": content_type}, body=body)

    assert_error(response, status, code)
    assert job_count(services) == before
    assert queued_job_ids(sqs, drain_queue) == []


def test_body_over_the_request_limit_is_refused_with_413(client, services, sqs, drain_queue, monkeypatch):
    configure(monkeypatch, DOCPIPE_MAX_REQUEST_BYTES="2048")
    rebuilt = get_services()
    assert rebuilt.settings.max_request_bytes == 2048
    before = job_count(rebuilt)

    response = post_json(client, {"document": {"text": "x" * 4096}, "task": GOOD_TASK})

    assert_error(response, 413, "too_large")
    assert job_count(rebuilt) == before
    assert queued_job_ids(sqs, drain_queue) == []


def test_s3_key_of_a_missing_upload_is_404(client, services, sqs, drain_queue):
    before = job_count(services)

    response = post_json(client, {"document": {"s3_key": "uploads/test-api/never-uploaded.pdf"}, "task": GOOD_TASK})

    assert_error(response, 404, "document_not_found")
    assert job_count(services) == before
    assert queued_job_ids(sqs, drain_queue) == []


def test_s3_key_of_an_upload_over_the_document_limit_is_413(client, services, sqs, drain_queue, monkeypatch):
    configure(monkeypatch, DOCPIPE_MAX_DOCUMENT_BYTES="1024")
    rebuilt = get_services()
    aws_client("s3").put_object(Bucket=rebuilt.settings.bucket, Key="uploads/local/test-api/too-big.pdf",
                                Body=make_pdf(["Too long. " * 300]))
    before = job_count(rebuilt)

    response = post_json(client, {"document": {"s3_key": "uploads/test-api/too-big.pdf"}, "task": GOOD_TASK})

    assert_error(response, 413, "too_large")
    assert job_count(rebuilt) == before
    assert queued_job_ids(sqs, drain_queue) == []


# --- Idempotency-Key --------------------------------------------------------------------------------------------------

def test_retried_request_with_the_same_idempotency_key_returns_the_same_job(client, services, sqs, drain_queue):
    payload = {"document": {"text": TEXT + " idempotent retry"}, "task": GOOD_TASK}
    headers = {"idempotency-key": "retry-key-7f1c2b9e-same"}

    first = post_json(client, payload, headers)
    second = post_json(client, payload, headers)

    job_id = assert_accepted(first)
    assert assert_accepted(second) == job_id
    assert queued_job_ids(sqs, drain_queue) == [job_id]


def test_idempotency_key_reused_for_a_different_body_is_422(client, services, sqs, drain_queue):
    headers = {"idempotency-key": "retry-key-5d0e8a41-reused"}
    first = post_json(client, {"document": {"text": TEXT + " first body"}, "task": GOOD_TASK}, headers)
    job_id = assert_accepted(first)
    before = job_count(services)

    second = post_json(client, {"document": {"text": TEXT + " another body"}, "task": GOOD_TASK}, headers)

    assert_error(second, 422, "idempotency_key_reused")
    assert job_count(services) == before
    assert queued_job_ids(sqs, drain_queue) == [job_id]


@pytest.mark.parametrize("key", [
    pytest.param("k" * 300, id="300-chars"),
    pytest.param("has spaces in it", id="spaces"),
    pytest.param("ctrl\x01char", id="control-char"),
])
def test_invalid_idempotency_key_is_400(client, services, sqs, drain_queue, key):
    before = job_count(services)

    response = post_json(client, {"document": {"text": TEXT}, "task": GOOD_TASK}, {"idempotency-key": key})

    assert_error(response, 400, "invalid_idempotency_key")
    assert job_count(services) == before
    assert queued_job_ids(sqs, drain_queue) == []


# --- reading jobs ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    pytest.param("/jobs/0123456789abcdef0123456789abcdef", id="unknown-hex-id"),
    pytest.param("/jobs/not-a-job-id", id="malformed-id"),
    pytest.param("/jobs/0123456789abcdef0123456789abcdef/result", id="result-of-unknown-id"),
])
def test_unknown_job_is_404(client, path):
    assert_error(client.http.get(path), 404, "not_found")


def test_result_of_a_queued_job_is_409_not_finished(client, services, drain_queue):
    job_id = assert_accepted(post_json(client, {"document": {"text": TEXT}, "task": GOOD_TASK}))

    assert_error(client.http.get(f"/jobs/{job_id}/result"), 409, "not_finished")


def test_failed_job_shows_its_error_and_its_result_is_409_job_failed(client, services, drain_queue):
    job_id = assert_accepted(post_json(client, {"document": {"text": TEXT}, "task": GOOD_TASK}))
    assert services.jobs.mark_failed(job_id, {"code": "corrupt_pdf", "message": "the xref table is broken"})

    shown = client.http.get(f"/jobs/{job_id}")
    result = client.http.get(f"/jobs/{job_id}/result")

    assert shown.status_code == 200
    assert shown.json_body["status"] == "FAILED"
    assert shown.json_body["error"] == {"code": "corrupt_pdf", "message": "the xref table is broken"}
    error = assert_error(result, 409, "job_failed")
    assert "corrupt_pdf" in error["message"]


# --- a real API Gateway event ---------------------------------------------------------------------------------------

def _api_gateway_event() -> dict:
    """sam-cli's AwsProxy sample (base64 body {"test":"body"}), pointed at POST /jobs with a JSON content type."""
    event = json.loads(corpus_file("events/sam-cli__AwsProxy.rendered-defaults.json").read_text())
    event.update(resource="/jobs", path="/jobs", httpMethod="POST", pathParameters=None)
    event["requestContext"].update(resourcePath="/jobs", httpMethod="POST", path="/prod/jobs")
    event["headers"]["Content-Type"] = "application/json"
    event["multiValueHeaders"]["Content-Type"] = ["application/json"]
    return event


def _invoke_api_handler(event: dict) -> dict:
    # The REST handler is the Chalice app object itself (Lambda's "api_handler" is app.app); the test client's
    # lambda_.invoke only knows the decorated functions, so call it as Lambda does.
    from chalice.local import LambdaContext

    import app as docpipe_app

    return docpipe_app.app(event, LambdaContext("api_handler", memory_size=512))


def test_real_api_gateway_event_with_base64_body_gets_a_json_4xx(client, services, sqs, drain_queue):
    event = _api_gateway_event()
    assert event["isBase64Encoded"] is True
    before = job_count(services)

    response = _invoke_api_handler(event)

    assert response["statusCode"] == 400, response
    error = json.loads(response["body"])["error"]
    assert error["code"] in ("invalid_task", "invalid_request"), error
    assert job_count(services) == before
    assert queued_job_ids(sqs, drain_queue) == []


def test_real_api_gateway_event_shape_with_a_valid_base64_body_is_accepted(client, services, sqs, drain_queue):
    event = _api_gateway_event()
    event["queryStringParameters"] = event["multiValueQueryStringParameters"] = None
    event["body"] = base64.b64encode(json.dumps({"document": {"text": TEXT}, "task": GOOD_TASK}).encode()).decode()

    response = _invoke_api_handler(event)

    assert response["statusCode"] == 202, response
    job_id = json.loads(response["body"])["job_id"]
    assert queued_job_ids(sqs, drain_queue) == [job_id]
    stored = aws_client("s3").get_object(Bucket=services.settings.bucket, Key=f"inputs/{job_id}")
    assert stored["Body"].read().decode("utf-8") == TEXT


@pytest.mark.parametrize("body", ["eyJkb2N1bWVudCI", "not base64 at all: ünïcode"], ids=["bad-padding", "not-ascii"])
def test_a_body_marked_base64_that_does_not_decode_is_a_400_in_docpipes_shape(client, services, sqs, drain_queue,
                                                                              body):
    from tests.events import load

    before = job_count(services)

    response = _invoke_api_handler(load("api-gateway-rest", body=body, isBase64Encoded=True))

    assert response["statusCode"] == 400, response
    assert json.loads(response["body"]) == {"error": {
        "code": "invalid_request",
        "message": "the body is marked as base64-encoded (isBase64Encoded) but is not valid base64"}}
    assert job_count(services) == before
    assert queued_job_ids(sqs, drain_queue) == []


# --- the API Lambda stays light ---------------------------------------------------------------------------------------

def test_importing_the_app_does_not_load_the_worker_libraries():
    heavy = ("openai", "pypdf", "tiktoken", "jsonschema", "re2", "aws_xray_sdk")
    # find_spec first: the libraries are installed, so the check below could see them if app.py imported them.
    code = ("import importlib.util, json, sys\n"
            f"assert all(importlib.util.find_spec(m) for m in {heavy!r}), 'a worker library is not installed'\n"
            "import app\n"
            f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))")
    env = {"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "us-east-1", "DOCPIPE_STAGE": "test"}

    done = subprocess.run([str(PROJECT / ".venv" / "bin" / "python"), "-c", code], cwd=str(PROJECT), env=env,
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
