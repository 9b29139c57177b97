"""What Lambda's event sources do on AWS, done for the local stack, as concurrently as Lambda does it.

``chalice local`` serves routes only; nothing would ever call the app's SQS, S3 or schedule handlers. These
threads do what the AWS services do: long-poll each queue and hand batches to its handler in Lambda's event shape
(each gathered until it holds ``batch_size`` messages or the mapping's ``maximum_batching_window_in_seconds`` has
passed), up to the mapping's ``maximum_concurrency`` batches at once (delete what succeeded, honour
``batchItemFailures``, leave failures to the visibility timeout and the redrive policy); turn each S3 notification
into an invocation of its own, all at once (retrying a failing handler twice, as Lambda's async invoke does); and
fire each schedule.

Everything that runs a function of the app goes through one entry point, ``Dispatcher.invoke(function_name, event)``
(the state machine's Lambda tasks too). It hands the invocation to ``runner``: in the local stack a
``devstack.containers.ContainerPool``, where each concurrent invocation has a process (a Lambda execution
environment) of its own; by default the handler is called on the invoking thread, which tests of the dispatcher
itself use.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from chalice.app import Rate, S3EventConfig, ScheduledEventConfig, SQSEventConfig
from chalice.local import LambdaContext

from chalicelib.observability import function_segment

log = logging.getLogger("devstack.dispatcher")

ASYNC_ATTEMPTS = 3  # Lambda's asynchronous invocation: the first try and two retries
# An SQS mapping without maximum_concurrency: Lambda's pollers start with five batches at once.
DEFAULT_SQS_CONCURRENCY = 5
COPY_ATTRIBUTE = "devstack-duplicate-of"
# How often a batch still inside its mapping's batching window looks for more messages.
GATHER_POLL_SECONDS = 0.1


def _context(name: str, timeout_seconds: int, memory: int) -> LambdaContext:
    return LambdaContext(name, memory, max_runtime_ms=timeout_seconds * 1000)


class Dispatcher:
    """Runs the event sources of a Chalice app until ``stop()``: a thread per source, a thread per invocation.

    ``runner(function_name, event) -> response`` runs one invocation (None: ``handlers[function_name]`` called with
    a Lambda context on the invoking thread).
    """

    def __init__(self, app: Any, handlers: dict[str, Callable], sqs: Any, *, function_settings: dict[str, dict],
                 s3_events_queue: str, schedule_seconds: float | None = None, poll_seconds: int = 1,
                 duplicate_deliveries: bool = False, runner: Callable[[str, dict], Any] | None = None) -> None:
        self._app = app
        self._handlers = handlers
        self._runner = runner
        self._sqs = sqs
        self._settings = function_settings
        self._s3_events_queue = s3_events_queue
        self._schedule_seconds = schedule_seconds
        self._poll_seconds = poll_seconds
        self._duplicate = duplicate_deliveries
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._invocations: set[threading.Thread] = set()
        self._invocations_lock = threading.Lock()

    def start(self) -> None:
        s3_sources = [s for s in self._app.event_sources if isinstance(s, S3EventConfig)]
        for source in self._app.event_sources:
            if isinstance(source, SQSEventConfig):
                self._spawn(f"sqs:{source.name}", self._poll_queue, source)
            elif isinstance(source, ScheduledEventConfig):
                self._spawn(f"schedule:{source.name}", self._run_schedule, source)
        if s3_sources:
            self._spawn("s3-notifications", self._poll_s3_notifications, s3_sources)

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self._poll_seconds + 5)
        with self._invocations_lock:
            running = list(self._invocations)
        for thread in running:
            thread.join(timeout=5)

    def _spawn(self, name: str, target: Callable, *args: Any) -> None:
        thread = threading.Thread(target=self._guard, args=(name, target, *args), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _guard(self, name: str, target: Callable, *args: Any) -> None:
        from botocore.exceptions import EndpointConnectionError

        while not self._stop.is_set():
            try:
                target(*args)
                return
            except EndpointConnectionError as exc:  # the emulator is restarting, or stopping with us
                if not self._stop.wait(1):
                    log.warning("%s: %s; retrying", name, exc)
            except Exception:  # an event source must not die for good
                log.exception("%s: event source failed; retrying in 1 s", name)
                self._stop.wait(1)

    def invoke(self, function_name: str, event: dict) -> Any:
        """Run one invocation of the app's function ``function_name`` with ``event``; its response, or what it
        raised. The one way anything of the local stack runs a function."""
        if self._runner is not None:
            return self._runner(function_name, event)
        settings = self._settings.get(function_name, {})
        context = _context(function_name, int(settings.get("lambda_timeout", 60)),
                           int(settings.get("lambda_memory_size", 128)))
        # Lambda's part in tracing: a trace and the function's segment per invocation (when tracing locally).
        with function_segment(function_name):
            return self._handlers[function_name](event, context)

    def _in_background(self, name: str, target: Callable, *args: Any) -> None:
        """One invocation on a thread of its own, tracked so that ``stop()`` waits for it."""
        def run() -> None:
            try:
                target(*args)
            except Exception:
                log.exception("%s: invocation failed", name)
            finally:
                with self._invocations_lock:
                    self._invocations.discard(thread)

        thread = threading.Thread(target=run, name=name, daemon=True)
        with self._invocations_lock:
            self._invocations.add(thread)
        thread.start()

    def _poll_queue(self, source: SQSEventConfig) -> None:
        url = self._sqs.get_queue_url(QueueName=source.queue)["QueueUrl"]
        arn = self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        # As many batches in flight as the mapping's maximum concurrency: a poll waits for a free one.
        slots = threading.BoundedSemaphore(getattr(source, "maximum_concurrency", None) or DEFAULT_SQS_CONCURRENCY)
        while not self._stop.is_set():
            if not slots.acquire(timeout=self._poll_seconds):
                continue
            try:
                messages = self._sqs.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=min(source.batch_size, 10), WaitTimeSeconds=self._poll_seconds,
                    MessageSystemAttributeNames=["All"], MessageAttributeNames=["All"]).get("Messages", [])
            except BaseException:
                slots.release()
                raise
            if not messages:
                slots.release()
                continue
            messages += self._gather(url, source, len(messages))
            if self._duplicate:
                self._send_copies(url, messages)
            self._in_background(f"{source.name}:batch", self._run_batch, source, url, arn, messages, slots)

    def _gather(self, url: str, source: SQSEventConfig, received: int) -> list[dict]:
        """More messages for a batch that is not full, until it is or the mapping's batching window has passed since
        its first message, as Lambda's poller does (the window is whole seconds, so this polls short and often)."""
        window = getattr(source, "maximum_batching_window_in_seconds", 0) or 0
        wanted = min(source.batch_size, 10) - received
        more: list[dict] = []
        until = time.monotonic() + window
        while len(more) < wanted and not self._stop.is_set():
            left = until - time.monotonic()
            if left <= 0:
                break
            got = self._sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=wanted - len(more), WaitTimeSeconds=0,
                MessageSystemAttributeNames=["All"], MessageAttributeNames=["All"]).get("Messages", [])
            more += got
            if not got:
                self._stop.wait(min(left, GATHER_POLL_SECONDS))
        return more

    def _run_batch(self, source: SQSEventConfig, url: str, arn: str, messages: list[dict],
                   slots: threading.BoundedSemaphore) -> None:
        try:
            event = {"Records": [_sqs_record(m, arn) for m in messages]}
            try:
                response = self.invoke(source.name, event)
            except Exception:
                # As on AWS: the whole batch comes back after the visibility timeout.
                log.exception("%s raised; its batch of %d returns after the visibility timeout", source.name,
                              len(messages))
                return
            failed = {f["itemIdentifier"] for f in (response or {}).get("batchItemFailures", [])} \
                if isinstance(response, dict) else set()
            done = [m for m in messages if m["MessageId"] not in failed]
            for start in range(0, len(done), 10):
                self._sqs.delete_message_batch(QueueUrl=url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done[start:start + 10])])
        finally:
            slots.release()

    def _send_copies(self, url: str, messages: list[dict]) -> None:
        """Fault injection: SQS delivers at least once, so deliver every original message a second time."""
        for message in messages:
            if COPY_ATTRIBUTE not in message.get("MessageAttributes", {}):
                self._sqs.send_message(QueueUrl=url, MessageBody=message["Body"], MessageAttributes={
                    COPY_ATTRIBUTE: {"DataType": "String", "StringValue": message["MessageId"]}})

    def _poll_s3_notifications(self, sources: list[S3EventConfig]) -> None:
        url = self._sqs.get_queue_url(QueueName=self._s3_events_queue)["QueueUrl"]
        while not self._stop.is_set():
            messages = self._sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                                 WaitTimeSeconds=self._poll_seconds,
                                                 MessageSystemAttributeNames=["All"]).get("Messages", [])
            for message in messages:  # each notification is an asynchronous invocation of its own, all at once
                self._in_background("s3-event", self._notify_s3, url, message, sources)

    def _notify_s3(self, url: str, message: dict, sources: list[S3EventConfig]) -> None:
        if self._deliver_s3(json.loads(message["Body"]), sources,
                            int(message["Attributes"].get("ApproximateReceiveCount", "1"))):
            self._sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    def _deliver_s3(self, body: dict, sources: list[S3EventConfig], attempt: int) -> bool:
        """True when the notification is done with (handled, not ours, or out of retries)."""
        for record in body.get("Records", []):  # s3:TestEvent has no records: Lambda is never invoked for it
            bucket = record["s3"]["bucket"]["name"]
            for source in sources:
                if source.bucket != bucket or not _matches(record, source):
                    continue
                try:
                    self.invoke(source.name, {"Records": [record]})
                except Exception:
                    if attempt < ASYNC_ATTEMPTS:
                        log.exception("%s failed (attempt %d); S3 event will be retried", source.name, attempt)
                        return False
                    log.exception("%s failed %d times; the event is dropped, as Lambda does", source.name, attempt)
        return True

    def _run_schedule(self, source: ScheduledEventConfig) -> None:
        interval = self._schedule_seconds or _seconds(source.schedule_expression)
        while not self._stop.wait(interval):
            event = {"version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event",
                     "source": "aws.events", "account": "123456789012",
                     "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "region": "us-east-1",
                     "resources": [f"arn:aws:events:us-east-1:123456789012:rule/{source.name}"], "detail": {}}
            try:
                self.invoke(source.name, event)
            except Exception:
                log.exception("%s failed", source.name)


def _matches(record: dict, source: S3EventConfig) -> bool:
    from urllib.parse import unquote_plus

    key = unquote_plus(record["s3"]["object"]["key"])
    name = "s3:" + record.get("eventName", "")
    wanted = any(name == e or (e.endswith("*") and name.startswith(e[:-1])) for e in source.events)
    return wanted and key.startswith(source.prefix or "") and key.endswith(source.suffix or "")


def _seconds(expression: Any) -> float:
    if isinstance(expression, Rate):
        return expression.value * {Rate.MINUTES: 60, Rate.HOURS: 3600, Rate.DAYS: 86400}[expression.unit]
    raise ValueError(f"the local stack only runs rate() schedules, not {expression!r}")


def _sqs_record(message: dict, queue_arn: str) -> dict:
    """An SQS message as Lambda's event source mapping hands it to the function."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": {k: {"stringValue": v.get("StringValue"), "binaryValue": v.get("BinaryValue"),
                                  "dataType": v["DataType"], "stringListValues": [], "binaryListValues": []}
                              for k, v in message.get("MessageAttributes", {}).items()},
        "md5OfBody": message.get("MD5OfBody"),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": queue_arn.split(":")[3],
    }
