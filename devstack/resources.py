"""Create docpipe's AWS resources in the emulator from the one definition in ``infra/template.json``.

moto's CloudFormation creates the bucket, queues (with the redrive policy) and tables, the alarm topic and the
dashboard, but does not enable TTL, cannot wire bucket notifications, and skips the alarms, the topic's policy and
e-mail subscription and the budget, which nothing evaluates locally; TTL and the notifications are applied here
afterwards. The bucket's
``incoming/`` notifications go to a local events queue that the dispatcher turns into S3 events for the app's
S3 handler — what S3 → Lambda does on AWS. A rule on the stage's event bus sends docpipe's job events to a
queue of their own, which the local stack prints (``devstack.jobevents``): a user's rule on AWS does the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

PROJECT = Path(__file__).resolve().parent.parent
TEMPLATE = PROJECT / "infra" / "template.json"
CONFIG = PROJECT / ".chalice" / "config.json"


@dataclass(frozen=True)
class LocalResources:
    bucket: str
    jobs_queue: str
    dead_letter_queue: str
    jobs_table: str
    idempotency_table: str
    s3_events_queue: str
    job_events_queue: str


ACCOUNT = "123456789012"  # moto's account
WORKFLOW_ASL = PROJECT / "infra" / "workflow.asl.json"


def state_machine_arn(stage: str) -> str:
    return f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:docpipe-{stage}-workflow"


def workflow_definition(stage: str) -> str:
    """infra/workflow.asl.json with each stage function's ARN in its place, as CloudFormation substitutes them."""
    from scripts.workflow import STAGE_FUNCTIONS

    text = WORKFLOW_ASL.read_text()
    for stage_name, function in STAGE_FUNCTIONS.items():
        arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:docpipe-{stage}-{function}"
        text = text.replace(f"${{{stage_name}Arn}}", arn)
    return text


def provision_workflow(endpoint: str, *, stage: str) -> str:
    """The workflow's state machine in the emulator (created once, updated to the current definition after)."""
    sfn = client("stepfunctions", endpoint)
    arn = state_machine_arn(stage)
    definition = workflow_definition(stage)
    role = f"arn:aws:iam::{ACCOUNT}:role/docpipe-{stage}-workflow"
    try:
        sfn.update_state_machine(stateMachineArn=arn, definition=definition)
    except sfn.exceptions.StateMachineDoesNotExist:
        sfn.create_state_machine(name=arn.rsplit(":", 1)[-1], definition=definition, roleArn=role)
    return arn


def client(service: str, endpoint: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="local", aws_secret_access_key="local")


def worker_timeout(stage: str) -> int:
    config = json.loads(CONFIG.read_text())
    functions = config["stages"][stage].get("lambda_functions", {})
    return int(functions.get("process_jobs", {}).get("lambda_timeout", 60))


def provision(endpoint: str, *, stage: str, bucket: str, s3_notifications: list[Any],
              visibility_timeout: int | None = None, event_bus: str = "default") -> LocalResources:
    """Create the stack (once; a second call finds it) and apply what moto's CloudFormation leaves out."""
    cfn = client("cloudformation", endpoint)
    name = f"docpipe-{stage}"
    existing = [s for s in cfn.list_stacks()["StackSummaries"]
                if s["StackName"] == name and s["StackStatus"] != "DELETE_COMPLETE"]
    if not existing:
        # Same rule as the deploy: the queue hides a message for six worker timeouts.
        visibility = visibility_timeout or min(6 * worker_timeout(stage), 43200)
        cfn.create_stack(StackName=name, TemplateBody=TEMPLATE.read_text(), Parameters=[
            {"ParameterKey": "Stage", "ParameterValue": stage},
            {"ParameterKey": "BucketName", "ParameterValue": bucket},
            {"ParameterKey": "VisibilityTimeoutSeconds", "ParameterValue": str(visibility)},
            {"ParameterKey": "EventBusName", "ParameterValue": event_bus},
        ])
    outputs = {o["OutputKey"]: o["OutputValue"]
               for o in cfn.describe_stacks(StackName=name)["Stacks"][0].get("Outputs", [])}
    resources = LocalResources(
        bucket=outputs["BucketName"], jobs_queue=outputs["JobsQueueName"],
        dead_letter_queue=outputs["DeadLetterQueueName"], jobs_table=outputs["JobsTableName"],
        idempotency_table=outputs["IdempotencyTableName"], s3_events_queue=f"docpipe-{stage}-s3-events",
        job_events_queue=f"docpipe-{stage}-job-events")
    dynamodb = client("dynamodb", endpoint)
    dynamodb.update_time_to_live(TableName=resources.jobs_table,
                                 TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"})
    dynamodb.update_time_to_live(TableName=resources.idempotency_table,
                                 TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiration"})
    _wire_notifications(endpoint, resources, s3_notifications)
    _route_job_events(endpoint, resources, outputs["EventBusName"])
    return resources


def _route_job_events(endpoint: str, resources: LocalResources, bus: str) -> None:
    """The rule a user would write: every docpipe event on the stage's bus, to a queue."""
    sqs = client("sqs", endpoint)
    url = sqs.create_queue(QueueName=resources.job_events_queue)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events = client("events", endpoint)
    events.put_rule(Name=resources.job_events_queue, EventBusName=bus, State="ENABLED",
                    EventPattern=json.dumps({"source": ["docpipe"]}))
    events.put_targets(Rule=resources.job_events_queue, EventBusName=bus, Targets=[{"Id": "queue", "Arn": arn}])


def _wire_notifications(endpoint: str, resources: LocalResources, s3_notifications: list[Any]) -> None:
    sqs = client("sqs", endpoint)
    queue_url = sqs.create_queue(QueueName=resources.s3_events_queue,
                                 Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    configurations = []
    for index, source in enumerate(s3_notifications):
        rules = [{"Name": "prefix", "Value": source.prefix}] if source.prefix else []
        if source.suffix:
            rules.append({"Name": "suffix", "Value": source.suffix})
        entry: dict[str, Any] = {"Id": f"{source.name}-{index}", "QueueArn": queue_arn, "Events": source.events}
        if rules:
            entry["Filter"] = {"Key": {"FilterRules": rules}}
        configurations.append(entry)
    s3 = client("s3", endpoint)
    s3.put_bucket_notification_configuration(Bucket=resources.bucket,
                                             NotificationConfiguration={"QueueConfigurations": configurations})
