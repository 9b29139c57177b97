"""Extraction speed and memory: docpipe's guarded reader beside pypdf alone, in a process shaped like the worker.

Each measurement runs in a fresh Python process that first loads what a warm worker holds (app.py, openai, the
tokenizer), so that its peak resident memory (VmHWM; ru_maxrss would carry the bench's own peak across exec) is
the worker's. docpipe reads pages in forked children, measured with RUSAGE_CHILDREN; a child's peak also counts
the pages it shares with the worker, so worker + reader is an upper bound on what the Lambda holds. It is compared with the worker's memory setting in .chalice/config.json.
The last rows show what the guard costs on a one-page document, and what it saves on a hostile page.
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


def run() -> str:
    memory_mb = _worker_memory_mb()
    lines = [f"| document | pages | reader | s | pages/s | worker peak MB | reader peak MB | worker + reader MB "
             f"| of the worker's {memory_mb} MB |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    hostile = _hostile_pdf()
    hostile_description = f"hostile: page 2 holds a 60 MB hex string ({len(hostile) // 1024} kB PDF)"
    for description, data in [*long_pdfs(), (hostile_description, hostile)]:
        readers = ["docpipe"] if description.startswith("hostile") else ["docpipe", "pypdf alone"]
        for reader in readers:
            m = _in_fresh_worker(_measure, reader, data)
            total = m["worker_mb"] + m["reader_mb"]
            lines.append(f"| {description} | {m['pages']} | {reader} | {m['seconds']:.2f} | "
                         f"{m['pages'] / m['seconds']:.1f} | {m['worker_mb']:.0f} | {m['reader_mb']:.0f} | "
                         f"{total:.0f} | {100 * total / memory_mb:.0f} % |")
            if m["warnings"]:
                lines.append(f"| ↳ warnings: {'; '.join(m['warnings'])} | | | | | | | | |")
    small = _in_fresh_worker(_small_document_overhead)
    return "\n".join([
        *lines,
        f"One-page PDF, median of {SMALL_RUNS} runs in a warm worker ({small['worker_mb']:.0f} MB resident): "
        f"pypdf alone {small['pypdf_ms']:.1f} ms, docpipe {small['docpipe_ms']:.1f} ms "
        f"(+{small['docpipe_ms'] - small['pypdf_ms']:.1f} ms for the guarded child process and normalisation).",
        "Hostile page, pypdf alone (measured once, not rerun: it takes 80 s): 80 s and ~740 MB for that one page.",
    ])


def _measure(reader: str, data: bytes) -> dict[str, Any]:
    import io
    import resource

    _load_worker()
    warnings: list[str] = []
    started = time.perf_counter()
    if reader == "docpipe":
        from chalicelib.extract import extract_document

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

    from chalicelib.extract import extract_document
    from tests.pdfgen import make_pdf

    _load_worker()
    data = make_pdf(["A short document: one page, two sentences. It is read the way the worker reads it."])

    def pypdf_alone() -> None:
        [page.extract_text() for page in PdfReader(io.BytesIO(data)).pages]

    def docpipe() -> None:
        extract_document(data, max_pages=10, declared_type="pdf")

    timings: dict[str, list[float]] = {"pypdf_ms": [], "docpipe_ms": []}
    docpipe()  # the first call prepares pypdf once per process, as in a Lambda's first job
    for _ in range(SMALL_RUNS):
        for name, read in (("pypdf_ms", pypdf_alone), ("docpipe_ms", docpipe)):
            started = time.perf_counter()
            read()
            timings[name].append((time.perf_counter() - started) * 1000)
    return {**{name: statistics.median(ms) for name, ms in timings.items()}, "worker_mb": _peak_resident_mb()}


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
    import app  # noqa: F401
    import openai  # noqa: F401

    from chalicelib.tokens import get_encoding

    get_encoding("gpt-4o-mini")


def _in_fresh_worker(function: Any, *args: Any) -> Any:
    """``function(*args)`` in a new interpreter, so that peak memory is this measurement's alone."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def _hostile_pdf() -> bytes:
    """A readable page, then one whose content stream is a 60 MB hex string that compresses to 60 kB."""
    from tests.pdfcraft import crafted_pdf, text_page

    return crafted_pdf([text_page("A readable first page."), b"BT /F1 1 Tf <" + b"41" * 30_000_000 + b"> Tj ET"])


def _worker_memory_mb() -> int:
    config = json.loads((PROJECT / ".chalice" / "config.json").read_text())
    sizes = {stage["lambda_functions"]["process_jobs"]["lambda_memory_size"]
             for stage in config["stages"].values() if "process_jobs" in stage.get("lambda_functions", {})}
    return min(sizes)
