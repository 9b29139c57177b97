"""Errors as values a client can act on: a stable ``code``, a human ``message``.

Three families, because each is handled differently at the edge:

* ``RequestError`` — the client sent something wrong; the route answers a 4xx and no job is created.
* ``JobFailure`` — the job cannot succeed however often it is retried (an encrypted PDF, a rejected API key);
  the job ends FAILED with this code and its message is deleted.
* ``TransientError`` — worth another try (a provider outage, a timeout); the message is left to SQS, which
  redelivers it after a backoff and, after the last receive, to the DLQ. Two kinds spend no delivery: the job is
  put back on the queue to wait, ``CircuitOpen`` out the LLM provider's outage and ``Throttled`` its "slow down".

Adapters translate what their libraries raise into these (``llm.breaker`` turns Powertools' open circuit into
``CircuitOpen``, ``llm.chat`` sorts the openai SDK's errors), so the pipeline and the entry points see docpipe's
errors only. ``UnusableAnswer`` never leaves the pipeline: one chunk's answer is skipped with a warning.
"""

from __future__ import annotations


class DocpipeError(Exception):
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class RequestError(DocpipeError):
    """A client mistake: answered with ``status`` and never turned into a job."""

    def __init__(self, code: str, message: str, *, status: int = 400) -> None:
        super().__init__(message, code=code)
        self.status = status


class NotFound(RequestError):
    def __init__(self, message: str) -> None:
        super().__init__("not_found", message, status=404)


class ServiceUnavailable(RequestError):
    """docpipe could not take the request right now (a queue or table unreachable): retrying is the answer."""

    def __init__(self, message: str) -> None:
        super().__init__("service_unavailable", message, status=503)


class JobFailure(DocpipeError):
    """Permanent: the job ends FAILED with this code.

    Document codes: ``encrypted``, ``no_text``, ``corrupt_pdf``, ``unsupported_type``, ``too_large``, ``empty``.
    LLM codes: ``llm_unavailable``, ``budget_exceeded``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


class TransientError(DocpipeError):
    """Worth retrying later; after the last delivery the job fails with ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


class CircuitOpen(TransientError):
    """The LLM circuit breaker is open (the provider is failing for every worker): the job waits on the queue."""

    def __init__(self, message: str = "the LLM provider is failing; the circuit breaker stopped the calls") -> None:
        super().__init__("llm_unavailable", message)


class Throttled(TransientError):
    """The provider said "slow down" (or docpipe's shared provider limits did) for longer than this invocation can
    wait: the job waits on the queue for ``retry_after`` seconds (None: the usual backoff), spending no delivery.

    Never an outage: the circuit breaker does not count it.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__("llm_unavailable", message)
        self.retry_after = retry_after


class UnusableAnswer(Exception):
    """One chunk's answer could not be used (e.g. never valid against the schema): it is skipped with a warning."""
