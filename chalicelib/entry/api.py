"""The REST adapter: Chalice requests in, JSON responses out, every client mistake a 4xx in one shape.

Error bodies are always ``{"error": {"code", "message"}}``; a client mistake is never a 5xx, and no message is longer
than ``MAX_MESSAGE`` characters (none echoes a request whole). Every job route acts for the request's client
(``identity``): another client's job answers 404, exactly as a job that does not exist.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from chalice import Response

from chalicelib.aws import UPLOAD_TYPES, key_of_client, new_upload_key
from chalicelib.bootstrap import Services
from chalicelib.entry.cursors import decode_cursor, encode_cursor
from chalicelib.entry.identity import client_of
from chalicelib.errors import NotFound, RequestError
from chalicelib.jobs import FAILED, JOB_ID_PATTERN, QUEUED, RUNNING, SUCCEEDED, Job, fingerprint, parse_submission
from chalicelib.jsontext import loads_bounded, unstorable_text
from chalicelib.observability import logger

JSON: dict[str, str | list[str]] = {"Content-Type": "application/json"}
MAX_MESSAGE = 500
LIST_LIMIT, LIST_MAX = 20, 100
_STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED)


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI description, shipped inside chalicelib so the Lambda package carries it."""
    return json.loads((Path(__file__).parent / "openapi.json").read_text())


def error_response(code: str, message: str, status: int) -> Response:
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE - 1] + "…"
    return Response(body={"error": {"code": code, "message": message}}, status_code=status, headers=JSON)


def guarded(view: Callable[[], Response]) -> Response:
    """Run a view; turn client mistakes into their 4xx and anything else into a logged, opaque 500."""
    try:
        return view()
    except RequestError as exc:
        # The code and status only: a refused request is counted, never echoed.
        logger.info("request refused", extra={"code": exc.code, "status": exc.status})
        return error_response(exc.code, exc.message, exc.status)
    except Exception:
        logger.exception("unhandled error in route")
        return error_response("internal_error", "docpipe failed to handle the request; it has been logged", 500)


def submit_job(request: Any, services: Services, lambda_context: Any = None) -> Response:
    client = _client(request, services)
    body = _body(request)
    headers = request.headers
    query = dict(request.query_params or {})
    submission = parse_submission(headers.get("content-type"), query, body, services.settings.max_request_bytes,
                                  client)
    job_id = services.intake.submit(submission, client=client, idempotency_key=headers.get("idempotency-key"),
                                    fingerprint=fingerprint(headers.get("content-type"), query, body),
                                    lambda_context=lambda_context)
    job = services.jobs.get(job_id)
    view: dict[str, Any] = job.to_view() if job else {"job_id": job_id, "status": "QUEUED"}
    view["links"] = _links(job_id)
    return Response(body=view, status_code=202, headers={**JSON, "Location": f"/jobs/{job_id}"})


def get_job(request: Any, job_id: str, services: Services) -> Response:
    job = _find(request, job_id, services)
    view = job.to_view()
    view["links"] = _links(job_id)
    return Response(body=view, status_code=200, headers=JSON)


def get_result(request: Any, job_id: str, services: Services) -> Response:
    job = _find(request, job_id, services)
    if job.status == "FAILED":
        error = job.error or {}
        return error_response("job_failed", f"job {job_id} FAILED with {error.get('code')}: {error.get('message')}",
                              409)
    if job.status != "SUCCEEDED" or not job.result_key:
        return error_response("not_finished", f"job {job_id} is {job.status}; poll GET /jobs/{job_id} until it "
                                              "is SUCCEEDED", 409)
    return Response(body=services.documents.get_result(job.result_key), status_code=200, headers=JSON)


def retry_job(request: Any, job_id: str, services: Services) -> Response:
    """Queue a FAILED job again. Chunks it already paid for come from the map cache, not the LLM."""
    job = _find(request, job_id, services)
    if not services.lifecycle.retry(job_id):
        return error_response("not_retryable", f"job {job_id} is {job.status}; only a FAILED job can be retried",
                              409)
    logger.info("job retried by the client", extra={"job_id": job_id, "previous_error": job.error})
    view = _find(request, job_id, services).to_view()
    view["links"] = _links(job_id)
    return Response(body=view, status_code=202, headers={**JSON, "Location": f"/jobs/{job_id}"})


def list_jobs(request: Any, services: Services) -> Response:
    """The caller's jobs, newest first, a page at a time: ``?status=FAILED&limit=50&cursor=<next_cursor>``."""
    client = _client(request, services)
    query = dict(request.query_params or {})
    unknown = set(query) - {"status", "limit", "cursor"}
    if unknown:
        raise RequestError("invalid_request", f"unknown query parameter(s): {', '.join(sorted(unknown))[:200]}; "
                                              "GET /jobs takes status, limit and cursor")
    raw_status = query.get("status")
    status = None if raw_status is None else raw_status.upper()
    if raw_status is not None and (status not in _STATUSES or raw_status not in (status, status.lower())):
        raise RequestError("invalid_request", f"status must be one of {', '.join(_STATUSES)} (or in lower case)")
    limit = _limit(query.get("limit"))
    after = decode_cursor(query["cursor"], client, status) if "cursor" in query else None
    jobs, position = services.jobs.list_for_client(client, status=status, limit=limit, after=after)
    listed = [{**job.to_summary(), "links": _links(job.job_id)} for job in jobs]
    return Response(body={"jobs": listed,
                          "next_cursor": encode_cursor(client, status, position) if position else None},
                    status_code=200, headers=JSON)


def create_upload(request: Any, services: Services) -> Response:
    """A presigned S3 POST for one document of any size (up to DOCPIPE_MAX_DOCUMENT_BYTES) in the caller's own
    ``uploads/`` folder; the client then submits ``{"document": {"s3_key": <s3_key>}}``."""
    client = _client(request, services)
    wanted = _upload_request(request)
    content_type = wanted.get("content_type") or "application/pdf"
    key = new_upload_key(wanted.get("filename"), content_type)
    settings = services.settings
    form = services.documents.upload_form(key_of_client(client, key), content_type,
                                          max_bytes=settings.max_document_bytes,
                                          expires_in=settings.upload_url_seconds)
    logger.info("upload form issued", extra={"client": client, "content_type": content_type})
    return Response(body={
        "url": form["url"], "fields": form["fields"], "s3_key": key, "content_type": content_type,
        "max_bytes": settings.max_document_bytes, "expires_in": settings.upload_url_seconds,
        "submit": {"document": {"s3_key": key}}}, status_code=201, headers=JSON)


def _upload_request(request: Any) -> dict[str, str]:
    """``POST /uploads``'s optional JSON body: ``{"filename": "report.pdf", "content_type": "application/pdf"}``."""
    body = _body(request)
    if not body.strip():
        return {}
    media = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise RequestError("unsupported_media_type", "POST /uploads takes an empty body or a JSON object",
                           status=415)
    try:
        payload = loads_bounded(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError("invalid_json", f"the body is not valid JSON: {str(exc)[:200]}") from None
    problem = unstorable_text(payload, "body")
    if problem:
        raise RequestError("invalid_characters", problem)
    if not isinstance(payload, dict) or set(payload) - {"filename", "content_type"}:
        raise RequestError("invalid_request", 'the body is {"filename": …, "content_type": …}, both optional')
    filename, content_type = payload.get("filename", ""), payload.get("content_type", "application/pdf")
    if not isinstance(filename, str) or len(filename) > 255:
        raise RequestError("invalid_request", "filename must be a string of at most 255 characters")
    if not isinstance(content_type, str):
        raise RequestError("invalid_request", "content_type must be a string")
    if content_type not in UPLOAD_TYPES:
        raise RequestError("unsupported_type", f"content_type must be one of {', '.join(UPLOAD_TYPES)}", status=415)
    return {k: v for k, v in (("filename", filename), ("content_type", content_type)) if v}


def _limit(raw: str | None) -> int:
    if raw is None:
        return LIST_LIMIT
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3) or not 1 <= int(raw) <= LIST_MAX:
        raise RequestError("invalid_request", f"limit must be a whole number from 1 to {LIST_MAX}")
    return int(raw)


def _body(request: Any) -> bytes:
    """The request's body; API Gateway marks a binary one as base64, which must then decode."""
    try:
        return request.raw_body or b""
    except ValueError:  # binascii.Error (bad padding) or UnicodeEncodeError (not ASCII): the client's mistake
        raise RequestError("invalid_request", "the body is marked as base64-encoded (isBase64Encoded) but is not "
                                              "valid base64") from None


def _client(request: Any, services: Services) -> str:
    return client_of(request.context, request.headers, services.settings)


def _find(request: Any, job_id: str, services: Services) -> Job:
    """The request's client's job ``job_id``; 404 alike for a job that does not exist and for another's."""
    client = _client(request, services)
    if not JOB_ID_PATTERN.fullmatch(job_id or ""):
        raise NotFound("no such job: a job id is the 32 hexadecimal characters POST /jobs answered")
    job = services.jobs.get(job_id)
    if job is None or not hmac.compare_digest(job.client, client):
        raise NotFound(f"no job {job_id}")
    return job


def _links(job_id: str) -> dict[str, str]:
    return {"self": f"/jobs/{job_id}", "result": f"/jobs/{job_id}/result"}
