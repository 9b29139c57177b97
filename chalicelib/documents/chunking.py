"""Cut a document into token-sized chunks that know exactly where they came from.

Each chunk is measured with the model's real tokenizer while it is cut, so its character offsets into the
normalised text and its page span are known at once — never found again with ``str.find``, which breaks on repeated
passages. A chunk ends at the best boundary that keeps it under the limit: a paragraph break, then a sentence end,
a line break, a clause, a space, and for text without any of those (CJK, long URLs) a token boundary.

docpipe cuts its own chunks rather than calling semchunk, on measurements (``make bench``, 1000-token chunks): on
GeoTopo (55k tokens) docpipe takes 0.04 s where semchunk and LangChain's RecursiveCharacterTextSplitter take
0.09 s, with as few chunks and none over the limit. semchunk also broke the token limit when asked for overlap,
recursed without end on an overlap smaller than one character's tokens, and kept every substring it counted in a
process-wide cache that grew with each job of a warm Lambda.

How a cut is found, usually with one tokenizer call per chunk: the previous chunk's characters per token predict
where the limit lies; the chunk ends at the best boundary in the second half of that reach (a boundary nearer the
start would waste most of the chunk) and is counted exactly. A chunk that comes out too long shows, in its own
first ``max_tokens`` tokens, exactly where the limit lies, and is cut again before that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from chalicelib.documents.reading import Document

# Boundaries, best first. Each pattern's match end is where a chunk may end.
_BOUNDARIES = (
    re.compile(r"\S(?=\n\n)"),
    re.compile(r"[.!?…][\"'”’»)\]]*(?=\s)|[。！？｡؟۔।][」』）〕\"'”’]*"),
    re.compile(r"\S(?=\n)"),
    re.compile(r"[,;:–—][\"'”’)\]]*(?=\s)|[、，；：]"),
    re.compile(r"\S(?=\s)"),
)
# Where the repeated part of the next chunk may begin, best first: a sentence start, then a word start.
_OVERLAP_STARTS = (
    re.compile(r"[.!?…][\"'”’»)\]]*\s+(?=\S)|[。！？｡؟۔।][」』）〕\"'”’]*\s*(?=\S)"),
    re.compile(r"\s+(?=\S)"),
)
_WORD_START = re.compile(r"\s\S")
# A boundary in the first half of the span would leave most of the chunk's room unused.
_MIN_FILL = 0.5
# Marks that belong to the character before them; a cut between the two would split what a reader sees as one.
_JOINERS = re.compile(r"[\u0300-\u036f\u064b-\u065f\u0670\u200c\u200d\ufe00-\ufe0f\U0001f3fb-\U0001f3ff]")
# Characters per token to start from; each chunk then learns from the last (about 4 for English, 1 for CJK).
_FIRST_CHARS_PER_TOKEN = 4.0


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str
    start: int
    end: int
    first_page: int
    last_page: int
    tokens: int

    @property
    def pages(self) -> str:
        return str(self.first_page) if self.first_page == self.last_page else f"{self.first_page}-{self.last_page}"


def chunk_document(document: Document, *, encoding: Any, max_tokens: int, overlap_tokens: int = 0) -> list[Chunk]:
    """Chunks of at most ``max_tokens`` tokens, in order; neighbours share at most ``overlap_tokens`` tokens.

    The overlap is also capped at half of the chunk before it, so a short chunk (a heading before a long
    paragraph) is not repeated whole.

    A single character that alone has more than ``max_tokens`` tokens (possible below 4) is a chunk of its own.
    """
    if max_tokens < 1 or overlap_tokens < 0:
        raise ValueError("max_tokens must be positive and overlap_tokens not negative")
    cutter = _Cutter(document.text, encoding, max_tokens)
    chunks: list[Chunk] = []
    start, covered = _next_visible(document.text, 0), 0
    while start < len(document.text):
        end, tokens = cutter.cut(start, covered)
        chunks.append(Chunk(index=len(chunks), text=document.text[start:end], start=start, end=end,
                            first_page=document.page_at(start), last_page=document.page_at(end - 1),
                            tokens=len(tokens)))
        overlap = min(overlap_tokens, len(tokens) // 2)
        following = _next_visible(document.text, end)
        start = cutter.overlap_start(start, end, tokens, overlap) if overlap and following < len(document.text) \
            else following
        covered = end
    return chunks


class _Cutter:
    """Finds chunk ends in one text with one tokenizer; learns how many characters a token spans there."""

    def __init__(self, text: str, encoding: Any, max_tokens: int) -> None:
        self.text = text
        self.encoding = encoding
        self.max_tokens = max_tokens
        self.chars_per_token = _FIRST_CHARS_PER_TOKEN

    def cut(self, start: int, covered: int) -> tuple[int, list[int]]:
        """The end of the chunk that starts at ``start``, past ``covered``; and its tokens."""
        floor = max(start, covered)
        # Reach past what the previous chunk covered, or this chunk would only repeat it.
        furthest = min(len(self.text), max(start + int(self.max_tokens * self.chars_per_token), floor + 1))
        while True:
            end = self._best_boundary(start, floor, furthest)
            tokens = self.encoding.encode_ordinary(self.text[start:end])
            if len(tokens) <= self.max_tokens or end - start <= 1:
                self.chars_per_token = (end - start) / max(len(tokens), 1)
                return end, tokens
            # Too long: its first max_tokens tokens show exactly how far the limit reaches.
            head = self.encoding.decode_bytes(tokens[:self.max_tokens]).decode("utf-8", errors="ignore")
            furthest = start + max(len(head), 1) if start + len(head) < end else end - 1

    def overlap_start(self, start: int, end: int, tokens: list[int], overlap: int) -> int:
        """Where the next chunk starts so that it repeats at most ``overlap`` tokens of ``text[start:end]``."""
        tail = self.encoding.decode_bytes(tokens[-overlap:]).decode("utf-8", errors="ignore")
        earliest = end - len(tail)
        latest = earliest + (end - earliest) // 2
        begin = earliest
        for pattern in _OVERLAP_STARTS:
            match = pattern.search(self.text, earliest, latest)
            if match:
                begin = match.end()
                break
        begin = _visible_grapheme_start(self.text, begin, end)
        while begin < end and len(self.encoding.encode_ordinary(self.text[begin:end])) > overlap:
            begin = _visible_grapheme_start(self.text, _next_word(self.text, begin, end), end)
        return begin if start < begin < end else _next_visible(self.text, end)

    def _best_boundary(self, start: int, floor: int, furthest: int) -> int:
        if furthest == len(self.text):
            return _trim_end(self.text, start, furthest)
        lowest = floor + int((furthest - floor) * _MIN_FILL)
        for pattern in _BOUNDARIES:
            end = _last_match_end(pattern, self.text, lowest, furthest)
            if end is not None:
                return end
        return _grapheme_end(self.text, start, furthest)


def _last_match_end(pattern: re.Pattern[str], text: str, lowest: int, furthest: int) -> int | None:
    last = None
    # Two characters past the span let a lookahead see the break that follows a boundary at its very end.
    for match in pattern.finditer(text, lowest, min(len(text), furthest + 2)):
        if match.end() > furthest:
            break
        last = match.end()
    return last


def _trim_end(text: str, start: int, end: int) -> int:
    while end > start + 1 and text[end - 1].isspace():
        end -= 1
    return end


def _grapheme_end(text: str, start: int, end: int) -> int:
    """``end``, moved back so that a combining mark or joiner stays with the character it belongs to."""
    while end - 1 > start and (_JOINERS.match(text, end) or text[end - 1] == "\u200d"):
        end -= 1
    return _trim_end(text, start, end)


def _visible_grapheme_start(text: str, start: int, end: int) -> int:
    """``start``, moved on past whitespace and past marks that belong to the character before them."""
    while start < end and (text[start].isspace() or _JOINERS.match(text, start) or text[start - 1] == "\u200d"):
        start += 1
    return start


def _next_visible(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


def _next_word(text: str, position: int, end: int) -> int:
    space = _WORD_START.search(text, position, end)
    return space.start() + 1 if space else position + 1
