"""Documents: bytes in, normalised text with its pages out, then token-sized chunks that remember where they came from.

``reading`` (a PDF or text into a Document, or a failure code), ``pdfpages`` (the guarded reader process, kept
between documents), ``legibility`` (the text-quality gate), ``normalise``, ``ocr`` (Textract, for the pages the gate
leaves out), ``tokens`` (the model's real tokenizer, offline) and ``chunking``. pypdf and tiktoken are imported only
when a document is read or counted.
"""

from chalicelib.config import ReadingLimits
from chalicelib.documents.chunking import Chunk, chunk_document
from chalicelib.documents.ocr import OcrResult, TextractOCR
from chalicelib.documents.pdfpages import extract_pages
from chalicelib.documents.reading import (
    PDF_MAGIC,
    Document,
    PageSet,
    describe_pages,
    extract_document,
    read_document,
    sniff,
)
from chalicelib.documents.tokens import count_tokens, get_encoding

__all__ = ["PDF_MAGIC", "Chunk", "Document", "OcrResult", "PageSet", "ReadingLimits", "TextractOCR", "chunk_document",
           "count_tokens", "describe_pages", "extract_document", "extract_pages", "get_encoding", "read_document",
           "sniff"]
