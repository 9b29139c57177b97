"""The composition point: the one place where settings, AWS clients and docpipe's components are wired together.

Every boto3 client docpipe uses is made here (through ``aws.clients``, so a warm container reuses them) and passed
to the component that uses it; nothing else builds a client. Handlers ask for ``get_services()``; tests build
``Services`` with their own parts, or call ``build`` with their own settings, instead of patching globals::

    services = build(load_settings({"DOCPIPE_STAGE": "dev"}))
    services.intake.submit(submission, client="alice", idempotency_key=None, fingerprint="…")
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache, partial
from typing import TYPE_CHECKING

from chalicelib.aws import (
    DocumentStore,
    Executions,
    IdempotencyRecords,
    MapCache,
    VersionedItems,
    clients,
    secret_reader,
)
from chalicelib.config import Settings, get_settings
from chalicelib.jobs import Intake, JobEvents, JobQueue, JobStore, Lifecycle
from chalicelib.llm import LLMEndpoint

if TYPE_CHECKING:  # documents/ loads with the worker only; the API never reads a document
    from chalicelib.documents import TextractOCR


@dataclass
class Services:
    """What the handlers work with.

    ``jobs`` is read (a job's view, its result's key, a client's list); every write to a job goes through
    ``lifecycle``, which also owns the jobs queue and announces each job's end. ``intake`` turns submissions into
    jobs, ``records`` holds Powertools Idempotency records (``Idempotency-Key``, repeated S3 events), ``llm`` is the
    endpoint the worker calls. ``map_cache`` and ``ocr``
    are None when switched off; ``executions`` starts the Step Functions workflow, None when none is configured.
    """

    settings: Settings
    jobs: JobStore
    lifecycle: Lifecycle
    documents: DocumentStore
    records: IdempotencyRecords
    intake: Intake
    llm: LLMEndpoint
    map_cache: MapCache | None = None
    ocr: TextractOCR | None = None
    executions: Executions | None = None


def build(settings: Settings) -> Services:
    """Every component for ``settings``, each given the clients it uses."""
    s3, sqs, dynamodb = clients.client("s3"), clients.client("sqs"), clients.client("dynamodb")
    jobs = JobStore(clients.table(settings.jobs_table), retention_days=settings.job_retention_days)
    # The events client is built when a job first ends: the API function, which ends none, never pays for it.
    lifecycle = Lifecycle(jobs, JobQueue(sqs, settings.jobs_queue),
                          retry_backoff_seconds=settings.retry_backoff_seconds,
                          outage_wait_seconds=settings.breaker_recovery_seconds,
                          events=JobEvents(partial(clients.client, "events"), bus=settings.event_bus,
                                           stage=settings.stage))
    documents = DocumentStore(s3, settings.bucket)
    records = IdempotencyRecords(dynamodb, settings.idempotency_table, function_name=settings.function_name)
    secret = (secret_reader(clients.client("secretsmanager"), settings.llm_secret_name,
                            max_age_seconds=settings.llm_secret_max_age_seconds)
              if settings.llm_secret_name else None)
    return Services(
        settings=settings,
        jobs=jobs,
        lifecycle=lifecycle,
        documents=documents,
        records=records,
        intake=Intake(settings, documents, lifecycle, records),
        # The provider's limits are shared in the records table too, beside the circuit's state.
        llm=LLMEndpoint(settings, dynamodb=dynamodb, secret=secret,
                        limits=VersionedItems(dynamodb, settings.idempotency_table)),
        map_cache=MapCache(s3, settings.bucket) if settings.map_cache else None,
        ocr=_ocr(settings, s3),
        executions=(Executions(clients.client("stepfunctions"), settings.state_machine_arn)
                    if settings.state_machine_arn else None),
    )


def _ocr(settings: Settings, s3: object) -> TextractOCR | None:
    """The OCR service for pages without usable text, when one is configured (DOCPIPE_OCR)."""
    if settings.ocr != "textract":
        return None
    from chalicelib.documents import TextractOCR

    return TextractOCR(clients.client("textract"), s3, settings.bucket, usd_per_page=settings.ocr_usd_per_page)


@lru_cache(maxsize=1)
def get_services() -> Services:
    """The container's services, built on first use and kept while it stays warm."""
    return build(get_settings())
