"""Cut a document into token-sized chunks that know exactly where they came from.

Splitting is semchunk's (token-aware, prefers paragraph, then sentence, then word boundaries, works on CJK text
without spaces, and returns character offsets while it splits). docpipe adds the page span of every chunk from
those offsets — never by searching for the chunk text again, which breaks on repeated passages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chalicelib.extract import Document


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
    """Chunks of at most ``max_tokens`` tokens, in order, with ``overlap_tokens`` shared between neighbours."""
    import semchunk

    def count(text: str) -> int:
        return len(encoding.encode(text, disallowed_special=()))

    chunker = semchunk.chunkerify(count, chunk_size=max_tokens)
    texts, offsets = chunker(document.text, offsets=True, overlap=overlap_tokens or None)
    chunks = []
    for index, (text, (start, end)) in enumerate(zip(texts, offsets)):
        chunks.append(Chunk(index=index, text=text, start=start, end=end,
                            first_page=document.page_at(start), last_page=document.page_at(max(start, end - 1)),
                            tokens=count(text)))
    return chunks
