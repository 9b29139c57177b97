"""Where docpipe's splitter cuts: the best boundary in the second half of a chunk's room, never inside a character.

The general properties (exact offsets, token limit, coverage, overlap, determinism) are in test_chunking.py; these
are the choices the splitter makes between valid cuts.
"""

from __future__ import annotations

import itertools
import random

import pytest

from chalicelib.documents.chunking import chunk_document
from chalicelib.documents.reading import extract_document
from chalicelib.documents.tokens import get_encoding

ENCODING = get_encoding("gpt-4o-mini")
WORDS = ("harbour lighthouse keeper ships night storm sea morning bread market fleet evening tide rope sail "
         "captain crew lantern wind rain").split()


def count(text: str) -> int:
    return len(ENCODING.encode(text, disallowed_special=()))


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))).capitalize() + "."


def chunks_of(text: str, max_tokens: int, overlap: int = 0):
    document = extract_document(text.encode(), max_pages=10)
    return document, chunk_document(document, encoding=ENCODING, max_tokens=max_tokens, overlap_tokens=overlap)


def test_a_chunk_ends_at_a_paragraph_break_when_one_lies_in_the_second_half_of_its_room():
    rng = random.Random(1)
    paragraphs = []
    for _ in range(8):
        paragraph = sentence(rng)
        while count(paragraph) < 130:
            paragraph += " " + sentence(rng)
        paragraphs.append(paragraph)  # 130 to about 145 tokens each: one per 200-token chunk

    _document, chunks = chunks_of("\n\n".join(paragraphs), 200)

    assert [c.text for c in chunks] == paragraphs


def test_without_paragraph_breaks_a_chunk_ends_at_a_sentence_not_at_a_wrapped_line():
    rng = random.Random(2)
    prose = " ".join(sentence(rng) for _ in range(60))
    wrapped = "\n".join(prose[i:i + 70] for i in range(0, len(prose), 70))  # a PDF's layout lines

    _document, chunks = chunks_of(wrapped, 120)

    assert len(chunks) > 5
    assert all(chunk.text.endswith(".") for chunk in chunks)


def test_japanese_without_spaces_is_cut_after_its_full_stops():
    text = ("吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。"
            "何でも薄暗いじめじめした所で泣いていた。") * 30

    document, chunks = chunks_of(text, 60)

    assert len(chunks) > 5
    assert all(chunk.text.endswith("。") for chunk in chunks)
    assert "".join(chunk.text for chunk in chunks) == document.text


@pytest.mark.parametrize("unit", ["e\u0301", "\u0628\u064e", "👩\u200d💻", "👍🏽"],
                         ids=["combining-acute", "arabic-fatha", "zwj-emoji", "skin-tone"])
def test_a_cut_through_unspaced_text_keeps_each_character_whole(unit):
    _document, chunks = chunks_of(unit * 300, 25, overlap=8)

    assert len(chunks) > 3
    for chunk in chunks:
        assert len(chunk.text) % len(unit) == 0 and chunk.text == unit * (len(chunk.text) // len(unit)), chunk


def test_the_repeated_part_of_the_next_chunk_starts_at_a_sentence():
    rng = random.Random(3)
    document, chunks = chunks_of(" ".join(sentence(rng) for _ in range(80)), 150, overlap=40)

    for before, after in itertools.pairwise(chunks):
        assert after.start < before.end  # they do share text
        assert document.text[after.start - 2:after.start] == ". " and after.text[0].isupper()


def test_the_overlap_never_repeats_more_than_half_of_the_chunk_before():
    rng = random.Random(4)
    blocks = [sentence(rng) if n % 3 == 0 else " ".join(sentence(rng) for _ in range(12)) for n in range(12)]
    document, chunks = chunks_of("\n\n".join(blocks), 120, overlap=50)

    for before, after in itertools.pairwise(chunks):
        shared = document.text[after.start:before.end] if after.start < before.end else ""
        assert count(shared) <= min(50, before.tokens // 2), (before.tokens, shared)


def test_a_very_long_word_is_cut_at_token_boundaries_within_the_limit():
    url = "https://example.org/" + "".join(random.Random(5).choices("abcdefghij0123456789/-_", k=3000))

    document, chunks = chunks_of(f"See {url} for details.", 50)

    assert "".join(chunk.text for chunk in chunks).replace(" ", "") == document.text.replace(" ", "")
    assert all(chunk.tokens <= 50 for chunk in chunks)
