"""The Step Functions workflow's stages (infra/workflow.asl.json): the same job as ``run_job``, cut where a Lambda
invocation may end.

validate → extract (read + chunk, once) → per task, in a Parallel branch: a Map over batches of chunks (each batch
one invocation, its answers in S3) → aggregate (one reduce level per invocation, looping until the answer) → store
(one result document, ``results`` in task order for a multi-task job) — and, from any stage, ``failed``.

State between stages holds S3 pointers and small numbers only: everything a stage produces lives under
``work/<job id>/<run>/`` in the bucket. Every stage reads the job row first and does nothing for a job that has
finished or that a later run (the client's retry) carries. Spend is recorded per invocation on the job's row under
``spend`` (``w<task>…`` keys), so ``total_spend`` is the job's total and each task's share is its keys' sum: one
budget, checked by every call against what every stage and task spent before it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import math
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chalicelib.aws import document_digest
from chalicelib.documents import Chunk, Document
from chalicelib.errors import CircuitOpen, JobFailure, Throttled
from chalicelib.jobs import Attempt, Job
from chalicelib.llm import Budget, Completion, MeteredChat, Usage, total_spend
from chalicelib.observability import logger
from chalicelib.pipeline.mapreduce import halve_chunk, map_chunks
from chalicelib.pipeline.run import JobCache, map_cache_for
from chalicelib.tasks import NEEDS_LLM, task_for

if TYPE_CHECKING:
    from chalicelib.bootstrap import Services

WORK_PREFIX = "work/"
# Kept back at the end of a stage invocation so its answers are stored after the last LLM call.
FINISH_SECONDS = 10.0


class RunSuperseded(Exception):
    """This execution no longer carries the job: it finished, or the client's retry started a later run."""


def needs_workflow(job: Job, chunks: int | None, *, min_chunks: int, available: bool) -> bool:
    """Whether the job runs on the workflow: every multi-task job, and any job of ``min_chunks`` chunks or more."""
    if not available:
        return False
    return bool(job.tasks) or (chunks is not None and chunks >= min_chunks)


# Map batches answered at once: each batch invocation asks its chunks a share of the concurrency at a time, in waves,
# so that what an invocation costs besides its calls (S3, DynamoDB, the chat client) is paid once per several waves.
MAP_BATCHES_IN_FLIGHT = 4


def map_concurrency(llm_concurrency: int) -> int:
    """The Map's MaxConcurrency, derived from one job's LLM concurrency (DOCPIPE_LLM_CONCURRENCY); the deployment's
    ceiling, DOCPIPE_LLM_MAX_IN_FLIGHT, is kept by the shared gate every stage's calls pass through."""
    return max(1, min(MAP_BATCHES_IN_FLIGHT, llm_concurrency))


def batch_gate(llm_concurrency: int) -> int:
    """Calls one map batch has in flight: with ``map_concurrency`` batches at once, never more than the concurrency."""
    return max(1, llm_concurrency // map_concurrency(llm_concurrency))


def plan_batches(chunks: int, *, max_batch: int, llm_concurrency: int) -> list[tuple[int, int]]:
    """The map batches' (first chunk, size): as few as ``max_batch`` allows, balanced so that every Map slot asks
    the same number of calls in the same number of batches.

    The Map starts a batch when one returns, so batches of one size per round end together and no slot idles while
    another still has a round to go; sizes are multiples of a batch's calls in flight, so no wave runs part-empty
    (but the document's last). With C = 16 (4 slots of 4 calls), 399 chunks and batches of at most 32: 4 rounds of
    28, 24, 24, 24 chunks per slot — 25 waves a slot, the least 399 calls at 16 at once can take.
    """
    if chunks <= 0:
        return []
    slots, in_flight = map_concurrency(llm_concurrency), batch_gate(llm_concurrency)
    if max_batch < in_flight:
        return [(first, min(max_batch, chunks - first)) for first in range(0, chunks, max_batch)]
    waves_per_slot = math.ceil(math.ceil(chunks / in_flight) / slots)
    rounds = math.ceil(waves_per_slot / (max_batch // in_flight))
    plan, first = [], 0
    for round_ in range(rounds):
        waves = waves_per_slot // rounds + (1 if round_ < waves_per_slot % rounds else 0)
        for _slot in range(slots):
            size = min(waves * in_flight, chunks - first)
            if size > 0:
                plan.append((first, size))
                first += size
    return plan


def job_budget(job: Job, default_max_total_tokens: int) -> Budget:
    """One budget for the whole job: the tightest limit any of its tasks set."""
    budgets = [Budget.for_task(task, default_max_total_tokens) for task in job.all_tasks]
    costs = [b.max_cost_usd for b in budgets if b.max_cost_usd is not None]
    return Budget(min(b.max_total_tokens for b in budgets), min(costs) if costs else None)


def work_key(job_id: str, run: str, name: str) -> str:
    return f"{WORK_PREFIX}{job_id}/{run}/{name}"


@dataclass
class Stage:
    """What every stage invocation knows: the services, the job, the run (execution name) it belongs to."""

    services: Services
    job: Job
    run: str
    deadline: float | None = None

    @classmethod
    def open(cls, services: Services, job_id: str, run: str, stage: str, *, task: int | None = None,
             deadline: float | None = None) -> Stage:
        job = services.lifecycle.enter_stage(job_id, stage, task=task)
        if job is None or job.run_name != run:
            raise RunSuperseded(f"job {job_id} is not carried by run {run}")
        return cls(services, job, run, deadline)

    def put(self, name: str, body: dict[str, Any]) -> str:
        key = work_key(self.job.job_id, self.run, name)
        self.services.documents.put_json(key, body)
        return key

    def get(self, name: str) -> dict[str, Any]:
        return self.services.documents.get_json(work_key(self.job.job_id, self.run, name))

    def exists(self, name: str) -> bool:
        return self.services.documents.head(work_key(self.job.job_id, self.run, name)) is not None

    def model(self, task: dict[str, Any]) -> str:
        return task.get("model") or self.services.settings.model


def validate(services: Services, job_id: str, *, run: str, execution_arn: str) -> dict[str, Any]:
    """The execution takes the job over (the worker may have crashed before recording it did)."""
    job = services.jobs.get(job_id)
    if job is None or job.finished or job.run_name != run:
        raise RunSuperseded(f"job {job_id} is finished, missing or carried by a later run")
    if not services.lifecycle.adopt_execution(job_id, execution_arn=execution_arn):
        raise RunSuperseded(f"job {job_id} is carried by another execution")
    stage = Stage.open(services, job_id, run, "validate")
    for task in stage.job.all_tasks:
        if not services.llm.uses_openai and task["type"] in NEEDS_LLM:
            raise JobFailure("llm_unavailable", f"the {task['type']} task needs an LLM endpoint")
    return {"tasks": len(stage.job.all_tasks)}


def extract(services: Services, job_id: str, *, run: str, deadline: float | None = None) -> dict[str, Any]:
    """Read and chunk the document once for every task; the chunks go to S3, the batches' starts into the state.
    A worker that counted the document's chunks before handing it over stored them already: they are used as is."""
    from chalicelib.documents import chunk_document, get_encoding
    from chalicelib.pipeline.run import JobRun, read_job_document

    stage = Stage.open(services, job_id, run, "extract", deadline=deadline)
    if stage.exists(OUTLINE):
        outline = stage.get(OUTLINE)
        services.lifecycle.workflow_chunks(job_id, outline["total"], outline["warnings"])
        logger.info("document chunked by the worker, for the workflow", extra={"chunks": outline["total"]})
        return _extracted(services, job_id, run, outline)
    job, settings = stage.job, services.settings
    clock = time.monotonic()
    usage = Usage(model=stage.model(job.task), provider="openai" if services.llm.uses_openai else "offline")
    run_view = JobRun(Attempt(job), services, usage, deadline=deadline)
    document = read_job_document(run_view)
    # Every task shares the chunks: they are cut with the first task's model's tokenizer.
    chunks = chunk_document(document, encoding=get_encoding(stage.model(job.task)), max_tokens=settings.chunk_tokens,
                            overlap_tokens=settings.chunk_overlap_tokens)
    outline = store_chunks(services, job_id, run, document=document, chunks=chunks, warnings=run_view.warnings,
                           ocr=usage.ocr, extract_seconds=time.monotonic() - clock)
    services.lifecycle.workflow_chunks(job_id, len(chunks), run_view.warnings)
    logger.info("document chunked for the workflow", extra={"chunks": len(chunks), "pages": document.page_count})
    return _extracted(services, job_id, run, outline)


# What a reduce level reads of the document, written last: once it exists, every object of the run's document does.
OUTLINE = "outline.json"


def store_chunks(services: Services, job_id: str, run: str, *, document: Document, chunks: list[Chunk],
                 warnings: list[str], ocr: dict[str, Any] | None, extract_seconds: float) -> dict[str, Any]:
    """Everything the workflow's later stages read of the document, under the run's work prefix: the document and
    its chunks (the store stage), one object per map batch, and the outline; returns the outline."""
    settings = services.settings

    def put(name: str, body: dict[str, Any]) -> None:
        services.documents.put_json(work_key(job_id, run, name), body)

    plan = plan_batches(len(chunks), max_batch=settings.step_functions_batch_calls,
                        llm_concurrency=settings.llm_concurrency)
    put("document.json", {
        "document": {"text": document.text, "page_starts": document.page_starts, "kind": document.kind},
        "chunks": [[c.index, c.text, c.start, c.end, c.first_page, c.last_page, c.tokens] for c in chunks],
        "warnings": warnings, "ocr": ocr, "extract_seconds": round(extract_seconds, 3)})
    digest = document_digest(document.text)
    for first, size in plan:
        # What one map batch reads: its own chunks, not the whole document.
        put(f"chunks/batch-{first:06d}.json", {
            "page_starts": document.page_starts, "kind": document.kind, "total": len(chunks), "document_sha256": digest,
            "chunks": [[c.index, c.text, c.start, c.end, c.first_page, c.last_page, c.tokens]
                       for c in chunks[first:first + size]]})
    outline = {"page_starts": document.page_starts, "kind": document.kind, "total": len(chunks),
               "document_sha256": digest, "batches": [first for first, _size in plan], "warnings": warnings}
    put(OUTLINE, outline)
    return outline


def _extracted(services: Services, job_id: str, run: str, outline: dict[str, Any]) -> dict[str, Any]:
    """The extract stage's output: S3 pointers and small numbers only."""
    return {"document_key": work_key(job_id, run, "document.json"), "chunks": outline["total"],
            "batches": outline["batches"], "map_concurrency": map_concurrency(services.settings.llm_concurrency)}


@dataclass
class _Prepared:
    document: Document
    chunks: list[Chunk]
    meta: dict[str, Any]


def _load_batch(stage: Stage, start: int) -> tuple[_Prepared, list[Chunk]]:
    """The document as a map batch needs it, and the batch's chunks. An LLM task reads only the count of the
    document's chunks (its prompts' answer lengths depend on it), so only the batch's own chunks are loaded; the
    offline summarizer ranks sentences over the whole text, so it loads the document."""
    stored = stage.get(f"chunks/batch-{start:06d}.json")
    batch = [Chunk(*row) for row in stored["chunks"]]
    if stage.services.llm.uses_openai:
        chunks = [batch[0]] * stored["total"]  # only its length is read
        return _Prepared(Document("", stored["page_starts"], stored["kind"]), chunks, stored), batch
    prepared = _load_document(stage)
    prepared.meta["document_sha256"] = stored.get("document_sha256") or document_digest(prepared.document.text)
    return prepared, prepared.chunks[start:start + len(batch)]


def _load_outline(stage: Stage) -> _Prepared:
    """What an LLM task's reduce reads of the document: its page starts, its kind and its number of chunks (one
    small object, not the whole document a reduce level would otherwise read and parse each time)."""
    stored = stage.get(OUTLINE)
    chunk = Chunk(0, "", 0, 0, 1, 1, 0)
    return _Prepared(Document("", stored["page_starts"], stored["kind"]), [chunk] * stored["total"], stored)


def _load_document(stage: Stage) -> _Prepared:
    stored = stage.get("document.json")
    document = Document(stored["document"]["text"], stored["document"]["page_starts"], stored["document"]["kind"])
    chunks = [Chunk(*row) for row in stored["chunks"]]
    return _Prepared(document, chunks, stored)


class KeptCalls:
    """A chat that answers again, without asking, a call an earlier invocation of the same step already paid for.

    A reduce level's calls are the same on every attempt (the same partials, grouped the same way), so a level that
    fails midway keeps its answers (``answered``) and its retry asks only the groups still unanswered.
    """

    def __init__(self, kept: dict[str, dict[str, Any]] | None = None) -> None:
        self.chat: Any = None
        self.kept = dict(kept or {})
        self.answered: dict[str, dict[str, Any]] = {}

    @staticmethod
    def _key(messages: list[dict[str, str]], max_tokens: int, response_format: dict[str, Any] | None) -> str:
        text = json.dumps([messages, max_tokens, response_format], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    async def complete(self, messages: list[dict[str, str]], *, max_tokens: int,
                       response_format: dict[str, Any] | None = None) -> Completion:
        key = self._key(messages, max_tokens, response_format)
        if key in self.kept:
            # Paid for, and counted, by the invocation that asked it.
            return Completion(**{**self.kept[key], "latency_seconds": 0.0, "retries": 0})
        options: dict[str, Any] = {} if response_format is None else {"response_format": response_format}
        completion: Completion = await self.chat.complete(messages, max_tokens=max_tokens, **options)
        self.answered[key] = dataclasses.asdict(completion)
        return completion

    @property
    def all(self) -> dict[str, dict[str, Any]]:
        return {**self.kept, **self.answered}


class _TaskRun:
    """One task of the job inside one stage invocation: its implementation, metered against the job's one budget."""

    def __init__(self, stage: Stage, index: int, prepared: _Prepared, *, calls_in_flight: int | None = None,
                 kept: KeptCalls | None = None) -> None:
        from chalicelib.documents import get_encoding

        services, job = stage.services, stage.job
        self.stage, self.index, self.spec = stage, index, job.all_tasks[index]
        settings = services.settings
        model = stage.model(self.spec)
        self.usage = Usage(model=model if services.llm.uses_openai else None,
                           provider="openai" if services.llm.uses_openai else "offline")
        # Everything the job's other stages and tasks spent counts against its one budget.
        self.usage.include_earlier(total_spend(job.spend), settings.prices)
        self.warnings: list[str] = []
        self.chat = services.llm.chat(model) if services.llm.uses_openai else None
        encoding = get_encoding(model)
        self.halve = functools.partial(halve_chunk, encoding=encoding, page_at=prepared.document.page_at)
        metered = None if self.chat is None else MeteredChat(
            self.chat, usage=self.usage, prices=settings.prices,
            budget=job_budget(job, settings.default_max_total_tokens),
            deadline=None if stage.deadline is None else stage.deadline - FINISH_SECONDS, latencies=[])
        chat: Any = metered
        if kept is not None and metered is not None:
            kept.chat, chat = metered, kept
        self.task = task_for(self.spec, chat=chat, settings=settings, document=prepared.document,
                             chunks=prepared.chunks,
                             count_tokens=lambda text: len(encoding.encode(text, disallowed_special=())),
                             warn=self.warnings.append)
        self.gate = asyncio.Semaphore(calls_in_flight or settings.llm_concurrency)

    def record(self, part: str, progress: dict[str, Any] | None = None) -> None:
        spend = self.usage.attempt_spend(self.stage.services.settings.prices)
        key = f"w{self.index}{part}-{uuid.uuid4().hex[:8]}"
        self.stage.services.lifecycle.record_workflow(self.stage.job.job_id, progress=progress,
                                                      spend=(key, spend) if spend.get("calls") else None)

    async def close(self) -> None:
        if self.chat is not None:
            await self.chat.close()


def map_batch(services: Services, job_id: str, *, run: str, task: int, start: int,
              deadline: float | None = None) -> dict[str, Any]:
    """Answer one batch of chunks for task ``task``; ``{"wait_seconds": n}`` when the provider asks to slow down for
    longer than a call waits by itself (the circuit is open, or a 429's wait is too long): the workflow waits, then
    runs the batch again.

    Chunks a failed or waiting invocation had answered are kept (``.answered.json``) and not asked again.
    """
    stage = Stage.open(services, job_id, run, "map", task=task, deadline=deadline)
    name = f"task{task}/batch-{start:06d}.json"
    kept = f"task{task}/batch-{start:06d}.answered.json"
    # One round trip's wait, not three: whether it was answered, what an earlier invocation kept, its chunks.
    with ThreadPoolExecutor(max_workers=3) as pool:
        answered_before, kept_before = pool.map(stage.exists, (name, kept))
        loaded = pool.submit(_load_batch, stage, start)
    if answered_before:
        return {}  # answered by an invocation whose result the workflow did not see (a retry): never asked twice
    prepared, batch = loaded.result()
    work = _TaskRun(stage, task, prepared, calls_in_flight=batch_gate(services.settings.llm_concurrency))
    known: dict[int, list[Any]] = {}
    if kept_before:
        known = {int(i): [work.task.load(a) for a in answers] for i, answers in stage.get(kept)["known"].items()}
    # Answers go to the map cache as they arrive: a batch that crashes, or whose invocation ran out of time, loses
    # at most the last second of them, and a later run (the client's retry) of the same document finds them too.
    digest = prepared.meta.get("document_sha256")  # absent from a batch an earlier release cut: no cache then
    cache = None if digest is None else map_cache_for(services, stage.job, work.task, batch,
                                                      model=stage.model(work.spec), document_sha256=digest,
                                                      usage=work.usage, part=f"batch{start:07d}-")
    answered: dict[int, list[Any]] = {}

    def store_answers(answers: list[Any]) -> None:
        learned: dict[str, Any] = getattr(work.task, "learned", dict)()
        stage.put(name, {"answers": [work.task.dump(a) for a in answers], "warnings": work.warnings,
                         "learned": learned})

    try:
        services.llm.refresh()
        asyncio.run(_map(work, batch, known, answered, cache, store_answers))
    except (CircuitOpen, Throttled) as slow:
        # Longer than an invocation should wait: the workflow waits instead (a Wait state, no Lambda running).
        _keep(stage, work, kept, {**known, **answered}, known)
        work.record(f"m{start}")
        if isinstance(slow, CircuitOpen):
            return {"wait_seconds": services.settings.breaker_recovery_seconds}
        return {"wait_seconds": max(1, math.ceil(slow.retry_after or services.settings.retry_backoff_seconds))}
    except BaseException:
        _keep(stage, work, kept, {**known, **answered}, known)
        # The calls it paid for count (usage and budget): the retry reuses their answers and never pays for them.
        _record_spend(work, f"m{start}")
        raise
    work.record(f"m{start}", progress={f"{task}/{start}": len(batch)})
    return {}


def _record_spend(work: _TaskRun, part: str) -> None:
    """Record a failing invocation's spend; a failure to record it must not hide the invocation's own error."""
    try:
        work.record(part)
    except Exception:
        logger.exception("the spend of a failed map batch could not be recorded")


def _keep_calls(stage: Stage, name: str, kept: KeptCalls) -> None:
    """Keep a failing level's answers; a failure to keep them must not hide the level's own error."""
    try:
        stage.put(name, {"calls": kept.all})
    except Exception:
        logger.exception("the answers of a failed reduce level could not be kept")


def _keep(stage: Stage, work: _TaskRun, name: str, answered: dict[int, list[Any]], known: dict[int, list[Any]]) -> None:
    """What this invocation paid for, for the next one to reuse (only when it adds something)."""
    if len(answered) > len(known):
        stage.put(name, {"known": {str(i): [work.task.dump(a) for a in answers] for i, answers in answered.items()}})


async def _map(work: _TaskRun, batch: list[Chunk], known: dict[int, list[Any]], answered: dict[int, list[Any]],
               cache: JobCache | None, store_answers: Callable[[list[Any]], None]) -> None:
    async def remember(chunk: Chunk, answers: list[Any]) -> None:
        answered[chunk.index] = answers
        if cache is not None:
            await cache.remember(chunk, answers)

    flushed = False
    try:
        prime = getattr(work.chat, "prime", None)
        # The circuit's state is read while the cache is: every first call would otherwise wait for it.
        cached, _ = await asyncio.gather(cache.known() if cache is not None else _nothing(),
                                         prime() if prime is not None else _nothing())
        known.update({index: answers for index, answers in (cached or {}).items() if index not in known})
        answers = await map_chunks(work.task, batch, gate=work.gate, known=known, halve=work.halve,
                                   on_answer=remember, warn=work.warnings.append)
        # The batch's answers are stored beside the cache's last store, not after it.
        flushed = True
        await asyncio.gather(asyncio.to_thread(store_answers, answers),
                             cache.flush() if cache is not None else _nothing())
    finally:
        try:
            if cache is not None and not flushed:
                await cache.flush()
        finally:
            await work.close()


async def _nothing() -> dict[int, list[Any]]:
    return {}


def aggregate(services: Services, job_id: str, *, run: str, task: int, level: int, batches: list[int],
              deadline: float | None = None) -> dict[str, Any]:
    """One reduce level of task ``task``: ``{"done": false, "level": n}`` until the answer is stored."""
    stage = Stage.open(services, job_id, run, "aggregate", task=task, deadline=deadline)
    # (An execution whose document an earlier release stored has no outline: it reads the document.)
    prepared = _load_outline(stage) if services.llm.uses_openai and stage.exists(OUTLINE) else _load_document(stage)
    kept_name = f"task{task}/level-{level}.answered.json"
    kept = KeptCalls(stage.get(kept_name)["calls"] if stage.exists(kept_name) else None)
    work = _TaskRun(stage, task, prepared, kept=kept)
    warnings: list[str] = []
    learned: dict[str, Any] = {}
    if level == 0:
        partials = []
        with ThreadPoolExecutor(max_workers=min(16, max(1, len(batches)))) as pool:
            answered = list(pool.map(stage.get, [f"task{task}/batch-{start:06d}.json" for start in batches]))
        for stored in answered:
            partials += [work.task.load(a) for a in stored["answers"]]
            warnings += stored["warnings"]
            learned.update(stored.get("learned") or {})
        if not partials:
            raise JobFailure("unusable_answers", "no chunk of the document produced a usable answer; see warnings")
    else:
        stored = stage.get(f"task{task}/level-{level}.json")
        partials = [work.task.load(a) for a in stored["partials"]]
        warnings, learned = stored["warnings"], stored["learned"]
    try:
        left, levels, final = asyncio.run(_reduce(work, partials, level))
    except BaseException:
        # What the level answered before it failed is kept for its retry, and what was paid for counts.
        if len(kept.all) > len(kept.kept):
            _keep_calls(stage, kept_name, kept)
        _record_spend(work, f"r{level}")
        raise
    if final is None:
        stage.put(f"task{task}/level-{levels}.json", {"partials": [work.task.dump(p) for p in left],
                                                      "warnings": warnings + work.warnings, "learned": learned})
        work.record(f"r{levels}")
        return {"done": False, "level": levels}
    adopt = getattr(work.task, "adopt", None)
    if adopt is not None:
        adopt(learned)
    stage.put(f"task{task}/result.json", {
        "provider": work.task.provider, "model": work.usage.model, "prompt_version": work.task.prompt_version,
        "fields": work.task.result(final), "reduce_levels": levels, "warnings": warnings + work.warnings})
    work.record(f"r{levels}")
    return {"done": True, "level": levels}


async def _reduce(work: _TaskRun, partials: list[Any], level: int) -> tuple[list[Any], int, Any]:
    try:
        return await work.task.reduce_step(partials, work.gate, level)
    finally:
        await work.close()


def store(services: Services, job_id: str, *, run: str) -> dict[str, Any]:
    """One result document from every task's answer; the job SUCCEEDED."""
    stage = Stage.open(services, job_id, run, "store")
    job = stage.job
    meta = stage.get("document.json")
    document = Document(meta["document"]["text"], meta["document"]["page_starts"], meta["document"]["kind"])
    chunks = [Chunk(*row) for row in meta["chunks"]]
    warnings = list(meta["warnings"])
    results = []
    for index, task in enumerate(job.all_tasks):
        answer = stage.get(f"task{index}/result.json")
        warnings += [w for w in answer["warnings"] if w not in warnings]
        spent = total_spend({k: v for k, v in job.spend.items() if k.startswith(f"w{index}")})
        results.append({"task": task, "provider": answer["provider"], "model": answer["model"],
                        "prompt_version": answer["prompt_version"], **answer["fields"],
                        "reduce_levels": answer["reduce_levels"], "usage": spent})
    usage = total_spend(job.spend) if job.spend else {}
    if meta.get("ocr"):
        usage["ocr"] = meta["ocr"]
    usage["document_tokens"] = sum(c.tokens for c in chunks)
    timings = {"extract_seconds": meta["extract_seconds"],
               "total_seconds": round(time.time() - (job.started_at or job.created_at), 3)}
    described = {"kind": document.kind, "pages": document.page_count, "characters": len(document.text),
                 "chunks": len(chunks), "tokens": usage["document_tokens"]}
    common = {"job_id": job.job_id, "orchestrator": "stepfunctions", "document": described,
              "chunks": [{"index": c.index, "pages": c.pages, "start": c.start, "end": c.end, "tokens": c.tokens}
                         for c in chunks],
              "usage": usage, "warnings": warnings, "timings": timings}
    if job.tasks:
        result = {**common, "tasks": job.tasks, "results": results}
    else:
        only = dict(results[0])
        only.pop("usage")
        result = {**only, **common}
    key = services.documents.put_result(job.job_id, result)
    services.lifecycle.succeed_workflow(job.job_id, result_key=key, usage=usage, warnings=warnings,
                                        timings=timings, chunks_total=len(chunks))
    return {"result_key": key}


def failed(services: Services, job_id: str, *, run: str, execution_arn: str,
           failure: dict[str, Any]) -> dict[str, Any]:
    """A stage failed for good (a Catch): the job FAILED with the reason and the stage it failed in."""
    job = services.jobs.get(job_id)
    stage = job.stage if job is not None and job.stage else "validate"
    error = stage_error(failure, stage)
    if job is not None and job.run_name == run:
        services.lifecycle.fail_execution(job_id, execution_arn, error)
    return {"error": error}


def stage_error(failure: dict[str, Any], stage: str) -> dict[str, Any]:
    """The job's error for a Catch's ``{"Error", "Cause"}``: docpipe's own code and message when a stage raised one
    of its errors (``entry.stages`` puts them in the Lambda error's message), else what Step Functions said."""
    name, cause = str(failure.get("Error", "")), failure.get("Cause") or ""
    try:
        payload = json.loads(cause) if isinstance(cause, str) and cause.startswith("{") else {}
    except ValueError:
        payload = {}
    message = payload.get("errorMessage", cause) if isinstance(payload, dict) else cause
    try:
        own = json.loads(message) if isinstance(message, str) and message.startswith("{") else None
    except ValueError:
        own = None
    if isinstance(own, dict) and "code" in own:
        return {"code": own["code"], "message": str(own.get("message", ""))[:500], "stage": stage}
    if name == "States.Timeout":
        return {"code": "stage_timed_out", "message": f"the {stage} stage did not finish in time", "stage": stage}
    return {"code": "internal_error", "message": f"{name}: {str(message)[:300]}", "stage": stage}


# The statuses of an execution that ended without the workflow's own last stage having run.
ENDED_WITHOUT_OUTCOME = ("FAILED", "TIMED_OUT", "ABORTED")


def execution_ended(services: Services, job_id: str, *, execution_arn: str, status: str,
                    cause: str | None = None) -> bool:
    """An execution ended ``status`` (EventBridge's status change, or the sweep): its job, if still RUNNING on it,
    FAILED with the reason and the stage it was in. True when this failed the job."""
    if status not in ENDED_WITHOUT_OUTCOME:
        return False
    job = services.jobs.get(job_id)
    if job is None or job.finished or job.execution_arn != execution_arn:
        return False
    words = {"FAILED": "failed", "TIMED_OUT": "timed out", "ABORTED": "was aborted"}[status]
    error = {"code": f"execution_{status.lower()}",
             "message": f"the workflow execution {words} in the {job.stage or 'validate'} stage"
                        + (f": {cause[:300]}" if cause else ""),
             "stage": job.stage or "validate"}
    return services.lifecycle.fail_execution(job_id, execution_arn, error)


def sweep(services: Services, *, older_than_seconds: float = 0.0) -> int:
    """The backstop for a lost status-change event: every RUNNING job whose execution has ended is FAILED.
    Returns how many it failed."""
    if services.executions is None:
        return 0
    failed_jobs = 0
    for job in services.jobs.on_workflow(started_before=time.time() - older_than_seconds):
        assert job.execution_arn is not None
        status, cause = services.executions.status(job.execution_arn)
        failed_jobs += execution_ended(services, job.job_id, execution_arn=job.execution_arn, status=status,
                                       cause=cause)
    if failed_jobs:
        logger.warning("workflow sweep failed jobs whose executions had ended", extra={"jobs": failed_jobs})
    return failed_jobs
