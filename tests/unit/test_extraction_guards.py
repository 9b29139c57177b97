"""What extract_document does with the PDFs that take Lambdas down: the guards of documents.pdfpages, end to end.

Generated cases the corpus lacks: a page tree whose /Count lies, a page too slow to read, a page that exhausts
memory, a reader that crashes or hangs for ever, fonts without a Unicode map, an XFA placeholder, a truncated real
download, mutated page-tree numbers. Limits are set small (``QUICK``) so that every test ends within seconds.
"""

from __future__ import annotations

import dataclasses
import faulthandler
import multiprocessing
import os
import random
import re
import signal
from collections.abc import Callable
from typing import Any

import pypdf
import pytest

from chalicelib.config import ConfigError, load_settings
from chalicelib.documents.pdfpages import idle_readers, retire_idle_reader
from chalicelib.documents.reading import Document, ReadingLimits, extract_document
from chalicelib.errors import JobFailure
from tests.support.corpus import corpus_file
from tests.support.pdfs import crafted_pdf, glyph_page, make_pdf, text_page

QUICK = ReadingLimits(page_seconds=0.25, document_seconds=20, memory_mb=256)
DOCUMENT_CODES = {"corrupt_pdf", "no_text", "empty", "unsupported_type", "encrypted", "too_large"}
# pypdf reads about 25-50k text operators a second: this page takes seconds and is only 2 kB compressed.
SLOW_PAGE = b"BT /F1 1 Tf " + b"(a) Tj " * 100_000 + b"ET"
# 60 MB of spaces compress to 58 kB; uncapped, pypdf needs 7 s and about 470 MB to read this one page. Its
# decompressed stream alone is one 60 MB allocation, so a smaller budget is exceeded whatever the reader inherited.
BLOATED_PAGE = b"BT /F1 1 Tf (x) Tj ET" + b" " * 60_000_000


def extract(data: bytes, *, max_pages: int = 50, **limits: float) -> Document:
    return extract_document(data, max_pages=max_pages, declared_type="pdf",
                            limits=dataclasses.replace(QUICK, **limits))


def failure_of(data: bytes, *, max_pages: int = 50, **limits: float) -> JobFailure:
    with pytest.raises(JobFailure) as info:
        extract(data, max_pages=max_pages, **limits)
    assert info.value.code in DOCUMENT_CODES and info.value.message
    return info.value


def on_marked_pages(monkeypatch: pytest.MonkeyPatch, marker: str, behaviour: Callable[[str], str]) -> None:
    """Make pypdf call ``behaviour(text)`` for every page whose text holds ``marker``, in the readers forked later."""
    original = pypdf.PageObject.extract_text

    def extract_text(page: pypdf.PageObject, *args: Any, **kwargs: Any) -> str:
        text = original(page, *args, **kwargs)
        return behaviour(text) if marker in text else text

    monkeypatch.setattr(pypdf.PageObject, "extract_text", extract_text)


@pytest.fixture(autouse=True)
def no_reader_is_left_running():
    # Readers forked during the test see what it patches in pypdf; a kept one would not.
    retire_idle_reader()
    yield
    # The one idle reader kept for the next document is all that may be left.
    assert set(multiprocessing.active_children()) <= idle_readers()


# --- the page count comes from the page tree, never from /Count --------------------------------------------------

def test_a_page_tree_claiming_ten_billion_pages_is_read_as_the_one_page_it_holds():
    data = crafted_pdf([text_page("The only real page.")], declared_count=9_999_999_999)

    document = extract(data, max_pages=1)

    assert document.page_count == 1
    assert document.text == "The only real page."
    assert document.warnings == []


def test_a_page_tree_claiming_one_page_is_read_as_the_three_it_holds():
    data = crafted_pdf([text_page(f"Real page {n}.") for n in (1, 2, 3)], declared_count=1)

    document = extract(data)

    assert document.page_count == 3
    assert document.text == "Real page 1.\n\nReal page 2.\n\nReal page 3."


def test_the_page_limit_counts_the_pages_that_exist():
    data = crafted_pdf([text_page(f"Page {n}.") for n in range(1, 5)], declared_count=1)

    failure = failure_of(data, max_pages=3)

    assert failure.code == "too_large"
    assert "4 pages" in failure.message and "3" in failure.message


# --- time: a page that takes too long is skipped, the rest is read -----------------------------------------------

def test_a_page_slower_than_the_page_timeout_is_skipped_and_the_next_pages_are_read():
    data = crafted_pdf([text_page("Before the slow page."), SLOW_PAGE, text_page("After the slow page.")])

    document = extract(data)

    assert document.text == "Before the slow page.\n\n\n\nAfter the slow page."
    assert document.page_count == 3
    assert document.warnings == ["page 2 took longer than 0.25 s to read and was skipped"]


def test_a_page_that_never_finishes_is_skipped(monkeypatch):
    def spin_for_ever(text: str) -> str:
        while True:  # pure Python, so no thread could stop it
            pass

    on_marked_pages(monkeypatch, "SPIN", spin_for_ever)
    data = make_pdf(["First page.", "SPIN here.", "SPIN again.", "Last page."])

    document = extract(data)

    assert document.text == "First page.\n\n\n\n\n\nLast page."
    assert document.warnings == ["pages 2–3 took longer than 0.25 s to read and were skipped"]


def test_a_document_over_its_time_budget_fails_as_too_large():
    data = crafted_pdf([text_page("Readable."), SLOW_PAGE, SLOW_PAGE, SLOW_PAGE, text_page("Never reached.")])

    failure = failure_of(data, page_seconds=0.3, document_seconds=0.7)

    assert failure.code == "too_large"
    assert "longer than 0.7 s" in failure.message and "of 5 pages were read" in failure.message


def test_a_document_whose_every_page_is_too_slow_fails_as_too_large():
    failure = failure_of(crafted_pdf([SLOW_PAGE, SLOW_PAGE]))

    assert failure.code == "too_large"
    assert "pages 1–2 took longer than 0.25 s" in failure.message


# --- memory: a page that blows up is skipped instead of the Lambda ------------------------------------------------

def test_a_page_needing_more_memory_than_the_budget_is_skipped():
    data = crafted_pdf([text_page("Before."), BLOATED_PAGE, text_page("After.")])

    document = extract(data, page_seconds=30, memory_mb=48)

    assert document.text == "Before.\n\n\n\nAfter."
    assert document.warnings == ["page 2 needed more than 48 MB to read and was skipped"]


def test_a_ten_gigabyte_allocation_on_one_page_costs_that_page(monkeypatch):
    on_marked_pages(monkeypatch, "HOG", lambda text: text + bytearray(10 * 1024**3).decode())
    data = make_pdf(["HOG on the first page.", "A readable second page."])

    document = extract(data)

    assert document.text == "\n\nA readable second page."
    assert document.warnings == ["page 1 needed more than 256 MB to read and was skipped"]


def test_a_page_out_of_memory_after_others_gets_one_more_try_in_a_fresh_reader(monkeypatch, tmp_path):
    tried = tmp_path / "tried"

    def out_of_memory_once(text: str) -> str:
        if not tried.exists():  # the readers are separate processes: only the file system is shared
            tried.touch()
            raise MemoryError
        return text

    on_marked_pages(monkeypatch, "ONCE", out_of_memory_once)
    data = make_pdf(["Page one.", "Page two.", "ONCE, page three."])

    document = extract(data)

    assert tried.exists()
    assert document.text == "Page one.\n\nPage two.\n\nONCE, page three."
    assert document.warnings == []


def test_a_reader_killed_by_the_kernel_out_of_memory_costs_only_its_page(monkeypatch):
    on_marked_pages(monkeypatch, "OOM", lambda text: os.kill(os.getpid(), signal.SIGKILL) or text)
    data = make_pdf(["Page one.", "OOM killer here.", "Page three."])

    document = extract(data)

    assert document.text == "Page one.\n\n\n\nPage three."
    assert document.warnings == ["page 2 needed more than 256 MB to read and was skipped"]


def crash(*_args: Any, **_kwargs: Any) -> None:
    faulthandler.disable()  # a deliberate crash: no stack dump in the test output
    os.kill(os.getpid(), signal.SIGSEGV)


def test_a_reader_that_crashes_on_a_page_costs_only_that_page(monkeypatch):
    on_marked_pages(monkeypatch, "CRASH", crash)
    data = make_pdf(["Page one.", "CRASH here.", "Page three."])

    document = extract(data)

    assert document.text == "Page one.\n\n\n\nPage three."
    assert document.warnings == ["page 2 could not be read and was skipped"]


def test_a_reader_that_crashes_while_opening_fails_as_corrupt(monkeypatch):
    monkeypatch.setattr(pypdf.PdfReader, "__init__", crash)

    failure = failure_of(make_pdf(["Never read."]))

    assert failure.code == "corrupt_pdf"
    assert "while opening" in failure.message


# --- text that is not language ------------------------------------------------------------------------------------

def test_a_page_in_a_font_without_a_unicode_map_is_skipped_as_garbled():
    glyphs = [ord(c) + 200 for c in "The quick brown fox jumps over the lazy dog again and again"]
    data = crafted_pdf([text_page("A readable first page."), glyph_page(glyphs), text_page("A readable last page.")])

    document = extract(data)

    assert document.text == "A readable first page.\n\n\n\nA readable last page."
    assert document.warnings == ["page 2 holds mojibake, not text (glyph codes read as accented letters) and was "
                                 "skipped"]


@pytest.mark.parametrize("glyphs", [
    [3 + "Thequickbrownfoxjumpsoverthelazydog".index(c) if c != " " else 3 for c in "The quick brown fox jumps"],
    [ord(c) - 29 for c in "The quick brown fox jumps over the lazy dog."],  # ASCII shifted, space became \x03
    [ord(c) + 200 for c in "The quick brown fox jumps over the lazy dog."],  # accented Latin look-alikes
], ids=["control-codes", "shifted-ascii", "latin-extended"])
def test_a_pdf_whose_every_page_is_glyph_numbers_fails_as_no_text(glyphs):
    failure = failure_of(crafted_pdf([glyph_page(glyphs), glyph_page(glyphs)]))

    assert failure.code == "no_text"
    assert "mojibake" in failure.message and "pages 1–2 hold mojibake" in failure.message


XFA_PLACEHOLDER = ("Please wait... If this message is not eventually replaced by the proper contents of the "
                   "document, your PDF viewer may not be able to display this type of document.")


def test_a_dynamic_xfa_form_fails_as_no_text_and_says_why():
    failure = failure_of(make_pdf([XFA_PLACEHOLDER]))

    assert failure.code == "no_text"
    assert "XFA" in failure.message


def test_an_xfa_placeholder_page_beside_real_pages_is_skipped_with_a_warning():
    document = extract(make_pdf(["A real page of the document.", XFA_PLACEHOLDER]))

    assert document.text == "A real page of the document.\n\n"
    assert document.warnings == ["page 2 holds only the placeholder of an XFA form and was skipped"]


# --- damaged files ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kept", [0.1, 0.5])
def test_a_real_pdf_cut_short_in_download_fails_as_corrupt(kept):
    data = corpus_file("pdfs/samplefiles__GeoTopo-komprimiert.pdf").read_bytes()

    failure = failure_of(data[:int(len(data) * kept)], max_pages=2000, page_seconds=10)

    assert failure.code == "corrupt_pdf"


def test_mutated_page_tree_numbers_end_as_a_document_or_a_job_failure():
    rng = random.Random(1102)
    original = crafted_pdf([text_page(f"Page {n} of a small document.") for n in range(1, 4)])
    numbers = [m.span() for m in re.finditer(rb"\b\d+\b", original)]
    outcomes = set()
    for index in range(200):
        data = bytearray(original)
        for start, end in sorted(rng.sample(numbers, rng.randint(1, 3)), reverse=True):
            data[start:end] = str(rng.choice([0, 1, 2, 7, -1, 10**10, rng.randrange(10**6)])).encode()
        try:
            document = extract(bytes(data), page_seconds=2)
        except JobFailure as failure:
            assert failure.code in DOCUMENT_CODES and failure.message, failure.to_dict()
            outcomes.add(failure.code)
        except Exception as exc:  # anything but JobFailure escaped extract_document
            pytest.fail(f"mutation {index} raised {type(exc).__name__}: {exc}")
        else:
            assert document.page_starts[0] == 0 and document.text.strip()
            outcomes.add("document")
    assert "document" in outcomes and len(outcomes) > 1, outcomes


# --- configuration ------------------------------------------------------------------------------------------------

def test_reading_limits_come_from_the_environment_with_defaults():
    assert load_settings({}).reading_limits == ReadingLimits(page_seconds=10.0, document_seconds=180.0,
                                                             memory_mb=1024)
    assert load_settings({"DOCPIPE_PAGE_TIMEOUT_SECONDS": "2.5", "DOCPIPE_EXTRACT_TIMEOUT_SECONDS": "60",
                          "DOCPIPE_EXTRACT_MEMORY_MB": "512"}).reading_limits == ReadingLimits(2.5, 60.0, 512)


@pytest.mark.parametrize("name, value", [("DOCPIPE_PAGE_TIMEOUT_SECONDS", "soon"),
                                         ("DOCPIPE_EXTRACT_TIMEOUT_SECONDS", "0"),
                                         ("DOCPIPE_EXTRACT_MEMORY_MB", "-5"),
                                         ("DOCPIPE_PAGE_TIMEOUT_SECONDS", "nan"),
                                         ("DOCPIPE_EXTRACT_TIMEOUT_SECONDS", "inf")])
def test_a_reading_limit_that_is_not_a_positive_number_is_a_config_error(name, value):
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value})
