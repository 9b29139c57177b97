"""Job rows in DynamoDB, moved only by conditional writes.

SQS delivers at least once, so every write is a condition on the current state: a duplicate delivery cannot claim a
job that another worker holds (until that worker's lease runs out), and nothing can touch a finished job. Nested
values (task, usage, error) are stored as JSON strings so they round-trip exactly, with no Decimal conversions.

What each attempt spends on the LLM is kept under ``spend`` (a map from attempt to its JSON record), written by the
heartbeat as it grows and when the attempt ends, so a job delivered again counts and budgets what it already paid.
A job handed over to the Step Functions workflow keeps there, too, what each of its stage invocations spent, and
under ``workflow_progress`` what each map batch has answered; once handed over (``execution_arn``), no delivery can
claim it again: the execution carries it on.
Only ``jobs.lifecycle`` calls the writing methods; everyone else reads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from chalicelib.jobs.model import FAILED, QUEUE, QUEUED, RUNNING, STEP_FUNCTIONS, SUCCEEDED, Job

_JSON_FIELDS = ("task", "document", "usage", "warnings", "error", "last_error", "timings", "tasks")
# The jobs table's index of each client's jobs by creation time (infra/template.json): what GET /jobs reads.
CLIENT_INDEX = "client-created"
# Rows one listing query examines when it filters by status (the rest are left to the next page).
_FILTERED_WINDOW = 100
_MAX_QUERIES = 5


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _from_item(item: dict[str, Any]) -> Job:
    data = {k: _plain(v) for k, v in item.items()}
    for name in _JSON_FIELDS:
        if isinstance(data.get(name), str):
            data[name] = json.loads(data[name])
    data["spend"] = {attempt: json.loads(record) for attempt, record in (data.get("spend") or {}).items()}
    data["workflow_progress"] = {k: _plain(v) for k, v in (data.get("workflow_progress") or {}).items()}
    known = Job.__dataclass_fields__
    return Job(**{k: v for k, v in data.items() if k in known})


def _dec(value: float) -> Decimal:
    return Decimal(str(round(value, 3)))


class JobStore:
    """All reads and writes of job rows. Receives the DynamoDB Table, so tests can hand it any table."""

    def __init__(self, table: Any, *, retention_days: int = 30,
                 clock: Callable[[], float] = time.time) -> None:
        self._table = table
        self._retention_seconds = retention_days * 86400
        self._clock = clock

    def create(self, job: Job) -> bool:
        """Insert a new job; False when a job with this id already exists (a duplicate submission)."""
        from botocore.exceptions import ClientError

        item: dict[str, Any] = {
            "job_id": job.job_id,
            "status": job.status,
            "source": job.source,
            "created_at": _dec(job.created_at),
            "chunks_done": 0,
            "attempts": 0,
            "lease_until": 0,
            "expires_at": int(job.created_at + self._retention_seconds),
            "task": json.dumps(job.task),
            "document": json.dumps(job.document),
            "warnings": json.dumps(job.warnings),
        }
        if job.tasks:
            item["tasks"] = json.dumps(job.tasks)
        if job.client:
            # A key of the client index, which takes no empty string: a row without one is simply not listed.
            item["client"] = job.client
        if job.error:
            # A submission refused after the fact (bad upload metadata) is recorded FAILED in the same write.
            item.update({"error": json.dumps(job.error), "finished_at": _dec(job.created_at)})
        try:
            self._table.put_item(Item=item, ConditionExpression="attribute_not_exists(job_id)")
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def get(self, job_id: str) -> Job | None:
        item = self._table.get_item(Key={"job_id": job_id}, ConsistentRead=True).get("Item")
        return _from_item(item) if item else None

    def claim(self, job_id: str, lease_seconds: float) -> Job | None:
        """Take the job for this worker: QUEUED, or RUNNING with an expired lease (its worker died) that no workflow
        execution carries.

        None when the job is finished, another live worker holds it (a duplicate delivery) or an execution runs it.
        """
        now = self._clock()
        return self._update(
            job_id,
            "SET #s = :running, lease_until = :lease, started_at = if_not_exists(started_at, :now), "
            "spend = if_not_exists(spend, :nothing) ADD attempts :one",
            "#s = :queued OR (#s = :running AND lease_until < :now AND attribute_not_exists(execution_arn))",
            {":running": RUNNING, ":queued": QUEUED, ":lease": _dec(now + lease_seconds), ":now": _dec(now),
             ":one": 1, ":nothing": {}},
        )

    def set_chunks_total(self, job_id: str, total: int, warnings: list[str]) -> None:
        self._table.update_item(
            Key={"job_id": job_id},
            UpdateExpression="SET chunks_total = :t, #w = :w",
            ConditionExpression="#s = :running",
            ExpressionAttributeNames={"#s": "status", "#w": "warnings"},
            ExpressionAttributeValues={":t": total, ":w": json.dumps(warnings), ":running": RUNNING},
        )

    def record_progress(self, job_id: str, chunks_done: int) -> None:
        """Progress only moves forward, even when writes from parallel tasks arrive out of order."""
        from botocore.exceptions import ClientError

        try:
            self._table.update_item(
                Key={"job_id": job_id},
                UpdateExpression="SET chunks_done = :d",
                ConditionExpression="#s = :running AND chunks_done < :d",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":d": chunks_done, ":running": RUNNING},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

    def list_for_client(self, client: str, *, status: str | None = None, limit: int = 20,
                        after: tuple[str, str] | None = None) -> tuple[list[Job], tuple[str, str] | None]:
        """``client``'s jobs, newest first, from the client index (never a scan), and where the next page starts.

        ``after`` is a position a previous page returned: (created_at, job_id) of its last row. The query's key is
        always ``client``, so no position reaches another client's rows. A status filter reads at most
        ``_MAX_QUERIES`` windows of rows: a page may then hold fewer than ``limit`` jobs and still have a next one.
        """
        start: dict[str, Any] | None = (None if after is None else
                                        {"job_id": after[1], "client": client, "created_at": Decimal(after[0])})
        found: list[dict[str, Any]] = []
        for _ in range(_MAX_QUERIES):
            names, values = {"#c": "client"}, {":c": client}
            request: dict[str, Any] = {"IndexName": CLIENT_INDEX, "KeyConditionExpression": "#c = :c",
                                       "ScanIndexForward": False}
            if status:
                names["#s"], values[":s"] = "status", status
                request.update(FilterExpression="#s = :s", Limit=_FILTERED_WINDOW)
            else:
                request["Limit"] = limit + 1 - len(found)  # one more than the page: is there a next one?
            if start:
                request["ExclusiveStartKey"] = start
            answer = self._table.query(ExpressionAttributeNames=names, ExpressionAttributeValues=values, **request)
            for item in answer["Items"]:
                found.append(item)
                if len(found) > limit:
                    last = found[limit - 1]
                    return [_from_item(i) for i in found[:limit]], (str(last["created_at"]), last["job_id"])
            start = answer.get("LastEvaluatedKey")
            if not start:
                return [_from_item(i) for i in found], None
        assert start is not None  # the loop returned when the index had no more rows
        return [_from_item(i) for i in found], (str(start["created_at"]), start["job_id"])

    def mark_succeeded(self, job_id: str, *, result_key: str, usage: dict, warnings: list[str],
                       timings: dict[str, float], chunks_total: int) -> Job | None:
        """RUNNING → SUCCEEDED; the finished row, or None when the job was not RUNNING (it finished elsewhere)."""
        return self._update(
            job_id,
            "SET #s = :done, finished_at = :now, result_key = :key, #u = :usage, #w = :w, "
            "#t = :timings, chunks_done = :total, chunks_total = :total, lease_until = :zero "
            "REMOVE last_error",
            "#s = :running",
            {":done": SUCCEEDED, ":running": RUNNING, ":now": _dec(self._clock()), ":key": result_key,
             ":usage": json.dumps(usage), ":w": json.dumps(warnings), ":timings": json.dumps(timings),
             ":total": chunks_total, ":zero": 0},
            names={"#u": "usage", "#w": "warnings", "#t": "timings"},
        )

    def mark_failed(self, job_id: str, error: dict[str, str], *, usage: dict | None = None,
                    warnings: list[str] | None = None) -> Job | None:
        """Finish the job as FAILED with a reason; the finished row, or None if it had already finished."""
        values: dict[str, Any] = {":failed": FAILED, ":done": SUCCEEDED, ":now": _dec(self._clock()),
                                  ":error": json.dumps(error), ":zero": 0}
        extra = ""
        if usage is not None:
            extra += ", #u = :usage"
            values[":usage"] = json.dumps(usage)
        if warnings is not None:
            extra += ", #w = :w"
            values[":w"] = json.dumps(warnings)
        return self._update(
            job_id,
            f"SET #s = :failed, finished_at = :now, #e = :error, lease_until = :zero{extra}",
            "attribute_exists(job_id) AND #s <> :failed AND #s <> :done",
            values,
            names={"#e": "error", **({"#u": "usage"} if usage is not None else {}),
                   **({"#w": "warnings"} if warnings is not None else {})},
        )

    def extend_lease(self, job_id: str, seconds: float, *, spend: tuple[int, dict[str, Any]] | None = None) -> bool:
        """The worker's heartbeat: keep holding a job it is still working on, and record ``(attempt, spend)``."""
        expression, values, names = "SET lease_until = :lease", {":lease": _dec(self._clock() + seconds),
                                                                  ":running": RUNNING}, {}
        if spend is not None:
            expression, names = expression + ", spend.#a = :spend", {"#a": f"a{spend[0]}"}
            values[":spend"] = json.dumps(spend[1])
        return self._update(job_id, expression, "#s = :running AND attribute_exists(spend)", values,
                            names=names) is not None

    def record_spend(self, job_id: str, attempt: int, spend: dict[str, Any]) -> None:
        """Keep what an attempt spent; a job that has finished keeps the usage it finished with."""
        self._update(job_id, "SET spend.#a = :spend", "#s = :running AND attribute_exists(spend)",
                     {":spend": json.dumps(spend), ":running": RUNNING}, names={"#a": f"a{attempt}"})

    def requeue(self, job_id: str) -> Job | None:
        """A client's retry of a FAILED job: back to QUEUED with its error cleared, and off any workflow execution
        (its next run is a new one); None if it is not FAILED."""
        return self._update(
            job_id,
            "SET #s = :queued, lease_until = :zero, orchestrator = :queue "
            "REMOVE #e, finished_at, execution_arn, #stage, workflow_progress ADD retried :one",
            "#s = :failed",
            {":queued": QUEUED, ":failed": FAILED, ":zero": 0, ":queue": QUEUE, ":one": 1},
            names={"#e": "error", "#stage": "stage"},
        )

    def hand_over(self, job_id: str, *, execution_arn: str) -> bool:
        """The workflow execution ``execution_arn`` carries the RUNNING job on from here; False if the job is no
        longer RUNNING or an execution carries it already."""
        return self._update(
            job_id,
            "SET orchestrator = :sfn, execution_arn = :arn, #stage = if_not_exists(#stage, :stage), "
            "lease_until = :zero, workflow_progress = if_not_exists(workflow_progress, :nothing)",
            "#s = :running AND attribute_not_exists(execution_arn)",
            {":sfn": STEP_FUNCTIONS, ":arn": execution_arn, ":stage": "validate", ":zero": 0, ":nothing": {},
             ":running": RUNNING},
            names={"#stage": "stage"},
        ) is not None

    def set_stage(self, job_id: str, stage: str, *, task: int | None = None) -> Job | None:
        """Where the workflow is (and, for one task's branch, where that task is); None if the job is not RUNNING."""
        expression, values, names = "SET #stage = :stage", {":stage": stage, ":running": RUNNING}, {"#stage": "stage"}
        if task is not None:
            expression += ", workflow_progress.#task = :stage"
            names["#task"] = f"{task}/stage"
        return self._update(job_id, expression, "#s = :running AND attribute_exists(workflow_progress)", values,
                            names=names)

    def record_workflow(self, job_id: str, *, progress: dict[str, Any] | None = None,
                        spend: tuple[str, dict[str, Any]] | None = None) -> None:
        """A workflow stage's progress (``{"<task>/<batch>": chunks}``) and spend (``(key, record)``), in one write;
        nothing once the job has finished."""
        parts, values, names = [], {":running": RUNNING}, {}
        for position, (key, value) in enumerate((progress or {}).items()):
            parts.append(f"workflow_progress.#p{position} = :p{position}")
            names[f"#p{position}"], values[f":p{position}"] = key, value
        if spend is not None:
            parts.append("spend.#a = :spend")
            names["#a"], values[":spend"] = spend[0], json.dumps(spend[1])
        if parts:
            self._update(job_id, "SET " + ", ".join(parts),
                         "#s = :running AND attribute_exists(workflow_progress) AND attribute_exists(spend)", values,
                         names=names)

    def mark_failed_for_execution(self, job_id: str, execution_arn: str, error: dict[str, Any]) -> Job | None:
        """FAILED with ``error``, only while the execution ``execution_arn`` carries the RUNNING job (not a later
        run's, after a client's retry): the finished row, else None."""
        return self._update(
            job_id,
            "SET #s = :failed, finished_at = :now, #e = :error, lease_until = :zero",
            "#s = :running AND execution_arn = :arn",
            {":failed": FAILED, ":running": RUNNING, ":now": _dec(self._clock()), ":error": json.dumps(error),
             ":zero": 0, ":arn": execution_arn},
            names={"#e": "error"},
        )

    def on_workflow(self, *, started_before: float, limit: int = 100) -> list[Job]:
        """RUNNING jobs an execution carries, started before ``started_before``: what the workflow sweep checks.

        A filtered scan: the table holds DOCPIPE_JOB_RETENTION_DAYS of jobs, and the sweep runs every few minutes.
        """
        from boto3.dynamodb.conditions import Attr

        found: list[Job] = []
        request: dict[str, Any] = {"FilterExpression": Attr("status").eq(RUNNING) & Attr("execution_arn").exists()
                                   & Attr("started_at").lt(_dec(started_before))}
        while len(found) < limit:
            page = self._table.scan(**request)
            found += [_from_item(item) for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                break
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return found[:limit]

    def withdraw(self, job_id: str) -> None:
        """Remove a job that never reached the queue, so the client's (or S3's) retry can create it afresh."""
        from botocore.exceptions import ClientError

        try:
            self._table.delete_item(Key={"job_id": job_id}, ConditionExpression="#s = :queued",
                                    ExpressionAttributeNames={"#s": "status"},
                                    ExpressionAttributeValues={":queued": QUEUED})
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

    def release(self, job_id: str, error: dict[str, str]) -> None:
        """An attempt failed but may be retried: keep RUNNING, note why, and let the next delivery claim it."""
        self._update(
            job_id,
            "SET last_error = :error, lease_until = :zero",
            "#s = :running",
            {":error": json.dumps(error), ":zero": 0, ":running": RUNNING},
        )

    def _update(self, job_id: str, expression: str, condition: str, values: dict[str, Any],
                names: dict[str, str] | None = None) -> Job | None:
        from botocore.exceptions import ClientError

        try:
            response = self._table.update_item(
                Key={"job_id": job_id},
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames={"#s": "status", **(names or {})},
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return None
            raise
        return _from_item(response["Attributes"])

    def recent(self, *, most: int = 1000) -> list[Job]:
        """Up to ``most`` jobs, newest first, for the operator's dashboard (a scan: every client's jobs)."""
        jobs: list[Job] = []
        options: dict[str, Any] = {"Limit": min(most, 1000)}
        while len(jobs) < most:
            page = self._table.scan(**options)
            jobs.extend(_from_item(item) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            options["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return sorted(jobs[:most], key=lambda job: job.created_at, reverse=True)
