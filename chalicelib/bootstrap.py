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

from chalicelib.aws import clients as aws
from chalicelib.config import ConfigError, Settings, get_settings, with_llm_secret
from chalicelib.errors import TransientError
from chalicelib.jobs.store import JobStore
from chalicelib.aws.mapcache import MapCache
from chalicelib.observability import logger
from chalicelib.aws.storage import DocumentStore
from chalicelib.documents.tokens import count_tokens
from chalicelib.llm.usage import price_table


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
    # Reads the stage's LLM secret (None when it holds no value yet); None locally, where the environment serves.
    llm_secret: Callable[[], str | None] | None = None
    _environment_settings: Settings | None = field(default=None, repr=False)
    _warned_no_key: bool = field(default=False, repr=False)

    def refresh_llm_endpoint(self) -> None:
        """Take the LLM endpoint's key (and URL) from the stage's secret, as it is now.

        The secret is read through Powertools Parameters, which keeps it for ``llm_secret_max_age_seconds``: warm
        invocations do not call Secrets Manager, and a rotated key is in use within that time. A secret that holds no
        value yet leaves the offline provider in charge, with a warning; one that cannot be read is a transient error.
        """
        if self.llm_secret is None:
            return
        if self._environment_settings is None:
            self._environment_settings = self.settings
        try:
            secret = self.llm_secret()
            settings = with_llm_secret(self._environment_settings, secret)
        except ConfigError as exc:
            raise TransientError("llm_unavailable", str(exc)) from exc
        except Exception as exc:  # never the value: only what kind of failure it was
            raise TransientError("llm_unavailable", f"could not read the LLM secret {self.settings.llm_secret_name}: "
                                                    f"{type(exc).__name__}") from exc
        if secret is None and not self._warned_no_key:
            self._warned_no_key = True
            logger.warning("the stage's LLM secret holds no key yet: jobs use the offline provider until one is set "
                           "(make llm-key)", extra={"secret": self.settings.llm_secret_name})
        self.settings = settings

    def chat(self, model: str) -> Any:
        """A chat model for ``model`` on the configured endpoint."""
        if self.chat_factory is not None:
            return self.chat_factory(model)
        from chalicelib.llm.breaker import GuardedChat
        from chalicelib.llm.chat import ChatModel

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
            from chalicelib.llm.ratelimit import Throttle

            self.throttles[model] = Throttle(requests_per_minute=self.settings.llm_requests_per_minute,
                                             tokens_per_minute=self.settings.llm_tokens_per_minute)
        return self.throttles[model]


def llm_secret_reader(name: str, max_age_seconds: int) -> Callable[[], str | None]:
    """Read the secret ``name`` through Powertools Parameters, cached ``max_age_seconds`` across invocations.

    Answers None while the secret has no value (created by the deploy, not yet set by ``make llm-key``).
    """
    from aws_lambda_powertools.utilities.parameters import SecretsProvider
    from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError
    from botocore.exceptions import ClientError

    provider = SecretsProvider(boto3_client=aws.client("secretsmanager"))

    def read() -> str | None:
        try:
            value = provider.get(name, max_age=max_age_seconds)
        except GetParameterError as exc:
            cause = exc.__context__
            if isinstance(cause, ClientError) and cause.response["Error"]["Code"] == "ResourceNotFoundException":
                return None
            raise
        return value.decode() if isinstance(value, bytes) else value

    return read


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
        llm_secret=(llm_secret_reader(settings.llm_secret_name, settings.llm_secret_max_age_seconds)
                    if settings.llm_secret_name else None),
    )


def _ocr(settings: Settings) -> Any:
    """The OCR service for pages without usable text, when one is configured (DOCPIPE_OCR)."""
    if settings.ocr != "textract":
        return None
    from chalicelib.documents.ocr import TextractOCR

    return TextractOCR(aws.client("textract"), aws.client("s3"), settings.bucket,
                       usd_per_page=settings.ocr_usd_per_page)
