"""Unit tests of the small chalicelib modules: config, tasks, usage, tokens, summarize, jobs."""

from __future__ import annotations

import asyncio
import sys

import pytest

from chalicelib.config import ConfigError, load_settings, price_table
from chalicelib.documents.chunking import Chunk
from chalicelib.errors import RequestError
from chalicelib.llm.usage import Usage, cost_usd
from chalicelib.tasks.spec import parse_task, task_from_query
from chalicelib.tasks.summarize import ExtractiveSummarizer, Partial, map_words_for, reduce_partials
from tests.support import PROJECT

# --- config ----------------------------------------------------------------------------------------------------------

def test_settings_default_to_stage_derived_names_and_offline_provider():
    settings = load_settings({"DOCPIPE_STAGE": "dev"})
    assert settings.jobs_queue == "docpipe-dev-jobs"
    assert settings.dead_letter_queue == "docpipe-dev-jobs-dlq"
    assert settings.uses_openai is False


def test_settings_use_openai_when_a_base_url_alone_is_set():
    assert load_settings({"OPENAI_BASE_URL": "http://127.0.0.1:11434/v1"}).uses_openai is True


@pytest.mark.parametrize("env, message", [
    ({"DOCPIPE_LLM_CONCURRENCY": "many"}, "must be an integer"),
    ({"DOCPIPE_LLM_CONCURRENCY": "0"}, "at least 1"),
    ({"DOCPIPE_CHUNK_TOKENS": "100", "DOCPIPE_CHUNK_OVERLAP_TOKENS": "60"}, "less than half"),
    ({"DOCPIPE_LLM_TIMEOUT_SECONDS": "-1"}, "positive"),
])
def test_invalid_settings_are_refused_with_the_variable_named(env, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


# --- tasks -----------------------------------------------------------------------------------------------------------

def test_a_bare_task_name_becomes_a_task_object():
    assert parse_task("summarize") == {"type": "summarize"}


def test_query_string_options_are_typed():
    assert task_from_query({"task": "summarize", "target_words": "80", "max_cost_usd": "0.5"}) == \
        {"type": "summarize", "target_words": 80, "max_cost_usd": 0.5}


@pytest.mark.parametrize("raw, code", [
    ({"type": "translate"}, "unknown_task"),
    ({"type": "summarize", "colour": "red"}, "invalid_task"),
    ({"type": "summarize", "target_words": True}, "invalid_task"),
    ({"type": "summarize", "max_cost_usd": -1}, "invalid_task"),
    ({"type": "summarize", "model": ""}, "invalid_task"),
    ([], "invalid_task"),
])
def test_invalid_tasks_are_client_errors(raw, code):
    with pytest.raises(RequestError) as info:
        parse_task(raw)
    assert info.value.code == code and info.value.status == 400


# --- usage -----------------------------------------------------------------------------------------------------------

def test_cost_follows_the_price_table_and_is_unknown_for_unpriced_models():
    prices = price_table({})
    assert cost_usd(prices, "gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)
    assert cost_usd(prices, "my-local-model", 10, 10) is None


def test_price_table_overrides_come_from_the_environment():
    prices = price_table({"DOCPIPE_PRICES": '{"my-local-model": [0, 0]}'})
    assert cost_usd(prices, "my-local-model", 10, 10) == 0


def test_usage_accumulates_calls_and_cost():
    usage = Usage(model="gpt-4o-mini", provider="openai")
    usage.add_call(1000, 200, price_table({}))
    usage.add_call(1000, 200, price_table({}))
    assert (usage.calls, usage.total_tokens) == (2, 2400)
    assert usage.cost_usd == pytest.approx((2000 * 0.15 + 400 * 0.60) / 1e6)


# --- tokens ----------------------------------------------------------------------------------------------------------

def test_tokenizer_works_offline_from_the_shipped_encoding_files(tmp_path, monkeypatch):
    import subprocess

    code = ("from chalicelib.documents.tokens import count_tokens, encoding_name_for;"
            "print(count_tokens('hello world', 'gpt-4o-mini'), encoding_name_for('gpt-4'),"
            " encoding_name_for('llama3.1'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "TIKTOKEN_CACHE_DIR": str(tmp_path),
                              "HTTPS_PROXY": "http://127.0.0.1:9"}, cwd=str(PROJECT))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "cl100k_base", "o200k_base"]


# --- summarize -------------------------------------------------------------------------------------------------------

def _chunk(index: int, text: str, start: int, page: int) -> Chunk:
    return Chunk(index=index, text=text, start=start, end=start + len(text), first_page=page, last_page=page,
                 tokens=len(text) // 4)


def test_extractive_summary_quotes_document_sentences_with_their_pages():
    page1 = "Lighthouses warned ships about dangerous rocks near the coast. Keepers lit the lamp every evening."
    page2 = "The lamp in the lighthouse burned oil until electric lamps arrived. Ships still watch for the lamp."
    text = page1 + "\n\n" + page2
    starts = [0, len(page1) + 2]
    chunks = [_chunk(0, page1, 0, 1), _chunk(1, page2, starts[1], 2)]
    summarizer = ExtractiveSummarizer(map_words=map_words_for(40, 2),
                                      page_at=lambda offset: 1 if offset < starts[1] else 2)
    summarizer.prepare(text, chunks)

    async def run():
        partials = [await summarizer.map(c) for c in chunks]
        return await reduce_partials(summarizer, partials, context_tokens=1000, target_words=40)

    summary, levels = asyncio.run(run())
    assert levels == 1
    for sentence, page in summary.sentences:
        assert sentence in (page1 if page == 1 else page2)
    assert "(p. " in summary.text


class _CountingSummarizer:
    """A stand-in model that records every reduce call."""

    def __init__(self):
        self.calls = 0

    def tokens(self, partial):
        return 100

    async def combine(self, group, words):
        self.calls += 1
        return Partial(f"combined {len(group)}", min(p.first_page for p in group), max(p.last_page for p in group))


def test_reduce_of_a_thousand_partials_finishes_within_the_context_budget():
    summarizer = _CountingSummarizer()
    partials = [Partial(f"p{i}", i + 1, i + 1) for i in range(1000)]
    summary, levels = asyncio.run(reduce_partials(summarizer, partials, context_tokens=2000, target_words=100))
    assert (summary.first_page, summary.last_page) == (1, 1000)
    assert levels <= 4
    assert summarizer.calls < 1000


def test_a_single_partial_needs_no_reduce_call():
    summarizer = _CountingSummarizer()
    summary, levels = asyncio.run(reduce_partials(summarizer, [Partial("only", 1, 3)], context_tokens=100,
                                                  target_words=50))
    assert (summary.text, levels, summarizer.calls) == ("only", 0, 0)
