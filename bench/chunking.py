"""Chunking throughput: docpipe's splitter beside semchunk and LangChain's RecursiveCharacterTextSplitter.

The same normalised text, the same tokenizer (o200k_base, gpt-4o-mini's) and the same chunk size (1000 tokens),
without and with overlap (100 tokens). The three take turns, so a busy machine slows all of them alike, and the
median of ``REPETITIONS`` runs is reported. semchunk memoises its token counter for the life of the process, so
each of its runs gets a fresh counter, as every job in a warm Lambda does. docpipe does more than the others: the
exact offsets, page span and token count of every chunk; semchunk gives offsets, LangChain the texts only.
"over limit" counts chunks whose text, counted alone, has more than 1000 tokens.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any, cast

from bench.documents import long_pdfs

MODEL = "gpt-4o-mini"
CHUNK_TOKENS = 1000
OVERLAP_TOKENS = 100
REPETITIONS = 5


def run() -> str:
    from chalicelib.documents.reading import extract_document
    from chalicelib.documents.tokens import encoding_name_for, get_encoding

    encoding = get_encoding(MODEL)
    lines = ["| document | tokens | overlap | splitter | chunks | over limit | median s | tokens/s | ÷ faster other |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    verdicts = []
    for description, data in long_pdfs():
        document = extract_document(data, max_pages=2000, declared_type="pdf")
        tokens = len(encoding.encode_ordinary(document.text))
        for overlap in (0, OVERLAP_TOKENS):
            splitters = _splitters(document, encoding, encoding_name_for(MODEL), overlap)
            seconds, chunk_texts = _race(splitters)
            fastest_other = min(seconds["semchunk"], seconds["LangChain"])
            for name in splitters:
                over = sum(1 for text in chunk_texts[name] if len(encoding.encode_ordinary(text)) > CHUNK_TOKENS)
                ratio = f"{seconds[name] / fastest_other:.2f}×" if name == "docpipe" else ""
                lines.append(f"| {description} | {tokens:,} | {overlap} | {name} | {len(chunk_texts[name])} | {over} | "
                             f"{seconds[name]:.3f} | {tokens / seconds[name]:,.0f} | {ratio} |")
            verdicts.append(f"{description}, overlap {overlap}: docpipe takes "
                            f"{seconds['docpipe'] / fastest_other:.2f}× the time of the faster other splitter")
    return "\n".join([f"Chunks of ≤{CHUNK_TOKENS} tokens ({encoding_name_for(MODEL)}); median of {REPETITIONS} runs "
                      "taken in turns.", *lines, *verdicts])


def _splitters(document: Any, encoding: Any, encoding_name: str, overlap: int) -> dict[str, Callable[[], list[str]]]:
    import semchunk
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from chalicelib.documents.chunking import chunk_document

    def docpipe() -> list[str]:
        chunks = chunk_document(document, encoding=encoding, max_tokens=CHUNK_TOKENS, overlap_tokens=overlap)
        return [chunk.text for chunk in chunks]

    def semchunk_cold() -> list[str]:
        # A new counter each run: semchunk's process-wide memo would otherwise answer from the previous run.
        chunker = semchunk.chunkerify(lambda text: len(encoding.encode_ordinary(text)), chunk_size=CHUNK_TOKENS)
        texts, _offsets = chunker(document.text, offsets=True, overlap=overlap or None)
        return cast(list[str], texts)  # one text in, one list of chunk texts out

    def langchain() -> list[str]:
        splitter = RecursiveCharacterTextSplitter.from_tiktoken_encoder(
            encoding_name=encoding_name, chunk_size=CHUNK_TOKENS, chunk_overlap=overlap)
        return splitter.split_text(document.text)

    return {"docpipe": docpipe, "semchunk": semchunk_cold, "LangChain": langchain}


def _race(splitters: dict[str, Callable[[], list[str]]]) -> tuple[dict[str, float], dict[str, list[str]]]:
    """Median seconds of each splitter over REPETITIONS turns, and each one's chunks."""
    timings: dict[str, list[float]] = {name: [] for name in splitters}
    chunks: dict[str, list[str]] = {}
    for _ in range(REPETITIONS):
        for name, split in splitters.items():
            started = time.perf_counter()
            chunks[name] = split()
            timings[name].append(time.perf_counter() - started)
    return {name: statistics.median(times) for name, times in timings.items()}, chunks
