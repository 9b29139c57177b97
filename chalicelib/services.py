"""The composition point: the one place where settings, AWS clients and stores are wired together.

Handlers ask for ``get_services()``; tests build ``Services`` with their own parts instead of patching globals.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

from chalicelib import aws
from chalicelib.config import Settings, get_settings
from chalicelib.jobs import JobStore
from chalicelib.mapcache import MapCache
from chalicelib.storage import DocumentStore
from chalicelib.tokens import count_tokens
from chalicelib.usage import price_table


@dataclass
class JobQueue:
    """The SQS jobs queue: every path (API, S3 upload, retry) enters the pipeline through it."""

    sqs: Any
    queue_name: str

    _max_receives: int | None = None

    def send(self, job_id: str, *, delay_seconds: int = 0) -> None:
        self.sqs.send_message(QueueUrl=aws.queue_url(self.queue_name), MessageBody=json.dumps({"job_id": job_id}),
                              DelaySeconds=delay_seconds)

    def max_receive_count(self) -> int:
        """How many deliveries SQS makes before the DLQ, read from the queue itself so it is defined once (infra/)."""
        if self._max_receives is None:
            attributes = self.sqs.get_queue_attributes(QueueUrl=aws.queue_url(self.queue_name),
                                                       AttributeNames=["RedrivePolicy"])["Attributes"]
            policy = json.loads(attributes.get("RedrivePolicy", "{}"))
            # Without a redrive policy SQS retries forever; fail on the first transient error is wrong, so cap at 3.
            self._max_receives = int(policy.get("maxReceiveCount", 3))
        return self._max_receives


@dataclass
class Services:
    settings: Settings
    jobs: JobStore
    documents: DocumentStore
    queue: JobQueue
    prices: dict[str, tuple[float, float]]
    chat_factory: Callable[[str], Any] | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    map_cache: Any = None
    throttles: dict[str, Any] = field(default_factory=dict)
    ocr: Any = None

    def chat(self, model: str) -> Any:
        """A chat model for ``model`` on the configured endpoint."""
        if self.chat_factory is not None:
            return self.chat_factory(model)
        from chalicelib.breaker import GuardedChat
        from chalicelib.llm import ChatModel

        s = self.settings
        chat = ChatModel(model=model, api_key=s.llm_api_key, base_url=s.llm_base_url,
                         timeout=s.llm_timeout_seconds, max_retries=s.llm_max_attempts - 1,
                         throttle=self.throttle(model), count_tokens=functools.partial(count_tokens, model=model))
        # The breaker's state shares the idempotency table: both are Powertools records keyed by "id".
        return GuardedChat(chat, table_name=s.idempotency_table, failure_threshold=s.breaker_failures,
                           recovery_seconds=s.breaker_recovery_seconds, concurrency=s.llm_concurrency)

    def throttle(self, model: str) -> Any:
        """The provider's rate limits for ``model``, shared by every job this worker instance runs."""
        if model not in self.throttles:
            from chalicelib.ratelimit import Throttle

            self.throttles[model] = Throttle(requests_per_minute=self.settings.llm_requests_per_minute,
                                             tokens_per_minute=self.settings.llm_tokens_per_minute)
        return self.throttles[model]


@lru_cache(maxsize=1)
def get_services() -> Services:
    import boto3

    settings = get_settings()
    table = boto3.resource("dynamodb").Table(settings.jobs_table)
    return Services(
        settings=settings,
        jobs=JobStore(table, retention_days=settings.job_retention_days),
        documents=DocumentStore(aws.client("s3"), settings.bucket),
        queue=JobQueue(aws.client("sqs"), settings.jobs_queue),
        prices=price_table(os.environ),
        map_cache=MapCache(aws.client("s3"), settings.bucket) if settings.map_cache else None,
        ocr=_ocr(settings),
    )


def _ocr(settings: Settings) -> Any:
    """The OCR service for pages without usable text, when one is configured (DOCPIPE_OCR)."""
    if settings.ocr != "textract":
        return None
    from chalicelib.ocr import TextractOCR

    return TextractOCR(aws.client("textract"), aws.client("s3"), settings.bucket,
                       usd_per_page=settings.ocr_usd_per_page)
