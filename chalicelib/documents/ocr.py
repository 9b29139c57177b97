"""Read the pages docpipe could not, with Amazon Textract (``DOCPIPE_OCR=textract``; off by default).

Which pages: those the text-quality gate left out for what they show — images without text, mojibake, an OCR
layer in the wrong script (``PageSet.needs_ocr``) — never those too slow or too big to read. Only those pages are
sent, because Textract is paid per page: the guarded reader writes them into a PDF of their own, stored under
``ocr/`` in the bucket beside the document and deleted afterwards (when every page is wanted, the document itself
is read). One page goes through the synchronous ``DetectDocumentText``; more through the asynchronous
``StartDocumentTextDetection`` / ``GetDocumentTextDetection`` on the object in S3, polled with a doubling wait
until the job ends or the time allowed runs out. The LINE blocks of each page, in Textract's reading order, become
that page's text.

Throttling and Textract's own outages are ``TransientError`` (the job is tried again later, as for the LLM);
anything else, and running out of time, leaves the pages unread with a warning.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chalicelib.errors import TransientError

OCR_PREFIX = "ocr/"
_RETRYABLE = {"ThrottlingException", "ProvisionedThroughputExceededException", "LimitExceededException",
              "InternalServerError", "ServiceUnavailableException"}
_FIRST_POLL_SECONDS = 1.0
_LONGEST_POLL_SECONDS = 8.0


@dataclass
class OcrResult:
    """What OCR read: 1-based document page -> text, the pages Textract billed, its cost, and what went wrong."""

    texts: dict[int, str] = field(default_factory=dict)
    pages_billed: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0
    problem: str | None = None


class TextractOCR:
    """Amazon Textract text detection on documents in the job bucket (clients built in ``bootstrap``)."""

    def __init__(self, textract: Any, s3: Any, bucket: str, *, usd_per_page: float,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._textract = textract
        self._s3 = s3
        self.bucket = bucket
        self.usd_per_page = usd_per_page
        self._sleep = sleep

    def read(self, key: str, pages: list[int], *, subset: bytes | None, document_pages: int,
             seconds: float) -> OcrResult:
        """The text of ``pages`` (1-based) of the document at ``key``, which has ``document_pages`` pages.

        ``subset`` is a PDF of those pages alone (its page i is ``pages[i - 1]``); None reads the document at
        ``key`` itself, whose page numbers are then the document's. ``seconds`` bounds the whole reading. Pages
        billed are Textract's count, or what was sent when its answer has none.
        """
        started = time.monotonic()
        sent = len(pages) if subset is not None else document_pages
        result = OcrResult()
        stored = None
        try:
            if subset is not None:
                stored = f"{OCR_PREFIX}{uuid.uuid4().hex}.pdf"
                self._s3.put_object(Bucket=self.bucket, Key=stored, Body=subset, ContentType="application/pdf")
            location = {"S3Object": {"Bucket": self.bucket, "Name": stored or key}}
            if len(pages) == 1:
                blocks, billed = self._detect(location)
            else:
                blocks, billed = self._detect_async(location, deadline=started + seconds)
            texts = _page_texts(blocks)
            if subset is not None:
                result.texts = {pages[i - 1]: text for i, text in texts.items() if 0 < i <= len(pages)}
            else:
                result.texts = {i: text for i, text in texts.items() if i in pages}
            result.pages_billed = billed or sent
        except _Unfinished as unfinished:
            # Textract bills a job it ran, finished or not.
            result.problem, result.pages_billed = str(unfinished), sent
        except TransientError:
            raise
        except Exception as exc:  # Textract refused the document: the pages stay unread, the job says why
            result.problem = _describe(exc)
        finally:
            if stored is not None:
                self._forget(stored)
            result.cost_usd = round(result.pages_billed * self.usd_per_page, 6)
            result.seconds = round(time.monotonic() - started, 3)
        return result

    def _detect(self, location: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
        answer = self._call(self._textract.detect_document_text, Document=location)
        return answer.get("Blocks", []), _pages_of(answer)

    def _detect_async(self, location: dict[str, Any], *, deadline: float) -> tuple[list[dict[str, Any]], int]:
        job_id = self._call(self._textract.start_document_text_detection, DocumentLocation=location)["JobId"]
        wait = _FIRST_POLL_SECONDS
        while True:
            answer = self._call(self._textract.get_document_text_detection, JobId=job_id, MaxResults=1000)
            status = answer.get("JobStatus")
            if status in ("SUCCEEDED", "PARTIAL_SUCCESS"):
                break
            if status == "FAILED":
                raise _Unfinished(f"Textract could not read the pages: {answer.get('StatusMessage') or 'FAILED'}")
            if time.monotonic() + wait > deadline:
                raise _Unfinished("Textract did not finish in the time the job allows")
            self._sleep(wait)
            wait = min(wait * 2, _LONGEST_POLL_SECONDS)
        blocks = list(answer.get("Blocks", []))
        billed = _pages_of(answer)
        while answer.get("NextToken"):
            answer = self._call(self._textract.get_document_text_detection, JobId=job_id, MaxResults=1000,
                                NextToken=answer["NextToken"])
            blocks.extend(answer.get("Blocks", []))
        return blocks, billed

    def _call(self, operation: Callable[..., dict[str, Any]], **parameters: Any) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        try:
            return operation(**parameters)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in _RETRYABLE or error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500:
                raise TransientError("ocr_unavailable",
                                     f"Textract is unavailable ({code}); the job will be tried again") from None
            raise

    def _forget(self, key: str) -> None:
        try:
            self._s3.delete_object(Bucket=self.bucket, Key=key)
        except Exception:  # the bucket's lifecycle rule for ocr/ removes what is left
            pass


class _Unfinished(Exception):
    """The asynchronous job failed or outlasted the time allowed."""


def _page_texts(blocks: list[dict[str, Any]]) -> dict[int, str]:
    """Page number -> its LINE blocks' text, one line each, in the order Textract returned them (reading order)."""
    lines: dict[int, list[str]] = {}
    for block in blocks:
        if block.get("BlockType") == "LINE" and block.get("Text"):
            lines.setdefault(int(block.get("Page", 1)), []).append(block["Text"])
    return {page: "\n".join(text) for page, text in lines.items()}


def _pages_of(answer: dict[str, Any]) -> int:
    pages = answer.get("DocumentMetadata", {}).get("Pages", 0)
    return pages if isinstance(pages, int) else 0


def _describe(exc: Exception) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"Textract refused the pages: {error.get('Code', 'error')}: {error.get('Message', '')}".strip(": ")
    return f"Textract could not be asked: {type(exc).__name__}: {str(exc)[:200]}"
