"""What Lambda's event sources do on AWS, done for the local stack.

``chalice local`` serves routes only; nothing would ever call the app's SQS, S3 or schedule handlers. These
threads do what the AWS services do: long-poll each queue and hand batches to its handler in Lambda's event shape
(delete what succeeded, honour ``batchItemFailures``, leave failures to the visibility timeout and the redrive
policy); turn S3 notifications into S3 events (retrying a failing handler twice, as Lambda's async invoke does);
and fire each schedule.
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

log = logging.getLogger("devstack.dispatcher")

ASYNC_ATTEMPTS = 3  # Lambda's asynchronous invocation: the first try and two retries
COPY_ATTRIBUTE = "devstack-duplicate-of"


def _context(name: str, timeout_seconds: int, memory: int) -> LambdaContext:
    return LambdaContext(name, memory, max_runtime_ms=timeout_seconds * 1000)


class Dispatcher:
    """Runs one thread per event source of a Chalice app until ``stop()``."""

    def __init__(self, app: Any, handlers: dict[str, Callable], sqs: Any, *, function_settings: dict[str, dict],
                 s3_events_queue: str, schedule_seconds: float | None = None, poll_seconds: int = 1,
                 duplicate_deliveries: bool = False) -> None:
        self._app = app
        self._handlers = handlers
        self._sqs = sqs
        self._settings = function_settings
        self._s3_events_queue = s3_events_queue
        self._schedule_seconds = schedule_seconds
        self._poll_seconds = poll_seconds
        self._duplicate = duplicate_deliveries
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

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
        """Run the app's function ``function_name`` on ``event`` as Lambda would, and return its response."""
        return self._invoke(function_name, event)

    def _invoke(self, name: str, event: dict) -> Any:
        settings = self._settings.get(name, {})
        context = _context(name, int(settings.get("lambda_timeout", 60)), int(settings.get("lambda_memory_size", 128)))
        return self._handlers[name](event, context)

    def _poll_queue(self, source: SQSEventConfig) -> None:
        url = self._sqs.get_queue_url(QueueName=source.queue)["QueueUrl"]
        arn = self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        while not self._stop.is_set():
            messages = self._sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=min(source.batch_size, 10), WaitTimeSeconds=self._poll_seconds,
                MessageSystemAttributeNames=["All"], MessageAttributeNames=["All"]).get("Messages", [])
            if not messages:
                continue
            if self._duplicate:
                self._send_copies(url, messages)
            event = {"Records": [_sqs_record(m, arn) for m in messages]}
            try:
                response = self._invoke(source.name, event)
            except Exception:
                # As on AWS: the whole batch comes back after the visibility timeout.
                log.exception("%s raised; its batch of %d returns after the visibility timeout", source.name,
                              len(messages))
                continue
            failed = {f["itemIdentifier"] for f in (response or {}).get("batchItemFailures", [])} \
                if isinstance(response, dict) else set()
            done = [m for m in messages if m["MessageId"] not in failed]
            for start in range(0, len(done), 10):
                self._sqs.delete_message_batch(QueueUrl=url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done[start:start + 10])])

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
            for message in messages:
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
                    self._invoke(source.name, {"Records": [record]})
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
                self._invoke(source.name, event)
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
