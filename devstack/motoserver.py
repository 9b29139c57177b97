"""The emulator's server: ``python -m moto.server``, with DynamoDB's requests handled one at a time.

DynamoDB applies a conditional write atomically; moto's threaded server checks the condition and then writes, with
no lock between the two, so two workers claiming one job at the same instant (a duplicate delivery) could both win.
Serialising DynamoDB's requests (they never block, unlike SQS's long polls) gives the local stack the atomicity the
job claims, the shared limits' versioned writes and the circuit breaker's elections rely on, as on AWS.
"""

from __future__ import annotations

import threading
from typing import Any

import moto.server
from moto.moto_server.werkzeug_app import DomainDispatcherApplication

_DYNAMODB = threading.Lock()


class _AtomicDynamoDB(DomainDispatcherApplication):
    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            return super().__call__(environ, start_response)
        with _DYNAMODB:
            return list(super().__call__(environ, start_response))


def make_dynamodb_atomic() -> None:
    """Have ``moto.server.main`` serve DynamoDB's requests one at a time (call before it)."""
    moto.server.DomainDispatcherApplication = _AtomicDynamoDB  # type: ignore[misc]


if __name__ == "__main__":
    make_dynamodb_atomic()
    moto.server.main()
