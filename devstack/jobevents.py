"""The local stack shows docpipe's job events: what a rule on the event bus delivers, printed as it arrives.

``devstack.resources`` routes every event of source ``docpipe`` on the stage's bus to a queue, as a user's rule
would on AWS; this thread long-polls that queue and prints one line per event on the app's output::

    job event: Job Succeeded 3f2a… (client local, summarize, 2 LLM calls, 0.000412 USD)
    job event: Job Failed 9c1d… (client local, summarize): corrupt_pdf: the xref table is broken
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

log = logging.getLogger("devstack.jobevents")


def describe(event: dict[str, Any]) -> str:
    """One line for an EventBridge event as a rule's queue receives it."""
    detail = event.get("detail") or {}
    about = ", ".join(str(part) for part in (f"client {detail.get('client')}", detail.get("task")) if part)
    line = f"job event: {event.get('detail-type')} {detail.get('job_id')} ({about}"
    error = detail.get("error")
    if error:
        return f"{line}): {error.get('code')}: {error.get('message')}"
    usage = detail.get("usage") or {}
    cost = usage.get("cost_usd")
    return f"{line}, {usage.get('calls', 0)} LLM calls{'' if cost is None else f', {cost:.6f} USD'})"


class JobEventPrinter:
    """Prints each event that reaches ``queue_name`` until ``stop()``."""

    def __init__(self, sqs: Any, queue_name: str, *, poll_seconds: int = 1) -> None:
        self._sqs = sqs
        self._queue_name = queue_name
        self._poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-events", daemon=True)

    def start(self) -> JobEventPrinter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._poll_seconds + 5)

    def _run(self) -> None:
        url = None
        while not self._stop.is_set():
            try:
                url = url or self._sqs.get_queue_url(QueueName=self._queue_name)["QueueUrl"]
                messages = self._sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                                     WaitTimeSeconds=self._poll_seconds).get("Messages", [])
                for message in messages:
                    print(describe(json.loads(message["Body"])), flush=True)
                    self._sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            except Exception as exc:  # the emulator restarting, or stopping with us: try again shortly
                if not self._stop.wait(1):
                    log.warning("job events: %s; retrying", exc)
