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

from chalicelib.bootstrap import Services
from chalicelib.entry.identity import client_of
from chalicelib.errors import NotFound, RequestError
from chalicelib.jobs import JOB_ID_PATTERN, Job, fingerprint, parse_submission
from chalicelib.observability import logger

JSON: dict[str, str | list[str]] = {"Content-Type": "application/json"}
MAX_MESSAGE = 500


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
