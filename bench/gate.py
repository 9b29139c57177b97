"""The text-quality gate's verdicts, counted: how many good pages it drops (false positives) and how many broken
ones it catches, on the shared corpus, on generated PDFs (tests/support/languages.py set by tests/support/pdfs.py),
and on the translated message catalogs of this machine (/usr/share/locale/*/LC_MESSAGES/*.mo, cut into pages of ~1,500
characters: real text in ~150 languages and scripts, with format strings, names and lists) when they are present.

The catalogs are read, never shipped: they are this machine's, so the count is a measurement, not a test.
"""

from __future__ import annotations

import collections
import glob
import os
from collections.abc import Iterable
from pathlib import Path

from bench.documents import PROJECT

CATALOGS = "/usr/share/locale/*/LC_MESSAGES/*.mo"
PAGE_CHARACTERS = 1500


def run() -> str:
    lines = ["| pages | kind | scored | dropped | as |", "| --- | --- | --- | --- | --- |"]
    for name, kind, verdicts in [*_corpus(), *_generated_good(), *_catalogs(), *_generated_bad()]:
        counted = collections.Counter(verdicts)
        dropped = sum(n for verdict, n in counted.items() if verdict != "kept")
        found = ", ".join(f"{verdict} ×{n}" for verdict, n in counted.most_common() if verdict != "kept")
        lines.append(f"| {name} | {kind} | {sum(counted.values())} | {dropped} | {found or '–'} |")
    return "\n".join(lines)


def _verdicts_of_pdf(data: bytes) -> list[str]:
    from chalicelib.documents.reading import read_document
    from chalicelib.errors import JobFailure

    try:
        pages = read_document(data, max_pages=2000, declared_type="pdf")
    except JobFailure as failure:
        return [f"document {failure.code}"]
    return [_name(reason) for reason in pages.reasons]


def _name(reason: object) -> str:
    from chalicelib.documents.legibility import Verdict

    if reason is None or reason == "blank":
        return "kept" if reason is None else "blank"
    if isinstance(reason, Verdict):
        return f"{reason.finding.value}: {reason.detail}"
    return str(reason)


def _corpus() -> Iterable[tuple[str, str, list[str]]]:
    pdfs = sorted((PROJECT.parent / "shared" / "corpus" / "pdfs").glob("*.pdf"))
    good: list[str] = []
    scanned: list[str] = []
    for path in pdfs:
        found = [v for v in _verdicts_of_pdf(path.read_bytes()) if not v.startswith("document")]
        # The manifest's scanned book page (no text layer) is the corpus's one page that should be dropped.
        (scanned if path.name == "ocrmypdf__c02-22.pdf" else good).extend(found)
    if pdfs:
        yield "shared corpus, every PDF with a text layer (GeoTopo, Japanese, Arabic, LaTeX, forms)", "good", good
        yield "shared corpus: the scanned book page without OCR (ocrmypdf__c02-22.pdf)", "bad", scanned


def _generated_good() -> Iterable[tuple[str, str, list[str]]]:
    from tests.support.languages import GOOD
    from tests.support.pdfs import crafted_pdf, image_page, unicode_page

    pages = [unicode_page(text) for text in GOOD.values()]
    yield (f"generated: {len(GOOD)} pages in {len(GOOD)} languages and shapes (Cyrillic, CJK, Arabic, Hebrew, "
           "Devanagari, Latin with diacritics, code, tables, index, bibliography, formulas)", "good",
           _verdicts_of_pdf(crafted_pdf(pages)))
    scans = [image_page() + b"\n" + unicode_page(text) for text in GOOD.values()]
    yield "generated: the same pages as scans with a right OCR layer", "good", _verdicts_of_pdf(crafted_pdf(scans))
    yield ("generated: a picture on a third of the page with a caption; a page of 21 characters, no image", "good",
           _verdicts_of_pdf(crafted_pdf([image_page("Figure 3: the north pier at dawn", cover=0.6),
                                         unicode_page("حَبيبي habibi حَبيبي")])))


def _generated_bad() -> Iterable[tuple[str, str, list[str]]]:
    from tests.support.languages import GOOD, LOOK_ALIKE_OCR, LOOK_ALIKE_SWAP, glyph_numbers
    from tests.support.pdfs import crafted_pdf, glyph_page, image_page, unicode_page

    cjk = ["chinese-simplified", "chinese-traditional", "japanese", "korean"]
    alphabets = ["english", "german", "russian", "greek", "arabic", "hindi"]
    cyrillic = ["russian", "ukrainian", "bulgarian"]
    yield ("generated: CJK behind a broken ToUnicode map (glyphs mapped 0x3A7 too far)", "bad",
           _verdicts_of_pdf(crafted_pdf([unicode_page(GOOD[n], font="F4") for n in cjk])))
    yield ("generated: CJK in a full CID font without ToUnicode (glyph numbers up to 19,000)", "bad",
           _verdicts_of_pdf(crafted_pdf([glyph_page(glyph_numbers(GOOD[n].replace("\n", ""), subset=False))
                                         for n in cjk])))
    yield ("generated: subset fonts without ToUnicode (glyph numbers 3, 4, 5, … by first use)", "bad",
           _verdicts_of_pdf(crafted_pdf([glyph_page(glyph_numbers(GOOD[n].replace("\n", " "), subset=True))
                                         for n in cjk + alphabets])))
    yield ("generated: alphabetic scripts behind a broken ToUnicode map (a whole alphabet shifted into another "
           "block)", "bad", _verdicts_of_pdf(crafted_pdf([unicode_page(GOOD[n], font="F4") for n in alphabets])))
    yield ("generated: scans whose OCR read Cyrillic as Latin letters", "bad",
           _verdicts_of_pdf(crafted_pdf([image_page() + b"\n" + unicode_page(GOOD[n].translate(LOOK_ALIKE_OCR))
                                         for n in cyrillic])))
    yield ("generated: look-alike letters swapped into Cyrillic words", "bad",
           _verdicts_of_pdf(crafted_pdf([unicode_page(GOOD[n].translate(LOOK_ALIKE_SWAP)) for n in cyrillic])))
    yield ("generated: scans without OCR, a stray label or nothing; an image whose object was lost", "bad",
           _verdicts_of_pdf(crafted_pdf([image_page("RECEIVED 12 MAR 2021"), image_page("- 2 -"), image_page(),
                                         image_page("Anlage 3", image="Im9")])))


def _catalogs() -> Iterable[tuple[str, str, list[str]]]:
    import gettext

    from chalicelib.documents.legibility import assess_page

    paths = sorted(glob.glob(CATALOGS))
    if not paths:
        return
    verdicts: list[str] = []
    languages = set()
    for path in paths:
        try:
            with open(path, "rb") as file:
                catalog = vars(gettext.GNUTranslations(file))["_catalog"]  # the messages, as a dict
        except Exception:  # a catalog the stdlib cannot parse is not text to measure
            continue
        languages.add(Path(path).parts[4])
        page = ""
        for message in (m for key, m in catalog.items() if key and isinstance(m, str)):
            page += message + "\n"
            if len(page) >= PAGE_CHARACTERS:
                verdict = assess_page(page)
                verdicts.append(_name(verdict) + (f" ({Path(path).parts[4]})" if verdict else ""))
                page = ""
    yield (f"this machine's message catalogs: {len(paths)} files, {len(languages)} languages "
           f"({os.path.dirname(CATALOGS)})", "good", verdicts)
