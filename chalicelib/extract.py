"""Turn document bytes into normalised text with page boundaries, or a clear failure code.

pypdf raises exceptions that are not its own on hostile files (AttributeError, TypeError, ValueError, …), so
every call into it is guarded and every failure becomes a ``JobFailure`` with one of the codes of the contract:
``encrypted``, ``no_text``, ``corrupt_pdf``, ``unsupported_type``, ``too_large``, ``empty``.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field

from chalicelib.errors import JobFailure

PDF_MAGIC = b"%PDF-"

_LIGATURES = str.maketrans({"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl",
                            "\ufb05": "st", "\ufb06": "st"})
_SOFT_HYPHEN_AT_EOL = re.compile("\u00ad[ \t]*\n[ \t]*")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u00ad\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_SPACE_AROUND_NEWLINE = re.compile(r" ?\n ?")
_MANY_NEWLINES = re.compile(r"\n{3,}")


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
        from bisect import bisect_right

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


def normalise(text: str) -> str:
    """Keep the meaning, drop the layout noise: ligatures, soft hyphens, tabs, runs of whitespace."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(_LIGATURES)
    text = _SOFT_HYPHEN_AT_EOL.sub("", text)
    text = _CONTROL.sub("", text)
    text = _SPACES.sub(" ", text)
    text = _SPACE_AROUND_NEWLINE.sub("\n", text)
    return _MANY_NEWLINES.sub("\n\n", text).strip()


def extract_document(data: bytes, *, max_pages: int, declared_type: str | None = None) -> Document:
    """``declared_type`` is what the upload claimed (``pdf`` from a name or Content-Type); the bytes decide."""
    if not data or not data.strip():
        raise JobFailure("empty", "the document is empty")
    kind = sniff(data)
    if declared_type == "pdf" and kind != "pdf":
        raise JobFailure("unsupported_type", "the document was sent as a PDF but its bytes are not a PDF")
    if kind == "pdf":
        return _from_pages(_pdf_pages(data, max_pages), "pdf")
    if kind == "text":
        text = data.decode("utf-8-sig", errors="replace")
        # A form feed is the plain-text page break.
        return _from_pages(text.split("\f"), "text")
    raise JobFailure("unsupported_type", "the document is neither a PDF nor UTF-8 text")


def _from_pages(raw_pages: list[str | None], kind: str) -> Document:
    texts: list[str] = []
    starts: list[int] = []
    unreadable: list[int] = []
    blank: list[int] = []
    offset = 0
    for number, raw in enumerate(raw_pages, start=1):
        if raw is None:
            unreadable.append(number)
            raw = ""
        page = normalise(raw)
        if not page and kind == "pdf" and number not in unreadable:
            blank.append(number)
        starts.append(offset)
        texts.append(page)
        offset += len(page) + 2
    text = "\n\n".join(texts)
    if not text.strip():
        if kind == "pdf" and not unreadable:
            raise JobFailure("no_text", "the PDF has no text layer (a scan?); it needs OCR before docpipe can read it")
        if kind == "pdf":
            raise JobFailure("corrupt_pdf", f"no page of the PDF could be read ({_ranges(unreadable)} failed)")
        raise JobFailure("empty", "the document has no text")
    warnings = []
    if blank:
        warnings.append(f"{_plural(blank)} {_ranges(blank)} {'has' if len(blank) == 1 else 'have'} no text layer")
    if unreadable:
        warnings.append(f"{_plural(unreadable)} {_ranges(unreadable)} could not be read and {'was' if len(unreadable) == 1 else 'were'} skipped")
    return Document(text=text, page_starts=starts, kind=kind, warnings=warnings)


def _pdf_pages(data: bytes, max_pages: int) -> list[str | None]:
    """Text of each page, None for a page pypdf could not read."""
    import logging

    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError

    # pypdf logs a warning per font it cannot fully decode; the outcome is reported in the job instead.
    logging.getLogger("pypdf").setLevel(logging.ERROR)

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            # Owner-password-only files open with the empty user password and are read as usual.
            if not reader.decrypt(""):
                raise JobFailure("encrypted", "the PDF is encrypted and needs a password to open")
        count = len(reader.pages)
    except JobFailure:
        raise
    except FileNotDecryptedError:
        raise JobFailure("encrypted", "the PDF is encrypted and needs a password to open") from None
    except Exception as exc:  # pypdf raises non-pypdf exceptions on hostile files
        raise JobFailure("corrupt_pdf", f"the PDF cannot be parsed: {_describe(exc)}") from None
    if count == 0:
        raise JobFailure("corrupt_pdf", "the PDF has no pages")
    if count > max_pages:
        raise JobFailure("too_large", f"the PDF has {count} pages; the limit is {max_pages}")
    pages: list[str | None] = []
    for index in range(count):
        try:
            pages.append(reader.pages[index].extract_text() or "")
        except Exception:  # one bad page must not sink the document; it is reported as a warning
            pages.append(None)
    return pages


def _describe(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:200]


def _plural(numbers: list[int]) -> str:
    return "page" if len(numbers) == 1 else "pages"


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
