"""An object uploaded under ``incoming/{client}/`` becomes a job of that client. Thin on purpose: no download, no
extraction, no LLM.

The task comes from the object's metadata (``x-amz-meta-task``: a task type like ``summarize`` or a JSON task
object), defaulting to summarize; the started job's id is tagged on the object (``docpipe-job-id``). An object
directly under ``incoming/``, in no client's folder, is ignored with a warning.

Job ids are random, as every job id is (an id is unguessable, so knowing an object's name and content tells nobody its
job). S3 delivers events at least once, so the object's identity (bucket, key, ETag) is an idempotency key
(Powertools Idempotency, the ``Idempotency-Key`` table): a repeated event finds the job its first delivery started
and queues nothing new.
"""

from __future__ import annotations

import time
from functools import cache
from typing import Any

from chalicelib.aws import INCOMING_PREFIX, IdempotencyRecords, Once, StoredObject, client_of_upload
from chalicelib.bootstrap import Services
from chalicelib.errors import RequestError, ServiceUnavailable
from chalicelib.jobs import FAILED, Job, Submission, new_job_id
from chalicelib.jsontext import loads_bounded
from chalicelib.observability import job_context, logger
from chalicelib.tasks import parse_task

# S3 redelivers an event within minutes; a day covers it many times over.
_DEDUPLICATION_SECONDS = 24 * 3600
# Where the key of an upload's record comes from: the name the guarded function had when docpipe first wrote such
# records, so that those written before a change of the code are still found.
_UPLOAD_RECORDS = "chalicelib.uploads._start"


def handle_upload(bucket: str, key: str, services: Services, lambda_context: Any = None) -> str | None:
    """Queue a job for an uploaded object; returns its job id, or None when the object is not one of ours."""
    if bucket != services.settings.bucket or not key.startswith(INCOMING_PREFIX) or key.endswith("/"):
        logger.warning("ignored an S3 event outside docpipe's incoming/ prefix",
                       extra={"bucket": bucket[:100], "key": key[:300]})
        return None
    client = client_of_upload(key)
    if client is None:
        logger.warning("ignored an upload in no client's folder: put it under incoming/<client id>/",
                       extra={"key": key[:300]})
        return None
    stored = services.documents.head(key)
    if stored is None:
        logger.warning("the uploaded object is gone; nothing to do", extra={"key": key[:300]})
        return None
    upload = {"bucket": bucket, "key": key, "etag": stored.etag}
    # An invocation that dies mid-way frees the object's record when it ends, so S3's retry can start the job.
    return _start_once(services.records)(upload=upload, client=client, stored=stored, services=services,
                                         lambda_context=lambda_context)["job_id"]


def _start(upload: dict[str, str], client: str, stored: StoredObject, services: Services) -> dict[str, str]:
    key = upload["key"]
    declared = "pdf" if key.lower().endswith(".pdf") or stored.content_type == "application/pdf" else None
    job_id = new_job_id()
    with job_context(job_id):
        return _create(job_id, key, declared, client, stored, services)


def _create(job_id: str, key: str, declared: str | None, client: str, stored: StoredObject,
            services: Services) -> dict[str, str]:
    try:
        task = parse_task(_task_from_metadata(stored.metadata))
        submission = Submission(task=task, s3_key=key, declared_type=declared, filename=key.rsplit("/", 1)[-1])
        job_id, _created = services.intake.create(submission, client=client, job_id=job_id, source="s3")
    except ServiceUnavailable:
        raise  # Lambda retries a failed asynchronous invocation; the job was withdrawn, so the retry creates it
    except RequestError as exc:
        # Not worth an LLM call (a bad task, a file over the limit): recorded as FAILED with the reason, never queued.
        _record_rejected(job_id, key, client, stored.metadata.get("task", ""), exc, services)
    services.documents.tag_with_job(key, job_id)
    return {"job_id": job_id}


@cache
def _start_once(records: IdempotencyRecords) -> Once:
    """``_start`` once per object identity: later deliveries of the same event get the first one's job id."""
    return records.once(_start, name=_UPLOAD_RECORDS, data_keyword="upload", key="[bucket, key, etag]",
                        expires_after_seconds=_DEDUPLICATION_SECONDS)


def _record_rejected(job_id: str, key: str, client: str, raw_task: str, error: RequestError,
                     services: Services) -> None:
    job = Job(job_id=job_id, status=FAILED, task={"type": raw_task[:100] or "summarize"}, source="s3",
              created_at=time.time(), document={"source": "s3", "s3_key": key}, error=error.to_dict(), client=client)
    services.lifecycle.record_refused(job)
    logger.warning("upload rejected", extra={"job_id": job_id, "error": error.to_dict()})


def _task_from_metadata(metadata: dict[str, str]) -> Any:
    raw = metadata.get("task", "").strip()
    if not raw:
        return {"type": "summarize"}
    if raw.startswith("{"):
        try:
            return loads_bounded(raw)
        except ValueError:
            raise RequestError("invalid_task", "the task metadata is not valid JSON") from None
    return {"type": raw}
