"""A tiny "app" for the container pool's tests: handlers that show which process runs them and what it remembers."""

from __future__ import annotations

import os
import time
from pathlib import Path

INVOCATIONS = 0  # a module global: each container has its own


def whoami(event, context):
    global INVOCATIONS
    INVOCATIONS += 1
    time.sleep(event.get("sleep", 0))
    return {"pid": os.getpid(), "invocations": INVOCATIONS, "remaining_ms": context.get_remaining_time_in_millis()}


def fail(event, context):
    raise ValueError("the handler refused the event")


def linger(event, context):
    """Write this container's pid (and its child's) where the test reads them, then run far past the test."""
    import multiprocessing

    child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(120,), daemon=True)
    child.start()
    Path(event["pids"]).write_text(f"{os.getpid()} {child.pid}")
    time.sleep(120)
