"""The text-quality gate on real PDFs: text layers that extract but are not the document never reach the LLM.

Every document here is generated (tests/pdfcraft.py): good pages in many scripts set in a CID font with a right
ToUnicode map; the same text behind a broken ToUnicode map, or behind no map at all; a scan whose OCR layer read
Cyrillic as look-alike Latin letters; a scan with only a stray label; an image whose object was lost. Good pages
must never be dropped — a false alarm loses part of the customer's document.
"""

from __future__ import annotations

import pytest

from chalicelib.documents.legibility import A4_AREA, Finding, assess_page
from chalicelib.documents.reading import Document, ReadingLimits, extract_document, read_document
from chalicelib.errors import JobFailure
from tests.support.languages import GOOD, LOOK_ALIKE_OCR, LOOK_ALIKE_SWAP, glyph_numbers
from tests.support.pdfs import crafted_pdf, glyph_page, image_page, unicode_page

LIMITS = ReadingLimits(page_seconds=5, document_seconds=60, memory_mb=512)
PROSE = ["english", "german", "russian", "chinese-simplified", "japanese", "arabic"]


def extract(contents: list[bytes]) -> Document:
    return extract_document(crafted_pdf(contents), max_pages=50, declared_type="pdf", limits=LIMITS)


def failure_of(contents: list[bytes]) -> JobFailure:
    with pytest.raises(JobFailure) as info:
        extract(contents)
    return info.value


def scanned(text: str) -> bytes:
    """A scanned page: a full-page image with an (invisible, in a real scan) OCR text layer over it."""
    return image_page() + b"\n" + unicode_page(text)


# --- good text is kept, in every script and shape ----------------------------------------------------------------

@pytest.mark.parametrize("name", GOOD, ids=GOOD)
def test_a_good_page_in_any_script_or_shape_is_kept_whole(name):
    document = extract([unicode_page(GOOD[name])])

    assert document.warnings == []
    # Every character arrives (pypdf reorders right-to-left lines written in logical order).
    assert sorted("".join(document.text.split())) == sorted("".join(GOOD[name].split()))


@pytest.mark.parametrize("name", ["english", "russian", "japanese"])
def test_a_scan_with_a_right_ocr_layer_is_kept(name):
    document = extract([scanned(GOOD[name])])

    assert document.warnings == []
    assert document.text.split()[:3] == GOOD[name].split()[:3]


def test_a_short_page_without_images_is_kept_however_little_it_says():
    document = extract([unicode_page("حَبيبي habibi حَبيبي")])

    assert document.warnings == [] and "habibi" in document.text


def test_a_small_picture_with_a_caption_is_kept():
    document = extract([image_page("Figure 3: the north pier at dawn", cover=0.6)])  # 36 % of the page

    assert document.warnings == [] and "north pier" in document.text


# --- broken text layers are dropped, named, and never sent -------------------------------------------------------

def test_a_cjk_page_behind_a_broken_tounicode_map_is_dropped_as_mojibake():
    document = extract([unicode_page(GOOD["english"]), unicode_page(GOOD["chinese-simplified"], font="F4")])

    assert document.page_count == 2
    assert "harbour" in document.text and document.page_starts[1] == len(document.text)
    assert document.warnings == ["page 2 holds mojibake, not text (rare ideographs instead of the common ones) "
                                 "and was skipped"]


@pytest.mark.parametrize("name", ["chinese-simplified", "japanese"])
def test_a_cjk_document_in_a_font_without_a_unicode_map_fails_as_no_text_and_says_mojibake(name):
    glyphs = glyph_numbers(GOOD[name].replace("\n", ""), subset=False)

    failure = failure_of([glyph_page(glyphs), glyph_page(glyphs)])

    assert failure.code == "no_text"
    assert "mojibake" in failure.message and "pages 1–2" in failure.message
    assert "DOCPIPE_OCR=textract" in failure.message


def test_an_ocr_layer_that_read_cyrillic_as_latin_letters_is_dropped_as_wrong_script():
    document = extract([scanned(GOOD["english"]), scanned(GOOD["russian"].translate(LOOK_ALIKE_OCR))])

    assert "harbour" in document.text and "poxga" not in document.text.lower()
    assert document.warnings == ["page 2 holds an OCR layer in the wrong script (Cyrillic read as Latin letters) "
                                 "and was skipped"]


def test_a_look_alike_substituted_text_layer_is_dropped_as_wrong_script():
    failure = failure_of([scanned(GOOD["bulgarian"].translate(LOOK_ALIKE_SWAP))])

    assert failure.code == "no_text"
    assert "an OCR layer in the wrong script" in failure.message
    assert "words mixing Latin and Cyrillic look-alike letters" in failure.message


def test_a_scan_with_only_a_stray_label_fails_as_no_text_and_says_image_without_text():
    failure = failure_of([image_page("RECEIVED 12 MAR 2021"), image_page("- 2 -")])

    assert failure.code == "no_text"
    assert "images without text" in failure.message
    assert "pages 1–2 are images without text (only a stray label)" in failure.message


def test_an_image_whose_object_was_lost_still_counts_as_an_image():
    document = extract([unicode_page(GOOD["german"]), image_page("Anlage 3", image="Im9")])

    assert document.warnings == ["page 2 is an image without text (only a stray label) and was skipped"]


def test_every_kind_of_page_left_out_is_named_once_with_its_pages():
    document = extract([
        unicode_page(GOOD["english"]),
        image_page("CONFIDENTIAL"),
        unicode_page(GOOD["japanese"], font="F4"),
        scanned(GOOD["russian"].translate(LOOK_ALIKE_OCR)),
        image_page(),
        unicode_page(GOOD["german"]),
    ])

    assert document.page_count == 6
    assert document.warnings == [
        "page 2 is an image without text (only a stray label) and was skipped",
        "page 3 holds mojibake, not text (rare ideographs instead of the common ones) and was skipped",
        "page 4 holds an OCR layer in the wrong script (Cyrillic read as Latin letters) and was skipped",
        "page 5 is an image without text (no text) and was skipped",
    ]
    assert [document.page_at(document.text.index(w)) for w in ("harbour", "Vorlesung")] == [1, 6]


def test_the_pages_left_out_are_the_ones_offered_to_ocr():
    pages = read_document(crafted_pdf([unicode_page(GOOD["english"]), image_page("x"),
                                       unicode_page(GOOD["chinese-simplified"], font="F4")]),
                          max_pages=10, limits=LIMITS)

    assert pages.needs_ocr() == [2, 3]
    document = pages.with_ocr({2: "Text that OCR read on the second page.", 3: ""}).document()
    assert "OCR read on the second page" in document.text and document.page_at(document.text.index("OCR")) == 2
    assert document.warnings[-1] == "page 2 was read by OCR"


# --- the image rule's arithmetic ---------------------------------------------------------------------------------

@pytest.mark.parametrize("characters, cover, area, dropped", [
    (39, 0.5, A4_AREA, True),        # under 40 characters per A4, half the page an image
    (40, 0.5, A4_AREA, False),
    (39, 0.49, A4_AREA, False),      # images cover less than half: a short page, kept
    (79, 1.0, 2 * A4_AREA, True),    # A3: twice the area, twice the characters allowed
    (0, None, A4_AREA, False),       # no image measured (a dense page, or plain text)
])
def test_an_image_page_is_judged_by_its_characters_per_a4_of_area(characters, cover, area, dropped):
    verdict = assess_page("x" * characters, area=area, image_cover=cover)

    assert (verdict is not None and verdict.finding is Finding.IMAGE_WITHOUT_TEXT) is dropped


def test_the_reader_measures_page_area_and_image_cover_on_sparse_pages_only():
    from chalicelib.documents.pdfpages import read_pages

    pages = read_pages(crafted_pdf([image_page("label", cover=0.5), unicode_page(GOOD["english"])]),
                       max_pages=10, limits=LIMITS)

    assert pages[0].area == A4_AREA and pages[0].image_cover == pytest.approx(0.25)
    assert pages[1].image_cover is None  # a full page of text is not searched for images
