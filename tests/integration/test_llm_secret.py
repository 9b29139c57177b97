"""The LLM key on AWS: read from the stage's secret through Powertools Parameters, cached across invocations, and
rotated without a redeploy; locally the environment variables keep working."""

from __future__ import annotations

import json
import uuid

import pytest

from chalicelib.aws import clients as aws
from chalicelib.aws import secret_reader
from chalicelib.config import ConfigError, load_settings, with_llm_secret
from chalicelib.errors import TransientError
from chalicelib.llm import LLMEndpoint


def llm_secret_reader(name: str, max_age_seconds: int):
    return secret_reader(aws.client("secretsmanager"), name, max_age_seconds=max_age_seconds)


def endpoint_with_secret(read) -> LLMEndpoint:
    return LLMEndpoint(load_settings({"DOCPIPE_LLM_SECRET": "docpipe/dev/llm"}), dynamodb=aws.client("dynamodb"),
                       secret=read)


def test_locally_the_environment_variables_set_the_endpoint_and_no_secret_is_read(services):
    settings = load_settings({"OPENAI_API_KEY": "sk-local", "OPENAI_BASE_URL": "http://127.0.0.1:11434/v1"})
    assert (settings.llm_api_key, settings.llm_base_url, settings.llm_secret_name) == \
        ("sk-local", "http://127.0.0.1:11434/v1", None)
    assert services.settings.llm_secret_name is None  # the suite's settings name no secret
    before = services.llm.settings
    services.llm.refresh()
    assert services.llm.settings is before


@pytest.mark.parametrize("secret, key, url", [
    ('{"api_key": "sk-from-secret"}', "sk-from-secret", "http://env.example/v1"),
    ('{"api_key": "sk-from-secret", "base_url": "https://llm.example/v1"}', "sk-from-secret", "https://llm.example/v1"),
    ("sk-bare-key", "sk-bare-key", "http://env.example/v1"),
    (None, "sk-env", "http://env.example/v1"),
])
def test_the_secret_sets_what_it_holds_and_the_environment_the_rest(secret, key, url):
    base = load_settings({"OPENAI_API_KEY": "sk-env", "OPENAI_BASE_URL": "http://env.example/v1",
                          "DOCPIPE_LLM_SECRET": "docpipe/dev/llm"})
    settings = with_llm_secret(base, secret)
    assert (settings.llm_api_key, settings.llm_base_url) == (key, url)
    assert settings.uses_openai


@pytest.mark.parametrize("secret", ['{"api_key": ', '["sk-1"]', '{"api_key": 42}'])
def test_a_malformed_secret_is_refused_without_repeating_its_value(secret):
    base = load_settings({"DOCPIPE_LLM_SECRET": "docpipe/dev/llm"})
    with pytest.raises(ConfigError, match="docpipe/dev/llm") as raised:
        with_llm_secret(base, secret)
    assert "sk-1" not in str(raised.value)


def test_a_rotated_key_replaces_the_old_one_and_an_empty_secret_leaves_the_offline_provider(services, monkeypatch):
    values = iter(['{"api_key": "sk-first"}', '{"api_key": "sk-rotated"}', None])
    warnings = []
    monkeypatch.setattr("chalicelib.llm.endpoint.logger.warning", lambda message, **kw: warnings.append(message))
    endpoint = endpoint_with_secret(lambda: next(values))

    endpoint.refresh()
    assert endpoint.settings.llm_api_key == "sk-first"
    endpoint.refresh()
    assert endpoint.settings.llm_api_key == "sk-rotated"
    endpoint.refresh()
    assert endpoint.settings.llm_api_key is None and not endpoint.uses_openai
    assert len(warnings) == 1 and "make llm-key" in warnings[0]


def test_a_secret_that_cannot_be_read_is_a_transient_llm_error(services):
    def denied():
        raise RuntimeError("AccessDeniedException")

    endpoint = endpoint_with_secret(denied)
    with pytest.raises(TransientError) as raised:
        endpoint.refresh()
    assert raised.value.code == "llm_unavailable" and "docpipe/dev/llm" in raised.value.message


def test_the_secret_is_fetched_once_and_served_from_the_cache_until_it_is_old(services):
    secrets = aws.client("secretsmanager")
    name = f"docpipe/test/llm-{uuid.uuid4().hex[:8]}"
    secrets.create_secret(Name=name, SecretString=json.dumps({"api_key": "sk-cached"}))
    calls = []
    def handler(**kwargs):
        return calls.append(kwargs["model"].name)
    secrets.meta.events.register("before-call.secrets-manager.GetSecretValue", handler)
    try:
        read = llm_secret_reader(name, max_age_seconds=300)
        first = read()
        secrets.put_secret_value(SecretId=name, SecretString=json.dumps({"api_key": "sk-rotated"}))
        second = read()  # a warm invocation within max_age: no call, the cached value
        fresh = llm_secret_reader(name, max_age_seconds=300)()  # a new container reads the rotated key
    finally:
        secrets.meta.events.unregister("before-call.secrets-manager.GetSecretValue", handler)
    assert (first, second, fresh) == ('{"api_key": "sk-cached"}', '{"api_key": "sk-cached"}',
                                      '{"api_key": "sk-rotated"}')
    assert calls == ["GetSecretValue", "GetSecretValue"]


def test_a_secret_without_a_value_reads_as_none(services):
    secrets = aws.client("secretsmanager")
    name = f"docpipe/test/empty-{uuid.uuid4().hex[:8]}"
    secrets.create_secret(Name=name, Description="created by the deploy; make llm-key sets it")
    assert llm_secret_reader(name, max_age_seconds=300)() is None
