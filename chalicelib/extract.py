"""Turn document bytes into normalised text with page boundaries, or a clear failure code.

Every input ends as a ``Document`` — with a warning for each kind of page left out: blank, unreadable, too slow,
too big, garbled — or as a ``JobFailure`` with one of the codes of the contract: ``encrypted``, ``no_text``,
``corrupt_pdf``, ``unsupported_type``, ``too_large``, ``empty``. PDF pages are read in a guarded child process
(``pdfpages``); plain text and markdown take the same path after it, with a form feed as their page break.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from chalicelib.errors import JobFailure
from chalicelib.legibility import is_xfa_placeholder, looks_garbled
from chalicelib.normalise import join_hyphenated, normalise
from chalicelib.pdfpages import ReadingLimits, SkippedPage, read_pages

__all__ = ["PDF_MAGIC", "Document", "ReadingLimits", "extract_document", "normalise", "sniff"]

PDF_MAGIC = b"%PDF-"

# Why a page left no text, besides the reader's own reasons (SkippedPage).
_BLANK = "blank"
_GARBLED = "garbled"
_XFA = "xfa"


@dataclass
class Document:
    """Normalised text; page ``i`` (1-based) starts at ``page_starts[i - 1]``; pages are joined by a blank line."""

    text: str
    page_starts: list[int]
    kind: str
    warnings: list[str] = field(default_factory=list)

    @property
    def page_count(self) -> int:
        return len(self.page_starts)

    def page_at(self, offset: int) -> int:
        """The 1-based page holding character ``offset``."""
        return max(1, bisect_right(self.page_starts, offset))


def sniff(data: bytes) -> str:
    """What the bytes are, judged from the bytes alone: ``pdf``, ``text`` or ``unknown``."""
    if PDF_MAGIC in data[:1024]:
        return "pdf"
    sample = data[:4096]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the sample's end is still text.
        if exc.start < len(sample) - 4:
            return "unknown"
        text = sample[: exc.start].decode("utf-8")
    if not text:
        return "unknown"
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\n\r\t\f")
    return "text" if controls <= len(text) // 100 else "unknown"


def extract_document(data: bytes, *, max_pages: int, declared_type: str | None = None,
                     limits: ReadingLimits | None = None) -> Document:
    """``declared_type`` is what the upload claimed (``pdf`` from a name or Content-Type); the bytes decide.

    ``limits`` bound the time and memory of reading a PDF (the worker passes ``Settings.reading_limits``); without
    them the defaults of ``ReadingLimits`` apply.
    """
    if not data or not data.strip():
        raise JobFailure("empty", "the document is empty")
    kind = sniff(data)
    if declared_type == "pdf" and kind != "pdf":
        raise JobFailure("unsupported_type", "the document was sent as a PDF but its bytes are not a PDF")
    if kind == "pdf":
        limits = limits or ReadingLimits()
        return _assemble(read_pages(data, max_pages=max_pages, limits=limits), "pdf", limits)
    if kind == "text":
        text = data.decode("utf-8-sig", errors="replace")
        # A form feed is the plain-text page break.
        return _assemble(text.split("\f"), "text", limits or ReadingLimits())
    raise JobFailure("unsupported_type", "the document is neither a PDF nor UTF-8 text")


def _assemble(raw_pages: Sequence[str | SkippedPage], kind: str, limits: ReadingLimits) -> Document:
    """Normalise the readable pages, leave the others empty so page numbers hold, and say what was left out."""
    left_out: dict[str | SkippedPage, list[int]] = defaultdict(list)
    texts: list[str] = []
    for number, raw in enumerate(raw_pages, start=1):
        reason: str | SkippedPage | None
        if isinstance(raw, SkippedPage):
            reason, page = raw, ""
        else:
            reason = _why_unusable(raw, kind)
            page = normalise(raw) if reason is None else ""
            if reason is None and not page and kind == "pdf":
                reason = _BLANK
        if reason is not None:
            left_out[reason].append(number)
        texts.append(page)
    texts = join_hyphenated(texts)
    starts: list[int] = []
    offset = 0
    for page in texts:
        starts.append(offset)
        offset += len(page) + 2
    text = "\n\n".join(texts)
    warnings = [_warning(reason, numbers, limits) for reason, numbers in left_out.items()]
    if not text.strip():
        raise _nothing_readable(kind, left_out, warnings)
    return Document(text=text, page_starts=starts, kind=kind, warnings=warnings)


def _why_unusable(raw: str, kind: str) -> str | None:
    """Why text that was read is still left out: it is not language, or not the document's."""
    if looks_garbled(raw):
        return _GARBLED
    if kind == "pdf" and is_xfa_placeholder(raw):
        return _XFA
    return None


def _warning(reason: str | SkippedPage, numbers: list[int], limits: ReadingLimits) -> str:
    one = len(numbers) == 1
    pages = f"{'page' if one else 'pages'} {_ranges(numbers)}"
    skipped = "was skipped" if one else "were skipped"
    if reason == _BLANK:
        return f"{pages} {'has' if one else 'have'} no text layer"
    if reason == _GARBLED:
        return f"{pages} {'looks' if one else 'look'} garbled and {skipped}"
    if reason == _XFA:
        return f"{pages} {'holds' if one else 'hold'} only the placeholder of an XFA form and {skipped}"
    if reason == SkippedPage.TOO_SLOW:
        return f"{pages} took longer than {limits.page_seconds:g} s to read and {skipped}"
    if reason == SkippedPage.TOO_BIG:
        return f"{pages} needed more than {limits.memory_mb} MB to read and {skipped}"
    return f"{pages} could not be read and {skipped}"


def _nothing_readable(kind: str, left_out: Mapping[str | SkippedPage, list[int]], warnings: list[str]) -> JobFailure:
    """The failure that says best why no text is left; a reason that stopped pages being read outranks the rest."""
    details = "; ".join(warnings)
    if SkippedPage.TOO_SLOW in left_out or SkippedPage.TOO_BIG in left_out:
        return JobFailure("too_large", f"no page of the PDF could be read within docpipe's limits ({details})")
    if SkippedPage.UNREADABLE in left_out:
        return JobFailure("corrupt_pdf", f"no page of the PDF could be read ({details})")
    if _XFA in left_out:
        return JobFailure("no_text", "the PDF is a dynamic XFA form: its pages hold only a \"Please wait...\" "
                                     "placeholder and the content is form data docpipe cannot read")
    if _GARBLED in left_out:
        what = "the PDF's text layer" if kind == "pdf" else "the document's text"
        return JobFailure("no_text", f"{what} is unreadable ({details}): it holds glyph codes or broken characters "
                                     "instead of language" + ("; it needs OCR" if kind == "pdf" else ""))
    if kind == "pdf":
        return JobFailure("no_text", "the PDF has no text layer (a scan?); it needs OCR before docpipe can read it")
    return JobFailure("empty", "the document has no text")


def _ranges(numbers: list[int]) -> str:
    """[2, 3, 4, 7] -> '2–4, 7'."""
    parts: list[str] = []
    start = prev = numbers[0]
    for n in numbers[1:] + [None]:  # type: ignore[list-item]
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}–{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(parts)
