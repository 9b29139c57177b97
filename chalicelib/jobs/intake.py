"""Turning a submission into a queued job: validate, store the document, write the job row, enqueue.

Nothing here calls an LLM or reads a PDF beyond its first bytes: ``POST /jobs`` answers in milliseconds and the
worker does the rest. ``parse_submission`` reads a request's body and query; ``Intake`` turns what it found into a
job (the S3 upload trigger builds its ``Submission`` itself).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chalicelib.aws import DocumentStore, IdempotencyRecords, Once, key_of_client, validate_client_key
from chalicelib.config import Settings
from chalicelib.errors import RequestError
from chalicelib.jobs.lifecycle import Lifecycle
from chalicelib.jobs.model import QUEUED, Job, new_job_id
from chalicelib.jsontext import loads_bounded, unstorable_text
from chalicelib.llm import price_of
from chalicelib.observability import logger
from chalicelib.tasks import NEEDS_LLM, parse_task, parse_tasks, task_from_query

# The same magic the worker's extractor sniffs; repeated here so the API's cold start never imports extraction.
PDF_MAGIC = b"%PDF-"
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
_TEXT_TYPES = ("text/plain", "text/markdown")
# Where the key of an Idempotency-Key record comes from: the name the guarded function had when docpipe first wrote
# such records, so that those written before a change of the code are still found.
_SUBMISSION_RECORDS = "chalicelib.intake._idempotent_create.<locals>.create"


@dataclass(frozen=True)
class Submission:
    """What a client submitted. ``task`` is its task, the first of ``tasks`` when it asked several (a multi-task job,
    which only the Step Functions workflow runs); ``tasks`` is empty for a job of one task."""

    task: dict[str, Any]
    content: bytes | None = None
    content_type: str | None = None
    s3_key: str | None = None
    declared_type: str | None = None
    filename: str | None = None
    tasks: tuple[dict[str, Any], ...] = ()

    def describe(self) -> dict[str, Any]:
        """The document as the job row records it (never the bytes)."""
        if self.s3_key:
            return {"source": "s3", "s3_key": self.s3_key, "declared_type": self.declared_type,
                    "filename": self.filename}
        return {"source": "upload", "content_type": self.content_type, "bytes": len(self.content or b""),
                "declared_type": self.declared_type, "filename": self.filename}


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
    unknown = set(payload) - {"document", "task", "tasks"}
    if unknown:
        raise RequestError("invalid_request", f"unknown field(s): {', '.join(sorted(unknown))}")
    if "task" in payload and "tasks" in payload:
        raise RequestError("invalid_request", "send either task (one task) or tasks (2 to 5 of them), not both")
    if "task" not in payload and "tasks" not in payload:
        raise RequestError("invalid_task", 'task is required, e.g. {"type": "summarize"}')
    tasks = tuple(parse_tasks(payload["tasks"])) if "tasks" in payload else ()
    task = tasks[0] if tasks else parse_task(payload["task"])
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
                          declared_type="text", filename=filename, tasks=tasks)
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
                          filename=filename, tasks=tasks)
    key = validate_client_key(value)
    declared = "pdf" if key.lower().endswith(".pdf") else None
    return Submission(task=task, s3_key=key_of_client(client, key), declared_type=declared, filename=filename,
                      tasks=tasks)


def check_runnable(task: dict[str, Any], settings: Settings) -> None:
    """Refuse, before any job exists, a task this deployment cannot run or whose spend it could not bound."""
    kind = task["type"]
    if kind in NEEDS_LLM and not settings.uses_openai:
        raise RequestError("llm_unavailable", f"the {kind} task needs an LLM endpoint, and this docpipe has none "
                                              f"configured: its offline provider cannot {NEEDS_LLM[kind]}", status=422)
    model = task.get("model") or settings.model
    if settings.uses_openai and task.get("max_cost_usd") is not None and price_of(settings.prices, model) is None:
        raise RequestError("unpriced_model", f"docpipe knows no price for model {model[:100]!r}, so it cannot hold "
                                             "the job to max_cost_usd: name a priced model, or leave max_cost_usd "
                                             "out (max_total_tokens still bounds the job)", status=422)


class Intake:
    """Submissions become queued jobs: the document stored, the row written and the message sent (``Lifecycle.open``).

    Every path that starts a job (the API, an S3 upload) comes through ``create``; ``submit`` adds the
    ``Idempotency-Key``: a retried request of the same client gets the job its first request created.
    """

    def __init__(self, settings: Settings, documents: DocumentStore, lifecycle: Lifecycle,
                 records: IdempotencyRecords) -> None:
        self._settings = settings
        self._documents = documents
        self._lifecycle = lifecycle
        self._records = records
        self._once: Once | None = None

    def create(self, submission: Submission, *, client: str, job_id: str | None = None,
               source: str = "api") -> tuple[str, bool]:
        """Store, record and enqueue for ``client``; returns (job_id, created). Not created: this job id exists."""
        settings = self._settings
        for task in submission.tasks or (submission.task,):
            check_runnable(task, settings)
        if submission.tasks and not settings.uses_workflow:
            raise RequestError("workflow_unavailable", "a job of several tasks runs on the Step Functions workflow, "
                                                       "which this docpipe has not configured (DOCPIPE_STATE_MACHINE_"
                                                       "ARN): send each task as a job of its own", status=422)
        job_id = job_id or new_job_id()
        document = submission.describe()
        if submission.s3_key:
            stored = self._documents.head(submission.s3_key)
            if stored is None:
                raise RequestError("document_not_found", f"no object {submission.s3_key[:300]} among your "
                                                         "documents in the docpipe bucket",
                                   status=404 if source == "api" else 400)
            document["bytes"] = stored.size
            if stored.size > settings.max_document_bytes:
                raise RequestError("too_large", f"the document is {stored.size} bytes; the limit is "
                                                f"{settings.max_document_bytes}", status=413)
        else:
            document["s3_key"] = self._documents.put_input(job_id, submission.content or b"",
                                                           submission.content_type or "application/octet-stream")
        job = Job(job_id=job_id, status=QUEUED, task=submission.task, document=document, created_at=time.time(),
                  source=source, client=client, tasks=list(submission.tasks) or None)
        if not self._lifecycle.open(job):
            return job_id, False
        logger.info("job queued", extra={"job_id": job_id, "source": source, "client": client,
                                         "task": "+".join(t["type"] for t in submission.tasks or (submission.task,))})
        return job_id, True

    def submit(self, submission: Submission, *, client: str, idempotency_key: str | None, fingerprint: str,
               lambda_context: Any = None) -> str:
        """Create the job, or with an ``Idempotency-Key`` return the job an earlier identical request of the same
        client created (each client's keys are its own)."""
        if idempotency_key is None:
            return self.create(submission, client=client)[0]
        if not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
            raise RequestError("invalid_idempotency_key", "Idempotency-Key must be 1-255 printable ASCII characters")
        from aws_lambda_powertools.utilities.idempotency.exceptions import (
            IdempotencyAlreadyInProgressError,
            IdempotencyValidationError,
        )

        if self._once is None:
            # The first request's answer is stored for 24 h and replayed for retries.
            self._once = self._records.once(self._create_for, name=_SUBMISSION_RECORDS, data_keyword="request",
                                            key="[client, key]", payload="fingerprint", expires_after_seconds=24 * 3600)
        try:
            answer = self._once(request={"client": client, "key": idempotency_key, "fingerprint": fingerprint},
                                submission=submission, lambda_context=lambda_context)
        except IdempotencyValidationError:
            raise RequestError("idempotency_key_reused", "this Idempotency-Key was already used for a different "
                                                         "request", status=422) from None
        except IdempotencyAlreadyInProgressError:
            raise RequestError("request_in_progress", "a request with this Idempotency-Key is still being "
                                                      "processed; retry shortly", status=409) from None
        return answer["job_id"]

    def _create_for(self, request: dict[str, Any], submission: Submission) -> dict[str, str]:
        return {"job_id": self.create(submission, client=request["client"])[0]}


def fingerprint(content_type: str | None, query: Mapping[str, str] | None, body: bytes) -> str:
    digest = hashlib.sha256()
    digest.update(media_type(content_type).encode())
    digest.update(json.dumps(sorted((query or {}).items())).encode())
    digest.update(body)
    return digest.hexdigest()
