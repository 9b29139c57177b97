"""Turn document bytes into normalised text with page boundaries, or a clear failure code.

Every input ends as a ``Document`` — with a warning for each kind of page left out: blank, unreadable, too slow,
too big, or text the quality gate (``legibility``) does not trust: mojibake, an OCR layer in the wrong script, an
image without text — or as a ``JobFailure`` with one of the codes of the contract: ``encrypted``, ``no_text``,
``corrupt_pdf``, ``unsupported_type``, ``too_large``, ``empty``. PDF pages are read in a guarded reader process
(``pdfpages``) and judged as they arrive; plain text and markdown take the same path after it, with a form feed as
their page break.

``read_document`` stops before the verdict, so that the pages left out can be read by OCR first
(``PageSet.needs_ocr``, ``PageSet.with_ocr``); ``PageSet.document()`` then gives the Document or the failure.
"""

from __future__ import annotations

import functools
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from chalicelib.documents.legibility import Finding, Verdict, assess_page
from chalicelib.documents.normalise import join_hyphenated, normalise
from chalicelib.documents.pdfpages import PageText, ReadingLimits, SkippedPage, read_pages
from chalicelib.errors import JobFailure

__all__ = ["PDF_MAGIC", "Document", "PageSet", "ReadingLimits", "extract_document", "normalise", "read_document",
           "sniff"]

PDF_MAGIC = b"%PDF-"

# Why a page left no text, besides the reader's reasons (SkippedPage) and the gate's verdicts (Verdict).
_BLANK = "blank"
Reason = str | SkippedPage | Verdict


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


@dataclass
class PageSet:
    """Every page of a document as read and judged: its normalised text, or why it is left out (None when used)."""

    texts: list[str]
    reasons: list[Reason | None]
    kind: str
    limits: ReadingLimits
    ocr_pages: dict[int, str] = field(default_factory=dict)
    ocr_tried: bool = False

    def needs_ocr(self) -> list[int]:
        """The 1-based pages OCR could give text to: left out for what they show (an image, glyphs), not for
        what reading them cost."""
        return [n for n, reason in enumerate(self.reasons, start=1)
                if reason is not None and not isinstance(reason, SkippedPage)]

    def with_ocr(self, texts: Mapping[int, str]) -> PageSet:
        """The pages with OCR's text (1-based page -> text) in place of those left out, judged like any text."""
        pages = PageSet(list(self.texts), list(self.reasons), self.kind, self.limits, dict(self.ocr_pages), True)
        for number, raw in texts.items():
            verdict = assess_page(raw)
            text = normalise(raw) if verdict is None else ""
            if text:
                pages.texts[number - 1], pages.reasons[number - 1] = text, None
                pages.ocr_pages[number] = text
        return pages

    def warnings(self) -> list[str]:
        """One warning per reason pages were left out, naming the pages; and which pages OCR read."""
        warnings = [_warning(reason, numbers, self.limits) for reason, numbers in self._left_out().items()]
        if self.ocr_pages:
            warnings.append(f"{describe_pages(sorted(self.ocr_pages))} "
                            f"{'was' if len(self.ocr_pages) == 1 else 'were'} read by OCR")
        return warnings

    def document(self) -> Document:
        """The Document with the usable pages, or the JobFailure that says why there are none."""
        texts = join_hyphenated(self.texts)
        starts: list[int] = []
        offset = 0
        for page in texts:
            starts.append(offset)
            offset += len(page) + 2
        text = "\n\n".join(texts)
        warnings = self.warnings()
        if not text.strip():
            raise _nothing_readable(self.kind, self._left_out(), warnings, self.ocr_tried)
        return Document(text=text, page_starts=starts, kind=self.kind, warnings=warnings)

    def _left_out(self) -> dict[Reason, list[int]]:
        left_out: dict[Reason, list[int]] = defaultdict(list)
        for number, reason in enumerate(self.reasons, start=1):
            if reason is not None:
                left_out[reason].append(number)
        return left_out


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
    return read_document(data, max_pages=max_pages, declared_type=declared_type, limits=limits).document()


def read_document(data: bytes, *, max_pages: int, declared_type: str | None = None,
                  limits: ReadingLimits | None = None) -> PageSet:
    """Every page read and judged by the text-quality gate; ``JobFailure`` when the bytes are no document at all."""
    if not data or not data.strip():
        raise JobFailure("empty", "the document is empty")
    kind = sniff(data)
    if declared_type == "pdf" and kind != "pdf":
        raise JobFailure("unsupported_type", "the document was sent as a PDF but its bytes are not a PDF")
    limits = limits or ReadingLimits()
    pages = PageSet([], [], kind, limits)
    if kind == "pdf":
        # Each page is judged as it arrives, while the reader process reads the next.
        read_pages(data, max_pages=max_pages, limits=limits, on_page=functools.partial(_judge, pages))
        return pages
    if kind == "text":
        text = data.decode("utf-8-sig", errors="replace")
        # A form feed is the plain-text page break.
        for page in text.split("\f"):
            _judge(pages, PageText(page))
        return pages
    raise JobFailure("unsupported_type", "the document is neither a PDF nor UTF-8 text")


def _judge(pages: PageSet, raw: PageText | SkippedPage) -> None:
    """Add the page: normalised when the gate trusts it, else left empty (page numbers hold) with the reason."""
    reason: Reason | None
    pdf = pages.kind == "pdf"
    if isinstance(raw, SkippedPage):
        reason, page = raw, ""
    else:
        reason = assess_page(raw.text, area=raw.area if pdf else None, image_cover=raw.image_cover)
        page = normalise(raw.text) if reason is None else ""
        if reason is None and not page and pdf:
            reason = _BLANK
    pages.texts.append(page)
    pages.reasons.append(reason)


def _warning(reason: Reason, numbers: list[int], limits: ReadingLimits) -> str:
    one = len(numbers) == 1
    pages = describe_pages(numbers)
    skipped = "was skipped" if one else "were skipped"
    if reason == _BLANK:
        return f"{pages} {'has' if one else 'have'} no text layer"
    if isinstance(reason, Verdict):
        holds = "holds" if one else "hold"
        if reason.finding is Finding.MOJIBAKE:
            return f"{pages} {holds} mojibake, not text ({reason.detail}) and {skipped}"
        if reason.finding is Finding.WRONG_SCRIPT:
            return f"{pages} {holds} an OCR layer in the wrong script ({reason.detail}) and {skipped}"
        if reason.finding is Finding.IMAGE_WITHOUT_TEXT:
            return f"{pages} {'is an image' if one else 'are images'} without text ({reason.detail}) and {skipped}"
        return f"{pages} {holds} only the placeholder of an XFA form and {skipped}"
    if reason == SkippedPage.TOO_SLOW:
        return f"{pages} took longer than {limits.page_seconds:g} s to read and {skipped}"
    if reason == SkippedPage.TOO_BIG:
        return f"{pages} needed more than {limits.memory_mb} MB to read and {skipped}"
    return f"{pages} could not be read and {skipped}"


def _nothing_readable(kind: str, left_out: Mapping[Reason, list[int]], warnings: list[str],
                      ocr_tried: bool = False) -> JobFailure:
    """The failure that says best why no text is left; a reason that stopped pages being read outranks the rest."""
    details = "; ".join(warnings)
    findings = {reason.finding for reason in left_out if isinstance(reason, Verdict)}
    if SkippedPage.TOO_SLOW in left_out or SkippedPage.TOO_BIG in left_out:
        return JobFailure("too_large", f"no page of the PDF could be read within docpipe's limits ({details})")
    if SkippedPage.UNREADABLE in left_out:
        return JobFailure("corrupt_pdf", f"no page of the PDF could be read ({details})")
    if findings == {Finding.XFA}:
        return JobFailure("no_text", "the PDF is a dynamic XFA form: its pages hold only a \"Please wait...\" "
                                     "placeholder and the content is form data docpipe cannot read")
    what = "the PDF" if kind == "pdf" else "the document"
    needs_ocr = "; it needs OCR (DOCPIPE_OCR=textract) before docpipe can read it" if kind == "pdf" else ""
    if ocr_tried:
        needs_ocr = "; OCR found no text on those pages either"
    if findings:
        found = " and ".join(_FOUND[f] for f in (Finding.MOJIBAKE, Finding.WRONG_SCRIPT, Finding.IMAGE_WITHOUT_TEXT)
                             if f in findings)
        return JobFailure("no_text", f"no page of {what} holds text docpipe can trust: it found {found} "
                                     f"({details}){needs_ocr}")
    if kind == "pdf":
        return JobFailure("no_text", f"the PDF has no text layer (a scan?){needs_ocr}")
    return JobFailure("empty", "the document has no text")


_FOUND = {Finding.MOJIBAKE: "mojibake (glyph codes or broken characters where the text should be: a font without "
                            "a usable Unicode map)",
          Finding.WRONG_SCRIPT: "an OCR layer in the wrong script",
          Finding.IMAGE_WITHOUT_TEXT: "images without text (a scan without OCR)"}


def describe_pages(numbers: list[int]) -> str:
    """[1, 2, 3, 7] -> 'pages 1–3, 7'."""
    return f"{'page' if len(numbers) == 1 else 'pages'} {_ranges(numbers)}"


def _ranges(numbers: list[int]) -> str:
    """[2, 3, 4, 7] -> '2–4, 7'."""
    parts: list[str] = []
    start = prev = numbers[0]
    following: list[int | None] = [*numbers[1:], None]
    for n in following:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}–{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(parts)
