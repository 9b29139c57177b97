"""One job, start to finish: extract → chunk → map (LLM calls on chunks in parallel) → reduce → store.

Plain Python that knows nothing of Lambda or SQS: the worker claims the job (``jobs.lifecycle``) and hands the
attempt over; ``run_job`` returns how the job ended (an ``Outcome``) or raises docpipe's errors when the attempt
should be retried (``TransientError``, ``CircuitOpen``). The task type decides what map and reduce ask
(``tasks``); what every type shares is here: the map cache, the budget, progress, usage and metrics. The job's row
moves only through the lifecycle: ``succeed``, ``fail``, and the progress it shows meanwhile.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chalicelib.aws import SHARED_OWNER, CacheWriter, MapCache, document_digest, map_cache_key, map_cache_scope
from chalicelib.documents import Chunk, Document, PageSet, TextractOCR, chunk_document, read_document
from chalicelib.errors import JobFailure
from chalicelib.jobs import Attempt, Job
from chalicelib.llm import Budget, MeteredChat, Usage, total_spend
from chalicelib.observability import METRICS_NAMESPACE, logger, metrics
from chalicelib.pipeline.mapreduce import ChunkTask, halve_chunk, map_chunks
from chalicelib.tasks import NEEDS_LLM, task_for

if TYPE_CHECKING:
    from chalicelib.bootstrap import Services

PROGRESS_INTERVAL_SECONDS = 1.0
# Kept back at the end of an invocation so the outcome is stored after the last LLM call.
FINISH_SECONDS = 10.0
# EMF takes at most 100 values of one metric per document; Powertools prints a full one even when disabled.
_EMF_VALUES = 99


class Outcome(enum.Enum):
    """How a job's run ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"                            # for a reason no retry can change; the job says which
    FINISHED_ELSEWHERE = "finished_elsewhere"    # another delivery finished it while this one ran
    HANDED_OVER = "handed_over"                  # a Step Functions execution carries it on (``pipeline.workflow``)


class _HandOver(Exception):
    """The document is long enough for the workflow (DOCPIPE_STEP_FUNCTIONS_MIN_CHUNKS): stop before the map.
    ``extracted`` is what the worker read and chunked, handed to the workflow so that it does not read it again."""

    def __init__(self, extracted: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.extracted = extracted


@dataclass
class JobRun:
    attempt: Attempt
    services: Services
    usage: Usage
    deadline: float | None = None
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    @property
    def job(self) -> Job:
        return self.attempt.job


def run_job(attempt: Attempt, services: Services, *, deadline: float | None = None) -> Outcome:
    """Run the claimed job to its outcome.

    ``deadline`` is the ``time.monotonic()`` at which the invocation ends (the Lambda context's remaining time): no
    LLM call outlives ``FINISH_SECONDS`` before it. None (a local run) leaves each call its configured timeout. From
    the start the attempt is metered (``Attempt.meter``), so its heartbeat records what it spends as it spends it.
    """
    job, settings, endpoint = attempt.job, services.settings, services.llm
    if _routed(job, services, chunks=None):
        return _hand_over(attempt, services)
    model = job.task.get("model") or settings.model
    run = JobRun(attempt, services, Usage(model=model if endpoint.uses_openai else None,
                                          provider="openai" if endpoint.uses_openai else "offline"), deadline=deadline)
    # Earlier attempts' calls were paid for: they count in this attempt's usage and against its budget.
    run.usage.include_earlier(total_spend({a: s for a, s in job.spend.items() if a != f"a{job.attempts}"}),
                              settings.prices)
    attempt.meter(run.usage, settings.prices)
    started = time.monotonic()
    try:
        result = asyncio.run(_run(run, model))
    except JobFailure as failure:
        services.lifecycle.fail(attempt, failure, usage=run.usage.to_dict(), warnings=run.warnings)
        return Outcome.FAILED
    except _HandOver as handed:
        return _hand_over(attempt, services, handed.extracted)
    finally:
        _emit_model_metrics(run)
    run.timings["total_seconds"] = round(time.monotonic() - started, 3)
    result["timings"] = run.timings
    key = services.documents.put_result(job.job_id, result)
    if not services.lifecycle.succeed(attempt, result_key=key, usage=run.usage.to_dict(), warnings=run.warnings,
                                      timings=run.timings, chunks_total=result["document"]["chunks"]):
        return Outcome.FINISHED_ELSEWHERE
    _emit_metrics(run)
    logger.info("job succeeded", extra={"usage": run.usage.to_dict(), "timings": run.timings})
    return Outcome.SUCCEEDED


async def _run(run: JobRun, model: str) -> dict[str, Any]:
    services, job, settings = run.services, run.job, run.services.settings
    kind = job.task["type"]
    if not services.llm.uses_openai and kind in NEEDS_LLM:
        # Refused at submit too; a job queued before the endpoint was unset still ends with a reason.
        raise JobFailure("llm_unavailable", f"the {kind} task needs an LLM endpoint (set OPENAI_API_KEY and/or "
                                            f"OPENAI_BASE_URL): docpipe's offline provider cannot {NEEDS_LLM[kind]}")
    document = read_job_document(run)
    clock = time.monotonic()
    from chalicelib.documents import get_encoding

    encoding = get_encoding(model)
    chunks = chunk_document(document, encoding=encoding, max_tokens=settings.chunk_tokens,
                            overlap_tokens=settings.chunk_overlap_tokens)
    run.usage.document_tokens = sum(c.tokens for c in chunks)
    run.timings["chunk_seconds"] = round(time.monotonic() - clock, 3)
    if _routed(job, services, chunks=len(chunks)):
        raise _HandOver({"document": document, "chunks": chunks, "warnings": run.warnings, "ocr": run.usage.ocr,
                         "extract_seconds": run.timings["extract_seconds"] + run.timings["chunk_seconds"]})
    logger.info("document chunked", extra={"pages": document.page_count, "chunks": len(chunks),
                                           "document_tokens": run.usage.document_tokens})

    chat = services.llm.chat(model) if services.llm.uses_openai else None
    try:
        task = _task_for(run, document, chunks, chat, encoding)
        run.usage.provider = task.provider
        cache = _map_cache(run, task, document, chunks, model)
        # The job's chunk count is written while the cache, the circuit's state and the shared limits are read:
        # each is a round trip the first call would otherwise wait for in turn.
        prime = getattr(chat, "prime", None)
        known, _, _ = await asyncio.gather(
            cache.known() if cache else _nothing_known(), prime() if prime else asyncio.sleep(0),
            asyncio.to_thread(services.lifecycle.count_chunks, run.attempt, len(chunks), list(run.warnings)))
        refusal = _budget_refusal(run, task, chunks, known)
        if refusal is not None:
            raise refusal
        gate = asyncio.Semaphore(settings.llm_concurrency)
        progress = _ProgressWriter(run, len(chunks))
        clock = time.monotonic()
        # Answers paid for are kept however the map ends; their last store runs beside the reduce, not before it.
        stored = None
        try:
            partials = await map_chunks(
                task, chunks, gate=gate, known=known,
                halve=functools.partial(halve_chunk, encoding=encoding, page_at=document.page_at),
                on_answer=cache.remember if cache else None, on_done=progress, warn=run.warnings.append)
            run.timings["map_seconds"] = round(time.monotonic() - clock, 3)
            if cache:
                stored = asyncio.create_task(cache.flush())
            if not partials:
                raise JobFailure("unusable_answers",
                                 "no chunk of the document produced a usable answer; see warnings")
            clock = time.monotonic()
            final, levels = await task.reduce(partials, gate)
            run.timings["reduce_seconds"] = round(time.monotonic() - clock, 3)
        finally:
            await progress.drain()
            if cache:
                await (stored or cache.flush())
    finally:
        if chat is not None:
            await chat.close()
    return _result(run, task, document, chunks, final, levels)


def _routed(job: Job, services: Services, *, chunks: int | None) -> bool:
    from chalicelib.pipeline.workflow import needs_workflow

    return needs_workflow(job, chunks, min_chunks=services.settings.step_functions_min_chunks,
                          available=services.executions is not None)


def read_job_document(run: JobRun) -> Document:
    """The job's document as text: read (``extract_seconds`` in the run's timings), its pages without text read by
    OCR when configured, the reader's warnings first among the run's."""
    services, job, settings = run.services, run.job, run.services.settings
    clock = time.monotonic()
    data = services.documents.read_document(job.document["s3_key"], settings.max_document_bytes)
    pages = read_document(data, max_pages=settings.max_document_pages,
                          declared_type=job.document.get("declared_type"), limits=settings.reading_limits)
    run.timings["extract_seconds"] = round(time.monotonic() - clock, 3)
    if services.ocr is not None and pages.kind == "pdf" and pages.needs_ocr():
        pages = _read_by_ocr(run, services.ocr, pages, data)
    try:
        return pages.document()
    finally:
        run.warnings[:0] = pages.warnings()


def _hand_over(attempt: Attempt, services: Services, extracted: dict[str, Any] | None = None) -> Outcome:
    """Start the job's workflow execution, named by its run: a redelivery finds it started and starts nothing.
    What the worker extracted is stored first, where the workflow's extract stage finds it instead of reading the
    document again."""
    assert services.executions is not None
    if extracted is not None:
        from chalicelib.pipeline.workflow import store_chunks

        store_chunks(services, attempt.job_id, attempt.job.run_name, **extracted)
    arn = services.executions.start(attempt.job.run_name, attempt.job_id)
    services.lifecycle.hand_over(attempt, execution_arn=arn)
    return Outcome.HANDED_OVER


def _read_by_ocr(run: JobRun, ocr: TextractOCR, pages: PageSet, data: bytes) -> PageSet:
    """The pages with OCR's text where the gate left them out; what it cost goes to usage and timings."""
    from chalicelib.documents import describe_pages, extract_pages

    settings, wanted = run.services.settings, pages.needs_ocr()
    if len(wanted) > settings.ocr_max_pages:
        run.warnings.append(f"only {settings.ocr_max_pages} of the {len(wanted)} pages without usable text were sent "
                            "to OCR (DOCPIPE_OCR_MAX_PAGES)")
        wanted = wanted[:settings.ocr_max_pages]
    budget = run.job.task.get("max_cost_usd")
    if budget is not None and len(wanted) * settings.ocr_usd_per_page > budget:
        run.warnings.append(f"OCR of {describe_pages(wanted)} would cost more than the job's max_cost_usd and was "
                            "not done")
        return pages
    subset = None
    if len(wanted) < len(pages.texts):
        try:
            subset = extract_pages(data, wanted, limits=settings.reading_limits)
        except JobFailure as failure:
            run.warnings.append(f"{describe_pages(wanted)} could not be prepared for OCR: {failure.message}")
            return pages
    seconds = settings.ocr_timeout_seconds
    if run.deadline is not None:
        seconds = max(1.0, min(seconds, run.deadline - FINISH_SECONDS - time.monotonic()))
    result = ocr.read(run.job.document["s3_key"], wanted, subset=subset,
                                   document_pages=len(pages.texts), seconds=seconds)
    run.usage.ocr = {"provider": "textract", "pages": result.pages_billed, "cost_usd": result.cost_usd}
    run.timings["ocr_seconds"] = result.seconds
    if result.problem:
        run.warnings.append(f"OCR could not read {describe_pages(wanted)}: {result.problem}")
    logger.info("pages read by OCR", extra={"pages": sorted(result.texts), "billed": result.pages_billed})
    return pages.with_ocr(result.texts)


async def _nothing_known() -> dict[int, list[Any]]:
    return {}


def _task_for(run: JobRun, document: Document, chunks: list[Chunk], chat: Any, encoding: Any) -> ChunkTask:
    """The task type's implementation; the LLM one gets the chat as this job meters it (usage, budget, deadline)."""
    settings = run.services.settings

    def count(text: str) -> int:
        return len(encoding.encode(text, disallowed_special=()))

    metered = None if chat is None else MeteredChat(
        chat, usage=run.usage, prices=settings.prices,
        budget=Budget.for_task(run.job.task, settings.default_max_total_tokens),
        deadline=None if run.deadline is None else run.deadline - FINISH_SECONDS, latencies=run.latencies)
    return task_for(run.job.task, chat=metered, settings=settings, document=document, chunks=chunks,
                    count_tokens=count, warn=run.warnings.append)


# The part of a document's cache the queue path stores under (it reads every part: a workflow's answers too).
JOB_PART = "job-"


@dataclass
class JobCache:
    """The map cache as one job uses it: its chunks' keys, the answers found, the answers to store."""

    task: ChunkTask
    keys: dict[int, str]
    scope: str
    cache: MapCache
    usage: Usage
    # Which stored answers this job reads (every part: all of its document's) and under which part it stores its own.
    reads: tuple[str, ...] = ("",)
    part: str = JOB_PART

    def __post_init__(self) -> None:
        self._writer = CacheWriter(self.cache, self.scope, part=self.part)

    async def known(self) -> dict[int, list[Any]]:
        stored = await asyncio.to_thread(self.cache.load, self.scope, self.reads)
        found = {index: [self.task.load(a) for a in stored[key]] for index, key in self.keys.items()
                 if key in stored}
        self.usage.cache_hits = len(found)
        return found

    async def remember(self, chunk: Chunk, answers: list[Any]) -> None:
        await self._writer.add(self.keys[chunk.index], [self.task.dump(a) for a in answers])

    async def flush(self) -> None:
        await self._writer.flush()


def _map_cache(run: JobRun, task: ChunkTask, document: Document, chunks: list[Chunk], model: str) -> JobCache | None:
    """The job's view of the map cache; None when there is no cache or the task's answers are not cached."""
    return map_cache_for(run.services, run.job, task, chunks, model=model,
                         document_sha256=document_digest(document.text), usage=run.usage)


def map_cache_for(services: Services, job: Job, task: ChunkTask, chunks: list[Chunk], *, model: str,
                  document_sha256: str, usage: Usage, part: str | None = None) -> JobCache | None:
    """The map cache for ``chunks`` of one job's document (all of them, or a workflow batch's); None when there is
    no cache or the task's answers are not cached. A workflow batch names its ``part``: it stores its answers there
    and reads only that part and the queue path's, so each batch's lookup stays the size of a batch, not of the
    document (a document of N chunks would otherwise cost N²/batch GETs over its batches)."""
    params = task.cache_params()
    cache = services.map_cache
    if cache is None or params is None:
        return None
    identity: dict[str, Any] = {"endpoint": services.llm.base_url or "", "model": model,
                                "prompt_version": task.prompt_version, "params": params}
    owner = SHARED_OWNER if services.settings.map_cache_shared else (job.client or "_unowned")
    scope = map_cache_scope(owner=owner, **identity, document_sha256=document_sha256)
    keys = {c.index: map_cache_key(**identity, pages=c.pages, text=c.text) for c in chunks}
    if part is None:
        return JobCache(task, keys, scope, cache, usage)
    return JobCache(task, keys, scope, cache, usage, reads=(JOB_PART, part), part=part)


class _ProgressWriter:
    """``chunks_done`` on the job's row as chunks finish: at most one write a second, off the event loop.

    A write per chunk would hot-spot the row on large documents, and a write on the loop would hold up every call
    waiting to start. Writes that arrive out of order are harmless (progress only moves forward); ``drain()`` waits
    for the last one before the job moves on.
    """

    def __init__(self, run: JobRun, total: int) -> None:
        self._run = run
        self._total = total
        self._last_write = time.monotonic()
        self._writes: set[asyncio.Task[None]] = set()

    def __call__(self, done: int) -> None:
        if time.monotonic() - self._last_write < PROGRESS_INTERVAL_SECONDS or done >= self._total:
            return
        self._last_write = time.monotonic()
        write = asyncio.create_task(asyncio.to_thread(self._run.services.lifecycle.progress, self._run.attempt,
                                                      done))
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)

    async def drain(self) -> None:
        for outcome in await asyncio.gather(*self._writes, return_exceptions=True):
            if isinstance(outcome, Exception):
                # Progress is for the people watching; the job's own writes will meet any real table failure.
                logger.warning("progress write failed", extra={"error": type(outcome).__name__})


def _budget_refusal(run: JobRun, task: ChunkTask, chunks: list[Chunk],
                    known: dict[int, list[Any]]) -> JobFailure | None:
    """The failure to raise before spending anything when the estimate is over the job's budget, else None.

    ``known`` chunks (answered from the cache) cost nothing; the reduce is estimated over every chunk's answer.
    """
    if run.usage.model is None:
        return None
    asked = [c for c in chunks if c.index not in known]
    prompt = completion = 0
    for chunk in asked:
        p, c = task.estimate_map(chunk)
        prompt, completion = prompt + p, completion + c
    p, c = task.estimate_reduce(len(chunks))
    budget = Budget.for_task(run.job.task, run.services.settings.default_max_total_tokens)
    refusal = budget.refusal(run.usage, run.services.settings.prices, prompt_tokens=prompt + p,
                             completion_tokens=completion + c, calls=len(asked) + (1 if p else 0))
    if budget.max_cost_usd is not None and run.usage.estimated_cost_usd is None:
        # Refused at submit; a job queued before the price table changed must not spend without a bound either.
        return JobFailure("unpriced_model", f"no price is known for model {run.usage.model}: max_cost_usd cannot be "
                                            "enforced, so nothing was spent")
    return refusal


def _result(run: JobRun, task: ChunkTask, document: Document, chunks: list[Chunk], final: Any,
            levels: int) -> dict[str, Any]:
    return {
        "job_id": run.job.job_id,
        "task": run.job.task,
        "provider": task.provider,
        "model": run.usage.model,
        "prompt_version": task.prompt_version,
        **task.result(final),
        "document": {"kind": document.kind, "pages": document.page_count, "characters": len(document.text),
                     "chunks": len(chunks), "tokens": run.usage.document_tokens},
        "chunks": [{"index": c.index, "pages": c.pages, "start": c.start, "end": c.end, "tokens": c.tokens}
                   for c in chunks],
        "reduce_levels": levels,
        "usage": run.usage.to_dict(),
        "warnings": run.warnings,
    }


def _emit_metrics(run: JobRun) -> None:
    for stage in ("extract_seconds", "chunk_seconds", "map_seconds", "reduce_seconds"):
        if stage in run.timings:
            metrics.add_metric(name=stage.split("_")[0].capitalize() + "Milliseconds", unit="Milliseconds",
                               value=round(run.timings[stage] * 1000))


def _emit_model_metrics(run: JobRun) -> None:
    """What the job's LLM work cost, with the model as a dimension: tokens, cost, calls, retries, cache hits, latency.

    Emitted however the job ended — a failed job's tokens were paid for too — and for this attempt's spend only:
    earlier attempts emitted theirs.
    """
    usage = run.usage
    spend = usage.attempt_spend(run.services.settings.prices)
    if usage.model is None or not (spend["calls"] or usage.cache_hits):
        return
    from aws_lambda_powertools.metrics import EphemeralMetrics

    per_model = EphemeralMetrics(namespace=METRICS_NAMESPACE)
    batches = [run.latencies[i:i + _EMF_VALUES] for i in range(0, len(run.latencies), _EMF_VALUES)] or [[]]
    for position, batch in enumerate(batches):
        per_model.add_dimension(name="model", value=usage.model)  # each flush clears the dimensions
        if position == 0:
            per_model.add_metric(name="LLMCalls", unit="Count", value=spend["calls"])
            per_model.add_metric(name="LLMRetries", unit="Count", value=spend["retries"])
            per_model.add_metric(name="PromptTokens", unit="Count", value=spend["prompt_tokens"])
            per_model.add_metric(name="CompletionTokens", unit="Count", value=spend["completion_tokens"])
            per_model.add_metric(name="MapCacheHits", unit="Count", value=usage.cache_hits)
            per_model.add_metric(name="CostMicroUSD", unit="Count", value=round((spend["cost_usd"] or 0) * 1_000_000))
        for latency in batch:
            per_model.add_metric(name="LLMLatency", unit="Milliseconds", value=round(latency * 1000))
        per_model.flush_metrics()
