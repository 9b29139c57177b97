"""Lambda's execution environments, for the local stack: a pool of "containers" per function, each its own process.

On AWS every concurrent invocation of a function runs in an execution environment of its own: its own module
globals (Powertools Logger keys and Metrics, ``lru_cache``d services, the PDF reader process kept by
``documents.pdfpages``), created cold on first need and reused warm by later invocations, one invocation at a time.
``ContainerPool`` does the same with processes: ``invoke`` takes an idle container of the function (or starts one),
sends it the event, and waits for its answer; the container runs the app's own handler with a Lambda context::

    pool = ContainerPool("app", {"process_jobs": {"lambda_timeout": 300, "lambda_memory_size": 1769}})
    response = pool.invoke("process_jobs", {"Records": [...]})     # ContainerFailed if it crashed or timed out
    pool.close()

Containers are forked from a forkserver that imported the app once (``app`` and its imports): a cold start costs a
fork, not a second of imports, while each container still initialises its own clients and caches on first use, as a
Lambda's init phase does. An invocation that runs past the function's timeout is ended as Lambda ends it: the
container is killed and the invocation fails.

No orphans: each container holds the read end of a lifeline pipe whose write end only the app process has. When the
app process dies (even by SIGKILL) the pipe closes, and the container stops its own children (a PDF reader) and
exits at once, in the middle of an invocation if need be, as a Lambda environment is frozen and discarded.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
import traceback
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("devstack.containers")

# Lambda's own grace: an invocation is cut at its timeout; the container is given this long to answer after it.
TIMEOUT_GRACE_SECONDS = 2.0


class ContainerFailed(Exception):
    """The invocation did not return: the handler raised, the container crashed, or it ran past its timeout."""


class _Container:
    """The app process's end of one container."""

    def __init__(self, context: Any, module: str, function: str) -> None:
        self.function = function
        self.connection, child_end = context.Pipe(duplex=True)
        lifeline_read, self._lifeline = context.Pipe(duplex=False)
        self.process = context.Process(target=_serve, args=(child_end, lifeline_read, module, function),
                                       name=f"container-{function}", daemon=False)
        self.process.start()
        child_end.close()
        lifeline_read.close()
        self.invocations = 0

    def invoke(self, event: Any, timeout: float, memory: int) -> Any:
        self.invocations += 1
        try:
            self.connection.send((event, timeout, memory))
            if not self.connection.poll(timeout + TIMEOUT_GRACE_SECONDS):
                self.kill()
                raise ContainerFailed(f"{self.function} timed out after {timeout:.0f} s; its container was killed")
            outcome, value = self.connection.recv()
        except (EOFError, OSError) as exc:
            self.kill()
            raise ContainerFailed(f"{self.function}'s container died during the invocation ({exc!r})") from None
        if outcome == "error":
            raise ContainerFailed(value)
        return value

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        try:
            self.connection.send(None)
        except OSError:
            pass
        self.process.join(timeout)
        if self.process.is_alive():
            self.kill()
        self._close()

    def kill(self) -> None:
        self._lifeline.close()  # the container sees its app gone and stops its own children first
        self.process.join(1.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5.0)
        self._close()

    def _close(self) -> None:
        for end in (self.connection, self._lifeline):
            try:
                end.close()
            except OSError:
                pass


class ContainerPool:
    """Warm containers of each function of the app ``module``, reused one invocation at a time.

    ``settings`` are the functions' ``.chalice/config.json`` settings (``lambda_timeout``, ``lambda_memory_size``).
    Thread-safe: the dispatcher invokes from many threads at once, and each invocation has a container to itself.
    """

    def __init__(self, module: str, settings: dict[str, dict], *, preload: Iterable[str] = ()) -> None:
        self._module = module
        self._settings = settings
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload([module, *preload])
        self._lock = threading.Lock()
        self._idle: dict[str, list[_Container]] = {}
        self._all: list[_Container] = []
        self._closed = False
        self.cold_starts = 0

    def start(self, timeout: float = 120.0) -> ContainerPool:
        """Have the image ready now (the forkserver, with the app imported), before any event arrives: the first
        invocation then costs a fork, and a job received just before the app process is killed has had its first
        heartbeat, so it comes back within a few heartbeats instead of the queue's visibility timeout."""
        ready = self._context.Process(target=_ready, name="image-ready")
        ready.start()
        ready.join(timeout)
        return self

    def invoke(self, function: str, event: Any) -> Any:
        settings = self._settings.get(function, {})
        timeout = float(settings.get("lambda_timeout", 60))
        memory = int(settings.get("lambda_memory_size", 128))
        container = self._take(function)
        try:
            response = container.invoke(event, timeout, memory)
        except ContainerFailed:
            if not container.alive:
                self._forget(container)
            else:
                self._give_back(container)
            raise
        self._give_back(container)
        return response

    def close(self) -> None:
        """Stop every container (each finishes the invocation it is in first, within its timeout)."""
        with self._lock:
            self._closed = True
            containers = list(self._all)
            self._all.clear()
            self._idle.clear()
        for container in containers:
            container.stop()

    def _take(self, function: str) -> _Container:
        with self._lock:
            if self._closed:
                raise ContainerFailed("the local stack is stopping")
            idle = self._idle.get(function, [])
            while idle:
                container = idle.pop()
                if container.alive:
                    return container
                self._all.remove(container)
            self.cold_starts += 1
        container = _Container(self._context, self._module, function)
        with self._lock:
            self._all.append(container)
        return container

    def _give_back(self, container: _Container) -> None:
        with self._lock:
            if not self._closed:
                self._idle.setdefault(container.function, []).append(container)
                return
        container.stop()

    def _forget(self, container: _Container) -> None:
        with self._lock:
            if container in self._all:
                self._all.remove(container)


# --- inside a container ----------------------------------------------------------------------------------------------

def _ready() -> None:
    """Forked from the image once it is loaded: nothing else to do."""


def _serve(connection: Any, lifeline: Any, module: str, function: str) -> None:
    """A container's life: import the app (already imported in the forkserver), then one invocation per request."""
    import importlib

    threading.Thread(target=_watch, args=(lifeline,), name="lifeline", daemon=True).start()
    handler = getattr(importlib.import_module(module), function)
    from chalice.local import LambdaContext

    from chalicelib.observability import function_segment

    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        event, timeout, memory = request
        context = LambdaContext(function, memory, max_runtime_ms=int(timeout * 1000))
        try:
            # Lambda's part in tracing: a trace and the function's segment per invocation (when tracing locally).
            with function_segment(function):
                answer: tuple[str, Any] = ("ok", handler(event, context))
        except Exception as exc:
            # As Lambda reports an unhandled error: its type, message and stack, never the exception object itself.
            answer = ("error", f"{function} raised {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        try:
            connection.send(answer)
        except (OSError, ValueError):
            return


def _watch(lifeline: Any) -> None:
    """Block until the app process is gone (its end of the lifeline closes), then end this container at once."""
    try:
        lifeline.recv()
    except (EOFError, OSError):
        pass
    for child in multiprocessing.active_children():
        child.kill()
    time.sleep(0)
    os._exit(1)
