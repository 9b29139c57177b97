"""The emulator's server: ``python -m moto.server``, with DynamoDB's requests handled one at a time, and without the
per-request costs of moto's dispatcher that no AWS endpoint has.

DynamoDB applies a conditional write atomically; moto's threaded server checks the condition and then writes, with
no lock between the two, so two workers claiming one job at the same instant (a duplicate delivery) could both win.
Serialising each table's requests (they never block, unlike SQS's long polls) gives the local stack the atomicity
the job claims, the shared limits' versioned writes and the circuit breaker's elections rely on, as on AWS. One lock
per table, not one for all of DynamoDB: tables are independent on AWS, and with a single lock the shared limits'
item waited behind a burst's job writes (a third of a second per request in a 40-job burst's first second).

moto's dispatcher finds each request's service under one lock for the whole server, by listing moto's package
directory (a ``stat`` per service, some two hundred) and matching the host against every service's URL patterns;
and it logs a line per request. In a burst that lock and the log's were the emulator's busiest: every request to
every service queued on them (profiled: about two fifths of the emulator's busy time). The service of a host never
changes, so it is looked up once; the access log is off (errors are still logged).
"""

from __future__ import annotations

import io
import json
import logging
import threading
from typing import Any

import moto.server
from moto.moto_server.werkzeug_app import DomainDispatcherApplication

_TABLES: dict[str, threading.Lock] = {}
_TABLES_LOCK = threading.Lock()
_HOSTS_REMEMBERED = 1024  # moto asks for a handful of service hosts; a bound all the same


class _EmulatorDispatcher(DomainDispatcherApplication):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._backends: dict[str, Any] = {}

    def get_backend_for_host(self, host: str | None) -> Any:
        # Called under the dispatcher's own lock: the dict needs none of its own.
        if host is None:
            return None
        if host not in self._backends:
            backend = super().get_backend_for_host(host)
            if len(self._backends) >= _HOSTS_REMEMBERED:
                return backend
            self._backends[host] = backend
        return self._backends[host]

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if not target.startswith("DynamoDB_"):
            return super().__call__(environ, start_response)
        stream = environ["wsgi.input"]
        body = stream.read() if environ.get("wsgi.input_terminated") else stream.read(
            int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        names = tables_of(body, target, environ.get("HTTP_CONTENT_ENCODING", ""))
        locks = [_table_lock(name) for name in sorted(names)]  # in one order: no two requests deadlock
        for lock in locks:
            lock.acquire()
        try:
            return list(super().__call__(environ, start_response))
        finally:
            for lock in reversed(locks):
                lock.release()


def tables_of(body: bytes, target: str = "", encoding: str = "") -> set[str]:
    """The tables a DynamoDB request reads or writes ("" for one that names none, such as ListTables). A request
    whose tables are not in its JSON (PartiQL statements, a compressed or unreadable body) takes every table's lock."""
    if target.endswith(("ExecuteStatement", "ExecuteTransaction", "BatchExecuteStatement")) or encoding:
        return _every_table()
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        return _every_table()
    if not isinstance(request, dict):
        return _every_table()
    names = {request["TableName"]} if isinstance(request.get("TableName"), str) else set()
    names |= set(request.get("RequestItems") or {})
    for item in request.get("TransactItems") or []:
        names |= {part["TableName"] for part in item.values() if isinstance(part, dict) and "TableName" in part}
    return {name.rsplit(":table/", 1)[-1] for name in names} or {""}  # a table's ARN locks its name


def _every_table() -> set[str]:
    with _TABLES_LOCK:
        return {*_TABLES, ""}


def _table_lock(name: str) -> threading.Lock:
    with _TABLES_LOCK:
        return _TABLES.setdefault(name, threading.Lock())


def install_dispatcher() -> None:
    """Have ``moto.server.main`` serve each DynamoDB table's requests one at a time, find each host's service once
    and log errors only (call before it)."""
    moto.server.DomainDispatcherApplication = _EmulatorDispatcher  # type: ignore[misc]
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


if __name__ == "__main__":
    install_dispatcher()
    moto.server.main()
