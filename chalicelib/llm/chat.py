"""Chat completions through the openai SDK, against any OpenAI-compatible endpoint.

The SDK is configured by the standard ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` variables (OpenAI, Azure, Bedrock's
OpenAI-compatible endpoint, vLLM, Ollama, LM Studio). Its errors are sorted here into the two kinds the worker acts
on: ``JobFailure`` (the request can never succeed: bad key, unknown model) and ``TransientError`` (throttling,
outages, timeouts: the SQS redelivery tries again later).

Retries have one owner, ``ChatModel``; the SDK's own are switched off (``max_retries=0``), because:

* the rate limiter must see every attempt, and a 429's ``Retry-After`` must hold back every call in flight, not only
  the one that received it (the SDK sleeps per request);
* no attempt may outlive the Lambda invocation: each one's timeout is cut to the time left before ``deadline``,
  and a wait that would pass it hands the job back to SQS at once (the SDK's default is 600 s and 2 retries);
* SQS redelivery multiplies whatever is retried here, so attempts are bounded (``DOCPIPE_LLM_MAX_ATTEMPTS``) and a
  ``Retry-After`` longer than ``MAX_RETRY_AFTER_SECONDS`` is not slept through: a redelivery is cheaper than an idle
  Lambda, and the map cache makes the next delivery re-use every chunk already answered.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import json
import math
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from chalicelib.errors import JobFailure, TransientError
from chalicelib.llm.ratelimit import OutOfTime, Throttle
from chalicelib.observability import record_llm_call

_KEY_PATTERN = re.compile(r"(sk-[A-Za-z0-9_\-]{4})[A-Za-z0-9_\-*]+")
_CONTEXT_MESSAGE = re.compile(r"maximum context length|context[ _]length|context window|prompt is too long", re.I)

BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 8.0
MAX_RETRY_AFTER_SECONDS = 30.0
# An attempt with less time than this left would only time out; the job goes back to SQS instead.
MIN_ATTEMPT_SECONDS = 2.0


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None
    latency_seconds: float = 0.0
    retries: int = 0


class EndpointRefused(JobFailure):
    """The endpoint refused the request itself (400/401/403/404): sending it again can never succeed."""

    def __init__(self, message: str, *, status: int, provider_code: str | None, param: str | None) -> None:
        super().__init__("llm_unavailable", message)
        self.status = status
        self.provider_code = provider_code
        self.param = param

    def concerns(self, parameter: str) -> bool:
        """The refusal is about this request parameter (e.g. an endpoint without structured outputs)."""
        return self.param == parameter or parameter in self.message


class ContextLengthExceeded(EndpointRefused):
    """The prompt does not fit the model's context window: the caller may split its input and try again."""


class EndpointBusy(TransientError):
    """Throttled, failing or unreachable: worth another attempt, after ``retry_after`` seconds when the server said."""

    def __init__(self, message: str, *, retry_after: float | None = None, throttled: bool = False) -> None:
        super().__init__("llm_unavailable", message)
        self.retry_after = retry_after
        self.throttled = throttled


def redact(text: str) -> str:
    """Provider error messages sometimes echo part of the API key; never let it reach a log or a job."""
    return _KEY_PATTERN.sub(r"\1…", text)


class ChatModel:
    """One model behind an OpenAI-compatible endpoint, called asynchronously so chunks run in parallel.

    ``max_retries`` attempts follow the first for transient errors. ``throttle`` is shared by every job of a worker
    instance (the provider's limits are per account); ``count_tokens`` gives the real token count of a text for the
    tokens-per-minute limit.
    """

    def __init__(self, *, model: str, api_key: str | None, base_url: str | None, timeout: float,
                 max_retries: int, client: Any = None, throttle: Throttle | None = None,
                 count_tokens: Callable[[str], int] | None = None, backoff_seconds: float = BACKOFF_SECONDS,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.model = model
        self._timeout = timeout
        self._max_retries = max_retries
        self._throttle = throttle or Throttle(clock=clock, sleep=sleep)
        self._count_tokens = count_tokens
        self._backoff_seconds = backoff_seconds
        self._clock = clock
        self._sleep = sleep
        if client is None:
            from openai import AsyncOpenAI, DefaultAsyncHttpxClient

            # Local servers (vLLM, Ollama) accept any key; the SDK insists on one. Each job has its own event loop,
            # hence its own client; the TLS trust store they share is loaded once per worker (25 ms a load).
            client = AsyncOpenAI(api_key=api_key or "not-needed", base_url=base_url, timeout=timeout, max_retries=0,
                                 http_client=DefaultAsyncHttpxClient(verify=_tls_context()))
        self._client = client

    async def complete(self, messages: list[dict[str, str]], *, max_tokens: int,
                       response_format: dict[str, Any] | None = None, deadline: float | None = None) -> Completion:
        """One answer; retried here on transient errors. ``deadline`` is a ``time.monotonic()`` no attempt outlives."""
        from openai.types.chat import ChatCompletion

        request: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": max_tokens,
                                   "temperature": 0}
        if response_format is not None:
            request["response_format"] = response_format
        tokens = self._request_tokens(messages, max_tokens, response_format) if self._throttle.counts_tokens else 0
        retries = 0
        while True:
            await self._throttle.acquire(tokens=tokens,
                                         deadline=None if deadline is None else deadline - MIN_ATTEMPT_SECONDS)
            started, wall = self._clock(), time.time()
            try:
                # The SDK's own POST with a ready body: ``chat.completions.create`` would re-walk every message
                # against its typed signature first, about 1.3 ms of CPU a call, paid C times per wave of calls.
                response = await self._client.post("/chat/completions", cast_to=ChatCompletion, body=request,
                                                   options={"timeout": self._attempt_timeout(deadline)})
            except Exception as exc:
                error: EndpointRefused | EndpointBusy | None = _classify(exc)
            else:
                error = _unreadable(response)
            if error is None:
                completion = _completion(response, latency=self._clock() - started, retries=retries)
                record_llm_call(model=self.model, attempt=retries + 1, outcome="ok", started=wall,
                                prompt_tokens=completion.prompt_tokens,
                                completion_tokens=completion.completion_tokens)
                return completion
            record_llm_call(model=self.model, attempt=retries + 1, outcome=type(error).__name__, started=wall)
            # Raised outside the except block so the SDK's exception, which holds the request and its
            # Authorization header, is not chained to ours.
            if isinstance(error, JobFailure) or retries >= self._max_retries:
                raise error
            await self._wait_before_retry(error, retries, deadline)
            retries += 1

    async def close(self) -> None:
        await self._client.close()

    def _attempt_timeout(self, deadline: float | None) -> float:
        if deadline is None:
            return self._timeout
        left = deadline - self._clock()
        if left < MIN_ATTEMPT_SECONDS:
            raise OutOfTime(f"{left:.1f} s left in this invocation: too little for an LLM call")
        return min(self._timeout, left)

    async def _wait_before_retry(self, error: EndpointBusy, retries: int, deadline: float | None) -> None:
        if error.retry_after is not None and error.retry_after > MAX_RETRY_AFTER_SECONDS:
            raise error
        wait = error.retry_after
        if wait is None:
            wait = min(self._backoff_seconds * 2 ** retries, MAX_BACKOFF_SECONDS) * (1 - 0.25 * random.random())
        if error.throttled:
            self._throttle.pause(wait)  # the next acquire waits, together with every other call
            return
        if deadline is not None and self._clock() + wait + MIN_ATTEMPT_SECONDS > deadline:
            raise error
        await self._sleep(wait)

    def _request_tokens(self, messages: list[dict[str, str]], max_tokens: int,
                        response_format: dict[str, Any] | None) -> int:
        """What the provider's tokens-per-minute limit charges: the prompt plus the most the answer may use."""
        count = self._count_tokens or (lambda text: len(text) // 4 + 1)
        # OpenAI's accounting: 3 tokens per message, 3 to prime the answer.
        prompt = sum(count(str(m.get("content") or "")) + 3 for m in messages) + 3
        if response_format is not None:
            prompt += count(json.dumps(response_format))
        return prompt + max_tokens


@functools.lru_cache(maxsize=1)
def _tls_context() -> Any:
    import httpx2

    return httpx2.create_ssl_context()


def _completion(response: Any, *, latency: float, retries: int) -> Completion:
    choice = response.choices[0]
    usage = response.usage
    return Completion(
        text=(choice.message.content or "").strip(),
        prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
        completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
        finish_reason=choice.finish_reason,
        latency_seconds=round(latency, 4),
        retries=retries,
    )


def _unreadable(response: Any) -> EndpointBusy | None:
    if not getattr(response, "choices", None):
        # The SDK hands back a plain string when a proxy or web page answers 200 with something not JSON.
        return EndpointBusy("the LLM endpoint answered with no choices")
    return None


def _classify(exc: Exception) -> EndpointRefused | EndpointBusy:
    """Permanent (the same request can never succeed) or transient (it may, later)."""
    import openai

    if isinstance(exc, openai.RateLimitError) and _error_field(exc, "code") != "insufficient_quota":
        return EndpointBusy(f"the LLM endpoint is throttling (429): {redact(_error_message(exc))}",
                            retry_after=_retry_after(exc), throttled=True)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        code = _error_field(exc, "code")
        message = redact(_error_message(exc))
        detail = f"({status} {code or type(exc).__name__}): {message}"
        if 400 <= status < 500 and status not in (408, 409):
            kind = EndpointRefused
            if status == 400 and (code == "context_length_exceeded" or _CONTEXT_MESSAGE.search(message)):
                kind = ContextLengthExceeded
            return kind(f"the LLM endpoint refused the request {detail}", status=status, provider_code=code,
                        param=_error_field(exc, "param"))
        return EndpointBusy(f"the LLM endpoint failed {detail}", retry_after=_retry_after(exc))
    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
        return EndpointBusy(f"the LLM endpoint could not be reached: {type(exc).__name__}")
    if isinstance(exc, ValueError):  # a 200 whose JSON body is cut or malformed
        return EndpointBusy("the LLM endpoint sent an unreadable answer")
    raise exc


def _retry_after(exc: Any) -> float | None:
    """Seconds the server asked to wait: ``retry-after-ms``, then ``retry-after`` (seconds or an HTTP date)."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            continue
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    parsed = email.utils.parsedate_tz(headers.get("retry-after") or "")
    if parsed is None:
        return None
    return max(0.0, email.utils.mktime_tz(parsed) - time.time())


def _error_field(exc: Any, name: str) -> str | None:
    """A field of the provider's error object (the SDK keeps ``{"error": {...}}`` or its inner object)."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body["error"] if isinstance(body.get("error"), dict) else body
        if inner.get(name):
            return str(inner[name])
    return None


def _error_message(exc: Any) -> str:
    return (_error_field(exc, "message") or str(getattr(exc, "message", exc)))[:300]
