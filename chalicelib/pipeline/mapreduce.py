"""Map every chunk in parallel, then reduce the answers level by level until one is left.

The task types (summarize, extract, classify, prompt) differ in what they ask and how they merge; what they share
lives here:

* ``map_chunks`` runs one task call per chunk, at most ``gate``'s worth in flight. A chunk the model finds too long
  (a context-length error) is halved by tokens — offsets and pages kept exact — and each half is asked instead.
* ``reduce_hierarchically`` combines text answers in token-budgeted groups: every prompt fits the context window with
  room for its answer, every level strictly shrinks the number of answers, and a maximum depth stops the impossible.
  A thousand chunks reduce in three levels, never in a loop.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from chalicelib.documents import Chunk
from chalicelib.errors import JobFailure, UnusableAnswer
from chalicelib.llm import ContextLengthExceeded

# The tags and attributes around one partial answer in a reduce prompt.
PARTIAL_TAG_TOKENS = 12
# A chunk is halved at most this often (1/8 of its tokens) before its context-length error fails the job.
MAX_SPLITS = 3
MIN_SPLIT_TOKENS = 32


class ReduceDidNotConverge(RuntimeError):
    pass


@dataclass
class Partial:
    """A text answer about a span of the document; ``sentences`` holds (text, page) pairs for extractive answers."""

    text: str
    first_page: int
    last_page: int
    sentences: list[tuple[str, int]] = field(default_factory=list)

    @property
    def pages(self) -> str:
        return str(self.first_page) if self.first_page == self.last_page else f"{self.first_page}-{self.last_page}"

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "first_page": self.first_page, "last_page": self.last_page,
                "sentences": [list(s) for s in self.sentences]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Partial:
        return cls(data["text"], data["first_page"], data["last_page"], [(t, p) for t, p in data.get("sentences", [])])


def merged_span(partials: list[Any]) -> tuple[int, int]:
    return min(p.first_page for p in partials), max(p.last_page for p in partials)


class ChunkTask(Protocol):
    """What the pipeline needs from a task type (``tasks``: summarize, extract, classify, prompt)."""

    provider: str
    prompt_version: str

    def cache_params(self) -> dict[str, Any] | None:
        """The task parameters that shape a map answer (part of its cache key); None: do not cache (offline)."""

    def estimate_map(self, chunk: Chunk) -> tuple[int, int]:
        """Expected (prompt, completion) tokens of the chunk's map call."""

    def estimate_reduce(self, partial_count: int) -> tuple[int, int]:
        """Expected (prompt, completion) tokens of the reduce of ``partial_count`` map answers."""

    async def map(self, chunk: Chunk) -> Any: ...

    def dump(self, partial: Any) -> Any:
        """A JSON value for the cache."""

    def load(self, data: Any) -> Any: ...

    async def reduce(self, partials: list[Any], gate: asyncio.Semaphore) -> tuple[Any, int]:
        """The final answer and the number of reduce levels that called the model."""

    async def reduce_step(self, partials: list[Any], gate: asyncio.Semaphore,
                          levels: int) -> tuple[list[Any], int, Any | None]:
        """``reduce`` one level at a time, for a workflow that runs each level as a stage of its own: (the partials
        left, the levels that called the model so far, the final answer once the last level is done, else None)."""

    def result(self, final: Any) -> dict[str, Any]:
        """The task's fields of the result document."""


# --- map -------------------------------------------------------------------------------------------------------------

def halve_chunk(chunk: Chunk, *, encoding: Any, page_at: Callable[[int], int]) -> tuple[Chunk, Chunk]:
    """Two chunks of about half the tokens each, cut at whitespace near the middle; raises ValueError if too small."""
    tokens = encoding.encode(chunk.text, disallowed_special=())
    if len(tokens) < MIN_SPLIT_TOKENS:
        raise ValueError("chunk too small to split")
    _text, starts = encoding.decode_with_offsets(tokens)
    middle = starts[len(tokens) // 2]
    # Prefer the whitespace nearest the middle (within a quarter of the text) so no word is cut.
    window = len(chunk.text) // 4
    spaces = [i for i in range(max(1, middle - window), min(len(chunk.text) - 1, middle + window))
              if chunk.text[i].isspace()]
    cut = min(spaces, key=lambda i: abs(i - middle)) if spaces else middle
    if not 0 < cut < len(chunk.text):
        raise ValueError("chunk cannot be cut")

    def part(start: int, end: int) -> Chunk:
        text = chunk.text[start:end]
        first = chunk.start + start
        return Chunk(index=chunk.index, text=text, start=first, end=chunk.start + end, first_page=page_at(first),
                     last_page=page_at(max(first, chunk.start + end - 1)),
                     tokens=len(encoding.encode(text, disallowed_special=())))

    return part(0, cut), part(cut, len(chunk.text))


async def answer_chunk(task: ChunkTask, chunk: Chunk, *, halve: Callable[[Chunk], tuple[Chunk, Chunk]],
                       splits: int = 0) -> list[Any]:
    """The chunk's answers: one, or one per piece when the model's context was too small for the whole chunk."""
    try:
        return [await task.map(chunk)]
    except ContextLengthExceeded:
        if splits >= MAX_SPLITS:
            raise
        try:
            left, right = halve(chunk)
        except ValueError:
            raise ContextLengthExceeded(f"chunk {chunk.index} (pages {chunk.pages}) does not fit the model's context "
                                        f"even cut to {chunk.tokens} tokens", status=400,
                                        provider_code="context_length_exceeded", param="messages") from None
        return [*await answer_chunk(task, left, halve=halve, splits=splits + 1),
                *await answer_chunk(task, right, halve=halve, splits=splits + 1)]


async def map_chunks(task: ChunkTask, chunks: list[Chunk], *, gate: asyncio.Semaphore, known: dict[int, list[Any]],
                     halve: Callable[[Chunk], tuple[Chunk, Chunk]],
                     on_answer: Callable[[Chunk, list[Any]], Awaitable[None]] | None = None,
                     on_done: Callable[[int], None] | None = None,
                     warn: Callable[[str], None] = lambda message: None,
                     on_skip: Callable[[Chunk], Awaitable[None]] | None = None,
                     stop_starting: Callable[[], bool] | None = None) -> list[Any]:
    """Every chunk's answers in document order; ``known`` answers (from the cache) are not asked again.

    The first permanent error cancels the calls still running and is raised; ``UnusableAnswer`` skips its chunk
    (``on_skip`` hears of it). Once ``stop_starting()`` is true no further chunk is started: the calls in flight
    finish, and the chunks never started are left out (a later invocation asks them).
    """
    answers: list[list[Any]] = [known.get(chunk.index, []) for chunk in chunks]
    done = sum(1 for chunk in chunks if chunk.index in known)
    failed = False

    def finished() -> None:
        nonlocal done
        done += 1
        if on_done is not None:
            on_done(done)

    async def one(position: int, chunk: Chunk) -> None:
        nonlocal failed
        try:
            async with gate:
                # The slot a failed call frees wakes the next caller before the cancellation reaches it.
                if failed or (stop_starting is not None and stop_starting()):
                    return
                try:
                    answers[position] = await answer_chunk(task, chunk, halve=halve)
                except UnusableAnswer:
                    raise
                except BaseException:
                    failed = True
                    raise
        except UnusableAnswer as reason:
            warn(f"chunk {chunk.index} (pages {chunk.pages}) was skipped: {reason}")
            if on_skip is not None:
                await on_skip(chunk)
        else:
            if on_answer is not None:
                await on_answer(chunk, answers[position])
        finished()

    try:
        async with asyncio.TaskGroup() as group:
            for position, chunk in enumerate(chunks):
                if chunk.index not in known:
                    group.create_task(one(position, chunk))
    except BaseExceptionGroup as errors:
        raise decisive(errors) from None
    return [answer for chunk_answers in answers for answer in chunk_answers]


def decisive(errors: BaseExceptionGroup) -> BaseException:
    """The error that decides the job's fate: a permanent failure outranks a transient one."""
    flat: list[BaseException] = []
    pending: list[BaseException] = [errors]
    while pending:
        error = pending.pop()
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        else:
            flat.append(error)
    return next((e for e in flat if isinstance(e, JobFailure)), flat[0])


# --- reduce ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReduceBudget:
    """Token sizes that decide how partial answers are grouped.

    ``context_tokens`` is what one reduce call may use, prompt and answer together; ``overhead_tokens`` its
    instructions; ``partial_tokens`` the most one map answer takes in a prompt; ``output_tokens`` the answer of an
    intermediate level and ``final_output_tokens`` that of the last one. A prompt always has room for two partials,
    even where that takes more than ``context_tokens``: without it no level could shrink.
    """

    context_tokens: int
    overhead_tokens: int
    partial_tokens: int
    output_tokens: int
    final_output_tokens: int
    max_depth: int = 12

    @property
    def _floor(self) -> int:
        return 2 * max(self.partial_tokens, self.output_tokens + PARTIAL_TAG_TOKENS)

    @property
    def group_tokens(self) -> int:
        return max(self.context_tokens - self.overhead_tokens - self.output_tokens, self._floor)

    @property
    def final_group_tokens(self) -> int:
        return max(self.context_tokens - self.overhead_tokens - self.final_output_tokens, self._floor)


def _pack(sizes: list[int], capacity: int) -> list[list[int]]:
    """Consecutive positions grouped so each group's sizes add up to at most ``capacity`` (document order kept)."""
    groups: list[list[int]] = [[]]
    used = 0
    for position, size in enumerate(sizes):
        if groups[-1] and used + size > capacity:
            groups.append([])
            used = 0
        groups[-1].append(position)
        used += size
    return groups


async def reduce_hierarchically(partials: list[Any], *, tokens: Callable[[Any], int],
                                combine: Callable[[list[Any], bool], Awaitable[Any]], budget: ReduceBudget,
                                gate: asyncio.Semaphore | None = None,
                                always_combine: bool = False) -> tuple[Any, int]:
    """One answer from many; returns (answer, levels that called ``combine``).

    ``combine(group, final)`` answers for a group of partials; ``final`` is set on the one call whose answer is the
    result. A single partial is already the answer unless ``always_combine`` (the client's reduce instruction must
    still shape it).
    """
    levels, finished = 0, False
    while not finished:
        partials, levels, finished = await reduce_step(partials, tokens=tokens, combine=combine, budget=budget,
                                                       gate=gate, always_combine=always_combine, levels=levels)
    return partials[0], levels


async def reduce_step(partials: list[Any], *, tokens: Callable[[Any], int],
                      combine: Callable[[list[Any], bool], Awaitable[Any]], budget: ReduceBudget,
                      gate: asyncio.Semaphore | None = None, always_combine: bool = False,
                      levels: int = 0) -> tuple[list[Any], int, bool]:
    """One level of ``reduce_hierarchically``, for a caller that runs each level on its own (a workflow stage):
    returns (the partials after it, the levels that called ``combine`` so far, finished). Once finished, the one
    partial left is the answer.
    """
    if not partials:
        raise ValueError("nothing to reduce")
    if not (len(partials) > 1 or (always_combine and levels == 0)):
        return partials, levels, True
    if levels >= budget.max_depth:
        raise ReduceDidNotConverge(f"{len(partials)} partial answers left after {levels} reduce levels")
    gate = gate or asyncio.Semaphore(1_000_000)

    async def call(group: list[Any], final: bool) -> Any:
        async with gate:
            return await combine(group, final)

    sizes = [tokens(p) for p in partials]
    if sum(sizes) <= budget.final_group_tokens:
        return [await call(partials, True)], levels + 1, True
    groups = _pack(sizes, budget.group_tokens)
    if len(groups) == 1 or len(partials) == 2:
        if len(partials) == 2:
            # Two partials larger than their bound (a tokenizer disagreement): one last call, never a loop.
            return [await call(partials, True)], levels + 1, True
        # Fits an intermediate prompt but not the final one (a long final answer): two answers will.
        half = len(partials) // 2
        groups = [list(range(half)), list(range(half, len(partials)))]
    elif len(groups) == len(partials):
        # Every partial alone is over half a prompt (a tokenizer disagreement): pairs still shrink the level.
        groups = [list(range(i, min(i + 2, len(partials)))) for i in range(0, len(partials), 2)]
    partials = list(await asyncio.gather(*(
        call([partials[i] for i in group], False) if len(group) > 1 else _ready(partials[group[0]])
        for group in groups)))
    return partials, levels + 1, len(partials) == 1


async def _ready(value: Any) -> Any:
    return value


def estimate_reduce(partial_count: int, *, partial_tokens: int, budget: ReduceBudget) -> tuple[int, int]:
    """Expected (prompt, completion) tokens of ``reduce_hierarchically`` over answers of ``partial_tokens`` each."""
    prompt = completion = 0
    count, size = partial_count, partial_tokens
    for _level in range(budget.max_depth):
        if count <= 1:
            break
        total = count * size
        if total <= budget.final_group_tokens:
            return prompt + total + budget.overhead_tokens, completion + budget.final_output_tokens
        groups = max(2, min(count - 1, math.ceil(total / budget.group_tokens)))
        prompt += total + groups * budget.overhead_tokens
        completion += groups * budget.output_tokens
        count, size = groups, budget.output_tokens + PARTIAL_TAG_TOKENS
    return prompt, completion
