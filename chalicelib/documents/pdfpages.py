"""Read the text of a PDF's pages in a child process, so that a runaway page costs that page and not the Lambda.

pypdf is pure Python: a hostile page can hold the CPU for minutes or allocate gigabytes, and no thread can
interrupt it. The pages are therefore read in a forked reader process that streams each page's text back over a
pipe. The parent waits at most ``page_seconds`` for each page and kills the reader when it overruns. Memory is
bounded twice: the reader may map at most ``memory_mb`` of address space beyond what it inherited, so a page that
blows up raises MemoryError there; and since heap it inherited free can still be filled without mapping more, the
reader also asks the kernel to make it, not the worker, the one killed if the Lambda's memory runs out. Either way
the page is skipped and a new reader resumes at the next one.

The reader outlives the document: forking a warm worker costs about 12 ms, more than pypdf needs for a short
document, so one idle reader is kept and the next document's bytes are sent to it through the pipe. A reader that
was killed, ran out of memory or grew by half its memory budget is not kept, and the next document forks a fresh one.
A worker reads one document at a time: the records of a batch run side by side, and each reader may add the whole
memory budget, which the function has once; reading is CPU-bound anyway, on a Lambda's one vCPU or less.

``multiprocessing.Process`` and ``Pipe`` only: Lambda has no /dev/shm, so ``Queue`` and ``Pool`` do not work there.
"""

from __future__ import annotations

import enum
import functools
import io
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from chalicelib.config import ReadingLimits
from chalicelib.errors import JobFailure

_MB = 1024 * 1024
# A4 in square points: how much page a "page" of characters is measured against.
A4_AREA = 595.0 * 842.0
# Below this many visible characters per A4 of page, the reader also measures how much of the page images cover.
SPARSE_CHARACTERS_PER_A4 = 200


class SkippedPage(enum.Enum):
    """Why a page has no text; the job's warning names it."""

    UNREADABLE = "unreadable"
    TOO_SLOW = "too_slow"
    TOO_BIG = "too_big"


@dataclass(frozen=True)
class PageText:
    """What a page says, and how big it is: ``area`` in square points, ``image_cover`` the share of it that images
    cover (measured only on sparse pages, None elsewhere)."""

    text: str
    area: float = A4_AREA
    image_cover: float | None = None


def read_pages(data: bytes, *, max_pages: int, limits: ReadingLimits,
               on_page: Callable[[PageText | SkippedPage], None] | None = None) -> list[PageText | SkippedPage]:
    """The text of every page, or why it is missing; a ``JobFailure`` when the PDF cannot be read at all.

    ``on_page`` receives each page as it arrives (then the list returned is empty): the caller works on one page
    while the reader reads the next. The page count comes from the page tree pypdf walks, never from the
    ``/Count`` a file declares.
    """
    pages: list[PageText | SkippedPage] = []
    _read(("read", max_pages), data, limits, on_page or pages.append)
    return pages


def extract_pages(data: bytes, numbers: Sequence[int], *, limits: ReadingLimits) -> bytes:
    """A new PDF holding only the given pages (1-based) of ``data``, written by the guarded reader.

    OCR is paid per page: this is what lets docpipe send only the pages it could not read.
    """
    written: list[bytes] = []
    _read(("subset", list(numbers)), data, limits, written.append)
    return written[0]


def idle_readers() -> set[Any]:
    """The reader processes kept for the next document (tests check that nothing else is left running)."""
    with _POOL_LOCK:
        return {_IDLE.process} if _IDLE is not None and _IDLE.process.is_alive() else set()


def retire_idle_reader() -> None:
    """Stop the kept reader, so that the next document forks one from the worker as it is now."""
    global _IDLE
    with _POOL_LOCK:
        reader, _IDLE = _IDLE, None
    if reader is not None:
        reader.stop()


def _read(request: tuple[str, Any], data: bytes, limits: ReadingLimits, emit: Any) -> None:
    with _READING:
        _read_alone(request, data, limits, emit)


def _read_alone(request: tuple[str, Any], data: bytes, limits: ReadingLimits, emit: Any) -> None:
    _prepare_pypdf()
    deadline = time.monotonic() + limits.document_seconds
    progress = _Progress()
    while progress.count is None or progress.done < progress.count:
        reader = _acquire(limits.memory_mb)
        healthy = False
        try:
            reader.send(request, data, first=progress.done)
            healthy = _collect(reader, progress, limits, deadline, emit)
        finally:
            _release(reader, healthy)


@dataclass
class _Progress:
    """How far the reading got: the document's page count once known, and the pages emitted so far."""

    count: int | None = None
    done: int = 0


@functools.cache
def _prepare_pypdf() -> None:
    """Import pypdf and let it build what it builds on first use, once, so that no forked reader pays for it.

    Measured: a reader that opens its first PDF spends 9 ms on pypdf's lazy imports and tables; after this, 2 ms.
    """
    import pypdf

    # pypdf logs a warning per font it cannot fully decode; what matters reaches the job as warnings instead.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    writer = pypdf.PdfWriter()
    writer.add_blank_page(72, 72)
    blank = io.BytesIO()
    writer.write(blank)
    pypdf.PdfReader(blank).pages[0].extract_text()


def _collect(reader: _Reader, progress: _Progress, limits: ReadingLimits, deadline: float, emit: Any) -> bool:
    """Emit the reader's pages until the request is done (True) or the reader is stuck or gone (False).

    ``progress.count`` is None until a reader has opened the document; a reader that resumes reopens it as part of
    its first page.
    """
    first = progress.done
    while True:
        message = reader.next_message(min(limits.page_seconds, deadline - time.monotonic()))
        if message is None:
            if time.monotonic() >= deadline:
                raise JobFailure("too_large", f"reading the PDF took longer than {limits.document_seconds:g} s "
                                              f"({progress.done} of {progress.count or 'its'} pages were read)")
            if progress.count is None:
                raise JobFailure("too_large", f"opening the PDF took longer than {limits.page_seconds:g} s")
            _skip(progress, SkippedPage.TOO_SLOW, emit)
            return False
        kind, value = message
        if kind == "done":
            return bool(value)
        if kind == "failure":
            raise JobFailure(*value)
        if kind == "count":
            progress.count = value
        elif kind == "page":
            progress.done += 1
            emit(PageText(*value))
        elif kind == "unreadable":
            _skip(progress, SkippedPage.UNREADABLE, emit)
        elif kind == "pdf":
            emit(value)
            progress.count = progress.done = 1  # a subset is one answer: the request is complete
        else:
            # Out of memory, or ended without a word; SIGKILL from anyone but us is the kernel's OOM killer.
            too_big = kind == "memory" or value == -signal.SIGKILL
            if progress.count is None:
                raise JobFailure("too_large", f"opening the PDF needed more than {limits.memory_mb} MB") if too_big \
                    else JobFailure("corrupt_pdf", f"the PDF reader stopped while opening the file (exit {value})")
            # Memory held for earlier pages may be to blame: the page gets one more try in a fresh reader.
            if progress.done == first:
                _skip(progress, SkippedPage.TOO_BIG if too_big else SkippedPage.UNREADABLE, emit)
            return False


def _skip(progress: _Progress, reason: SkippedPage, emit: Any) -> None:
    progress.done += 1
    emit(reason)


# The reader kept for the next document, if any; a worker reads one document at a time, threads aside.
_IDLE: _Reader | None = None
_POOL_LOCK = threading.Lock()
_READING = threading.Lock()


def _acquire(memory_mb: int) -> _Reader:
    global _IDLE
    with _POOL_LOCK:
        reader, _IDLE = _IDLE, None
    if reader is not None and reader.memory_mb == memory_mb and reader.process.is_alive():
        return reader
    if reader is not None:
        reader.stop()
    return _Reader(memory_mb)


def _release(reader: _Reader, healthy: bool) -> None:
    global _IDLE
    if healthy:
        with _POOL_LOCK:
            if _IDLE is None:
                _IDLE = reader
                return
    reader.stop()


class _Reader:
    """One forked reader process serving requests over a duplex pipe, and the parent's end of it."""

    def __init__(self, memory_mb: int) -> None:
        import multiprocessing

        # fork: the reader inherits the imported pypdf instead of importing it again.
        context = multiprocessing.get_context("fork")
        self.memory_mb = memory_mb
        self.connection, child_end = context.Pipe(duplex=True)
        self.process = context.Process(target=_serve, args=(child_end, self.connection, memory_mb), daemon=True)
        self.process.start()
        child_end.close()

    def send(self, request: tuple[str, Any], data: bytes, *, first: int) -> None:
        try:
            self.connection.send((*request, first))
            self.connection.send_bytes(data)
        except OSError:
            pass  # the reader is gone: next_message says so

    def next_message(self, timeout: float) -> tuple[str, Any] | None:
        """The reader's next message; ``("died", exitcode)`` when it ended without one, None when none came in time."""
        try:
            if not self.connection.poll(max(timeout, 0.0)):
                return None
            return self.connection.recv()
        except (EOFError, OSError):
            self.process.join(1.0)
            return "died", self.process.exitcode

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.connection.close()


def _serve(connection: Any, parent_end: Any, memory_mb: int) -> None:
    import gc

    # The worker's objects are the worker's: the reader's collections skip them instead of walking (and so copying)
    # the whole inherited heap.
    gc.freeze()
    parent_end.close()
    inherited = _limit_memory(memory_mb)
    _volunteer_for_the_oom_killer()
    keep_serving = True
    while keep_serving:
        try:
            kind, argument, first = connection.recv()
            data = connection.recv_bytes()
        except (EOFError, OSError):
            break
        ending = _answer(connection, kind, argument, first, data)
        del data
        # What pypdf half-built after MemoryError is unsafe to reuse, and a reader that grew keeps what it took.
        keep_serving = ending is None and (inherited is None or _mapped() - inherited < memory_mb * _MB // 2)
        # Lifting the limit lets the last word through even after MemoryError.
        _lift_memory_limit()
        connection.send(ending or ("done", keep_serving))
        if keep_serving:
            _limit_memory(memory_mb, inherited)
    connection.close()
    # No interpreter teardown: a process that just hit its memory limit can hang printing a traceback.
    os._exit(0)


def _answer(connection: Any, kind: str, argument: Any, first: int, data: bytes) -> tuple[str, Any] | None:
    """Send what the request asks; returns the message that ends the reading early."""
    try:
        reader = _open(data)
        if kind == "subset":
            connection.send(("pdf", _subset(reader, argument)))
            return None
        connection.send(("count", _page_count(reader, argument)))
        for index in range(first, len(reader.pages)):
            connection.send(_page_text(reader, index))
    except JobFailure as failure:
        return "failure", (failure.code, failure.message)
    except MemoryError:
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


def _page_text(reader: Any, index: int) -> tuple[str, Any]:
    try:
        page = reader.pages[index]
        text = page.extract_text() or ""
        area = _area(page)
        # Few characters for the page's size: is it a picture (a scan) with a stray label, or a short page?
        if len(text) - _whitespace(text) < SPARSE_CHARACTERS_PER_A4 * area / A4_AREA:
            return "page", (text, area, _image_cover(page, reader, area))
        return "page", (text, area, None)
    except MemoryError:
        raise
    except Exception:  # pypdf raises non-pypdf exceptions on hostile pages; the page is reported as skipped
        return "unreadable", None


def _whitespace(text: str) -> int:
    return text.count(" ") + text.count("\n") + text.count("\t") + text.count("\r")


def _area(page: Any) -> float:
    box = page.cropbox
    area = abs(float(box.width) * float(box.height))
    return area if area > 0 else A4_AREA


def _image_cover(page: Any, reader: Any, area: float) -> float:
    """The share of the page that images are drawn on (0–1), from the image operators and the transformation
    matrix in force for each; an image reference that no longer resolves (a damaged file) counts as an image."""
    contents = page.get_contents()
    if contents is None:
        return 0.0
    data = contents.get_data()
    # Parsing the page again costs what reading it did: only a page that draws an object or an inline image is.
    if b"Do" not in data and b"BI" not in data:
        return 0.0
    drawn = _images_drawn(contents.operations, page.get("/Resources"), (1.0, 0.0, 0.0, 1.0, 0.0, 0.0), reader, 0)
    return min(1.0, drawn / area)


_Matrix = tuple[float, float, float, float, float, float]


def _images_drawn(operations: list[tuple[Any, bytes]], resources: Any, ctm: _Matrix, reader: Any, depth: int) -> float:
    from pypdf.generic import ContentStream

    saved: list[_Matrix] = []
    drawn = 0.0
    for operands, operator in operations:
        if operator == b"q":
            saved.append(ctm)
        elif operator == b"Q":
            ctm = saved.pop() if saved else ctm
        elif operator == b"cm" and len(operands) == 6:
            ctm = _multiply(tuple(float(x) for x in operands), ctm)  # type: ignore[arg-type]
        elif operator == b"INLINE IMAGE":
            drawn += abs(ctm[0] * ctm[3] - ctm[1] * ctm[2])
        elif operator == b"Do" and operands:
            xobject = _resolve(resources, "/XObject", operands[0])
            subtype = xobject.get("/Subtype") if xobject is not None else None
            if xobject is None or subtype == "/Image":
                drawn += abs(ctm[0] * ctm[3] - ctm[1] * ctm[2])
            elif subtype == "/Form" and depth < 4:
                a, b, c, d, e, f = (float(x) for x in xobject.get("/Matrix", (1, 0, 0, 1, 0, 0)))
                drawn += _images_drawn(ContentStream(xobject, reader).operations,
                                       xobject.get("/Resources", resources), _multiply((a, b, c, d, e, f), ctm),
                                       reader, depth + 1)
    return drawn


def _resolve(resources: Any, category: str, name: Any) -> Any:
    try:
        return resources.get_object()[category].get_object()[name].get_object()
    except Exception:  # a name that resolves to nothing: the object was lost
        return None


def _multiply(m: _Matrix, n: _Matrix) -> _Matrix:
    """m × n for PDF's [a b c d e f] matrices: ``cm`` pre-multiplies the current matrix."""
    a, b, c, d, e, f = m
    A, B, C, D, E, F = n
    return (a * A + b * C, a * B + b * D, c * A + d * C, c * B + d * D, e * A + f * C + E, e * B + f * D + F)


def _subset(reader: Any, numbers: list[int]) -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    for number in numbers:
        writer.add_page(reader.pages[number - 1])
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


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


def _mapped() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _limit_memory(memory_mb: int, inherited: int | None = None) -> int | None:
    """Let this process grow by at most ``memory_mb`` beyond what it inherited, so excess raises MemoryError.

    Returns the inherited size the limit is measured from (None without /proc, where nothing is limited).
    """
    import resource

    if inherited is None:
        try:
            inherited = _mapped()
        except OSError:
            return None  # no /proc (macOS): nothing to measure the limit from; Lambda always has it
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = inherited + memory_mb * _MB
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    return inherited


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
