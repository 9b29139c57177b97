"""Map and reduce mechanics: a thousand chunks reduce within the context window, levels shrink, chunks split exactly."""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.documents.chunking import Chunk
from chalicelib.documents.tokens import get_encoding
from chalicelib.llm.chat import Completion, ContextLengthExceeded
from chalicelib.pipeline.mapreduce import (
    PARTIAL_TAG_TOKENS,
    Partial,
    ReduceBudget,
    UnusableAnswer,
    estimate_reduce,
    halve_chunk,
    map_chunks,
    reduce_hierarchically,
)
from chalicelib.tasks.prompt import PromptTask
from chalicelib.tasks.summarize import TOKENS_PER_WORD, LLMSummarizer

pytestmark = pytest.mark.timeout(60)
ENCODING = get_encoding("gpt-4o-mini")


def count(text: str) -> int:
    return len(ENCODING.encode(text, disallowed_special=()))


class ContextCheckingChat:
    """A model with a context window: it refuses what would not fit and answers with every token it may use."""

    def __init__(self, context_tokens: int, answer_share: float = 1.0) -> None:
        self.context_tokens = context_tokens
        self.answer_share = answer_share
        self.calls: list[tuple[int, int]] = []

    async def complete(self, messages, *, max_tokens: int, **options) -> Completion:
        prompt = sum(count(m["content"]) + 3 for m in messages) + 3
        assert prompt + max_tokens <= self.context_tokens, f"{prompt} + {max_tokens} > {self.context_tokens}"
        self.calls.append((prompt, max_tokens))
        answer_tokens = max(1, int(max_tokens * self.answer_share))
        return Completion(" word" * answer_tokens, prompt, answer_tokens, "stop")


def full_size_partials(n: int, tokens: int) -> list[Partial]:
    return [Partial(" word" * tokens, i + 1, i + 1) for i in range(n)]


def test_a_thousand_full_size_summaries_reduce_within_the_context_window():
    chat = ContextCheckingChat(context_tokens=12_000)
    summarizer = LLMSummarizer(chat, target_words=200, chunk_count=1000, count_tokens=count, context_tokens=12_000)
    partials = full_size_partials(1000, summarizer.map_words * TOKENS_PER_WORD)  # every map answer at its cap

    summary, levels = asyncio.run(summarizer.reduce(partials, asyncio.Semaphore(16)))

    assert (summary.first_page, summary.last_page) == (1, 1000)
    assert levels <= 4
    assert len(chat.calls) < 1000 / 10
    assert all(prompt + answer <= 12_000 for prompt, answer in chat.calls)


def test_the_prompt_task_reduces_a_thousand_answers_in_a_small_context_too():
    chat = ContextCheckingChat(context_tokens=4_000)
    task = PromptTask(chat, map_instruction="List the names.", reduce_instruction="Merge the lists.",
                      map_tokens=300, reduce_tokens=600, context_tokens=4_000, count_tokens=count)
    partials = full_size_partials(1000, 300)

    answer, levels = asyncio.run(task.reduce(partials, asyncio.Semaphore(16)))

    assert (answer.first_page, answer.last_page) == (1, 1000)
    assert 2 <= levels <= math.ceil(math.log2(1000))
    assert len(chat.calls) < 1000


def test_the_prompt_task_applies_its_reduce_instruction_to_a_single_answer():
    chat = ContextCheckingChat(context_tokens=8_000)
    task = PromptTask(chat, map_instruction="m", reduce_instruction="r", map_tokens=100, reduce_tokens=100,
                      context_tokens=8_000, count_tokens=count)

    _answer, levels = asyncio.run(task.reduce(full_size_partials(1, 50), asyncio.Semaphore(1)))

    assert levels == 1 and len(chat.calls) == 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=1500),
       context=st.integers(min_value=1_000, max_value=20_000), output=st.integers(min_value=20, max_value=400),
       final_output=st.integers(min_value=20, max_value=3_000))
def test_every_level_shrinks_and_every_prompt_fits(sizes, context, output, final_output):
    budget = ReduceBudget(context_tokens=context, overhead_tokens=150, partial_tokens=400 + PARTIAL_TAG_TOKENS,
                          output_tokens=output, final_output_tokens=final_output)
    groups: list[tuple[int, bool]] = []

    async def combine(group, final):
        total = sum(p for p in group)
        groups.append((total, final))
        assert total <= (budget.final_group_tokens if final else budget.group_tokens)
        return (final_output if final else output) + PARTIAL_TAG_TOKENS

    async def run():
        return await reduce_hierarchically([s + PARTIAL_TAG_TOKENS for s in sizes], tokens=lambda p: p,
                                           combine=combine, budget=budget)

    _answer, levels = asyncio.run(run())

    assert levels <= math.ceil(math.log2(len(sizes))) + 1 if len(sizes) > 1 else levels == 0
    assert sum(1 for _total, final in groups if final) == (1 if len(sizes) > 1 else 0)


def test_the_reduce_estimate_is_close_to_what_the_reduce_spends():
    chat = ContextCheckingChat(context_tokens=12_000, answer_share=2 / 3)  # answers at the expected length
    summarizer = LLMSummarizer(chat, target_words=200, chunk_count=300, count_tokens=count, context_tokens=12_000)
    partials = full_size_partials(300, summarizer.map_words * 2)

    asyncio.run(summarizer.reduce(partials, asyncio.Semaphore(16)))
    prompt, completion = summarizer.estimate_reduce(300)

    spent_prompt = sum(p for p, _a in chat.calls)
    spent_completion = sum(int(a * 2 / 3) for _p, a in chat.calls)
    assert 0.7 <= prompt / spent_prompt <= 1.3
    assert 0.5 <= completion / spent_completion <= 1.5


def test_estimate_of_a_single_answer_is_free():
    budget = ReduceBudget(context_tokens=12_000, overhead_tokens=200, partial_tokens=800, output_tokens=750,
                          final_output_tokens=600)
    assert estimate_reduce(1, partial_tokens=400, budget=budget) == (0, 0)


# --- halving a chunk that does not fit ------------------------------------------------------------------------------

def _document_chunk() -> tuple[Chunk, list[int]]:
    pages = ["Alpha sentence about lighthouses and ships. " * 30, "Beta sentence about railways and tunnels. " * 30]
    text = "\f".join(pages)
    breaks = [len(pages[0]) + 1]
    start = 10
    body = text[start:]
    return Chunk(index=3, text=body, start=start, end=len(text), first_page=1, last_page=2, tokens=count(body)), breaks


def test_a_halved_chunk_keeps_its_exact_offsets_and_pages():
    chunk, breaks = _document_chunk()

    def page_at(offset: int) -> int:
        return 1 if offset < breaks[0] else 2

    left, right = halve_chunk(chunk, encoding=ENCODING, page_at=page_at)

    assert left.text + right.text == chunk.text
    assert (left.start, left.end, right.start, right.end) == (chunk.start, right.start, left.end, chunk.end)
    assert left.index == right.index == chunk.index
    assert abs(left.tokens - right.tokens) <= chunk.tokens * 0.1
    assert left.text[-1].isspace() or right.text[0].isspace()  # cut at whitespace, no word split
    assert (left.first_page, right.last_page) == (1, 2)


class _SplittingTask:
    """Answers chunks of at most ``limit`` tokens; refuses larger ones as the model's context would."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.asked: list[Chunk] = []

    async def map(self, chunk: Chunk) -> str:
        self.asked.append(chunk)
        if chunk.tokens > self.limit:
            raise ContextLengthExceeded("too long", status=400, provider_code="context_length_exceeded",
                                        param="messages")
        if "SKIP" in chunk.text:
            raise UnusableAnswer("not valid")
        return chunk.text


def _map(task, chunks, **options):
    def halve(chunk):
        return halve_chunk(chunk, encoding=ENCODING, page_at=lambda offset: 1)
    return asyncio.run(map_chunks(task, chunks, gate=asyncio.Semaphore(4), halve=halve, **options))


def test_a_chunk_the_model_finds_too_long_is_answered_in_halves():
    chunk, _breaks = _document_chunk()
    task = _SplittingTask(limit=chunk.tokens // 2 + 20)

    answers = _map(task, [chunk], known={})

    assert "".join(answers) == chunk.text
    assert len(answers) == 2 and len(task.asked) == 3


def test_a_chunk_that_fits_nothing_fails_the_job_after_a_few_halvings():
    chunk, _breaks = _document_chunk()

    with pytest.raises(ContextLengthExceeded):
        _map(_SplittingTask(limit=5), [chunk], known={})


def test_known_answers_are_not_asked_again_and_unusable_ones_are_skipped_with_a_warning():
    chunks = [Chunk(index=i, text=f"chunk {i} {'SKIP' if i == 2 else ''}", start=i * 20, end=i * 20 + 10,
                    first_page=1, last_page=1, tokens=5) for i in range(4)]
    task = _SplittingTask(limit=100)
    warnings: list[str] = []
    done: list[int] = []

    answers = _map(task, chunks, known={0: ["cached 0"]}, warn=warnings.append, on_done=done.append)

    assert answers == ["cached 0", "chunk 1 ", "chunk 3 "]
    assert [c.index for c in task.asked] == [1, 2, 3]
    assert len(warnings) == 1 and "chunk 2" in warnings[0]
    assert sorted(done) == [2, 3, 4]
