"""How close docpipe's map-reduce comes to the physical limit, and how it compares with LangChain's.

A provider that allows C calls at once, each taking L seconds, cannot summarise a document of N chunks faster than
extraction + ceil(N/C)·L + (reduce levels)·L. The benchmark runs a real job (``pipeline.process_job`` on the local
AWS emulator, the production ``Services.chat`` path with its rate limiter, circuit breaker and map cache) against
the fake OpenAI server of the test suite with a fixed latency, and reports the makespan as a ratio to that limit —
in the same run as the same pipeline at concurrency 1, the same job resubmitted (cache warm), and LangChain's
``load_summarize_chain(chain_type="map_reduce")`` with ``ChatOpenAI`` pointed at the same server on the same chunks.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent.parent
DOCUMENT = PROJECT.parent / "shared" / "corpus" / "pdfs" / "samplefiles__GeoTopo-komprimiert.pdf"
LATENCY_SECONDS = 0.25
CONCURRENCY = 16
STAGE = "bench"
BUCKET = "docpipe-bench-documents"
MODEL = "gpt-4o-mini"
REPEATS = 3


@dataclass
class Row:
    name: str
    client_concurrency: int
    map_calls: int
    reduce_levels: int
    calls: int
    map_reduce_seconds: float
    extraction_seconds: float | None = None
    job_seconds: float | None = None

    @property
    def map_reduce_limit(self) -> float:
        return (math.ceil(self.map_calls / CONCURRENCY) + self.reduce_levels) * LATENCY_SECONDS

    def cells(self) -> list[str]:
        cells = [self.name, str(self.client_concurrency), str(self.map_calls), str(self.reduce_levels),
                 str(self.calls), f"{self.map_reduce_seconds:.2f}", f"{self.map_reduce_limit:.2f}",
                 f"{self.map_reduce_seconds / self.map_reduce_limit:.3f}"]
        if self.job_seconds is None or self.extraction_seconds is None:
            return [*cells, "–", "–", "–"]
        limit = self.extraction_seconds + self.map_reduce_limit
        return [*cells, f"{self.job_seconds:.2f}", f"{limit:.2f}", f"{self.job_seconds / limit:.3f}"]


def _document() -> tuple[bytes, str, str]:
    """(bytes, declared type, description): the long corpus PDF, or a generated long text without it."""
    if DOCUMENT.exists():
        return DOCUMENT.read_bytes(), "pdf", f"{DOCUMENT.name} (117 pages)"
    sentences = ["Harbour lights guided the ships past the rocks at night.",
                 "Keepers trimmed the wicks and wound the clockwork every evening.",
                 "The lenses were polished until they threw their beams across the bay."]
    pages = [" ".join(f"{sentences[(p + i) % 3]} Page {p + 1}, paragraph {i}." for i in range(40))
             for p in range(120)]
    return "\f".join(pages).encode(), "text", "generated text (120 pages)"


def _is_map_request(request: dict[str, Any]) -> bool:
    return request["json"]["messages"][-1]["content"].startswith("<document")


def _excerpt(request: dict[str, Any]) -> str:
    content = request["json"]["messages"][-1]["content"]
    return content.split("\n", 1)[-1][:80]


def _serve(conn: Any, latency: float) -> None:
    """The child process: the fake server, answering ``reset`` / ``counts`` / ``stop`` on the pipe."""
    from tests.support.fake_openai import FakeOpenAI

    with FakeOpenAI() as fake:
        fake.latency = latency
        conn.send(fake.base_url)
        while (command := conn.recv()) != "stop":
            if command == "reset":
                fake.reset()
                conn.send(None)
            else:
                requests = fake.chat_requests
                times = [r["time"] for r in requests]
                # The provider's clock on the wall's, so a caller can line requests up with its own events.
                wall = time.time() - time.monotonic()
                conn.send({"calls": fake.calls, "requests": len(requests),
                           "maps": sum(1 for r in requests if _is_map_request(r)),
                           # first request's start to last answer's end: the LLM phase as the provider saw it
                           "llm_seconds": (max(times) + latency - min(times)) if times else 0.0,
                           "starts": sorted(t + wall for t in times),
                           # each map request's start and the first words of its excerpt (which chunk it asked)
                           "map_starts": [(r["time"] + wall, _excerpt(r)) for r in requests if _is_map_request(r)]})
    conn.send(None)


class FakeProvider:
    """The fake OpenAI server in its own process, as a provider is on its own machine: its CPU is not the client's."""

    def __init__(self, latency: float) -> None:
        self._latency = latency

    def __enter__(self) -> FakeProvider:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, self._latency), daemon=True)
        self._process.start()
        self.base_url = self._conn.recv()
        return self

    def _ask(self, command: str) -> Any:
        self._conn.send(command)
        return self._conn.recv()

    def reset(self) -> None:
        self._ask("reset")

    def counts(self) -> dict[str, Any]:
        """Since the last reset: ``calls`` answered or failed, chat ``requests``, ``maps`` among them,
        ``llm_seconds`` from the first request to the last answer, and each request's ``starts`` (wall clock)."""
        return self._ask("counts")

    def __exit__(self, *exc: object) -> None:
        self._ask("stop")
        self._process.join(timeout=10)


class _Stack:
    """The AWS emulator in its own process, with docpipe's resources, and the environment that points at it."""

    def __enter__(self) -> _Stack:
        from devstack.emulator import DUMMY_CREDENTIALS, Emulator, free_port
        from devstack.resources import provision

        self._emulator = Emulator(free_port(), PROJECT / ".local" / "bench-emulator.log").start()
        os.environ.update(DUMMY_CREDENTIALS, AWS_ENDPOINT_URL=self._emulator.url, DOCPIPE_STAGE=STAGE,
                          DOCPIPE_BUCKET=BUCKET, POWERTOOLS_METRICS_DISABLED="true")
        self.resources = provision(self._emulator.url, stage=STAGE, bucket=BUCKET, s3_notifications=[],
                                   visibility_timeout=60)
        return self

    def __exit__(self, *exc: object) -> None:
        self._emulator.stop()


def _services(fake_url: str, concurrency: int) -> Any:
    from chalicelib.bootstrap import build
    from chalicelib.config import load_settings

    return build(load_settings({**os.environ, "OPENAI_BASE_URL": fake_url, "OPENAI_API_KEY": "sk-bench",
                                "DOCPIPE_LLM_CONCURRENCY": str(concurrency), "DOCPIPE_BREAKER_FAILURES": "1000",
                                "DOCPIPE_MAP_CACHE": "true"}))


def _clear_cache() -> None:
    from chalicelib.aws import CACHE_PREFIX
    from chalicelib.aws import clients as aws

    s3 = aws.client("s3")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=CACHE_PREFIX):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=BUCKET, Delete={"Objects": keys})


def _docpipe(name: str, fake: Any, data: bytes, declared: str, *, concurrency: int, warm: bool = False) -> Row:
    from chalicelib.jobs import Job
    from chalicelib.pipeline import Outcome, run_job

    if not warm:
        _clear_cache()
    services = _services(fake.base_url, concurrency)
    job_id = uuid.uuid4().hex
    key = services.documents.put_input(job_id, data, "application/pdf" if declared == "pdf" else "text/plain")
    services.jobs.create(Job(job_id=job_id, status="QUEUED", task={"type": "summarize"},
                             document={"s3_key": key, "declared_type": declared}, created_at=time.time()))
    fake.reset()
    started = time.monotonic()
    attempt = services.lifecycle.claim(job_id, lease_seconds=900)
    outcome = run_job(attempt, services)
    job_seconds = time.monotonic() - started
    assert outcome is Outcome.SUCCEEDED, services.jobs.get(job_id)
    result = services.documents.get_result(services.jobs.get(job_id).result_key)
    timings = result["timings"]
    extraction = timings["extract_seconds"] + timings["chunk_seconds"]
    counts = fake.counts()
    calls, maps = counts["calls"], counts["maps"]
    # From the chunks to the final answer: cache lookup, budget, map and reduce (the job adds its bookkeeping).
    return Row(name, concurrency, maps, result["reduce_levels"], calls,
               map_reduce_seconds=timings["total_seconds"] - extraction, extraction_seconds=extraction,
               job_seconds=job_seconds)


def _chunks(data: bytes, declared: str) -> list[Any]:
    from chalicelib.config import load_settings
    from chalicelib.documents import chunk_document, extract_document, get_encoding

    settings = load_settings(os.environ)
    document = extract_document(data, max_pages=settings.max_document_pages, declared_type=declared)
    return chunk_document(document, encoding=get_encoding(MODEL), max_tokens=settings.chunk_tokens,
                          overlap_tokens=settings.chunk_overlap_tokens)


def _langchain(name: str, fake: Any, chunks: list[Any], *, concurrency: int | None) -> Row:
    """LangChain's map-reduce summary of the same chunks: ``invoke`` as documented, or ``ainvoke`` capped at C."""
    import httpx2
    from langchain_classic.chains.summarize import load_summarize_chain
    from langchain_core.documents import Document
    from langchain_openai import ChatOpenAI
    from pydantic import SecretStr

    options: dict[str, Any] = {}
    if concurrency is not None:
        # At most C connections: the provider's limit, the same one docpipe is held to.
        options["http_async_client"] = httpx2.AsyncClient(limits=httpx2.Limits(max_connections=concurrency))
    llm = ChatOpenAI(model=MODEL, base_url=fake.base_url, api_key=SecretStr("sk-bench"), temperature=0, max_retries=0,
                     **options)
    chain = load_summarize_chain(llm, chain_type="map_reduce")
    documents = [Document(page_content=c.text) for c in chunks]
    fake.reset()
    started = time.monotonic()
    if concurrency is None:
        chain.invoke({"input_documents": documents})
    else:
        asyncio.run(chain.ainvoke({"input_documents": documents}))
    seconds = time.monotonic() - started
    calls = fake.counts()["calls"]
    # One map call per document; the rest is the reduce: one call, unless collapse steps (each a level) were needed.
    return Row(name, concurrency or 1, len(chunks), calls - len(chunks), calls, seconds)


def _median(rows: list[Row]) -> Row:
    return sorted(rows, key=lambda row: row.map_reduce_seconds)[len(rows) // 2]


def run() -> str:
    data, declared, description = _document()
    with _Stack(), FakeProvider(LATENCY_SECONDS) as fake:
        from chalicelib.observability import logger

        logger.setLevel("WARNING")  # the job's INFO lines would bury the table
        # A first job pays the imports and the first connections; a warm worker does not.
        _docpipe("warm-up", fake, b"A short note about harbour lights.", "text", concurrency=CONCURRENCY)
        chunks = _chunks(data, declared)
        # The parallel runs differ by tens of milliseconds, less than one run's noise on a shared machine: each is
        # run REPEATS times, interleaved, and its median run is reported.
        cold, warm, langchain = [], [], []
        for _ in range(REPEATS):
            cold.append(_docpipe(f"docpipe, C={CONCURRENCY}", fake, data, declared, concurrency=CONCURRENCY))
            warm.append(_docpipe(f"docpipe, C={CONCURRENCY}, resubmitted (cache warm)", fake, data, declared,
                                 concurrency=CONCURRENCY, warm=True))
            langchain.append(_langchain(f"LangChain map_reduce, ainvoke, ≤{CONCURRENCY} connections", fake, chunks,
                                        concurrency=CONCURRENCY))
        rows = [_median(cold), _median(warm), _docpipe("docpipe, C=1", fake, data, declared, concurrency=1),
                _median(langchain),
                _langchain("LangChain map_reduce, invoke (as documented)", fake, chunks, concurrency=None)]
    header = ["run", "client C", "map calls N", "reduce levels", "LLM calls", "map+reduce s", "limit s",
              "ratio", "job s", "job limit s", "job ratio"]
    table = [header, ["---"] * len(header)] + [row.cells() for row in rows]
    lines = ["| " + " | ".join(cells) + " |" for cells in table]
    return "\n".join([
        f"Document: {description}; {len(chunks)} chunks of ≤1000 tokens. Fake LLM latency L = {LATENCY_SECONDS} s; "
        f"the provider allows C = {CONCURRENCY} calls at once.",
        "limit = ceil(N/C)·L + levels·L (map+reduce); job limit adds the measured extraction (extract + chunk).",
        f"C={CONCURRENCY} rows: the median of {REPEATS} interleaved runs (map+reduce of each: "
        + "; ".join(f"{group[0].name.split(',')[0]} {', '.join(f'{r.map_reduce_seconds:.2f}' for r in group)}"
                    for group in (cold, langchain)) + ").",
        *lines,
    ])
