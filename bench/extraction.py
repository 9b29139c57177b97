"""Extraction speed and memory: docpipe's guarded reader and text-quality gate beside pypdf alone, in a process shaped
like the worker.

Each measurement runs in a fresh Python process that first loads what a warm worker holds (app.py, openai, the
tokenizer), so that its peak resident memory (VmHWM; ru_maxrss would carry the bench's own peak across exec) is
the worker's. docpipe reads pages in a forked reader process, measured with RUSAGE_CHILDREN; its peak also counts
the pages it shares with the worker, so worker + reader is an upper bound on what the Lambda holds. It is compared
with the worker's memory setting in .chalice/config.json. "docpipe" is the whole of ``extract_document``: reading,
normalising and the gate. The two readers take turns, ``RUNS`` times, and the median is reported, so that a busy
machine slows both alike. The last rows show what the guard costs on a one-page document, what it saves on a hostile
page, and what the gate alone costs per page.
"""

from __future__ import annotations

import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from bench.documents import PROJECT, long_pdfs

SMALL_RUNS = 30
RUNS = 5


def run() -> str:
    memory_mb = _worker_memory_mb()
    lines = [f"| document | pages | pypdf alone (median) | docpipe (median) | docpipe ÷ pypdf | runs, s (pypdf / "
             f"docpipe) | worker + reader peak MB | of the worker's {memory_mb} MB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for description, data in long_pdfs():
        times: dict[str, list[float]] = {"docpipe": [], "pypdf alone": []}
        peak = pages = 0
        for turn in range(RUNS):
            order = ["pypdf alone", "docpipe"] if turn % 2 == 0 else ["docpipe", "pypdf alone"]
            for reader in order:
                m = _in_fresh_worker(_measure, reader, data)
                times[reader].append(m["seconds"])
                pages = m["pages"]
                if reader == "docpipe":
                    peak = max(peak, m["worker_mb"] + m["reader_mb"])
        pypdf, docpipe = (statistics.median(times[r]) for r in ("pypdf alone", "docpipe"))
        runs = " ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(times["pypdf alone"], times["docpipe"], strict=True))
        lines.append(f"| {description} | {pages} | {pypdf:.2f} s | {docpipe:.2f} s ({pages / docpipe:.0f} pages/s) "
                     f"| {docpipe / pypdf:.2f}× | {runs} | {peak:.0f} | {100 * peak / memory_mb:.0f} % |")
    hostile = _hostile_pdf()
    m = _in_fresh_worker(_measure, "docpipe", hostile)
    lines.append(f"| hostile: page 2 holds a 60 MB hex string ({len(hostile) // 1024} kB PDF) | {m['pages']} | "
                 f"80 s, ~740 MB (measured once) | {m['seconds']:.2f} s | | | "
                 f"{m['worker_mb'] + m['reader_mb']:.0f} | |")
    if m["warnings"]:
        lines.append(f"| ↳ warnings: {'; '.join(m['warnings'])} | | | | | | | |")
    small = _in_fresh_worker(_small_document_overhead)
    gate = _in_fresh_worker(_gate_cost)
    return "\n".join([
        *lines,
        f"One-page PDF, median of {SMALL_RUNS} runs in a warm worker ({small['worker_mb']:.0f} MB resident): "
        f"pypdf alone {small['pypdf_ms']:.1f} ms, docpipe {small['docpipe_ms']:.1f} ms "
        f"(+{small['docpipe_ms'] - small['pypdf_ms']:.1f} ms for the guard, normalisation and the gate; the reader "
        "process is kept between documents).",
        "The gate alone (assess_page, one thread, median of 5 passes): " + "; ".join(
            f"{name} {ms:.3f} ms/page" for name, ms in gate.items()) + ".",
    ])


def _measure(reader: str, data: bytes) -> dict[str, Any]:
    import io
    import resource

    _load_worker()
    warnings: list[str] = []
    started = time.perf_counter()
    if reader == "docpipe":
        from chalicelib.documents.reading import extract_document

        document = extract_document(data, max_pages=2000, declared_type="pdf")
        pages, warnings = document.page_count, document.warnings
    else:
        from pypdf import PdfReader

        pdf = PdfReader(io.BytesIO(data))
        pages = len([page.extract_text() for page in pdf.pages])
    seconds = time.perf_counter() - started
    return {"pages": pages, "seconds": seconds, "warnings": warnings, "worker_mb": _peak_resident_mb(),
            "reader_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def _small_document_overhead() -> dict[str, float]:
    import io

    from pypdf import PdfReader

    from chalicelib.documents.reading import extract_document
    from tests.support.pdfs import make_pdf

    _load_worker()
    data = make_pdf(["A short document: one page, two sentences. It is read the way the worker reads it."])

    def pypdf_alone() -> None:
        [page.extract_text() for page in PdfReader(io.BytesIO(data)).pages]

    def docpipe() -> None:
        extract_document(data, max_pages=10, declared_type="pdf")

    timings: dict[str, list[float]] = {"pypdf_ms": [], "docpipe_ms": []}
    docpipe()  # the first call prepares pypdf and forks the reader once per process, as in a Lambda's first job
    for _ in range(SMALL_RUNS):
        for name, read in (("pypdf_ms", pypdf_alone), ("docpipe_ms", docpipe)):
            started = time.perf_counter()
            read()
            timings[name].append((time.perf_counter() - started) * 1000)
    return {**{name: statistics.median(ms) for name, ms in timings.items()}, "worker_mb": _peak_resident_mb()}


def _gate_cost() -> dict[str, float]:
    """Milliseconds per page of the gate alone, on the long documents' pages and on pages in other scripts."""
    from chalicelib.documents.legibility import assess_page, score_text
    from chalicelib.documents.pdfpages import PageText, ReadingLimits, read_pages
    from tests.support.languages import GOOD

    score_text("warm up the stopword lists and the ideograph sets")
    costs: dict[str, float] = {}
    samples = [(name.split(",")[0], [p.text for p in read_pages(data, max_pages=2000, limits=ReadingLimits())
                                     if isinstance(p, PageText)])
               for name, data in long_pdfs()]
    samples.append((f"{len(GOOD)} pages in other scripts and shapes (tests/support/languages.py)",
                    list(GOOD.values()) * 5))
    for name, texts in samples:
        passes = []
        for _ in range(5):
            started = time.perf_counter()
            for text in texts:
                assess_page(text)
            passes.append((time.perf_counter() - started) * 1000 / len(texts))
        costs[name] = statistics.median(passes)
    return costs


def _peak_resident_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def _load_worker() -> None:
    """What a warm worker holds before it reads a document: the app, the LLM client library, the tokenizer."""
    import logging
    import os

    # docpipe silences pypdf's per-font warnings; pypdf alone gets the same quiet, and both the same cost.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("DOCPIPE_STAGE", "bench")
    import openai  # noqa: F401

    import app  # noqa: F401
    from chalicelib.documents.tokens import get_encoding

    get_encoding("gpt-4o-mini")


def _in_fresh_worker(function: Any, *args: Any) -> Any:
    """``function(*args)`` in a new interpreter, so that peak memory is this measurement's alone."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def _hostile_pdf() -> bytes:
    """A readable page, then one whose content stream is a 60 MB hex string that compresses to 60 kB."""
    from tests.support.pdfs import crafted_pdf, text_page

    return crafted_pdf([text_page("A readable first page."), b"BT /F1 1 Tf <" + b"41" * 30_000_000 + b"> Tj ET"])


def _worker_memory_mb() -> int:
    config = json.loads((PROJECT / ".chalice" / "config.json").read_text())
    sizes = {stage["lambda_functions"]["process_jobs"]["lambda_memory_size"]
             for stage in config["stages"].values() if "process_jobs" in stage.get("lambda_functions", {})}
    return min(sizes)
