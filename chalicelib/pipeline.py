"""One job, start to finish: extract → chunk → map (LLM calls on chunks in parallel) → reduce → store.

Plain Python that knows nothing of Lambda or SQS: the worker hands it a job id and the services; it returns how the
job ended, or raises ``TransientError`` when the attempt should be retried.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from chalicelib.chunking import Chunk, chunk_document
from chalicelib.errors import JobFailure
from chalicelib.extract import Document, extract_document
from chalicelib.jobs import Job
from chalicelib.observability import logger, metrics
from chalicelib.services import Services
from chalicelib.summarize import (DEFAULT_TARGET_WORDS, PROMPT_VERSION, ExtractiveSummarizer, LLMSummarizer,
                                  map_words_for, reduce_partials)
from chalicelib.usage import Usage, cost_usd

# Room for the reduce prompt's instructions and its answer inside the model's context window.
REDUCE_CONTEXT_TOKENS = 12_000
_PROMPT_OVERHEAD_TOKENS = 120
PROGRESS_INTERVAL_SECONDS = 1.0


@dataclass
class JobRun:
    job: Job
    services: Services
    usage: Usage
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def process_job(job_id: str, services: Services, *, lease_seconds: float) -> str:
    """Run the job if this delivery may claim it. Returns ``succeeded``, ``failed`` or ``skipped``."""
    job = services.jobs.claim(job_id, lease_seconds)
    if job is None:
        current = services.jobs.get(job_id)
        logger.info("delivery skipped", extra={"job_status": current.status if current else None})
        return "skipped"
    settings = services.settings
    model = job.task.get("model") or settings.model
    run = JobRun(job, services, Usage(model=model if settings.uses_openai else None,
                                      provider="openai" if settings.uses_openai else "offline-extractive"))
    started = time.monotonic()
    try:
        result = asyncio.run(_run(run, model))
    except JobFailure as failure:
        logger.warning("job failed", extra={"error": failure.to_dict()})
        services.jobs.mark_failed(job_id, failure.to_dict(), usage=run.usage.to_dict(), warnings=run.warnings)
        metrics.add_metric(name="JobsFailed", unit="Count", value=1)
        return "failed"
    run.timings["total_seconds"] = round(time.monotonic() - started, 3)
    result["timings"] = run.timings
    key = services.documents.put_result(job_id, result)
    stored = services.jobs.mark_succeeded(job_id, result_key=key, usage=run.usage.to_dict(), warnings=run.warnings,
                                          timings=run.timings, chunks_total=result["document"]["chunks"])
    if not stored:
        logger.warning("job finished elsewhere while this attempt ran; its result was kept")
        return "skipped"
    _emit_metrics(run)
    logger.info("job succeeded", extra={"usage": run.usage.to_dict(), "timings": run.timings})
    return "succeeded"


async def _run(run: JobRun, model: str) -> dict[str, Any]:
    services, job, settings = run.services, run.job, run.services.settings
    clock = time.monotonic()
    data = services.documents.read_document(job.document["s3_key"], settings.max_document_bytes)
    document = extract_document(data, max_pages=settings.max_document_pages,
                                declared_type=job.document.get("declared_type"))
    run.warnings.extend(document.warnings)
    run.timings["extract_seconds"] = round(time.monotonic() - clock, 3)

    clock = time.monotonic()
    from chalicelib.tokens import get_encoding

    encoding = get_encoding(model)
    chunks = chunk_document(document, encoding=encoding, max_tokens=settings.chunk_tokens,
                            overlap_tokens=settings.chunk_overlap_tokens)
    run.usage.document_tokens = sum(c.tokens for c in chunks)
    run.timings["chunk_seconds"] = round(time.monotonic() - clock, 3)
    services.jobs.set_chunks_total(job.job_id, len(chunks), run.warnings)
    logger.info("document chunked", extra={"pages": document.page_count, "chunks": len(chunks),
                                           "document_tokens": run.usage.document_tokens})

    target_words = job.task.get("target_words", DEFAULT_TARGET_WORDS)
    map_words = map_words_for(target_words, len(chunks))
    chat = None
    if settings.uses_openai:
        _check_budget(run, chunks, map_words, target_words)
        chat = services.chat(model)
        summarizer: Any = LLMSummarizer(chat, map_words=map_words,
                                        count_tokens=lambda text: len(encoding.encode(text, disallowed_special=())),
                                        on_call=lambda completion: _record_call(run, completion))
    else:
        summarizer = ExtractiveSummarizer(map_words=map_words, page_at=document.page_at)
        summarizer.prepare(document.text, chunks)
    try:
        clock = time.monotonic()
        partials = await _map(run, summarizer, chunks)
        run.timings["map_seconds"] = round(time.monotonic() - clock, 3)
        clock = time.monotonic()
        summary, levels = await reduce_partials(summarizer, partials, context_tokens=REDUCE_CONTEXT_TOKENS,
                                                target_words=target_words)
        run.timings["reduce_seconds"] = round(time.monotonic() - clock, 3)
    finally:
        if chat is not None:
            await chat.close()
    return _result(run, document, chunks, summary, levels, summarizer.provider)


async def _map(run: JobRun, summarizer: Any, chunks: list[Chunk]) -> list[Any]:
    """Every chunk at once, at most ``llm_concurrency`` in flight; the first permanent error cancels the rest."""
    settings = run.services.settings
    gate = asyncio.Semaphore(settings.llm_concurrency)
    results: list[Any] = [None] * len(chunks)
    done = 0
    last_write = time.monotonic()

    async def one(chunk: Chunk) -> None:
        nonlocal done, last_write
        async with gate:
            results[chunk.index] = await summarizer.map(chunk)
        done += 1
        # A write per chunk would hot-spot the job's row on large documents: at most one a second.
        if time.monotonic() - last_write >= PROGRESS_INTERVAL_SECONDS and done < len(chunks):
            last_write = time.monotonic()
            run.services.jobs.record_progress(run.job.job_id, done)

    try:
        async with asyncio.TaskGroup() as group:
            for chunk in chunks:
                group.create_task(one(chunk))
    except ExceptionGroup as errors:
        raise _decisive(errors) from None
    return results


def _decisive(errors: BaseExceptionGroup) -> BaseException:
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


def _record_call(run: JobRun, completion: Any) -> None:
    run.usage.add_call(completion.prompt_tokens, completion.completion_tokens, run.services.prices)
    limit = run.job.task.get("max_total_tokens") or run.services.settings.default_max_total_tokens
    if run.usage.total_tokens > limit:
        raise JobFailure("budget_exceeded", f"the job spent {run.usage.total_tokens} tokens, over its budget of "
                                            f"{limit}; it was stopped")
    max_cost = run.job.task.get("max_cost_usd")
    if max_cost is not None and run.usage.cost_usd is not None and run.usage.cost_usd > max_cost:
        raise JobFailure("budget_exceeded", f"the job spent ${run.usage.cost_usd:.4f}, over its budget of "
                                            f"${max_cost}; it was stopped")


def _check_budget(run: JobRun, chunks: list[Chunk], map_words: int, target_words: int) -> None:
    """Refuse before spending anything when the estimate is already over the job's budget."""
    completion = len(chunks) * map_words * 2 + (target_words * 2 if len(chunks) > 1 else 0)
    prompt = sum(c.tokens + _PROMPT_OVERHEAD_TOKENS for c in chunks)
    if len(chunks) > 1:
        prompt += len(chunks) * map_words * 2 + _PROMPT_OVERHEAD_TOKENS
    estimate = prompt + completion
    limit = run.job.task.get("max_total_tokens") or run.services.settings.default_max_total_tokens
    if estimate > limit:
        raise JobFailure("budget_exceeded", f"the job would need about {estimate} tokens ({len(chunks)} chunks); "
                                            f"its budget is {limit}. Nothing was spent.")
    max_cost = run.job.task.get("max_cost_usd")
    if max_cost is not None:
        cost = cost_usd(run.services.prices, run.usage.model or "", prompt, completion)
        if cost is None:
            run.warnings.append(f"no price is known for model {run.usage.model}: max_cost_usd cannot be enforced")
        elif cost > max_cost:
            raise JobFailure("budget_exceeded", f"the job would cost about ${cost:.4f} ({estimate} tokens); its "
                                                f"budget is ${max_cost}. Nothing was spent.")


def _result(run: JobRun, document: Document, chunks: list[Chunk], summary: Any, levels: int,
            provider: str) -> dict[str, Any]:
    result: dict[str, Any] = {
        "job_id": run.job.job_id,
        "task": run.job.task,
        "provider": provider,
        "model": run.usage.model,
        "prompt_version": PROMPT_VERSION,
        "summary": summary.text,
        "pages_cited": sorted({p for _t, p in summary.sentences}) if summary.sentences else _cited_pages(summary.text),
        "document": {"kind": document.kind, "pages": document.page_count, "characters": len(document.text),
                     "chunks": len(chunks), "tokens": run.usage.document_tokens},
        "chunks": [{"index": c.index, "pages": c.pages, "start": c.start, "end": c.end, "tokens": c.tokens}
                   for c in chunks],
        "reduce_levels": levels,
        "usage": run.usage.to_dict(),
        "warnings": run.warnings,
    }
    if summary.sentences:
        result["sentences"] = [{"text": t, "page": p} for t, p in summary.sentences]
    if provider == "offline-extractive":
        result["note"] = ("No LLM endpoint is configured (OPENAI_API_KEY / OPENAI_BASE_URL), so docpipe's offline "
                          "provider selected the document's most representative sentences by word-frequency "
                          "ranking. Nothing here was written by a language model.")
    return result


def _cited_pages(text: str) -> list[int]:
    import re

    return sorted({int(n) for n in re.findall(r"\(pp?\.\s*(\d+)", text)})


def _emit_metrics(run: JobRun) -> None:
    metrics.add_metric(name="JobsSucceeded", unit="Count", value=1)
    metrics.add_metric(name="LLMCalls", unit="Count", value=run.usage.calls)
    metrics.add_metric(name="PromptTokens", unit="Count", value=run.usage.prompt_tokens)
    metrics.add_metric(name="CompletionTokens", unit="Count", value=run.usage.completion_tokens)
    if run.usage.cost_usd:
        metrics.add_metric(name="CostMicroUSD", unit="Count", value=round(run.usage.cost_usd * 1_000_000))
    for stage in ("extract_seconds", "chunk_seconds", "map_seconds", "reduce_seconds"):
        if stage in run.timings:
            metrics.add_metric(name=stage.replace("_seconds", "Milliseconds").capitalize(), unit="Milliseconds",
                               value=round(run.timings[stage] * 1000))
