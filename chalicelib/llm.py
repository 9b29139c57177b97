"""Chat completions through the openai SDK, against any OpenAI-compatible endpoint.

The SDK is configured by the standard ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` variables (OpenAI, Azure, Bedrock's
OpenAI-compatible endpoint, vLLM, Ollama, LM Studio). Its errors are sorted here into the two kinds the worker acts
on: ``JobFailure`` (the request can never succeed: bad key, unknown model) and ``TransientError`` (throttling,
outages, timeouts: the SQS redelivery tries again later).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from chalicelib.errors import JobFailure, TransientError

_KEY_PATTERN = re.compile(r"(sk-[A-Za-z0-9_\-]{4})[A-Za-z0-9_\-*]+")


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None


def redact(text: str) -> str:
    """Provider error messages sometimes echo part of the API key; never let it reach a log or a job."""
    return _KEY_PATTERN.sub(r"\1…", text)


class ChatModel:
    """One model behind an OpenAI-compatible endpoint, called asynchronously so chunks run in parallel."""

    def __init__(self, *, model: str, api_key: str | None, base_url: str | None, timeout: float,
                 max_retries: int, client: Any = None) -> None:
        from openai import AsyncOpenAI

        self.model = model
        # Local servers (vLLM, Ollama) accept any key; the SDK insists on one.
        self._client = client or AsyncOpenAI(api_key=api_key or "not-needed", base_url=base_url,
                                             timeout=timeout, max_retries=max_retries)

    async def complete(self, messages: list[dict[str, str]], *, max_tokens: int) -> Completion:
        try:
            response = await self._client.chat.completions.create(
                model=self.model, messages=messages, max_tokens=max_tokens, temperature=0)
        except Exception as exc:
            error = _classify(exc)
        else:
            error = None
        if error is not None:
            # Raised outside the except block so the SDK's exception, which holds the request and its
            # Authorization header, is not chained to ours.
            raise error
        choices = getattr(response, "choices", None)
        if not choices:
            # The SDK hands back a plain string when a proxy or web page answers 200 with something not JSON.
            raise TransientError("llm_unavailable", "the LLM endpoint answered with no choices")
        choice = choices[0]
        usage = response.usage
        return Completion(
            text=(choice.message.content or "").strip(),
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
            finish_reason=choice.finish_reason,
        )

    async def close(self) -> None:
        await self._client.close()


def _classify(exc: Exception) -> Exception:
    """Permanent (the same request can never succeed) or transient (it may, later)."""
    import openai

    if isinstance(exc, openai.RateLimitError):
        return TransientError("llm_unavailable", f"the LLM endpoint is throttling (429): "
                                                 f"{redact(_error_message(exc))}")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        detail = f"({status} {_error_code(exc)}): {redact(_error_message(exc))}"
        if 400 <= status < 500 and status not in (408, 409):
            return JobFailure("llm_unavailable", f"the LLM endpoint refused the request {detail}")
        return TransientError("llm_unavailable", f"the LLM endpoint failed {detail}")
    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
        return TransientError("llm_unavailable", f"the LLM endpoint could not be reached: {type(exc).__name__}")
    if isinstance(exc, ValueError):  # a 200 whose JSON body is cut or malformed
        return TransientError("llm_unavailable", "the LLM endpoint sent an unreadable answer")
    raise exc


def _error_field(exc: Any, name: str) -> str | None:
    """A field of the provider's error object (the SDK keeps ``{"error": {...}}`` or its inner object)."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body["error"] if isinstance(body.get("error"), dict) else body
        if inner.get(name):
            return str(inner[name])
    return None


def _error_code(exc: Any) -> str:
    return _error_field(exc, "code") or type(exc).__name__


def _error_message(exc: Any) -> str:
    return (_error_field(exc, "message") or str(getattr(exc, "message", exc)))[:300]
