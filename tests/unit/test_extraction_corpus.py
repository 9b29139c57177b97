"""Every PDF of the shared corpus through the guarded extractor ends as manifest.json documents it.

The worker-path versions of these outcomes are in tests/integration/test_worker.py; here the extractor is checked
closer: the page count, roughly the documented number of characters, and no warning at all — in particular no page
of real Japanese, Arabic or German text taken for garbage.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chalicelib.documents.reading import extract_document
from chalicelib.errors import JobFailure
from tests.support.corpus import CORPUS_FAILURES, corpus_file, corpus_manifest

FAILURES = CORPUS_FAILURES
SCRIPTS = {
    "pdfjs__issue6387.pdf": r"[\u3040-\u30ff]",  # kana
    "samplefiles__habibi.pdf": r"[\u0600-\u06ff]",
    "samplefiles__GeoTopo-komprimiert.pdf": r"[äöüßÄÖÜ]",
}
PDFS = [entry for entry in corpus_manifest() if entry["file"].startswith("pdfs/")]


def documented(entry: dict) -> tuple[int, int]:
    """(pages, characters) from e.g. "text extracted, 117 pages (~137k chars)" or "1 page, 21 chars"."""
    found = re.search(r"(\d+) pages?\D*?~?([\d.]+)(k?) chars", entry["expected_behaviour"])
    assert found, f"no page and character count documented for {entry['file']}"
    pages, chars, thousands = found.groups()
    return int(pages), round(float(chars) * (1000 if thousands else 1))


@pytest.mark.parametrize("entry", PDFS, ids=[Path(e["file"]).name for e in PDFS])
def test_each_corpus_pdf_ends_as_documented(entry):
    name = Path(entry["file"]).name
    data = corpus_file(entry["file"]).read_bytes()

    try:
        document = extract_document(data, max_pages=2000, declared_type="pdf")
    except JobFailure as failure:
        assert failure.code == FAILURES.get(name), failure.to_dict()
        return

    assert name not in FAILURES, f"{name} was expected to fail as {FAILURES.get(name)}"
    pages, chars = documented(entry)
    assert document.page_count == pages
    assert abs(len(document.text) - chars) <= max(2, chars * 0.05), (len(document.text), chars)
    assert document.warnings == []
    if name in SCRIPTS:
        assert len(re.findall(SCRIPTS[name], document.text)) >= 2
