"""An object uploaded under ``incoming/`` becomes a job. Thin on purpose: no download, no extraction, no LLM.

The task comes from the object's metadata (``x-amz-meta-task``: a task type like ``summarize`` or a JSON task
object), defaulting to summarize; the started job's id is tagged on the object (``docpipe-job-id``). S3 delivers events at least once, so the job id is derived from the object's
identity (bucket, key, ETag): a repeated event finds the job already there and queues nothing new.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from chalicelib.errors import RequestError, ServiceUnavailable
from chalicelib.intake import Submission, create_job
from chalicelib.jobs import Job
from chalicelib.observability import logger
from chalicelib.services import Services
from chalicelib.storage import INCOMING_PREFIX
from chalicelib.tasks import parse_task

_NAMESPACE = uuid.UUID("5f0c2f54-4a8e-4d1b-9a7e-8f6a1c2d3b4e")


def handle_upload(bucket: str, key: str, services: Services) -> str | None:
    """Queue a job for an uploaded object; returns its job id, or None when the object is not one of ours."""
    if bucket != services.settings.bucket or not key.startswith(INCOMING_PREFIX) or key.endswith("/"):
        logger.warning("ignored an S3 event outside docpipe's incoming/ prefix", extra={"bucket": bucket, "key": key})
        return None
    stored = services.documents.head(key)
    if stored is None:
        logger.warning("the uploaded object is gone; nothing to do", extra={"key": key})
        return None
    declared = "pdf" if key.lower().endswith(".pdf") or stored.content_type == "application/pdf" else None
    job_id = uuid.uuid5(_NAMESPACE, f"{bucket}/{key}/{stored.etag}").hex
    submission = None
    try:
        task = parse_task(_task_from_metadata(stored.metadata))
        submission = Submission(task=task, s3_key=key, declared_type=declared, filename=key.rsplit("/", 1)[-1])
        job_id, created = create_job(submission, services, job_id=job_id, source="s3")
    except ServiceUnavailable:
        raise  # Lambda retries a failed asynchronous invocation; the job was withdrawn, so the retry creates it
    except RequestError as exc:
        # Not worth an LLM call (a bad task, a file over the limit): recorded as FAILED with the reason, never queued.
        created = _record_rejected(job_id, key, stored.metadata.get("task", ""), exc, services)
    if created:
        services.documents.tag_with_job(key, job_id)
    else:
        logger.info("repeated S3 event for an object that already has a job", extra={"job_id": job_id})
    return job_id


def _record_rejected(job_id: str, key: str, raw_task: str, error: RequestError, services: Services) -> bool:
    job = Job(job_id=job_id, status="FAILED", task={"type": raw_task[:100] or "summarize"}, source="s3",
              created_at=time.time(), document={"source": "s3", "s3_key": key}, error=error.to_dict())
    if not services.jobs.create(job):
        return False
    logger.warning("upload rejected", extra={"job_id": job_id, "error": error.to_dict()})
    return True


def _task_from_metadata(metadata: dict[str, str]) -> Any:
    raw = metadata.get("task", "").strip()
    if not raw:
        return {"type": "summarize"}
    if raw.startswith("{"):
        try:
            return json.loads(raw)
        except ValueError:
            raise RequestError("invalid_task", "the task metadata is not valid JSON") from None
    return {"type": raw}
