"""Text that extracts but is not language, and normalisation that keeps meaning (legibility, normalise modules).

Real text in many scripts must never be flagged: a false alarm drops a page of the customer's document. The
garbage samples are what pypdf really returns for fonts without a Unicode map (see test_extraction_guards.py,
which produces them from generated PDFs).
"""

from __future__ import annotations

import base64
import random
import string

import pytest

from chalicelib.documents.legibility import is_xfa_placeholder, looks_garbled
from chalicelib.documents.normalise import join_hyphenated, normalise
from chalicelib.documents.reading import extract_document
from chalicelib.errors import JobFailure
from tests.support.languages import GOOD, LOOK_ALIKE_OCR, glyph_numbers

LANGUAGE = {
    "german": "Übungsaufgaben zur Geometrie und Topologie: zusammenhängende Räume, Homöomorphismen und "
              "Mannigfaltigkeiten. Größere Äußerungen über Straßen und schöne Flüsse.",
    "czech": "Příliš žluťoučký kůň úpěl ďábelské ódy. Všechny lidské bytosti se rodí svobodné a sobě rovné.",
    "polish": "Wszyscy ludzie rodzą się wolni i równi pod względem swej godności i swych praw. Zażółć gęślą jaźń.",
    "vietnamese": "Tất cả mọi người sinh ra đều được tự do và bình đẳng về nhân phẩm và quyền lợi.",
    "turkish": "Bütün insanlar hür, haysiyet ve haklar bakımından eşit doğarlar. Iğdır'da çığ düştü.",
    "icelandic": "Hver maður er borinn frjáls og jafn öðrum að virðingu og réttindum. Þórður Ásgeirsson.",
    "romanian": "Toate ființele umane se nasc libere și egale în demnitate și în drepturi, înzestrate cu rațiune.",
    "russian": "Все люди рождаются свободными и равными в своем достоинстве и правах. iPhone-приложение и Windows.",
    "greek-in-maths": "Sei f(x)=αx+βy und γ∈ℝ, dann gilt πr² = A. Die Funktionen sinα und cosβ sind stetig.",
    "arabic": "حَبيبي habibi حَبيبي — يولد جميع الناس أحراراً متساوين في الكرامة والحقوق.",
    "hindi": "सभी मनुष्यों को गौरव और अधिकारों के मामले में जन्मजात स्वतन्त्रता और समानता प्राप्त है।",
    "japanese": ("あのイーハトーヴォのすきとおった風、夏でも底に冷たさをもつ青いそら、"
                 "うつくしい森で飾られたモリーオ市。"),
    "chinese": "人人生而自由，在尊严和权利上一律平等。他们赋有理性和良心，并应以兄弟关系的精神相对待。",
    "korean": "모든 인간은 태어날 때부터 자유로우며 그 존엄과 권리에 있어 동등하다.",
    "hex-digest": " ".join(f"{random.Random(n).getrandbits(256):064x}" for n in range(8)),
    "base64": base64.b64encode(random.Random(1).randbytes(600)).decode(),
    "random-letters": "".join(random.Random(0).choices(string.ascii_lowercase, k=2000)),
    "symbol-font-bullets": "\uf0b7 First item of the list\n\uf0b7 Second item\n\uf0b7 Third item of it\n\uf0b7 Fourth",
    "tex-maths-controls": "Dann heißt \x14(t) Krümmung von \r in t. Gegeben sei ein Kreis mit Umfang 2\x19r. Es gilt "
                          "\x00 sin t r; cos t r für alle t, und die Normale n(t) steht senkrecht auf der Kurve.",
}

GARBAGE = {
    "glyph-ids-as-controls": "\x03\x04\x05\x06\x07\x08\t\n\x0b\x06\x0c\r\x0e\x0f\x10\x06\x11\x0e\x12\x06\x13\x08\x14",
    "glyph-ids-as-accented-latin": "Ĝİĭ\x03ĹĽıīĳ\x03ĪĺķĿĶ\x03Įķŀ\x03ĲĽĵĸĻ\x03ķľĭĺ\x03ļİĭ\x03ĴĩłŁ\x03Ĭķįö",
    "accented-latin-with-spaces": "Ĝİĭ ĹĽıīĳ ĪĺķĿĶ Įķŀ ĲĽĵĸĻ ķľĭĺ ļİĭ ĴĩłŁ Ĭķįö ĜİıĻ ıĻ ĩ ļĭĻļ",
    "ascii-shifted-by-29": "7KH\x03TXLFN\x03EURZQ\x03IR[\x03MXPSV\x03RYHU\x03WKH\x03OD]\\\x03GRJ\x11\x037KLV",
    "cp1251-read-as-latin-1": "Все люди рождаются свободными и равными в своем достоинстве и правах."
                              .encode("cp1251").decode("latin-1"),
    "utf-8-read-as-cp1252": "Все люди рождаются свободными и равными в своем достоинстве"
                            .encode().decode("cp1252", errors="replace"),
    "cyrillic-look-alikes": " ".join(w.translate(str.maketrans("aeopcx", "аеорсх")) for w in
                                     "the quick brown fox jumps over the lazy dog and keeps on running".split()),
    "replacement-characters": "Th\ufffd\ufffd \ufffd\ufffdck br\ufffd\ufffdn f\ufffdx j\ufffd\ufffdps \ufffd\ufffder",
    "cyrillic-ocr-read-as-latin": GOOD["russian"].translate(LOOK_ALIKE_OCR),
    "cjk-glyph-numbers-as-code-points": "".join(map(chr, glyph_numbers(GOOD["japanese"], subset=False))),
    "cjk-shifted-into-rare-ideographs": "".join(chr(ord(c) + 0x3A7) for c in GOOD["chinese-simplified"]),
}


@pytest.mark.parametrize("text", [*LANGUAGE.values(), *GOOD.values()], ids=[*LANGUAGE, *(f"page-{k}" for k in GOOD)])
def test_language_is_not_garbled(text):
    assert not looks_garbled(text)


@pytest.mark.parametrize("text", GARBAGE.values(), ids=GARBAGE.keys())
def test_glyph_numbers_and_mojibake_are_garbled(text):
    assert looks_garbled(text)


def test_a_page_with_a_few_visible_characters_is_not_judged():
    assert not looks_garbled("\uf0b7 \x03")


def test_the_xfa_placeholder_is_recognised_across_line_breaks():
    assert is_xfa_placeholder("Please wait...\nIf this message is not eventually replaced by the proper\n"
                              "contents of the document, your PDF viewer may not be able to display it.")
    assert not is_xfa_placeholder("Please wait while the document loads.")


def test_a_text_document_with_a_garbled_page_keeps_the_others_and_says_which():
    pages = ["A plain first page of text.", GARBAGE["replacement-characters"], "A plain third page."]

    document = extract_document("\f".join(pages).encode(), max_pages=10)

    assert document.text == "A plain first page of text.\n\n\n\nA plain third page."
    assert document.page_count == 3
    assert document.warnings == ["page 2 holds mojibake, not text (control codes and broken characters) and was "
                                 "skipped"]


def test_a_text_document_that_is_all_garbled_fails_as_no_text():
    with pytest.raises(JobFailure) as info:
        extract_document(GARBAGE["cp1251-read-as-latin-1"].encode(), max_pages=10)

    assert info.value.code == "no_text"
    assert "mojibake" in info.value.message


# --- normalisation ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("end of one line\x0cstart of the next", "end of one line\nstart of the next"),  # form feed inside a page
    ("a vertical\x0btab", "a vertical\ntab"),
    ("line\u2028separator and\u2029paragraph", "line\nseparator and\n\nparagraph"),
    ("C1 controls\x85 and\x9f gone", "C1 controls and gone"),
    ("tab\tseparated\t\twords", "tab separated words"),
    ("ﬁrst ﬂoor, eﬀort", "first floor, effort"),
])
def test_normalise_keeps_words_apart_and_drops_noise(raw, expected):
    assert normalise(raw) == expected


def test_a_word_hyphenated_at_a_line_end_is_joined_where_the_document_spells_it_whole():
    pages = ["Eine Mannig-\nfaltigkeit ist lokal euklidisch.", "Jede Mannigfaltigkeit ist ein Raum."]

    assert join_hyphenated(pages) == ["Eine Mannigfaltigkeit ist lokal euklidisch.", pages[1]]


@pytest.mark.parametrize("page", [
    "a well-\nknown result",            # the hyphen belongs to the word
    "Geometrie-\nund Topologie",        # a suspended compound: the hyphen stands for "Geometrie"
    "an exam-\nple without evidence",   # never spelt whole elsewhere: left for the reader
])
def test_a_line_end_hyphen_without_evidence_is_left_alone(page):
    assert join_hyphenated([page, "Other pages say nothing about it."]) == [page, "Other pages say nothing about it."]


def test_a_capital_after_the_hyphen_is_a_compound_even_when_the_joined_word_exists():
    pages = ["Ein Schwarz-\nWeiß-Bild", "schwarzweiß gedruckt"]

    assert join_hyphenated(pages) == pages
