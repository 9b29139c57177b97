"""The long documents the chunking and extraction benchmarks read, the same bytes in every run.

GeoTopo — 117 pages of German lecture notes from the shared corpus, when the corpus is present — and a generated
350-page book: English prose from a fixed vocabulary and seed, set as a PDF by tests/support/pdfs.make_pdf. The prose is
not repeated text, so no splitter gains from caching what it has already seen.
"""

from __future__ import annotations

import random
from functools import cache
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
GEOTOPO = PROJECT.parent / "shared" / "corpus" / "pdfs" / "samplefiles__GeoTopo-komprimiert.pdf"
BOOK_PAGES = 350
# make_pdf sets 58 lines of 90 characters on a page; a little less leaves room for the paragraph breaks.
_PAGE_CHARACTERS = 4300
_VOCABULARY = """the of and to in a is that for it as was with be by on not he this are or his from at which but
have an they you were her she there been one all we their has would when if so what its about into them more other
will some could these than then two may first any like now over such our only new most very after made also did
many before must through back years where much your way well down should because each just those people how too
little state good very make world still own see men work long get here between both life being under never day
same another know while last might us great old year off come since against go came right used take three harbour
lighthouse keeper ships night storm sea morning bread market fleet evening tide rope sail captain crew lantern wind
rain river bridge village council letter winter summer garden school doctor station machine engine railway
telegraph newspaper library museum theatre""".split()


def long_pdfs() -> list[tuple[str, bytes]]:
    """(description, PDF bytes) of each long document, GeoTopo first when the corpus is present."""
    documents = [(f"generated book ({BOOK_PAGES} pages)", book_pdf())]
    if GEOTOPO.exists():
        documents.insert(0, ("GeoTopo, corpus (117 pages)", GEOTOPO.read_bytes()))
    return documents


@cache
def book_pdf() -> bytes:
    import sys

    sys.path.insert(0, str(PROJECT))
    from tests.support.pdfs import make_pdf

    rng = random.Random(350)
    return make_pdf([_page(rng) for _ in range(BOOK_PAGES)])


def _page(rng: random.Random) -> str:
    paragraphs: list[str] = []
    while sum(len(p) for p in paragraphs) < _PAGE_CHARACTERS:
        paragraphs.append(" ".join(_sentence(rng) for _ in range(rng.randint(3, 8))))
    return "\n".join(paragraphs)


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_VOCABULARY) for _ in range(rng.randint(8, 20))]
    if len(words) > 12 and rng.random() < 0.4:
        words[rng.randint(3, len(words) - 4)] += ","
    return " ".join(words).capitalize() + rng.choice(".....?!")
