"""Property tests of chalicelib.documents.chunking: offsets, token limits, coverage, overlap and page spans.

Documents are built the way the worker builds them: UTF-8 text bytes with form-feed page breaks through
``extract_document``, then ``chunk_document`` with the model's real tokenizer (tiktoken, o200k for gpt-4o-mini).
"""

from __future__ import annotations

import itertools
import random
import re
import string

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from chalicelib.config import load_settings
from chalicelib.documents.chunking import chunk_document
from chalicelib.documents.reading import Document, extract_document
from chalicelib.documents.tokens import get_encoding
from chalicelib.errors import JobFailure

ENCODING = get_encoding("gpt-4o-mini")
PROPERTIES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def count(text: str) -> int:
    return len(ENCODING.encode(text, disallowed_special=()))


def chunks_of(document: Document, max_tokens: int, overlap: int):
    return chunk_document(document, encoding=ENCODING, max_tokens=max_tokens, overlap_tokens=overlap)


# --- random documents --------------------------------------------------------------------------------------------
# Structure (how many pages, paragraphs, sentences, which kind of piece) is drawn by hypothesis so it shrinks well;
# long runs of characters are filled from a drawn seed, which keeps generation fast.

_VOCABULARY = ("the of and harbour lighthouse keeper ships night storm sea Ärger naïve straße café 2024 3.14 "
               "e-mail don't (see p. 4) x86_64 URL: https://example.org/a?b=c 🙂 👩‍💻 🇩🇪 ∑ → — “quoted” "
               "Δ λόγος слово مرحبا").split()
_CJK = ([chr(c) for c in range(0x4E00, 0x9FFF, 37)] + list("ぁあいうえおかきくけこアイウエオ") + list("。、！？「」")
        + ["𠀋", "𪚲"])


def _fill(alphabet: list[str] | str):
    return lambda seed, size: "".join(random.Random(seed).choices(alphabet, k=size))


def _words(seed: int, size: int, long_words: bool) -> str:
    """``size`` words of the vocabulary, some of them (when ``long_words``) 30-200 letters without a break."""
    rng = random.Random(seed)
    words = []
    for _ in range(size):
        if long_words and rng.random() < 0.15:
            words.append("".join(rng.choices(string.ascii_lowercase, k=rng.randint(30, 200))))
        else:
            words.append(rng.choice(_VOCABULARY))
    return " ".join(words) + rng.choice([".", "!", "?", ";", ""])


_cjk_run = st.builds(_fill(_CJK), st.integers(0, 2**32), st.integers(1, 300))
_sentence = st.builds(_words, st.integers(0, 2**32), st.integers(1, 15), st.booleans())


@st.composite
def _paragraph(draw) -> str:
    kind = draw(st.sampled_from(["prose", "prose", "cjk", "mixed"]))
    if kind == "cjk":
        return draw(_cjk_run)
    sentences = draw(st.lists(_sentence, min_size=1, max_size=4))
    if kind == "mixed":
        sentences.insert(draw(st.integers(0, len(sentences))), draw(_cjk_run))
    return " ".join(sentences)


@st.composite
def _page(draw) -> str:
    paragraphs = draw(st.lists(_paragraph(), min_size=0, max_size=4))
    separators = draw(st.lists(st.sampled_from(["\n\n", "\n", "\n\n\n\n", " \t\n ", "  "]),
                               min_size=len(paragraphs), max_size=len(paragraphs)))
    return "".join(p + s for p, s in zip(paragraphs, separators, strict=True))


@st.composite
def documents(draw) -> Document:
    pages = draw(st.lists(_page(), min_size=1, max_size=4))
    assume("".join(pages).strip())
    try:
        document = extract_document("\f".join(pages).encode("utf-8"), max_pages=10)
    except JobFailure:  # e.g. every page judged garbled: extraction's business, not the chunker's
        assume(False)
    assert document.page_count == len(pages)
    return document


@st.composite
def limits(draw) -> tuple[int, int]:
    """(max_tokens, overlap_tokens): no overlap, or an overlap below half the chunk (as the settings require)."""
    max_tokens = draw(st.integers(20, 400))
    overlap = draw(st.one_of(st.just(0), st.integers(1, max_tokens // 2 - 1)))
    return max_tokens, overlap


def overlapping_limits():
    return st.integers(20, 400).flatmap(lambda m: st.tuples(st.just(m), st.integers(1, m // 2 - 1)))


# --- properties --------------------------------------------------------------------------------------------------

@PROPERTIES
@given(documents(), limits())
def test_offsets_reproduce_the_text_exactly(document, limit):
    for chunk in chunks_of(document, *limit):
        assert chunk.text == document.text[chunk.start:chunk.end]
        assert chunk.text.strip()


@PROPERTIES
@given(documents(), limits())
def test_no_chunk_exceeds_the_token_limit(document, limit):
    max_tokens, overlap = limit
    for chunk in chunks_of(document, max_tokens, overlap):
        assert chunk.tokens == count(chunk.text)
        assert chunk.tokens <= max_tokens


@PROPERTIES
@given(documents(), limits())
def test_chunks_are_in_order_and_cover_every_visible_character(document, limit):
    chunks = chunks_of(document, *limit)
    assert chunks
    assert [c.index for c in chunks] == list(range(len(chunks)))
    starts = [c.start for c in chunks]
    assert all(a < b for a, b in itertools.pairwise(starts)), starts
    assert all(0 <= c.start < c.end <= len(document.text) for c in chunks)
    covered = bytearray(len(document.text))
    for chunk in chunks:
        covered[chunk.start:chunk.end] = b"\x01" * (chunk.end - chunk.start)
    missed = [i for i, ch in enumerate(document.text) if not ch.isspace() and not covered[i]]
    assert not missed, f"characters outside every chunk at offsets {missed[:10]}: {document.text[missed[0]]!r}"


@PROPERTIES
@given(documents(), st.integers(20, 400))
def test_without_overlap_chunks_do_not_overlap(document, max_tokens):
    chunks = chunks_of(document, max_tokens, 0)
    for before, after in itertools.pairwise(chunks):
        assert before.end <= after.start


@PROPERTIES
@given(documents(), overlapping_limits())
def test_neighbours_share_at_most_the_overlap_tokens(document, limit):
    max_tokens, overlap = limit
    chunks = chunks_of(document, max_tokens, overlap)
    for before, after in itertools.pairwise(chunks):
        assert after.start > before.start and after.end > before.end
        if after.start < before.end:
            shared = document.text[after.start:before.end]
            assert count(shared) <= overlap, (overlap, shared)


@PROPERTIES
@given(documents(), limits())
def test_page_span_of_every_chunk_comes_from_its_offsets(document, limit):
    for chunk in chunks_of(document, *limit):
        assert chunk.first_page == document.page_at(chunk.start)
        assert chunk.last_page == document.page_at(chunk.end - 1)
        assert 1 <= chunk.first_page <= chunk.last_page <= document.page_count
        expected = str(chunk.first_page) if chunk.first_page == chunk.last_page else \
            f"{chunk.first_page}-{chunk.last_page}"
        assert chunk.pages == expected


@PROPERTIES
@given(documents(), limits())
def test_chunking_is_deterministic(document, limit):
    assert chunks_of(document, *limit) == chunks_of(document, *limit)


# --- examples ----------------------------------------------------------------------------------------------------

def test_cjk_text_without_spaces_is_cut_into_several_chunks_under_the_limit():
    text = ("吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。何でも薄暗いじめじめした所で"
            "ニャーニャー泣いていた事だけは記憶している。" * 80)[:5000]
    document = extract_document(text.encode("utf-8"), max_pages=10)
    assert len(document.text) == 5000

    chunks = chunks_of(document, 1000, 0)

    assert len(chunks) >= 3
    assert all(c.tokens <= 1000 for c in chunks)
    assert all(c.text == document.text[c.start:c.end] for c in chunks)
    assert chunks[0].start == 0 and chunks[-1].end == len(document.text)
    assert "".join(c.text for c in chunks) == document.text  # no spaces to drop between chunks


@pytest.mark.parametrize("overlap", [0, 20])
def test_page_spans_of_a_four_page_document_never_go_backwards(overlap):
    pages = [" ".join(f"Page {n} sentence {i} talks about topic {n * 7 + i}." for i in range(60)) for n in range(1, 5)]
    document = extract_document("\f".join(pages).encode("utf-8"), max_pages=10)
    assert document.page_count == 4

    chunks = chunks_of(document, 120, overlap)

    firsts = [c.first_page for c in chunks]
    lasts = [c.last_page for c in chunks]
    assert firsts == sorted(firsts) and lasts == sorted(lasts)
    assert firsts[0] == 1 and lasts[-1] == 4
    for chunk in chunks:  # every page named inside a chunk lies within the chunk's span
        named = {int(n) for n in re.findall(r"Page (\d) ", chunk.text)}
        assert named <= set(range(chunk.first_page, chunk.last_page + 1)), (chunk.pages, named)


# --- regressions: semchunk, which docpipe used before its own splitter, failed these ----------------------------------

def test_overlapping_chunks_stay_within_the_token_limit_on_unspaced_text():
    # semchunk merged overlapping chunks from sub-chunks without counting them again: 1001-1003 tokens here.
    configured = load_settings({})
    text = "".join(random.Random(0).choices(string.ascii_lowercase, k=6000))  # e.g. a hash, base64, a long URL
    document = extract_document(text.encode(), max_pages=10)

    chunks = chunks_of(document, configured.chunk_tokens, configured.chunk_overlap_tokens)

    assert len(chunks) >= 4
    assert max(c.tokens for c in chunks) <= configured.chunk_tokens, [c.tokens for c in chunks]
    assert all(c.text == document.text[c.start:c.end] for c in chunks)
    assert chunks[0].start == 0 and chunks[-1].end == len(document.text)


@pytest.mark.parametrize("text, overlap", [("長い文章" * 20 + "𠀋", 2), ("业乕亿", 1), ("👩‍💻🇩🇪🙂" * 40, 1)],
                         ids=["four-byte-character-overlap-2", "cjk-overlap-1", "emoji-overlap-1"])
def test_a_tiny_overlap_works_on_characters_of_several_tokens(text, overlap):
    # semchunk recursed without end (RecursionError) when the overlap was smaller than one character's tokens.
    configured = load_settings({"DOCPIPE_CHUNK_TOKENS": "50", "DOCPIPE_CHUNK_OVERLAP_TOKENS": str(overlap)})
    document = extract_document(text.encode("utf-8"), max_pages=10)

    chunks = chunks_of(document, configured.chunk_tokens, configured.chunk_overlap_tokens)

    assert chunks[0].start == 0 and chunks[-1].end == len(document.text)
    assert all(c.tokens <= configured.chunk_tokens for c in chunks)
    assert all(a.start < b.start for a, b in itertools.pairwise(chunks))
