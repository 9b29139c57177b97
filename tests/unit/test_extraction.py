"""Unit tests of chalicelib.documents.reading: normalisation, sniffing, page boundaries and every failure code.

Fast and offline: PDFs come from tests/pdfgen.make_pdf; no AWS emulator resource is touched.
"""

from __future__ import annotations

import random

import pytest

from chalicelib.documents.reading import extract_document, normalise, sniff
from chalicelib.errors import JobFailure
from tests.support.pdfs import make_pdf

DOCUMENT_CODES = {"corrupt_pdf", "no_text", "empty", "unsupported_type", "encrypted", "too_large"}

PAGE_TEXTS = [
    "Alpha page. The harbour master counted forty ships before the storm arrived in the evening.",
    "Bravo page. Lighthouse keepers trimmed the wicks and logged every passing vessel by name.",
    "Charlie page. At dawn the fleet returned and the market opened with fresh fish and bread.",
]


def outcome(data: bytes, **kwargs) -> tuple:
    """What extract_document made of the bytes, as a comparable value: the document or the failure code."""
    try:
        document = extract_document(data, max_pages=kwargs.pop("max_pages", 50), **kwargs)
    except JobFailure as failure:
        assert failure.code in DOCUMENT_CODES, failure.to_dict()
        assert failure.message
        return ("failed", failure.code, failure.message)
    return ("document", document.text, tuple(document.page_starts), document.kind, tuple(document.warnings))


def failure_of(data: bytes, **kwargs) -> JobFailure:
    with pytest.raises(JobFailure) as info:
        extract_document(data, max_pages=kwargs.pop("max_pages", 50), **kwargs)
    assert info.value.message
    return info.value


# --- normalise ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("\ufb01nancial \ufb02ow, e\ufb00ort, o\ufb03ce, ra\ufb04e", "financial flow, effort, office, raffle"),
    ("a long exam\u00ad\nple of hyphen\u00ad  \n  ation", "a long example of hyphenation"),
    ("co\u00adoperate", "cooperate"),  # a soft hyphen inside a line is invisible: dropped
    ("one\ttwo\t\tthree    four\u00a0five\u2003six", "one two three four five six"),
    ("first\n\n\n\n\nsecond\n\n\nthird", "first\n\nsecond\n\nthird"),
    ("para one\n\npara two\nline two", "para one\n\npara two\nline two"),
    ("bell\x07 null\x00 esc\x1b del\x7f bom\ufeff vt\x0b", "bell null esc del bom vt"),
    ("windows\r\nline\rmac", "windows\nline\nmac"),
    ("  trailing spaces  \n  and leading  ", "trailing spaces\nand leading"),
    ("", ""),
])
def test_normalise(raw, expected):
    assert normalise(raw) == expected


def test_normalise_is_idempotent():
    raw = "\ufb01rst\u00ad\nline\t\twith   runs\n\n\n\nand \x00controls\r\n"
    assert normalise(normalise(raw)) == normalise(raw)


def test_text_document_keeps_its_form_feed_page_boundaries():
    pages = ["First page text.", "  Second\tpage   text.  ", "Third page, last."]

    document = extract_document("\f".join(pages).encode(), max_pages=10)

    assert document.kind == "text"
    assert document.page_count == 3
    assert document.text == "First page text.\n\nSecond page text.\n\nThird page, last."
    assert document.page_starts == [0, 18, 37]
    for number, page in enumerate(["First page text.", "Second page text.", "Third page, last."], start=1):
        start = document.page_starts[number - 1]
        assert document.text[start:start + len(page)] == page
        assert document.page_at(start) == number
        assert document.page_at(start + len(page) - 1) == number
    assert document.page_at(0) == 1
    assert document.page_at(len(document.text) - 1) == 3
    assert document.warnings == []


def test_pdf_document_pages_are_joined_by_a_blank_line_and_found_by_offset():
    document = extract_document(make_pdf(PAGE_TEXTS), max_pages=10, declared_type="pdf")

    assert document.kind == "pdf"
    assert document.page_count == 3
    for number, marker in enumerate(["Alpha page.", "Bravo page.", "Charlie page."], start=1):
        offset = document.text.index(marker)
        assert offset == document.page_starts[number - 1]
        assert document.page_at(offset) == number
    assert document.text[document.page_starts[1] - 2:document.page_starts[1]] == "\n\n"


# --- sniff -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("data, kind", [
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "pdf"),
    (b"\x00\x01junk before the header " * 40 + b"%PDF-1.4\n", "pdf"),  # header inside the first 1024 bytes
    (b"Plain English text, nothing more.\n", "text"),
    ("Größe, naïve café — 東京 🙂\n".encode(), "text"),
    (b"page one\fpage two\r\n\ttabbed", "text"),
    (bytes(range(256)) * 8, "unknown"),
    (b"\x89PNG\r\n\x1a\n" + bytes(500), "unknown"),
    (b"valid start \xff\xfe then invalid UTF-8 " * 10, "unknown"),
    (b"", "unknown"),
])
def test_sniff(data, kind):
    assert sniff(data) == kind


def test_sniff_looks_for_the_pdf_header_only_in_the_first_1024_bytes():
    assert sniff(b"x" * 1000 + b"%PDF-1.4") == "pdf"
    assert sniff(b"x" * 1024 + b"%PDF-1.4") == "text"


@pytest.mark.parametrize("character, cut", [("é", 1), ("€", 1), ("€", 2), ("𝄞", 1), ("𝄞", 2), ("𝄞", 3)])
def test_sniff_accepts_a_multibyte_character_cut_at_the_sample_edge(character, cut):
    encoded = character.encode()
    data = b"a" * (4096 - cut) + encoded + b" more text after the sample"
    assert data[:4096].endswith(encoded[:cut])

    assert sniff(data) == "text"


def test_sniff_calls_random_binary_unknown():
    rng = random.Random(7)
    for _ in range(20):
        assert sniff(rng.randbytes(rng.randint(16, 5000))) == "unknown"


# --- extract_document failures -----------------------------------------------------------------------------------

@pytest.mark.parametrize("data", [b"", b"   ", b" \n\t\r\n ", b"\f\f\f"])
def test_empty_or_blank_bytes_fail_as_empty(data):
    assert failure_of(data).code == "empty"


def test_bytes_declared_pdf_that_are_text_fail_as_unsupported_type():
    failure = failure_of(b"not even a pdf file\n", declared_type="pdf")
    assert failure.code == "unsupported_type"
    assert "PDF" in failure.message


def test_binary_garbage_fails_as_unsupported_type():
    rng = random.Random(3)
    for declared in (None, "pdf", "text"):
        assert failure_of(rng.randbytes(4000), declared_type=declared).code == "unsupported_type"


def test_a_pdf_over_the_page_limit_fails_as_too_large():
    data = make_pdf(PAGE_TEXTS)

    failure = failure_of(data, max_pages=2, declared_type="pdf")

    assert failure.code == "too_large"
    assert "3 pages" in failure.message and "2" in failure.message
    assert extract_document(data, max_pages=3).page_count == 3


def test_a_pdf_with_no_text_on_any_page_fails_as_no_text():
    assert failure_of(make_pdf([None, None]), declared_type="pdf").code == "no_text"


def test_a_pdf_without_pages_fails_as_corrupt():
    assert failure_of(make_pdf([]), declared_type="pdf").code == "corrupt_pdf"


@pytest.mark.parametrize("pages, warnings", [
    ([PAGE_TEXTS[0], None, PAGE_TEXTS[2]], ["page 2 has no text layer"]),
    ([PAGE_TEXTS[0], None, None], ["pages 2–3 have no text layer"]),
    ([None, PAGE_TEXTS[1], None, None, PAGE_TEXTS[2], None], ["pages 1, 3–4, 6 have no text layer"]),
    (PAGE_TEXTS, []),
])
def test_blank_pages_are_named_in_the_warnings(pages, warnings):
    document = extract_document(make_pdf(pages), max_pages=10, declared_type="pdf")

    assert document.warnings == warnings
    assert document.page_count == len(pages)


# --- hostile bytes: only JobFailure, always the same answer -------------------------------------------------------

def test_a_truncated_download_fails_cleanly_and_deterministically():
    data = make_pdf(PAGE_TEXTS * 2)
    for cut in (len(data) // 2, len(data) // 3, len(data) - 40, 200):
        first = outcome(data[:cut], declared_type="pdf")
        assert outcome(data[:cut], declared_type="pdf") == first
        if first[0] == "failed":
            assert first[1] in ("corrupt_pdf", "no_text")
        else:
            assert first[1].strip()


def _mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(["flip", "byte", "delete", "duplicate", "insert", "truncate", "zero"])
        at = rng.randrange(len(out)) if out else 0
        if kind == "flip" and out:
            out[at] ^= 1 << rng.randrange(8)
        elif kind == "byte" and out:
            out[at] = rng.choice(b"0123456789 <>[]()/\\%\n\x00\xff")
        elif kind == "delete":
            del out[at:at + rng.randint(1, 64)]
        elif kind == "duplicate":
            out[at:at] = out[at:at + rng.randint(1, 200)]
        elif kind == "insert":
            out[at:at] = rng.choice([b"endobj", b"<<", b">>", b"stream\n", b"9999999999 0 R", b"/Kids [2 0 R]",
                                     rng.randbytes(rng.randint(1, 32))])
        elif kind == "truncate":
            del out[at:]
        elif kind == "zero" and out:
            out[at:at + 16] = bytes(len(out[at:at + 16]))
    return bytes(out)


def test_random_byte_mutations_of_a_valid_pdf_end_as_a_document_or_a_job_failure():
    # Each PDF is read in a forked child (documents/pdfpages.py), ~50 ms: determinism is checked on every 10th.
    rng = random.Random(20240611)
    original = make_pdf(PAGE_TEXTS)
    seen = {"document": 0, "failed": 0}
    for index in range(200):
        data = _mutate(original, rng)
        try:
            first = outcome(data, declared_type="pdf")
        except Exception as exc:  # anything but JobFailure escaped extract_document
            pytest.fail(f"mutation {index} raised {type(exc).__name__}: {exc}")
        if index % 10 == 0:
            assert outcome(data, declared_type="pdf") == first, f"mutation {index} is not deterministic"
        seen[first[0]] += 1
        if first[0] == "document":
            _, text, starts, kind, warnings = first
            assert text.strip() and starts[0] == 0 and list(starts) == sorted(set(starts))
            assert kind == "pdf"
            assert all(isinstance(w, str) and w for w in warnings)
    assert seen["document"] and seen["failed"], seen  # the mutations exercised both outcomes
