"""Turning a submission into a queued job: validate, store the document, write the job row, enqueue.

Nothing here calls an LLM or reads a PDF beyond its first bytes: ``POST /jobs`` answers in milliseconds and the
worker does the rest. Every path that starts a job (the API, an S3 upload) comes through ``create_job``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping

from chalicelib.config import Settings
from chalicelib.errors import RequestError, ServiceUnavailable
from chalicelib.jobs.store import Job
from chalicelib.jsontext import loads_bounded, unstorable_text
from chalicelib.observability import logger
from chalicelib.bootstrap import Services
from chalicelib.aws.storage import key_of_client, validate_client_key
from chalicelib.tasks.spec import NEEDS_LLM, parse_task, task_from_query
from chalicelib.llm.usage import price_of

# The same magic the worker's extractor sniffs; repeated here so the API's cold start never imports extraction.
PDF_MAGIC = b"%PDF-"
JOB_ID_PATTERN = re.compile(r"[0-9a-f]{32}")
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
_TEXT_TYPES = ("text/plain", "text/markdown")


@dataclass(frozen=True)
class Submission:
    task: dict[str, Any]
    content: bytes | None = None
    content_type: str | None = None
    s3_key: str | None = None
    declared_type: str | None = None
    filename: str | None = None

    def describe(self) -> dict[str, Any]:
        """The document as the job row records it (never the bytes)."""
        if self.s3_key:
            return {"source": "s3", "s3_key": self.s3_key, "declared_type": self.declared_type,
                    "filename": self.filename}
        return {"source": "upload", "content_type": self.content_type, "bytes": len(self.content or b""),
                "declared_type": self.declared_type, "filename": self.filename}


def new_job_id() -> str:
    """128 random bits: unguessable, so a job id is its own read capability."""
    return uuid.uuid4().hex


def media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def parse_submission(content_type_header: str | None, query: Mapping[str, str] | None, body: bytes,
                     max_bytes: int, client: str) -> Submission:
    """The submission a request holds; an ``s3_key`` is resolved inside ``client``'s own folders."""
    if len(body) > max_bytes:
        raise RequestError("too_large", f"the request body is {len(body)} bytes; the limit is {max_bytes}. "
                                        "Upload larger documents to the bucket under uploads/ and submit "
                                        '{"document": {"s3_key": …}}.', status=413)
    kind = media_type(content_type_header)
    if kind == "application/json":
        if query:
            raise RequestError("invalid_request", "a JSON submission carries its task in the body, not the query")
        return _from_json(body, client)
    _refuse_unstorable(dict(query or {}), "the query")
    if kind == "application/pdf":
        if not body:
            raise RequestError("empty", "the PDF body is empty")
        if PDF_MAGIC not in body[:1024]:
            raise RequestError("unsupported_type", "the body was sent as application/pdf but is not a PDF",
                               status=415)
        return Submission(task=task_from_query(query), content=body, content_type="application/pdf",
                          declared_type="pdf")
    if kind in _TEXT_TYPES:
        return Submission(task=task_from_query(query), content=_text_bytes(body), content_type="text/plain",
                          declared_type="text")
    raise RequestError("unsupported_media_type",
                       f"Content-Type must be application/json, application/pdf, text/plain or text/markdown; "
                       f"got {kind[:60] or 'none'}", status=415)


def _text_bytes(data: bytes) -> bytes:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise RequestError("unsupported_type", "text documents must be UTF-8", status=415) from None
    if not text.strip():
        raise RequestError("empty", "the document is empty")
    _refuse_unstorable(text, "the text body")
    return text.encode("utf-8")


def _refuse_unstorable(value: Any, where: str) -> None:
    problem = unstorable_text(value, where)
    if problem:
        raise RequestError("invalid_characters", f"{problem}; send text as UTF-8 without NUL characters, and "
                                                 "binary documents as PDF")


def _from_json(body: bytes, client: str) -> Submission:
    try:
        payload = loads_bounded(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError("invalid_json", f"the body is not valid JSON: {str(exc)[:200]}") from None
    _refuse_unstorable(payload, "body")
    if not isinstance(payload, dict):
        raise RequestError("invalid_request", 'the body must be a JSON object: {"document": {…}, "task": {…}}')
    unknown = set(payload) - {"document", "task"}
    if unknown:
        raise RequestError("invalid_request", f"unknown field(s): {', '.join(sorted(unknown))}")
    if "task" not in payload:
        raise RequestError("invalid_task", 'task is required, e.g. {"type": "summarize"}')
    task = parse_task(payload["task"])
    document = payload.get("document")
    if not isinstance(document, dict):
        raise RequestError("invalid_document", "document is required: an object with exactly one of "
                                               "text, pdf_base64 or s3_key")
    sources = [k for k in ("text", "pdf_base64", "s3_key") if k in document]
    unknown = set(document) - {"text", "pdf_base64", "s3_key", "filename"}
    if len(sources) != 1 or unknown:
        raise RequestError("invalid_document", "document must have exactly one of text, pdf_base64 or s3_key"
                                               + (f" (unknown: {', '.join(sorted(unknown))})" if unknown else ""))
    filename = document.get("filename")
    if filename is not None and (not isinstance(filename, str) or len(filename) > 255):
        raise RequestError("invalid_document", "document.filename must be a string of at most 255 characters")
    source = sources[0]
    value = document[source]
    if source == "text":
        if not isinstance(value, str):
            raise RequestError("invalid_document", "document.text must be a string")
        if not value.strip():
            raise RequestError("empty", "document.text is empty")
        return Submission(task=task, content=value.encode("utf-8"), content_type="text/plain",
                          declared_type="text", filename=filename)
    if source == "pdf_base64":
        if not isinstance(value, str):
            raise RequestError("invalid_document", "document.pdf_base64 must be a base64 string")
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError("invalid_document", "document.pdf_base64 is not valid base64") from None
        if not data:
            raise RequestError("empty", "document.pdf_base64 decodes to an empty file")
        if PDF_MAGIC not in data[:1024]:
            raise RequestError("unsupported_type", "document.pdf_base64 does not hold a PDF", status=415)
        return Submission(task=task, content=data, content_type="application/pdf", declared_type="pdf",
                          filename=filename)
    key = validate_client_key(value)
    declared = "pdf" if key.lower().endswith(".pdf") else None
    return Submission(task=task, s3_key=key_of_client(client, key), declared_type=declared, filename=filename)


def check_runnable(task: dict[str, Any], settings: Settings, prices: Mapping[str, tuple[float, float]]) -> None:
    """Refuse, before any job exists, a task this deployment cannot run or whose spend it could not bound."""
    kind = task["type"]
    if kind in NEEDS_LLM and not settings.uses_openai:
        raise RequestError("llm_unavailable", f"the {kind} task needs an LLM endpoint, and this docpipe has none "
                                              f"configured: its offline provider cannot {NEEDS_LLM[kind]}", status=422)
    model = task.get("model") or settings.model
    if settings.uses_openai and task.get("max_cost_usd") is not None and price_of(prices, model) is None:
        raise RequestError("unpriced_model", f"docpipe knows no price for model {model[:100]!r}, so it cannot hold "
                                             "the job to max_cost_usd: name a priced model, or leave max_cost_usd "
                                             "out (max_total_tokens still bounds the job)", status=422)


def create_job(submission: Submission, services: Services, *, client: str, job_id: str | None = None,
               source: str = "api") -> tuple[str, bool]:
    """Store, record and enqueue for ``client``; returns (job_id, created). Not created: this job id exists."""
    check_runnable(submission.task, services.settings, services.prices)
    job_id = job_id or new_job_id()
    document = submission.describe()
    if submission.s3_key:
        stored = services.documents.head(submission.s3_key)
        if stored is None:
            raise RequestError("document_not_found", f"no object {submission.s3_key[:300]} among your documents "
                                                     "in the docpipe bucket", status=404 if source == "api" else 400)
        document["bytes"] = stored.size
        if stored.size > services.settings.max_document_bytes:
            raise RequestError("too_large", f"the document is {stored.size} bytes; the limit is "
                                            f"{services.settings.max_document_bytes}", status=413)
    else:
        document["s3_key"] = services.documents.put_input(job_id, submission.content or b"",
                                                          submission.content_type or "application/octet-stream")
    job = Job(job_id=job_id, status="QUEUED", task=submission.task, document=document, created_at=time.time(),
              source=source, client=client)
    if not services.jobs.create(job):
        return job_id, False
    try:
        services.queue.send(job_id)
    except Exception as exc:
        # A job that is not on the queue would wait forever: withdraw it, so the retry creates it afresh.
        services.jobs.withdraw(job_id)
        logger.exception("enqueue failed", extra={"job_id": job_id})
        raise ServiceUnavailable("the job could not be queued; retry the request") from exc
    logger.info("job queued", extra={"job_id": job_id, "source": source, "task": submission.task.get("type"),
                                     "client": client})
    return job_id, True


def submit(submission: Submission, services: Services, *, client: str, idempotency_key: str | None,
           fingerprint: str, lambda_context: Any = None) -> str:
    """Create the job, or with an ``Idempotency-Key`` return the job an earlier identical request of the same
    client created (each client's keys are its own)."""
    if idempotency_key is None:
        return create_job(submission, services, client=client)[0]
    if not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        raise RequestError("invalid_idempotency_key", "Idempotency-Key must be 1-255 printable ASCII characters")
    from aws_lambda_powertools.utilities.idempotency.exceptions import (IdempotencyAlreadyInProgressError,
                                                                        IdempotencyValidationError)

    create, config = _idempotent_create(services.settings.idempotency_table)
    if lambda_context is not None:
        # Lets an in-progress record expire with this invocation: a request killed mid-way does not block its
        # key for the whole 24 hours.
        config.register_lambda_context(lambda_context)
    try:
        answer = create(request={"client": client, "key": idempotency_key, "fingerprint": fingerprint},
                        submission=submission, services=services)
    except IdempotencyValidationError:
        raise RequestError("idempotency_key_reused", "this Idempotency-Key was already used for a different "
                                                     "request", status=422) from None
    except IdempotencyAlreadyInProgressError:
        raise RequestError("request_in_progress", "a request with this Idempotency-Key is still being "
                                                  "processed; retry shortly", status=409) from None
    return answer["job_id"]


@lru_cache(maxsize=None)
def _idempotent_create(table_name: str):
    """Powertools Idempotency: the first request's answer is stored for 24 h and replayed for retries."""
    from aws_lambda_powertools.utilities.idempotency import (DynamoDBPersistenceLayer, IdempotencyConfig,
                                                             idempotent_function)

    from chalicelib.aws import clients as aws

    persistence = DynamoDBPersistenceLayer(table_name=table_name, boto3_client=aws.client("dynamodb"))
    config = IdempotencyConfig(event_key_jmespath="[client, key]", payload_validation_jmespath="fingerprint",
                               raise_on_no_idempotency_key=True, expires_after_seconds=24 * 3600)

    @idempotent_function(data_keyword_argument="request", persistence_store=persistence, config=config)
    def create(request: dict, submission: Submission, services: Services) -> dict:
        return {"job_id": create_job(submission, services, client=request["client"])[0]}

    return create, config


def fingerprint(content_type: str | None, query: Mapping[str, str] | None, body: bytes) -> str:
    digest = hashlib.sha256()
    digest.update(media_type(content_type).encode())
    digest.update(json.dumps(sorted((query or {}).items())).encode())
    digest.update(body)
    return digest.hexdigest()
