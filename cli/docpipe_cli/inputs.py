"""What ``docpipe submit`` sends: the documents its paths name, and the task its options describe.

A path is a file (a PDF, or text as .txt or .md) or a directory, which stands for every PDF directly in it. A
missing path, a directory without a PDF or a file docpipe cannot read is a ``UsageError`` (exit code 2), raised
before anything is sent::

    documents = find_documents(["report.pdf", "scans/"])     # [Document(path, content_type), …]
    task = build_task("extract", schema="invoice.json")      # {"type": "extract", "schema": {…}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TEXT_TYPES = {".txt": "text/plain", ".md": "text/markdown", ".markdown": "text/markdown"}
TASKS = ("summarize", "extract", "classify", "prompt")


class UsageError(Exception):
    """The command line asks for something that cannot be done; nothing was sent."""


@dataclass(frozen=True)
class Document:
    path: Path
    content_type: str

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def find_documents(paths: list[str]) -> list[Document]:
    documents: list[Document] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            pdfs = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".pdf")
            if not pdfs:
                raise UsageError(f"{raw}: the directory holds no PDF (a directory stands for the .pdf files directly "
                                 "in it)")
            documents += [Document(p, "application/pdf") for p in pdfs]
        elif path.is_file():
            documents.append(Document(path, _content_type(path)))
        elif path.exists():
            raise UsageError(f"{raw}: not a file or a directory")
        else:
            raise UsageError(f"{raw}: no such file or directory")
    return documents


def _content_type(path: Path) -> str:
    with path.open("rb") as file:
        head = file.read(1024)
    if b"%PDF-" in head:
        return "application/pdf"
    if path.suffix.lower() in TEXT_TYPES:
        return TEXT_TYPES[path.suffix.lower()]
    if path.suffix.lower() == ".pdf":
        raise UsageError(f"{path}: named .pdf but not a PDF (no %PDF- header)")
    raise UsageError(f"{path}: docpipe reads PDF files, and text as .txt or .md files")


def build_task(kind: str | None, *, schema: str | None = None, labels: str | None = None, map_text: str | None = None,
               reduce_text: str | None = None, model: str | None = None, target_words: int | None = None,
               max_cost_usd: float | None = None) -> dict[str, Any]:
    """The task object; without ``kind``, the options given say which (a schema: extract, labels: classify …)."""
    implied = "extract" if schema else "classify" if labels else "prompt" if (map_text or reduce_text) else None
    kind = kind or implied or "summarize"
    given = {"--schema": schema, "--labels": labels, "--map": map_text, "--reduce": reduce_text}
    belongs = {"--schema": "extract", "--labels": "classify", "--map": "prompt", "--reduce": "prompt"}
    stray = [option for option, value in given.items() if value is not None and belongs[option] != kind]
    if stray:
        raise UsageError(f"{', '.join(stray)}: not an option of --task {kind}")
    task: dict[str, Any] = {"type": kind}
    if kind == "extract":
        if schema is None:
            raise UsageError("--task extract needs --schema FILE (a JSON Schema of what to extract)")
        task["schema"] = _schema(schema)
    elif kind == "classify":
        names = [label.strip() for label in (labels or "").split(",") if label.strip()]
        if len(names) < 2:
            raise UsageError("--task classify needs --labels with at least two labels, e.g. --labels invoice,contract")
        task["labels"] = names
    elif kind == "prompt":
        if not (map_text and reduce_text):
            raise UsageError("--task prompt needs both --map TEXT (asked of each chunk) and --reduce TEXT (to "
                             "combine the answers)")
        task.update(map=map_text, reduce=reduce_text)
    if target_words is not None:
        if kind != "summarize":
            raise UsageError("--target-words applies to --task summarize only")
        task["target_words"] = target_words
    task.update({k: v for k, v in (("model", model), ("max_cost_usd", max_cost_usd)) if v is not None})
    return task


def _schema(name: str) -> dict[str, Any]:
    path = Path(name)
    if not path.is_file():
        raise UsageError(f"--schema {name}: no such file")
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"--schema {name}: not JSON ({str(exc)[:120]})") from None
    if not isinstance(schema, dict):
        raise UsageError(f"--schema {name}: a JSON Schema is a JSON object")
    return schema
