"""The one home of docpipe's configuration: environment variables, their defaults and their validation.

Every variable is listed in the README's configuration table. Values are read when ``get_settings()`` is first
called: app.py calls it at import for what the decorators need (queue and bucket names, the worker's batch size and
concurrency, whether routes need an API key), which Chalice and Lambda both set before the import, so a stage with
a setting docpipe cannot use fails at ``make package`` rather than in a handler. On AWS the LLM endpoint's key is not
an environment variable but a secret (``DOCPIPE_LLM_SECRET``); ``with_llm_secret`` reads its value into the
settings once the worker has fetched it (``llm.endpoint``).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache


class ConfigError(ValueError):
    pass


# A client's id names its folders in the bucket (uploads/<id>/…): letters, digits, "-" and "_" only. API Gateway's
# API key ids are of this form.
CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# An EventBridge bus name as PutEvents takes it ("default" is the account's default bus).
EVENT_BUS_NAME = re.compile(r"[A-Za-z0-9._\-/]{1,256}")


# USD per million tokens (input, output), from the providers' public price lists. DOCPIPE_PRICES adds or
# overrides entries, e.g. {"my-vllm-model": [0, 0]}; its "*" entry, when given, prices every model not listed.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
}


@dataclass(frozen=True)
class ReadingLimits:
    """How long one page, and the whole document, may take to read, and how much memory the reading may add."""

    page_seconds: float = 10.0
    document_seconds: float = 180.0
    memory_mb: int = 1024


@dataclass(frozen=True)
class Settings:
    stage: str
    bucket: str
    jobs_table: str
    idempotency_table: str
    jobs_queue: str
    dead_letter_queue: str
    model: str
    llm_api_key: str | None
    llm_base_url: str | None
    llm_concurrency: int
    llm_timeout_seconds: float
    llm_max_attempts: int
    chunk_tokens: int
    chunk_overlap_tokens: int
    max_request_bytes: int
    max_document_bytes: int
    max_document_pages: int
    default_max_total_tokens: int
    job_retention_days: int
    api_url: str | None
    breaker_failures: int
    breaker_recovery_seconds: int
    heartbeat_seconds: int
    retry_backoff_seconds: int
    # The provider's limits for the whole deployment (every worker together), per endpoint and model.
    llm_requests_per_minute: int | None = None
    llm_tokens_per_minute: int | None = None
    llm_max_in_flight: int | None = 64
    reduce_context_tokens: int = 12_000
    map_output_tokens: int = 600
    reduce_output_tokens: int = 1_200
    map_cache: bool = True
    map_cache_shared: bool = False
    reading_limits: ReadingLimits = ReadingLimits()
    # (API key, client id) pairs docpipe checks itself where no API Gateway does; see ``entry.identity``.
    api_keys: tuple[tuple[str, str], ...] = ()
    keyless_client: str | None = None
    ocr: str | None = None
    ocr_max_pages: int = 100
    ocr_timeout_seconds: float = 300.0
    ocr_usd_per_page: float = 0.0015
    llm_secret_name: str | None = None
    llm_secret_max_age_seconds: int = 300
    prices: Mapping[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    # Read at deploy: the decorators in app.py turn these into the API's and the event source mapping's settings.
    require_api_key: bool = False
    worker_batch_size: int = 5
    worker_max_concurrency: int = 10
    # The Lambda function running this code (set by Lambda; Powertools' own default elsewhere): it scopes records.
    function_name: str = "test-func"
    keep_warm_instances: int = 1
    # The Step Functions workflow (infra/workflow.asl.json): None leaves every job on the queue path.
    state_machine_arn: str | None = None
    step_functions_min_chunks: int = 200
    step_functions_batch_calls: int = 32
    # Where "Job Succeeded" / "Job Failed" events go (``jobs.events``).
    event_bus: str = "default"
    # How long a presigned upload form (``POST /uploads``) may be used.
    upload_url_seconds: int = 600
    # Read at deploy: GET /dashboard shows every client's jobs, so it exists only where an operator turns it on.
    dashboard: bool = False

    @property
    def uses_workflow(self) -> bool:
        """A state machine is configured: long and multi-task jobs run through Step Functions."""
        return self.state_machine_arn is not None

    @property
    def uses_openai(self) -> bool:
        """An OpenAI-compatible endpoint is configured; otherwise the offline provider does the work."""
        return bool(self.llm_api_key or self.llm_base_url)


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be at most {maximum}, got {value}")
    return value


def positive_number(env: Mapping[str, str], name: str, default: float) -> float:
    """A positive, finite number from ``env[name]``, or ``default`` when unset."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not 0 < value < math.inf:  # also refuses nan
        raise ConfigError(f"{name} must be a positive finite number, got {raw!r}")
    return value


def _limit(env: Mapping[str, str], name: str) -> int | None:
    """A provider limit: unset means unlimited."""
    return _int(env, name, 0, minimum=1) or None


def _reading_limits(env: Mapping[str, str]) -> ReadingLimits:
    """How long a PDF page and a whole PDF may take to read, and the memory reading may add; unset keeps the default."""
    defaults = ReadingLimits()
    return ReadingLimits(
        page_seconds=positive_number(env, "DOCPIPE_PAGE_TIMEOUT_SECONDS", defaults.page_seconds),
        document_seconds=positive_number(env, "DOCPIPE_EXTRACT_TIMEOUT_SECONDS", defaults.document_seconds),
        memory_mb=int(positive_number(env, "DOCPIPE_EXTRACT_MEMORY_MB", defaults.memory_mb)),
    )


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in ("true", "false"):
        raise ConfigError(f"{name} must be true or false, got {raw!r}")
    return raw == "true"


def _client_id(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    if raw and not CLIENT_ID.fullmatch(raw):
        raise ConfigError(f"{name} must be a client id of 1-64 letters, digits, '-' or '_', got {raw[:70]!r}")
    return raw or None


def _api_keys(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """``DOCPIPE_API_KEYS``: a JSON object from API key to client id, e.g. ``{"key-of-alice": "alice"}``."""
    raw = env.get("DOCPIPE_API_KEYS", "").strip()
    if not raw:
        return ()
    problem = 'DOCPIPE_API_KEYS must be a JSON object from API key (20-256 printable ASCII characters) to client id'
    try:
        table = json.loads(raw)
    except ValueError:
        raise ConfigError(problem) from None
    if not isinstance(table, dict) or not all(
            isinstance(key, str) and re.fullmatch(r"[\x21-\x7e]{20,256}", key) and isinstance(client, str)
            and CLIENT_ID.fullmatch(client) for key, client in table.items()):
        raise ConfigError(problem)
    return tuple(table.items())


def _event_bus(env: Mapping[str, str]) -> str:
    raw = env.get("DOCPIPE_EVENT_BUS", "").strip() or "default"
    if not EVENT_BUS_NAME.fullmatch(raw):
        raise ConfigError(f"DOCPIPE_EVENT_BUS must be an EventBridge bus name (letters, digits, . _ - /), got "
                          f"{raw[:70]!r}")
    return raw


def _ocr(env: Mapping[str, str]) -> str | None:
    raw = env.get("DOCPIPE_OCR", "").strip().lower()
    if raw in ("", "off"):
        return None
    if raw != "textract":
        raise ConfigError(f"DOCPIPE_OCR must be off or textract, got {raw!r}")
    return raw


_STATE_MACHINE_ARN = re.compile(r"arn:aws[a-z-]*:states:[a-z0-9-]+:\d{12}:stateMachine:[A-Za-z0-9_-]{1,80}")


def _state_machine(env: Mapping[str, str]) -> str | None:
    raw = env.get("DOCPIPE_STATE_MACHINE_ARN", "").strip()
    if raw and not _STATE_MACHINE_ARN.fullmatch(raw):
        raise ConfigError(f"DOCPIPE_STATE_MACHINE_ARN must be a state machine's ARN, got {raw[:120]!r}")
    return raw or None


def price_table(env: Mapping[str, str]) -> dict[str, tuple[float, float]]:
    """The built-in prices with ``DOCPIPE_PRICES`` laid over them."""
    prices = dict(DEFAULT_PRICES)
    raw = env.get("DOCPIPE_PRICES", "").strip()
    if raw:
        try:
            extra = json.loads(raw)
            prices.update({str(k): (float(v[0]), float(v[1])) for k, v in extra.items()})
            if any(not 0 <= p < math.inf for price in prices.values() for p in price):
                raise ValueError("a price must be a finite number of USD, at least 0")
        except (ValueError, TypeError, IndexError, AttributeError):
            raise ConfigError('DOCPIPE_PRICES must be JSON like {"model": [input_usd_per_million, '
                              'output_usd_per_million]}') from None
    return prices


def load_settings(env: Mapping[str, str] = os.environ) -> Settings:
    stage = env.get("DOCPIPE_STAGE", "dev")
    chunk_tokens = _int(env, "DOCPIPE_CHUNK_TOKENS", 1000, minimum=50)
    overlap = _int(env, "DOCPIPE_CHUNK_OVERLAP_TOKENS", 100)
    if overlap >= chunk_tokens // 2:
        raise ConfigError("DOCPIPE_CHUNK_OVERLAP_TOKENS must be less than half of DOCPIPE_CHUNK_TOKENS")
    return Settings(
        stage=stage,
        bucket=env.get("DOCPIPE_BUCKET", f"docpipe-{stage}-documents"),
        jobs_table=env.get("DOCPIPE_JOBS_TABLE", f"docpipe-{stage}-jobs"),
        idempotency_table=env.get("DOCPIPE_IDEMPOTENCY_TABLE", f"docpipe-{stage}-idempotency"),
        jobs_queue=env.get("DOCPIPE_JOBS_QUEUE", f"docpipe-{stage}-jobs"),
        dead_letter_queue=env.get("DOCPIPE_DEAD_LETTER_QUEUE", f"docpipe-{stage}-jobs-dlq"),
        model=env.get("DOCPIPE_MODEL", "gpt-4o-mini"),
        llm_api_key=env.get("OPENAI_API_KEY") or None,
        llm_base_url=env.get("OPENAI_BASE_URL") or None,
        llm_concurrency=_int(env, "DOCPIPE_LLM_CONCURRENCY", 16, minimum=1),
        llm_timeout_seconds=positive_number(env, "DOCPIPE_LLM_TIMEOUT_SECONDS", 60.0),
        llm_max_attempts=_int(env, "DOCPIPE_LLM_MAX_ATTEMPTS", 3, minimum=1),
        chunk_tokens=chunk_tokens,
        chunk_overlap_tokens=overlap,
        # Lambda takes 6 MB per invocation and binary bodies arrive base64-encoded (4/3 larger).
        max_request_bytes=_int(env, "DOCPIPE_MAX_REQUEST_BYTES", 4_500_000, minimum=1024),
        max_document_bytes=_int(env, "DOCPIPE_MAX_DOCUMENT_BYTES", 100 * 1024 * 1024, minimum=1024),
        max_document_pages=_int(env, "DOCPIPE_MAX_DOCUMENT_PAGES", 2000, minimum=1),
        default_max_total_tokens=_int(env, "DOCPIPE_DEFAULT_MAX_TOTAL_TOKENS", 2_000_000, minimum=1000),
        job_retention_days=_int(env, "DOCPIPE_JOB_RETENTION_DAYS", 30, minimum=1),
        api_url=env.get("DOCPIPE_API_URL") or None,
        breaker_failures=_int(env, "DOCPIPE_BREAKER_FAILURES", 5, minimum=1),
        breaker_recovery_seconds=_int(env, "DOCPIPE_BREAKER_RECOVERY_SECONDS", 30, minimum=1),
        heartbeat_seconds=_int(env, "DOCPIPE_HEARTBEAT_SECONDS", 20, minimum=1),
        retry_backoff_seconds=_int(env, "DOCPIPE_RETRY_BACKOFF_SECONDS", 30, minimum=1),
        llm_requests_per_minute=_limit(env, "DOCPIPE_LLM_RPM"),
        llm_tokens_per_minute=_limit(env, "DOCPIPE_LLM_TPM"),
        # 0 leaves each worker on its own, adapting to the provider's 429s alone.
        llm_max_in_flight=_int(env, "DOCPIPE_LLM_MAX_IN_FLIGHT", 64) or None,
        reduce_context_tokens=_int(env, "DOCPIPE_REDUCE_CONTEXT_TOKENS", 12_000, minimum=2_000),
        map_output_tokens=_int(env, "DOCPIPE_MAP_OUTPUT_TOKENS", 600, minimum=50),
        reduce_output_tokens=_int(env, "DOCPIPE_REDUCE_OUTPUT_TOKENS", 1_200, minimum=50),
        map_cache=_flag(env, "DOCPIPE_MAP_CACHE", True),
        map_cache_shared=_flag(env, "DOCPIPE_MAP_CACHE_SHARED", False),
        api_keys=_api_keys(env),
        keyless_client=_client_id(env, "DOCPIPE_KEYLESS_CLIENT"),
        reading_limits=_reading_limits(env),
        ocr=_ocr(env),
        ocr_max_pages=_int(env, "DOCPIPE_OCR_MAX_PAGES", 100, minimum=1),
        ocr_timeout_seconds=positive_number(env, "DOCPIPE_OCR_TIMEOUT_SECONDS", 300.0),
        # Textract DetectDocumentText, us-east-1: USD 1.50 per 1,000 pages for the first million pages a month.
        ocr_usd_per_page=positive_number(env, "DOCPIPE_OCR_USD_PER_PAGE", 0.0015),
        llm_secret_name=env.get("DOCPIPE_LLM_SECRET", "").strip() or None,
        llm_secret_max_age_seconds=_int(env, "DOCPIPE_LLM_SECRET_MAX_AGE_SECONDS", 300, minimum=1),
        prices=price_table(env),
        require_api_key=_flag(env, "DOCPIPE_REQUIRE_API_KEY", False),
        # The SQS event source mapping's limits: a batch of 1-10,000 messages, 2-1,000 concurrent workers.
        worker_batch_size=_int(env, "DOCPIPE_WORKER_BATCH_SIZE", 5, minimum=1, maximum=10_000),
        worker_max_concurrency=_int(env, "DOCPIPE_WORKER_MAX_CONCURRENCY", 10, minimum=2, maximum=1_000),
        function_name=env.get("AWS_LAMBDA_FUNCTION_NAME") or "test-func",
        keep_warm_instances=_int(env, "DOCPIPE_KEEP_WARM_INSTANCES", 1, minimum=1),
        state_machine_arn=_state_machine(env),
        step_functions_min_chunks=_int(env, "DOCPIPE_STEP_FUNCTIONS_MIN_CHUNKS", 200),
        step_functions_batch_calls=_int(env, "DOCPIPE_STEP_FUNCTIONS_BATCH_CALLS", 32, minimum=1,
                                        maximum=1_000),
        event_bus=_event_bus(env),
        # Short, so a leaked form is soon useless; S3 checks it when the upload starts, not when it ends.
        upload_url_seconds=_int(env, "DOCPIPE_UPLOAD_URL_SECONDS", 600, minimum=60, maximum=3600),
        dashboard=_flag(env, "DOCPIPE_DASHBOARD", False),
    )


def with_llm_secret(settings: Settings, secret: str | None) -> Settings:
    """``settings`` with the LLM endpoint's key (and URL, if the secret names one) taken from the stage's secret.

    The secret is a JSON object ``{"api_key": "sk-...", "base_url": "https://..."}`` (``base_url`` optional), or
    the bare key. What it leaves out keeps the environment's value; no secret (None) changes nothing.
    """
    if secret is None:
        return settings
    text = secret.strip()
    if not text.startswith(("{", "[")):
        return replace(settings, llm_api_key=text or settings.llm_api_key)
    try:
        value = json.loads(text)
    except ValueError:
        raise ConfigError(f"the secret {settings.llm_secret_name} is not valid JSON") from None
    if not isinstance(value, dict) or not all(isinstance(value.get(k, ""), str) for k in ("api_key", "base_url")):
        raise ConfigError(f'the secret {settings.llm_secret_name} must be {{"api_key": "...", "base_url": "..."}}')
    return replace(settings, llm_api_key=value.get("api_key") or settings.llm_api_key,
                   llm_base_url=value.get("base_url") or settings.llm_base_url)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
