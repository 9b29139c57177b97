"""Jobs: what a job is, where its row and its message live, and the one module that moves it.

``model`` (Job, its statuses and id), ``store`` (the DynamoDB rows), ``queue`` (the SQS messages and their
visibility), ``lifecycle`` (every state transition: claim, hold, succeed, fail, release, defer, retry, withdraw),
``events`` (the EventBridge event that announces a job's end),
``heartbeat`` (the lease and the message held while a batch runs) and ``intake`` (a submission becomes a job).
"""

from chalicelib.jobs.events import JobEvents, event_detail
from chalicelib.jobs.heartbeat import LEASE_BEATS, BatchHeartbeat, Heartbeat, hold_seconds
from chalicelib.jobs.intake import Intake, Submission, fingerprint, parse_submission
from chalicelib.jobs.lifecycle import Attempt, Lifecycle, Message
from chalicelib.jobs.model import FAILED, JOB_ID_PATTERN, QUEUED, RUNNING, SUCCEEDED, Job, new_job_id
from chalicelib.jobs.queue import Delivery, JobQueue, job_id_from
from chalicelib.jobs.store import JobStore

__all__ = ["FAILED", "JOB_ID_PATTERN", "LEASE_BEATS", "QUEUED", "RUNNING", "SUCCEEDED", "Attempt", "BatchHeartbeat",
           "Delivery", "Heartbeat", "Intake", "Job", "JobEvents", "JobQueue", "JobStore", "Lifecycle", "Message",
           "Submission", "event_detail", "fingerprint", "hold_seconds", "job_id_from", "new_job_id", "parse_submission"]
