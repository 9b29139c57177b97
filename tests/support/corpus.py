"""The shared corpus (``../shared/corpus``): real third-party PDFs, AWS events and OpenAI responses.

``manifest.json`` says where each file comes from and what a good pipeline does with it. A user's clone has no
corpus, so every test that needs a file skips cleanly without it (``corpus_file``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import PROJECT

CORPUS = PROJECT.parent / "shared" / "corpus"

# The corpus PDFs no pipeline can read, with the error code docpipe answers each with (the manifest's verdicts).
CORPUS_FAILURES = {
    "samplefiles__libreoffice-writer-password.pdf": "encrypted",
    "ocrmypdf__c02-22.pdf": "no_text",
    "ocrmypdf__invalid.pdf": "corrupt_pdf",
    "pdfjs__Pages-tree-refs.pdf": "corrupt_pdf",
    "qpdf__bad7.pdf": "corrupt_pdf",
    "qpdf__not-a-pdf__bad.pdf": "unsupported_type",
    "zero-byte__empty.pdf": "empty",
}


def corpus_file(relative: str) -> Path:
    path = CORPUS / relative
    if not path.exists():
        pytest.skip(f"shared corpus file {relative} is not present in this checkout")
    return path


def corpus_manifest() -> list[dict]:
    manifest = CORPUS / "manifest.json"
    return json.loads(manifest.read_text()) if manifest.exists() else []
