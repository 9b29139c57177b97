"""The SQS jobs queue: every path (the API, an S3 upload, a client's retry, a deferral) enters the pipeline through
it, and every change to a received message's visibility goes through it.

A message is ``{"job_id": "<32 hex>"}``. A ``Delivery`` is one received message as Lambda hands it to the worker::

    queue.send(job_id)                       # a new job; delay_seconds=… for a deferred one
    delivery = Delivery.of(record)           # record: Powertools' SQSRecord
    queue.hide(delivery, 60)                 # it comes back in 60 s, not after the queue's visibility timeout
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from chalicelib.jobs.model import JOB_ID_PATTERN
from chalicelib.observability import logger

# Without a redrive policy SQS retries forever; failing on the first transient error would be wrong, so cap at 3.
_DEFAULT_RECEIVES = 3


def job_id_from(body: str) -> str | None:
    """The job id of a well-formed job message, else None."""
    try:
        message = json.loads(body)
    except ValueError:
        return None
    job_id = message.get("job_id") if isinstance(message, dict) else None
    return job_id if isinstance(job_id, str) and JOB_ID_PATTERN.fullmatch(job_id) else None


@dataclass(frozen=True)
class Delivery:
    """One received message: which job it carries (None: not a docpipe job), how to reach it, how often it came."""

    job_id: str | None
    message_id: str
    receipt_handle: str
    queue_name: str
    receives: int = 1

    @classmethod
    def of(cls, record: Any) -> Delivery:
        """From Powertools' ``SQSRecord``; the queue is the record's own (its receipt handle is valid only there)."""
        return cls(job_id=job_id_from(record.body), message_id=record.message_id,
                   receipt_handle=record.receipt_handle, queue_name=record.event_source_arn.rsplit(":", 1)[-1],
                   receives=int(record.attributes.approximate_receive_count or 1))

    @classmethod
    def of_event_record(cls, record: dict[str, Any]) -> Delivery | None:
        """From a record of Lambda's SQS event as it arrives (a dict); None for one that names no queue."""
        if not record.get("receiptHandle") or not record.get("eventSourceARN"):
            return None
        return cls(job_id=job_id_from(record.get("body", "")), message_id=record.get("messageId", ""),
                   receipt_handle=record["receiptHandle"], queue_name=record["eventSourceARN"].rsplit(":", 1)[-1])


class JobQueue:
    """The jobs queue ``queue_name``, reached through ``sqs`` (a boto3 client)."""

    def __init__(self, sqs: Any, queue_name: str) -> None:
        self.sqs = sqs
        self.queue_name = queue_name
        self._urls: dict[str, str] = {}
        self._max_receives: int | None = None

    def send(self, job_id: str, *, delay_seconds: int = 0) -> None:
        self.sqs.send_message(QueueUrl=self._url(self.queue_name), MessageBody=json.dumps({"job_id": job_id}),
                              DelaySeconds=delay_seconds)

    def hide(self, delivery: Delivery, seconds: int) -> bool:
        """Set when ``delivery``'s message comes back, instead of the queue's long default; False if SQS refused.

        A failure is logged, never raised: the queue's visibility timeout then applies, later but still redelivered.
        """
        try:
            self.sqs.change_message_visibility(QueueUrl=self._url(delivery.queue_name),
                                               ReceiptHandle=delivery.receipt_handle, VisibilityTimeout=seconds)
        except Exception as exc:
            logger.warning("could not change the message's visibility",
                           extra={"message_id": delivery.message_id, "reason": str(exc)[:200]})
            return False
        return True

    def max_receive_count(self) -> int:
        """How many deliveries SQS makes before the DLQ, read from the queue itself so it is defined once (infra/)."""
        if self._max_receives is None:
            attributes = self.sqs.get_queue_attributes(QueueUrl=self._url(self.queue_name),
                                                       AttributeNames=["RedrivePolicy"])["Attributes"]
            policy = json.loads(attributes.get("RedrivePolicy", "{}"))
            self._max_receives = int(policy.get("maxReceiveCount", _DEFAULT_RECEIVES))
        return self._max_receives

    def depth(self, name: str | None = None) -> dict[str, int]:
        """The queue's approximate counts: waiting, in flight (hidden) and delayed messages."""
        attributes = self.sqs.get_queue_attributes(QueueUrl=self._url(name or self.queue_name), AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed"])["Attributes"]
        return {"waiting": int(attributes.get("ApproximateNumberOfMessages", 0)),
                "in_flight": int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
                "delayed": int(attributes.get("ApproximateNumberOfMessagesDelayed", 0))}

    def _url(self, name: str) -> str:
        if name not in self._urls:
            self._urls[name] = self.sqs.get_queue_url(QueueName=name)["QueueUrl"]
        return self._urls[name]
