"""chalicelib.llm.chat against a fake OpenAI server: the real openai SDK does the HTTP, retries and timeouts."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from chalicelib.errors import JobFailure, Throttled, TransientError
from chalicelib.llm.chat import ChatModel, Completion, redact
from tests.support.fake_openai import FakeOpenAI

pytestmark = pytest.mark.timeout(60)

API_KEY = "sk-test-secret-key-123456"
MODEL = "gpt-4o-mini"


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server
    assert not server.errors, f"the fake server failed internally: {server.errors!r}"


def document_messages(text: str, pages: str = "1") -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You summarize one excerpt of a longer document."},
        {"role": "user", "content": f'<document pages="{pages}">\n{text}\n</document>'},
    ]


async def _complete(base_url: str, messages: list[dict[str, str]], *, timeout: float = 5.0, max_retries: int = 0,
                    max_tokens: int = 300) -> Completion:
    model = ChatModel(model=MODEL, api_key=API_KEY, base_url=base_url, timeout=timeout, max_retries=max_retries)
    try:
        return await model.complete(messages, max_tokens=max_tokens)
    finally:
        await model.close()


def complete(base_url: str, messages: list[dict[str, str]] | None = None, **kwargs) -> Completion:
    return asyncio.run(_complete(base_url, messages or document_messages("Some text."), **kwargs))


def fail(exc_type: type[BaseException], base_url: str, **kwargs) -> BaseException:
    with pytest.raises(exc_type) as info:
        complete(base_url, **kwargs)
    return info.value


# --- success ---------------------------------------------------------------------------------------------------------

def test_completion_returns_text_token_usage_and_finish_reason(fake):
    messages = document_messages("The quarterly report shows revenue grew by twelve percent. " * 20, pages="4-6")

    result = complete(fake.base_url, messages)

    assert result.text.startswith("Summary of 180 words (p. 4): The quarterly report shows revenue grew by twelve")
    prompt_chars = sum(len(m["content"]) for m in messages)
    assert result.prompt_tokens == prompt_chars // 4 + 1  # the fake's usage.prompt_tokens, not completion_tokens
    assert result.completion_tokens == len(result.text) // 4 + 1
    assert result.prompt_tokens > result.completion_tokens
    assert result.finish_reason == "stop"


def test_completion_text_is_the_model_content_without_surrounding_whitespace(fake):
    fake.responder = lambda request: "\n  A short summary (p. 2).  \n"

    assert complete(fake.base_url).text == "A short summary (p. 2)."


def test_document_text_and_model_name_reach_the_endpoint(fake):
    messages = document_messages("Zebras migrate across the Serengeti every spring.", pages="7-9")

    result = complete(fake.base_url, messages, max_tokens=123)

    assert fake.calls == 1
    sent = fake.chat_requests[0]
    assert sent["json"]["model"] == MODEL
    assert sent["json"]["messages"] == messages
    assert sent["json"]["max_tokens"] == 123
    assert sent["json"]["temperature"] == 0
    assert sent["headers"]["authorization"] == f"Bearer {API_KEY}"
    assert "(p. 7)" in result.text and "Zebras migrate across the Serengeti" in result.text


def test_reply_cut_by_max_tokens_reports_finish_reason_length(fake):
    fake.responder = lambda request: "word " * 200

    result = complete(fake.base_url, max_tokens=10)

    assert result.finish_reason == "length"
    assert result.completion_tokens == 10


def test_answer_without_choices_is_transient(fake):
    empty = {"id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": MODEL, "choices": []}
    fake.script([("status", 200, None, empty)])

    error = fail(TransientError, fake.base_url)

    assert error.code == "llm_unavailable"
    assert "no choices" in error.message


# --- permanent failures ----------------------------------------------------------------------------------------------

def test_rejected_api_key_fails_the_job_without_retrying(fake):
    fake.script([("status", 401)])  # the real invalid_api_key body

    error = fail(JobFailure, fake.base_url, max_retries=2)

    assert error.code == "llm_unavailable"
    assert "401" in error.message and "invalid_api_key" in error.message
    assert API_KEY not in error.message
    assert fake.calls == 1


@pytest.mark.parametrize("status, code", [(400, None), (403, "unsupported_country_region_territory"),
                                          (404, "model_not_found")])
def test_request_the_endpoint_refuses_fails_the_job_without_retrying(fake, status, code):
    fake.script([("status", status)])

    error = fail(JobFailure, fake.base_url, max_retries=2)

    assert error.code == "llm_unavailable"
    assert str(status) in error.message
    if code:
        assert code in error.message
    assert fake.calls == 1


def test_provider_message_echoing_the_api_key_is_redacted(fake):
    body = {"error": {"message": f"Incorrect API key provided: {API_KEY}. You can find your API key at "
                                 "https://platform.openai.com/account/api-keys.",
                      "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}
    fake.script([("status", 401, None, body)])

    error = fail(JobFailure, fake.base_url)

    assert "Incorrect API key provided" in error.message
    assert API_KEY not in error.message and "secret-key-123456" not in error.message
    assert "secret" not in str(error.to_dict())


@pytest.mark.parametrize("text, secret", [
    ("Incorrect API key provided: sk-test-secret-key-123456.", "secret-key-123456"),
    ("key sk-proj-AbCdEfGh1234_ijkl-5678 rejected", "AbCdEfGh1234_ijkl-5678"),
    ("Incorrect API key provided: sk-abcd********************wxyz.", "wxyz"),  # OpenAI's masked echo
])
def test_redact_removes_api_keys_from_messages(text, secret):
    cleaned = redact(text)

    assert secret not in cleaned
    assert "sk-" in cleaned  # says that a key was there
    assert cleaned.split("sk-")[0] == text.split("sk-")[0]  # the rest of the message is kept


def test_redact_keeps_messages_without_keys_unchanged():
    text = "Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 3, Used 3, Requested 1."

    assert redact(text) == text


# --- transient failures ----------------------------------------------------------------------------------------------

def test_rate_limit_with_retry_after_is_retried_after_the_advertised_wait(fake):
    fake.script([("status", 429, {"Retry-After": "1"})])

    started = time.monotonic()
    result = complete(fake.base_url, max_retries=1)
    elapsed = time.monotonic() - started

    assert result.text.startswith("Summary of")
    assert fake.calls == 2
    first, second = fake.chat_requests
    assert second["time"] - first["time"] >= 0.9  # the SDK waited for Retry-After (lower bound only)
    assert elapsed >= 0.9


def test_rate_limits_are_waited_out_without_spending_the_transient_retries(fake):
    fake.script([("status", 429, {"retry-after-ms": "50"})] * 3)

    result = complete(fake.base_url, max_retries=0)

    assert result.text.startswith("Summary of") and result.retries == 3 and fake.calls == 4


def test_a_rate_limit_longer_than_the_invocation_may_wait_is_throttled_with_its_wait(fake):
    fake.script([("status", 429, {"Retry-After": "120"})])

    error = fail(Throttled, fake.base_url, max_retries=3)

    assert isinstance(error, TransientError) and error.code == "llm_unavailable"
    assert "429" in error.message and "Rate limit reached" in error.message
    assert error.retry_after == 120 and fake.calls == 1


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_error_is_transient(fake, status):
    fake.script([("status", status)])

    error = fail(TransientError, fake.base_url, max_retries=0)

    assert error.code == "llm_unavailable"
    assert str(status) in error.message
    assert fake.calls == 1


def test_server_error_then_success_is_retried_by_the_sdk(fake):
    fake.script([("status", 500, {"retry-after-ms": "20"})])  # keeps the SDK's backoff (0.5 s+) short

    result = complete(fake.base_url, max_retries=1)

    assert result.finish_reason == "stop"
    assert fake.calls == 2


def test_endpoint_that_hangs_past_the_timeout_is_transient(fake):
    fake.script([("hang", 2.0)])

    error = fail(TransientError, fake.base_url, timeout=0.5, max_retries=0)

    assert error.code == "llm_unavailable"
    assert "could not be reached" in error.message and "Timeout" in error.message
    assert fake.calls == 1


def test_connection_closed_without_answer_is_transient(fake):
    fake.script([("drop",)])

    error = fail(TransientError, fake.base_url, max_retries=0)

    assert "could not be reached" in error.message


def test_refused_connection_is_transient():
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    error = fail(TransientError, f"http://127.0.0.1:{port}/v1", max_retries=0)

    assert error.code == "llm_unavailable"
    assert "could not be reached" in error.message


# An endpoint that answers 200 with something that is not a chat completion (a proxy's HTML page, a base URL that
# points at a web server, a truncated body) must still end in the worker's error vocabulary.

def test_success_status_with_html_body_is_an_llm_error(fake):
    fake.script([("status", 200, {"Content-Type": "text/html"}, "<html><body>Welcome to nginx!</body></html>")])

    with pytest.raises((TransientError, JobFailure)) as info:
        complete(fake.base_url)
    assert info.value.code == "llm_unavailable"


def test_success_status_with_malformed_json_is_an_llm_error(fake):
    fake.script([("status", 200, {"Content-Type": "application/json"}, '{"id": "chatcmpl-x", "choi')])

    with pytest.raises((TransientError, JobFailure)) as info:
        complete(fake.base_url)
    assert info.value.code == "llm_unavailable"


# --- parallelism -----------------------------------------------------------------------------------------------------

def test_concurrent_completions_are_served_in_parallel(fake):
    fake.latency = 0.3

    async def run_all() -> list[Completion]:
        model = ChatModel(model=MODEL, api_key=API_KEY, base_url=fake.base_url, timeout=10, max_retries=0)
        try:
            return await asyncio.gather(*(
                model.complete(document_messages(f"chunk-{i} of the report", pages=str(i + 1)), max_tokens=100)
                for i in range(20)))
        finally:
            await model.close()

    results = asyncio.run(run_all())

    assert fake.calls == 20
    assert fake.max_concurrency >= 10
    for i, result in enumerate(results):  # each answer belongs to its own request
        assert f"(p. {i + 1}): chunk-{i} of the report" in result.text
