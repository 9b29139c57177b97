"""Chat completions through the openai SDK, against any OpenAI-compatible endpoint.

The SDK is configured by the standard ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` variables (OpenAI, Azure, Bedrock's
OpenAI-compatible endpoint, vLLM, Ollama, LM Studio). Its errors are sorted here into the kinds the worker acts on:
``JobFailure`` (the request can never succeed: bad key, unknown model, a request larger than the provider's
tokens-per-minute limit), ``TransientError`` (outages, timeouts: the SQS redelivery tries again later) and
``Throttled`` (the provider said "slow down" for longer than this invocation can wait: the job waits on the queue,
spending no delivery).

Retries have one owner, ``ChatModel``; the SDK's own are switched off (``max_retries=0``), because:

* every attempt must pass the worker's gate (``llm.gate``: the deployment's shared limits), and a 429 must hold
  back every call of the pool, in every worker, not only the one that received it (the SDK sleeps per request);
* a 429 is not an outage: it slows the sender and is retried while the invocation has time, never counted as a
  failed attempt, nor by the circuit breaker, which guards each attempt (``llm.breaker``);
* no attempt may outlive the Lambda invocation: each one's timeout is cut to the time left before ``deadline``,
  and a wait that would pass it hands the job back to SQS at once (the SDK's default is 600 s and 2 retries);
* SQS redelivery multiplies whatever is retried here, so failed attempts are bounded (``DOCPIPE_LLM_MAX_ATTEMPTS``)
  and a ``Retry-After`` longer than ``MAX_RETRY_AFTER_SECONDS`` is not slept through: the job waits on the queue for
  exactly that long, and the map cache makes the next delivery re-use every chunk already answered.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from chalicelib.errors import JobFailure, Throttled, TransientError
from chalicelib.llm.gate import CallGate
from chalicelib.llm.ratelimit import OutOfTime, ProviderLimits, retry_after
from chalicelib.observability import record_llm_call

_KEY_PATTERN = re.compile(r"(sk-[A-Za-z0-9_\-]{4})[A-Za-z0-9_\-*]+")
_CONTEXT_MESSAGE = re.compile(r"maximum context length|context[ _]length|context window|prompt is too long", re.I)
# OpenAI's 429 for a request larger than the tokens-per-minute limit ("Request too large for gpt-4o … on tokens per
# min (TPM): Limit 30000, Requested 45000. The input or output tokens must be reduced …"): no wait can help it.
_TOO_LARGE_MESSAGE = re.compile(r"request too large|must be reduced", re.I)
_LIMIT_AND_REQUESTED = re.compile(r"Limit (\d+), Requested (\d+)")

BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 8.0
MAX_RETRY_AFTER_SECONDS = 30.0
# An attempt with less time than this left would only time out; the job goes back to SQS instead.
MIN_ATTEMPT_SECONDS = 2.0
# 429s for one call before its job waits on the queue even with time left (a provider that never stops saying so).
MAX_THROTTLED_ATTEMPTS = 20


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


class RequestTooLarge(ContextLengthExceeded):
    """The request needs more tokens than the provider's tokens-per-minute limit allows at all: no wait can help, a
    smaller request can (the map halves its chunk, as for the context window)."""


class EndpointBusy(TransientError):
    """Failing or unreachable: worth another attempt, after ``retry_after`` seconds when the server said. The circuit
    breaker counts it."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__("llm_unavailable", message)
        self.retry_after = retry_after


class _RateLimited(Exception):
    """A 429 that asks to slow down (not an exhausted quota, not a request too large); never leaves ``ChatModel``."""

    def __init__(self, message: str, limits: ProviderLimits, kind: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.limits = limits
        self.wait = limits.wait_after_429(kind)


@dataclass(frozen=True)
class _Answer:
    response: Any
    limits: ProviderLimits


def redact(text: str) -> str:
    """Provider error messages sometimes echo part of the API key; never let it reach a log or a job."""
    return _KEY_PATTERN.sub(r"\1…", text)


async def _unguarded(attempt: Callable[[], Awaitable[Any]]) -> Any:
    return await attempt()


class ChatModel:
    """One model behind an OpenAI-compatible endpoint, called asynchronously so chunks run in parallel.

    One per job. ``gate`` admits its calls among every call of the worker to this endpoint and model, within the
    deployment's shared limits; ``guard`` runs each attempt inside the circuit breaker (``llm.breaker``).
    ``max_retries`` attempts follow the first for transient errors; 429s are not counted among them.
    ``count_tokens`` gives the real token count of a text, for the tokens-per-minute limit.
    """

    def __init__(self, *, model: str, api_key: str | None, base_url: str | None, timeout: float,
                 max_retries: int, client: Any = None, gate: CallGate | None = None,
                 guard: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]] | None = None,
                 count_tokens: Callable[[str], int] | None = None, backoff_seconds: float = BACKOFF_SECONDS,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.model = model
        self._timeout = timeout
        self._max_retries = max_retries
        # On its own (no endpoint), a model sends as much as it is asked to until the provider's first 429.
        self._gate = gate or CallGate(clock=clock, window=math.inf)
        self._guard = guard or _unguarded
        self._count_tokens = count_tokens
        self._backoff_seconds = backoff_seconds
        self._clock = clock
        self._sleep = sleep
        if client is None:
            from openai import AsyncOpenAI, DefaultAsyncHttpxClient

            # Local servers (vLLM, Ollama) accept any key; the SDK insists on one. Each job has its own event loop,
            # hence its own client; the TLS trust store they share is loaded once per worker (25 ms a load).
            client = AsyncOpenAI(api_key=api_key or "not-needed", base_url=base_url, timeout=timeout, max_retries=0,
                                 http_client=DefaultAsyncHttpxClient(verify=trust_store()))
        self._client = client

    async def prime(self) -> None:
        """Read what each call needs before the first one is made, side by side: the circuit's state, and the
        deployment's shared limits (the first change of the worker's share is then written onto that copy, without
        a read of its own, unless another worker wrote meanwhile)."""
        prime = getattr(self._guard, "prime", None)
        await asyncio.gather(prime() if prime is not None else asyncio.sleep(0), self._gate.prime())

    async def complete(self, messages: list[dict[str, str]], *, max_tokens: int,
                       response_format: dict[str, Any] | None = None, deadline: float | None = None) -> Completion:
        """One answer; retried here on transient errors and 429s. ``deadline`` is a ``time.monotonic()`` no attempt
        outlives."""
        request: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": max_tokens,
                                   "temperature": 0}
        if response_format is not None:
            request["response_format"] = response_format
        tokens = 0
        retries = throttled = 0
        while True:
            limit = self._gate.tokens_per_minute
            if limit and not tokens:
                tokens = self._request_tokens(messages, max_tokens, response_format)
            if limit and tokens > limit:
                raise RequestTooLarge(f"the request needs {tokens} tokens, more than the provider's limit of {limit} "
                                      "tokens per minute accepts in one request", status=429,
                                      provider_code="rate_limit_exceeded", param="messages")
            started = self._clock()
            try:
                answer = await self._traced_attempt(request, tokens, deadline, attempt=retries + throttled + 1)
            except _RateLimited as refusal:
                self._gate.observe(refusal.limits)
                wait = refusal.wait
                if wait is None:
                    wait = min(self._backoff_seconds * 2 ** throttled, MAX_BACKOFF_SECONDS)
                    wait *= 1 - 0.25 * random.random()
                throttled += 1
                if wait > MAX_RETRY_AFTER_SECONDS or throttled >= MAX_THROTTLED_ATTEMPTS:
                    raise Throttled(refusal.message, retry_after=wait) from None
                # Every call of the pool waits, here and in the other workers; the next admission waits with them.
                self._gate.pause(wait)
                continue
            except EndpointBusy as error:
                if retries >= self._max_retries:
                    raise
                await self._wait_before_retry(error, retries, deadline)
                retries += 1
                continue
            return _completion(answer.response, latency=self._clock() - started, retries=retries + throttled)

    async def _traced_attempt(self, request: dict[str, Any], tokens: int, deadline: float | None, *,
                              attempt: int) -> _Answer:
        """``_attempt``, recorded in the job's trace with its outcome and tokens (never the text)."""
        wall = time.time()
        try:
            answer = await self._attempt(request, tokens, deadline)
        except BaseException as exc:
            record_llm_call(model=self.model, attempt=attempt, outcome=type(exc).__name__, started=wall)
            raise
        usage = getattr(answer.response, "usage", None)
        record_llm_call(model=self.model, attempt=attempt, outcome="ok", started=wall,
                        prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                        completion_tokens=getattr(usage, "completion_tokens", 0) or 0)
        return answer

    async def _attempt(self, request: dict[str, Any], tokens: int, deadline: float | None) -> _Answer:
        """One request: admitted by the gate (``Throttled`` if not before the deadline), inside the circuit breaker."""
        self._attempt_timeout(deadline)  # OutOfTime at once when too little is left to wait for a turn at all
        ticket = await self._gate.admit(self, tokens=tokens,
                                        deadline=None if deadline is None else deadline - MIN_ATTEMPT_SECONDS)
        throttled = False
        try:
            answer: _Answer = await self._guard(functools.partial(self._send, request, deadline))
        except _RateLimited:
            throttled = True
            raise
        finally:
            self._gate.release(ticket, throttled=throttled)
        self._gate.observe(answer.limits)
        return answer

    async def _send(self, request: dict[str, Any], deadline: float | None) -> _Answer:
        from openai._constants import RAW_RESPONSE_HEADER
        from openai.types.chat import ChatCompletion

        # The SDK's own POST with a ready body: ``chat.completions.create`` would re-walk every message against its
        # typed signature first, about 1.3 ms of CPU a call, paid C times per wave of calls. The raw response (the
        # SDK's own header asks for it) keeps the headers in which the provider states its limits.
        options = {"timeout": self._attempt_timeout(deadline), "headers": {RAW_RESPONSE_HEADER: "true"}}
        error: EndpointRefused | EndpointBusy | _RateLimited | None = None
        try:
            raw = await self._client.post("/chat/completions", cast_to=ChatCompletion, body=request, options=options)
            response = raw.parse()
        except Exception as exc:
            error = _classify(exc)
        else:
            error = _unreadable(response)
            if error is None:
                return _Answer(response, ProviderLimits.of(raw.headers))
        # Raised outside the except block so the SDK's exception, which holds the request and its Authorization
        # header, is not chained to ours.
        raise error

    async def close(self) -> None:
        close = getattr(self._guard, "close", None)
        if close is not None:
            close()
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
def trust_store() -> Any:
    """The TLS trust store every job's HTTP client verifies with: loaded once per worker (tens of milliseconds)."""
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


def _classify(exc: Exception) -> EndpointRefused | EndpointBusy | _RateLimited:
    """Permanent (the same request can never succeed), a request to slow down, or transient (it may succeed later)."""
    import openai

    if isinstance(exc, openai.RateLimitError) and _error_field(exc, "code") != "insufficient_quota":
        message = redact(_error_message(exc))
        sizes = _LIMIT_AND_REQUESTED.search(message)
        if _TOO_LARGE_MESSAGE.search(message) or (sizes and int(sizes.group(2)) > int(sizes.group(1))):
            return RequestTooLarge(f"the LLM endpoint can never accept this request (429): {message}", status=429,
                                   provider_code=_error_field(exc, "code"), param="messages")
        return _RateLimited(f"the LLM endpoint asked to slow down (429): {message}", ProviderLimits.of(_headers(exc)),
                            _error_field(exc, "type"))
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
        headers = _headers(exc)
        return EndpointBusy(f"the LLM endpoint failed {detail}",
                            retry_after=None if headers is None else retry_after(headers))
    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
        return EndpointBusy(f"the LLM endpoint could not be reached: {type(exc).__name__}")
    if isinstance(exc, ValueError):  # a 200 whose JSON body is cut or malformed
        return EndpointBusy("the LLM endpoint sent an unreadable answer")
    raise exc


def _headers(exc: Any) -> Any:
    return getattr(getattr(exc, "response", None), "headers", None)


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
