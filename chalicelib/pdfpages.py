"""Read the text of a PDF's pages in a child process, so that a runaway page costs that page and not the Lambda.

pypdf is pure Python: a hostile page can hold the CPU for minutes or allocate gigabytes, and no thread can
interrupt it. The pages are therefore read in a forked child that streams each page's text back over a pipe. The
parent waits at most ``page_seconds`` for each page and kills the child when it overruns. Memory is bounded twice:
the child may map at most ``memory_mb`` of address space beyond what it inherited, so a page that blows up raises
MemoryError there; and since heap it inherited free can still be filled without mapping more, the child also asks
the kernel to make it, not the worker, the one killed if the Lambda's memory runs out. Either way the page is
skipped and a new child resumes at the next one.

``multiprocessing.Process`` and ``Pipe`` only: Lambda has no /dev/shm, so ``Queue`` and ``Pool`` do not work there.
The child costs 12–25 ms per document in a warm worker (``make bench``: pypdf alone reads a one-page PDF in 3 ms,
docpipe in 14–24 ms). It is paid for every PDF, because size says nothing about safety: a 58 kB file can hold a
page that pypdf needs 80 s and 740 MB to read.
"""

from __future__ import annotations

import enum
import functools
import io
import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from chalicelib.errors import JobFailure

_MB = 1024 * 1024


class SkippedPage(enum.Enum):
    """Why a page has no text; the job's warning names it."""

    UNREADABLE = "unreadable"
    TOO_SLOW = "too_slow"
    TOO_BIG = "too_big"


@dataclass(frozen=True)
class ReadingLimits:
    """How long one page, and the whole document, may take to read, and how much memory the reading may add."""

    page_seconds: float = 10.0
    document_seconds: float = 180.0
    memory_mb: int = 1024


def read_pages(data: bytes, *, max_pages: int, limits: ReadingLimits) -> list[str | SkippedPage]:
    """The text of every page, or why it is missing; a ``JobFailure`` when the PDF cannot be read at all.

    The page count comes from the page tree pypdf walks, never from the ``/Count`` a file declares.
    """
    _prepare_pypdf()
    deadline = time.monotonic() + limits.document_seconds
    pages: list[str | SkippedPage] = []
    count: int | None = None
    while count is None or len(pages) < count:
        child = _Child(data, first=len(pages), max_pages=max_pages, memory_mb=limits.memory_mb)
        try:
            count = _collect(child, pages, count, limits, deadline)
        finally:
            child.stop()
    return pages


@functools.cache
def _prepare_pypdf() -> None:
    """Import pypdf and let it build what it builds on first use, once, so that no forked child pays for it.

    Measured: a child that opens its first PDF spends 9 ms on pypdf's lazy imports and tables; after this, 2 ms.
    """
    import pypdf

    # pypdf logs a warning per font it cannot fully decode; what matters reaches the job as warnings instead.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    writer = pypdf.PdfWriter()
    writer.add_blank_page(72, 72)
    blank = io.BytesIO()
    writer.write(blank)
    pypdf.PdfReader(blank).pages[0].extract_text()


def _collect(child: _Child, pages: list[str | SkippedPage], count: int | None, limits: ReadingLimits,
             deadline: float) -> int:
    """Append the child's pages until it is done, stuck or gone; returns the document's page count.

    ``count`` is None until a child has opened the document; a child that resumes reopens it as part of its page.
    """
    while count is None or len(pages) < count:
        message = child.next_message(min(limits.page_seconds, deadline - time.monotonic()))
        if message is None:
            if time.monotonic() >= deadline:
                raise JobFailure("too_large", f"reading the PDF took longer than {limits.document_seconds:g} s "
                                              f"({len(pages)} of {count if count is not None else 'its'} pages were read)")
            if count is None:
                raise JobFailure("too_large", f"opening the PDF took longer than {limits.page_seconds:g} s")
            pages.append(SkippedPage.TOO_SLOW)
            return count
        kind, value = message
        if kind == "failure":
            raise JobFailure(*value)
        if kind == "count":
            count = value
        elif kind == "page":
            pages.append(value)
        elif kind == "unreadable":
            pages.append(SkippedPage.UNREADABLE)
        else:
            # Out of memory, or ended without a word; SIGKILL from anyone but us is the kernel's OOM killer.
            too_big = kind == "memory" or value == -signal.SIGKILL
            if count is None:
                raise JobFailure("too_large", f"opening the PDF needed more than {limits.memory_mb} MB") if too_big \
                    else JobFailure("corrupt_pdf", f"the PDF reader stopped while opening the file (exit {value})")
            # Memory held for earlier pages may be to blame: the page gets one more try in a fresh child.
            if len(pages) > child.first:
                return count
            pages.append(SkippedPage.TOO_BIG if too_big else SkippedPage.UNREADABLE)
            return count
    return count


class _Child:
    """One forked reader, started at page index ``first``, and the read end of its pipe."""

    def __init__(self, data: bytes, *, first: int, max_pages: int, memory_mb: int) -> None:
        import multiprocessing

        # fork: the child shares the document's bytes and the imported pypdf instead of pickling and re-importing.
        context = multiprocessing.get_context("fork")
        self.first = first
        self.receiver, sender = context.Pipe(duplex=False)
        self.process = context.Process(target=_read_in_child, args=(sender, data, first, max_pages, memory_mb),
                                       daemon=True)
        self.process.start()
        sender.close()

    def next_message(self, timeout: float) -> tuple[str, Any] | None:
        """The child's next message, ``("died", exitcode)`` when it ended without one, None when it sent none in time."""
        if not self.receiver.poll(max(timeout, 0.0)):
            return None
        try:
            return self.receiver.recv()
        except (EOFError, OSError):
            self.process.join(1.0)
            return "died", self.process.exitcode

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.receiver.close()


def _read_in_child(sender: Any, data: bytes, first: int, max_pages: int, memory_mb: int) -> None:
    _limit_memory(memory_mb)
    _volunteer_for_the_oom_killer()
    ending = _send_pages(sender, data, first, max_pages)
    # The reader is gone with _send_pages' frame; lifting the limit lets the last word through even so.
    _lift_memory_limit()
    if ending is not None:
        sender.send(ending)
    sender.close()
    # No interpreter teardown: a process that just hit its memory limit can hang printing a traceback.
    os._exit(0)


def _send_pages(sender: Any, data: bytes, first: int, max_pages: int) -> tuple[str, Any] | None:
    """Send the page count, then each page from ``first`` on; returns the message that ends the reading early."""
    try:
        reader = _open(data)
        sender.send(("count", _page_count(reader, max_pages)))
        for index in range(first, len(reader.pages)):
            sender.send(_page_text(reader, index))
    except JobFailure as failure:
        return "failure", (failure.code, failure.message)
    except MemoryError:
        # What pypdf half-built is unsafe to reuse: this child ends, and a fresh one goes on.
        return "memory", None
    except Exception as exc:  # pypdf raises non-pypdf exceptions on hostile files
        return "failure", ("corrupt_pdf", f"the PDF cannot be parsed: {_describe(exc)}")
    return None


def _page_count(reader: Any, max_pages: int) -> int:
    count = len(reader.pages)  # the flattened page tree once decrypted; /Count is never consulted
    if count == 0:
        raise JobFailure("corrupt_pdf", "the PDF has no pages")
    if count > max_pages:
        raise JobFailure("too_large", f"the PDF has {count} pages; the limit is {max_pages}")
    return count


def _page_text(reader: Any, index: int) -> tuple[str, str | None]:
    try:
        return "page", reader.pages[index].extract_text() or ""
    except MemoryError:
        raise
    except Exception:  # pypdf raises non-pypdf exceptions on hostile pages; the page is reported as skipped
        return "unreadable", None


def _open(data: bytes) -> Any:
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError

    try:
        reader = PdfReader(io.BytesIO(data))
        # Owner-password-only files open with the empty user password and are read as usual.
        if reader.is_encrypted and not reader.decrypt(""):
            raise FileNotDecryptedError("a user password is needed")
    except FileNotDecryptedError:
        raise JobFailure("encrypted", "the PDF is encrypted and needs a password to open") from None
    return reader


def _limit_memory(memory_mb: int) -> None:
    """Let this process grow by at most ``memory_mb`` beyond what it inherited, so excess raises MemoryError."""
    import resource

    try:
        with open("/proc/self/statm") as statm:
            inherited = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return  # no /proc (macOS): nothing to measure the limit from; Lambda always has it
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = inherited + memory_mb * _MB
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _volunteer_for_the_oom_killer() -> None:
    """If the Lambda runs out of memory regardless, the kernel kills this reader and the worker carries on."""
    try:
        with open("/proc/self/oom_score_adj", "w") as score:
            score.write("1000")  # raising one's own score needs no privilege
    except OSError:
        pass  # no /proc (macOS): the address-space limit still holds


def _lift_memory_limit() -> None:
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))


def _describe(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:200]
