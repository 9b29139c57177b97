"""Deploy one docpipe stage to AWS: ``python -m scripts.deploy --stage dev`` (``make deploy STAGE=dev``).

``chalice deploy`` alone cannot ship docpipe: Chalice creates no bucket, queue, table or log group, never turns on
ReportBatchItemFailures for an SQS event source (chalice #2029; without it Lambda deletes the messages the worker
reports as failed), creates no API key or usage plan (chalice #420), and keeps its record of the stage in a file git
ignores. This script runs the whole sequence, and stops with a message rather than a traceback:

1. check the credentials and the stage (every deployed stage requires an API key);
2. build and check the Lambda artefacts with the account's facts (scripts/package.py): a dependency Chalice could not
   install fails here, before anything is created or uploaded;
3. create or update the CloudFormation stack ``docpipe-<stage>`` (infra/template.json), tagged for cost allocation: its
   resources, the alarms and their topic, the dashboard and the budget, with the stage's alarm settings;
4. make sure the stage's LLM secret exists (its value is set only by ``make llm-key``);
5. under the stage's deploy lock, fetch Chalice's record of the stage from the bucket, run Chalice's deployer on the
   same configuration the build used (it reuses the checked zips), and store the record back;
6. switch on ReportBatchItemFailures on the worker's event source mapping and read it back;
7. on the first deploy, record the API's URL for the keep-warm schedule, rebuild and deploy again;
8. compare what Lambda holds (CodeSha256 of each function and of the layer) with the checked build, then create or
   update the workflow's stack ``docpipe-<stage>-workflow`` (infra/workflow.json with infra/workflow.asl.json): the
   Step Functions state machine, which names the stage functions Chalice has just deployed;
9. name the REST API after the stage, give the API its provisioned concurrency (scripts/provisioned.py) or release it;
10. ensure the usage plan (throttle and quota per key) and the stage's default API key;
11. tag what Chalice leaves untagged (the roles, the API stage, the schedule's rule), and make the stack's tags
    active cost-allocation tags, which the stage's budget filters on.

Each step is a function taking its boto3 client, so the tests run them against the emulator.
"""

from __future__ import annotations

import argparse
import getpass
import json
import math
import re
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from scripts import artefacts, deploystate, llm_key, package, provisioned
from scripts.stage import (
    StageError,
    StageFacts,
    chalice_config,
    event_bus_name,
    llm_secret_name,
    load_config,
    rest_api_name,
    stage_factory,
)

TEMPLATE_FILE = Path("infra") / "template.json"
WORKFLOW_TEMPLATE_FILE = Path("infra") / "workflow.json"
WORKFLOW_ASL_FILE = Path("infra") / "workflow.asl.json"
WORKER_FUNCTION = "process_jobs"
DEAD_LETTER_FUNCTION = "fail_dead_letters"
# Chalice names an SQS subscription "<function>-sqs-event-source" (chalice/deploy/appgraph.py).
WORKER_EVENT_SOURCE = f"{WORKER_FUNCTION}-sqs-event-source"
BATCH_ITEM_FAILURES = ["ReportBatchItemFailures"]
# AWS guidance for SQS event sources: visibility timeout = 6 x the function timeout.
VISIBILITY_TIMEOUT_FACTOR = 6
# 30 is the template's MinValue; 43200 (12 hours) is the SQS maximum.
MIN_VISIBILITY_TIMEOUT = 30
MAX_VISIBILITY_TIMEOUT = 43200
# An event source mapping accepts an update only once it has settled in one of these states.
SETTLED_MAPPING_STATES = {"Enabled", "Disabled"}
# The usage plan's limits per API key when the stage sets none: requests per second, burst, requests per day.
DEFAULT_API_LIMITS = {"DOCPIPE_API_RATE_LIMIT": 10.0, "DOCPIPE_API_BURST_LIMIT": 20, "DOCPIPE_API_DAILY_QUOTA": 10000}
# The alarms' and the budget's thresholds when the stage sets none (the template's parameters they become).
DEFAULT_ALARM_SETTINGS = {"DOCPIPE_ALARM_FAILED_JOBS_PERCENT": 20.0, "DOCPIPE_ALARM_LLM_USD_PER_HOUR": 5.0,
                          "DOCPIPE_MONTHLY_BUDGET_USD": 50.0}
# The worker's defaults, as chalicelib/config.py and app.py have them.
DEFAULT_BREAKER_RECOVERY_SECONDS = 30
DEFAULT_WORKER_MAX_CONCURRENCY = 10
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

# CloudFormation stack states, by what the deploy can do about them.
STACK_BUSY = {"CREATE_IN_PROGRESS", "UPDATE_IN_PROGRESS", "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS",
              "UPDATE_ROLLBACK_IN_PROGRESS", "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS", "ROLLBACK_IN_PROGRESS",
              "DELETE_IN_PROGRESS", "IMPORT_IN_PROGRESS", "IMPORT_ROLLBACK_IN_PROGRESS", "REVIEW_IN_PROGRESS"}
STACK_STUCK = {
    "ROLLBACK_COMPLETE": "its first creation failed, and a stack in this state cannot be updated: delete it "
                         "(`aws cloudformation delete-stack --stack-name {name}`; the bucket and tables are kept) "
                         "and deploy again",
    "ROLLBACK_FAILED": "its first creation failed and so did the cleanup: see its events, delete it (`aws "
                       "cloudformation delete-stack --stack-name {name}`) and deploy again",
    "UPDATE_ROLLBACK_FAILED": "an update failed and so did its rollback: finish the rollback (`aws cloudformation "
                              "continue-update-rollback --stack-name {name}`), then deploy again",
    "DELETE_FAILED": "its deletion failed: delete it again (`aws cloudformation delete-stack --stack-name {name}`) "
                     "or fix what its events report, then deploy again",
    "IMPORT_ROLLBACK_FAILED": "a resource import failed and so did its rollback: see its events in the console",
}


class DeployError(RuntimeError):
    """A deploy that cannot go on; main prints the message instead of a traceback."""


def visibility_timeout(config: Mapping[str, Any], stage: str, function: str = WORKER_FUNCTION) -> int:
    """A queue's visibility timeout: 6x its consumer's timeout, so a message is not redelivered while a consumer
    still runs it (including Lambda's own retries of a throttled batch)."""
    timeout = int(chalice_config(config, stage, function).lambda_timeout)
    return min(max(VISIBILITY_TIMEOUT_FACTOR * timeout, MIN_VISIBILITY_TIMEOUT), MAX_VISIBILITY_TIMEOUT)


def bucket_name(config: Mapping[str, Any], stage: str, account: str, region: str) -> str:
    """The configured bucket, else a name that is globally unique and the same from every checkout."""
    configured = chalice_config(config, stage).environment_variables.get("DOCPIPE_BUCKET", "").strip()
    return configured or f"{config['app_name']}-{stage}-{account}-{region}"


def stage_tags(config: Mapping[str, Any], stage: str) -> dict[str, str]:
    """The stage's cost-allocation tags (config.json ``tags``, top level and stage), without Chalice's own."""
    return {k: v for k, v in chalice_config(config, stage).tags.items() if k != "aws-chalice"}


def api_limits(config: Mapping[str, Any], stage: str) -> dict[str, float]:
    """The usage plan's throttle and quota per key: the stage's settings, else the defaults."""
    env = chalice_config(config, stage).environment_variables
    limits = {}
    for name, default in DEFAULT_API_LIMITS.items():
        raw = env.get(name, "").strip()
        try:
            limits[name] = type(default)(raw) if raw else default
        except ValueError:
            raise DeployError(f"{name} must be a number, got {raw!r}") from None
        if limits[name] <= 0:
            raise DeployError(f"{name} must be positive, got {raw!r}")
    return limits


def _setting(config: Mapping[str, Any], stage: str, name: str, default: float, *, minimum: float = 0.0,
             function: str = "api_handler") -> float:
    """A numeric setting of the stage read at deploy (its environment variables), else ``default``."""
    raw = chalice_config(config, stage, function).environment_variables.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise DeployError(f"{name} must be a number, got {raw!r}") from None
    if not minimum <= value < math.inf:
        raise DeployError(f"{name} must be at least {minimum:g}, got {raw!r}")
    return value


def alert_email(config: Mapping[str, Any], stage: str) -> str:
    """The address the alarm topic e-mails (DOCPIPE_ALERT_EMAIL), or "" for none."""
    email = chalice_config(config, stage).environment_variables.get("DOCPIPE_ALERT_EMAIL", "").strip()
    if email and not EMAIL.fullmatch(email):
        raise DeployError(f"DOCPIPE_ALERT_EMAIL must be one e-mail address, got {email!r}")
    return email


def alarm_parameters(config: Mapping[str, Any], stage: str) -> dict[str, str]:
    """The template's alarm and budget parameters from the stage's settings."""
    values = {name: _setting(config, stage, name, default) for name, default in DEFAULT_ALARM_SETTINGS.items()}
    if not 0 < values["DOCPIPE_ALARM_FAILED_JOBS_PERCENT"] <= 100:
        raise DeployError("DOCPIPE_ALARM_FAILED_JOBS_PERCENT must be above 0 and at most 100")
    if values["DOCPIPE_ALARM_LLM_USD_PER_HOUR"] <= 0:
        raise DeployError("DOCPIPE_ALARM_LLM_USD_PER_HOUR must be above 0")
    recovery = _setting(config, stage, "DOCPIPE_BREAKER_RECOVERY_SECONDS", DEFAULT_BREAKER_RECOVERY_SECONDS,
                        minimum=1, function=WORKER_FUNCTION)
    return {
        "ApiStageName": chalice_config(config, stage).api_gateway_stage,
        "AlertEmail": alert_email(config, stage),
        "FailedJobsAlarmPercent": f"{values['DOCPIPE_ALARM_FAILED_JOBS_PERCENT']:g}",
        # CostMicroUSD, the metric the alarm reads, counts millionths of a dollar.
        "LlmSpendAlarmMicroUsdPerHour": str(max(1, round(values["DOCPIPE_ALARM_LLM_USD_PER_HOUR"] * 1_000_000))),
        # A CloudWatch period is whole minutes; the alarm wants two periods at least as long as the window.
        "CircuitAlarmPeriodSeconds": str(min(3600, 60 * math.ceil(recovery / 60))),
        "MonthlyBudgetUsd": f"{values['DOCPIPE_MONTHLY_BUDGET_USD']:g}",
    }


def api_provisioned_concurrency(config: Mapping[str, Any], stage: str) -> int:
    """How many API instances Lambda keeps initialised (DOCPIPE_API_PROVISIONED_CONCURRENCY; 0, the default, is off)."""
    value = _setting(config, stage, "DOCPIPE_API_PROVISIONED_CONCURRENCY", 0)
    if value != int(value):
        raise DeployError(f"DOCPIPE_API_PROVISIONED_CONCURRENCY must be a whole number, got {value:g}")
    return int(value)


def check_capacity(config: Mapping[str, Any], stage: str) -> None:
    """Refuse a worker whose reserved concurrency is below what its event source mapping may run at once (Lambda
    would throttle the mapping's extra invocations, and each throttled batch goes back to the queue and spends one of
    its messages' deliveries on the way to the dead-letter queue), and a provisioned concurrency that is no count."""
    reserved = chalice_config(config, stage, WORKER_FUNCTION).reserved_concurrency
    maximum = _setting(config, stage, "DOCPIPE_WORKER_MAX_CONCURRENCY", DEFAULT_WORKER_MAX_CONCURRENCY, minimum=2)
    if reserved is not None and reserved < maximum:
        raise DeployError(f"{WORKER_FUNCTION} reserves {reserved} concurrent executions but its SQS mapping may run "
                          f"{maximum:g} (DOCPIPE_WORKER_MAX_CONCURRENCY): set reserved_concurrency to at least "
                          f"{maximum:g} in stages.{stage}.lambda_functions.{WORKER_FUNCTION}, or lower the maximum")
    api_provisioned_concurrency(config, stage)


def check_stage(config: Mapping[str, Any], stage: str) -> None:
    """Refuse a stage that must not reach AWS, or that would expose the job routes without an API key."""
    if stage == "local":
        # The local stage carries the emulator's endpoint and dummy credentials; it must never reach AWS.
        raise DeployError("the local stage is for the local stack only (make serve)")
    settings = chalice_config(config, stage)
    if settings.environment_variables.get("DOCPIPE_REQUIRE_API_KEY") != "true":
        raise DeployError(f"stage {stage} does not require an API key: every deployed stage must (set "
                          f"DOCPIPE_REQUIRE_API_KEY to \"true\" in stages.{stage}.environment_variables)")
    if not llm_secret_name(config, stage):
        raise DeployError(f"stage {stage} names no LLM secret: set DOCPIPE_LLM_SECRET for process_jobs in "
                          f"stages.{stage}.lambda_functions")
    check_capacity(config, stage)


def caller_identity(session: Any) -> tuple[str, str]:
    """(account, partition) of the credentials, asked first so that missing ones stop the deploy at once."""
    identity = session.client("sts").get_caller_identity()
    return identity["Account"], identity["Arn"].split(":")[1]


def stage_facts(config: Mapping[str, Any], stage: str, *, account: str, partition: str, region: str,
                api_url: str = "") -> StageFacts:
    secret = llm_secret_name(config, stage)
    return StageFacts(stage=stage, account=account, region=region, partition=partition, app_name=config["app_name"],
                      bucket=bucket_name(config, stage, account, region), api_url=api_url,
                      event_bus=event_bus_name(config, stage),
                      # The secret's ARN ends in six random characters; "??????" is how IAM names exactly it.
                      llm_secret_arn=f"arn:{partition}:secretsmanager:{region}:{account}:secret:{secret}-??????")


def _stack_status(cloudformation: Any, stack_name: str) -> str | None:
    from botocore.exceptions import ClientError

    try:
        return cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]["StackStatus"]
    except ClientError as exc:
        if "does not exist" in exc.response["Error"]["Message"]:
            return None
        raise


def _failure_reasons(cloudformation: Any, stack_name: str) -> str:
    """The failed resources' reasons, newest first, because a waiter error says only "failure state"."""
    events = cloudformation.describe_stack_events(StackName=stack_name)["StackEvents"]
    reasons = [f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason', e['ResourceStatus'])}"
               for e in events if e["ResourceStatus"].endswith("_FAILED")]
    return "; ".join(reasons[:5]) or "no failed resource reported"


def check_stack_state(stack_name: str, status: str | None) -> None:
    """Stop with what to do when the stack is busy or stuck; None (no stack) and settled states may go on."""
    if status in STACK_BUSY:
        raise DeployError(f"stack {stack_name} is busy ({status}): another deploy, a rollback or a deletion is "
                          f"running. Wait for it (`aws cloudformation describe-stacks --stack-name {stack_name}`) "
                          f"and deploy again")
    if status in STACK_STUCK:
        raise DeployError(f"stack {stack_name} is {status}: " + STACK_STUCK[status].format(name=stack_name))


def deploy_stack(cloudformation: Any, template_file: Path, stage: str, parameters: Mapping[str, str],
                 tags: Mapping[str, str] | None = None, *, stack_name: str | None = None,
                 template_body: str | None = None, capabilities: Sequence[str] = ()) -> dict[str, str]:
    """Create or update ``docpipe-<stage>`` (or ``stack_name``) and wait for it; returns the stack outputs by key.

    The stack's tags reach every resource in it that takes tags. The main stack passes no capabilities: it creates
    no IAM resources (Chalice manages the functions' roles); the workflow's stack creates the state machine's role.
    """
    from botocore.exceptions import ClientError, WaiterError

    stack_name = stack_name or f"docpipe-{stage}"
    request: dict[str, Any] = {
        "StackName": stack_name,
        "TemplateBody": template_body if template_body is not None else template_file.read_text(),
        "Parameters": [{"ParameterKey": key, "ParameterValue": value} for key, value in parameters.items()],
        "Tags": [{"Key": key, "Value": value} for key, value in (tags or {}).items()],
    }
    if capabilities:
        request["Capabilities"] = list(capabilities)
    status = _stack_status(cloudformation, stack_name)
    check_stack_state(stack_name, status)
    if status is None:
        print(f"Creating stack {stack_name}")
        cloudformation.create_stack(**request)
        waiter = "stack_create_complete"
    else:
        print(f"Updating stack {stack_name}")
        try:
            cloudformation.update_stack(**request)
        except ClientError as exc:
            if "No updates are to be performed" not in exc.response["Error"]["Message"]:
                raise
            print(f"Stack {stack_name} is already up to date")
            waiter = None
        else:
            waiter = "stack_update_complete"
    if waiter:
        try:
            cloudformation.get_waiter(waiter).wait(StackName=stack_name,
                                                   WaiterConfig={"Delay": 5, "MaxAttempts": 360})
        except WaiterError:
            final = _stack_status(cloudformation, stack_name)
            outcome = ("it rolled back: nothing changed" if final == "UPDATE_ROLLBACK_COMPLETE"
                       else f"it is now {final}")
            reasons = _failure_reasons(cloudformation, stack_name)
            if "LogGroup" in reasons and "already exists" in reasons:
                # Lambda made the group when the function first ran, before the stack managed its retention.
                reasons += (". Delete that log group (`aws logs delete-log-group --log-group-name ...`) or import it "
                            "into the stack, then deploy again")
            raise DeployError(f"stack {stack_name} did not deploy ({outcome}): {reasons}") from None
    stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    return {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs", [])}


def stack_parameters(config: Mapping[str, Any], stage: str, bucket: str) -> dict[str, str]:
    return {
        "Stage": stage,
        "BucketName": bucket,
        "VisibilityTimeoutSeconds": str(visibility_timeout(config, stage)),
        "DeadLetterVisibilityTimeoutSeconds": str(visibility_timeout(config, stage, DEAD_LETTER_FUNCTION)),
        "EventBusName": event_bus_name(config, stage),
        **alarm_parameters(config, stage),
    }


def workflow_template(project_dir: Path) -> str:
    """infra/workflow.json with the state machine's definition, infra/workflow.asl.json, in its ``Fn::Sub``: the
    stage functions' ``${...Arn}`` placeholders become the deployed functions' ARNs."""
    template = json.loads((project_dir / WORKFLOW_TEMPLATE_FILE).read_text())
    asl = json.dumps(json.loads((project_dir / WORKFLOW_ASL_FILE).read_text()), separators=(",", ":"))
    template["Resources"]["WorkflowStateMachine"]["Properties"]["DefinitionString"]["Fn::Sub"][0] = asl
    return json.dumps(template, separators=(",", ":"))


def workflow_parameters(resources: Sequence[Mapping[str, Any]], stage: str) -> dict[str, str]:
    """The workflow stack's parameters: the stage functions' ARNs, which exist only once Chalice has deployed."""
    from scripts.workflow import STAGE_FUNCTIONS

    arns = {f"{name}Arn": str(deployed_resource(resources, "lambda_function", function)["lambda_arn"])
            for name, function in STAGE_FUNCTIONS.items()}
    return {"Stage": stage, **arns}


def deploy_workflow(cloudformation: Any, project_dir: Path, facts: StageFacts, resources: Sequence[Mapping[str, Any]],
                    tags: Mapping[str, str]) -> str:
    """Create or update the stack ``docpipe-<stage>-workflow``; the state machine must be the one the worker names."""
    outputs = deploy_stack(cloudformation, project_dir / WORKFLOW_TEMPLATE_FILE, facts.stage,
                           workflow_parameters(resources, facts.stage), tags,
                           stack_name=f"docpipe-{facts.stage}-workflow", template_body=workflow_template(project_dir),
                           capabilities=["CAPABILITY_NAMED_IAM"])
    if outputs.get("StateMachineArn") != facts.state_machine_arn:
        raise DeployError(f"the workflow's state machine is {outputs.get('StateMachineArn')}, not "
                          f"{facts.state_machine_arn} as the worker's DOCPIPE_STATE_MACHINE_ARN says")
    return outputs["StateMachineArn"]


def chalice_deploy(project_dir: Path, built: package.Artefacts, facts: StageFacts) -> dict[str, Any]:
    """Run Chalice's deployer on the configuration the build used; it finds the checked zips in its cache.

    Checked first: Chalice's cache must hold exactly the checked zips, or it would build and upload others.
    """
    from chalice.deploy.deployer import ChaliceDeploymentError
    from chalice.utils import UI

    runtime = built.manifest["runtime"]
    for name, cached in package.cached_zips(project_dir, runtime).items():
        expected = built.manifest["artefacts"][name]["sha256"]
        if not cached.exists() or package.lambda_digest(cached) != expected:
            raise DeployError(f"Chalice's cached {cached.name} is not the checked {name}; run the deploy again")
    factory = stage_factory(project_dir, facts, built.directory / "policies")
    config = factory.create_config_obj(chalice_stage_name=facts.stage)
    deployer = factory.create_default_deployer(session=factory.create_botocore_session(), config=config, ui=UI())
    try:
        return deployer.deploy(config, chalice_stage_name=facts.stage)
    except ChaliceDeploymentError as exc:
        raise DeployError(f"chalice could not deploy stage {facts.stage}:\n{exc}") from None


def deployed_resource(resources: Sequence[Mapping[str, Any]], resource_type: str, name: str) -> Mapping[str, Any]:
    for resource in resources:
        if resource["resource_type"] == resource_type and resource["name"] == name:
            return resource
    raise DeployError(f"chalice recorded no {resource_type} named {name!r}")


def api_url_of(record: Mapping[str, Any] | None) -> str:
    """The deployed API's URL from Chalice's record, without the trailing slash (the keep-warm adds /health)."""
    for resource in (record or {}).get("resources", []):
        if resource["resource_type"] == "rest_api":
            return resource["rest_api_url"].rstrip("/")
    return ""


def _settled_mapping(lambda_client: Any, uuid: str, poll_seconds: float, attempts: int) -> dict[str, Any]:
    """The mapping once it is Enabled or Disabled. A mapping that is still Creating or Updating, as it is right
    after ``chalice deploy``, rejects updates with ResourceInUseException."""
    for attempt in range(attempts):
        mapping = lambda_client.get_event_source_mapping(UUID=uuid)
        if mapping["State"] in SETTLED_MAPPING_STATES:
            return mapping
        if attempt + 1 < attempts:
            time.sleep(poll_seconds)
    raise DeployError(f"event source mapping {uuid} stayed {mapping['State']}")


def enable_batch_item_failures(lambda_client: Any, resources: Sequence[Mapping[str, Any]], *,
                               poll_seconds: float = 2.0, attempts: int = 90) -> str:
    """Turn on ReportBatchItemFailures for the worker's SQS event source, check it, and return the mapping UUID.

    The worker answers ``{"batchItemFailures": [...]}``. Without this setting Lambda treats that answer as
    success and deletes the failed messages, so a deploy that cannot confirm the setting must fail.
    fail_dead_letters returns no batch failures, so its mapping is left as Chalice made it.
    """
    uuid = deployed_resource(resources, "sqs_event", WORKER_EVENT_SOURCE)["event_uuid"]
    _settled_mapping(lambda_client, uuid, poll_seconds, attempts)
    lambda_client.update_event_source_mapping(UUID=uuid, FunctionResponseTypes=BATCH_ITEM_FAILURES)
    mapping = _settled_mapping(lambda_client, uuid, poll_seconds, attempts)
    if mapping.get("FunctionResponseTypes") != BATCH_ITEM_FAILURES:
        raise DeployError(f"event source mapping {uuid} of {WORKER_FUNCTION} reports FunctionResponseTypes="
                          f"{mapping.get('FunctionResponseTypes')}; failed jobs would be deleted instead of retried")
    return uuid


def verify_uploaded(lambda_client: Any, resources: Sequence[Mapping[str, Any]], built: package.Artefacts) -> None:
    """Lambda holds the checked zips: every function's code and the layer, by the digest Lambda computed."""
    expected = {name: entry["sha256"] for name, entry in built.manifest["artefacts"].items()}
    mismatches = []
    for resource in resources:
        if resource["resource_type"] == "lambda_function":
            digest = lambda_client.get_function_configuration(FunctionName=resource["lambda_arn"])["CodeSha256"]
            if digest != expected[package.FUNCTION_ZIP]:
                mismatches.append(f"function {resource['name']}")
        elif resource["resource_type"] == "lambda_layer":
            arn = resource["layer_version_arn"]
            layer = lambda_client.get_layer_version_by_arn(Arn=arn)
            if layer["Content"]["CodeSha256"] != expected[package.LAYER_ZIP]:
                mismatches.append(f"layer {arn}")
    if mismatches:
        raise DeployError("Lambda holds code other than the checked build for: " + ", ".join(mismatches))


def _all_items(apigateway: Any, operation: str, **params: Any) -> list[dict[str, Any]]:
    return [item for page in apigateway.get_paginator(operation).paginate(**params) for item in page["items"]]


def _differs(current: Any, wanted: Any) -> bool:
    if isinstance(wanted, str):
        return current != wanted
    try:
        return current is None or float(current) != float(wanted)
    except (TypeError, ValueError):
        return True


def _plan_limits(limits: Mapping[str, float]) -> tuple[dict[str, Any], dict[str, Any]]:
    throttle = {"rateLimit": float(limits["DOCPIPE_API_RATE_LIMIT"]),
                "burstLimit": int(limits["DOCPIPE_API_BURST_LIMIT"])}
    quota = {"limit": int(limits["DOCPIPE_API_DAILY_QUOTA"]), "period": "DAY"}
    return throttle, quota


def ensure_api_key(apigateway: Any, stage: str, rest_api_id: str, api_stage: str, *,
                   limits: Mapping[str, float] = DEFAULT_API_LIMITS, tags: Mapping[str, str] | None = None) -> str:
    """Ensure the usage plan ``docpipe-<stage>`` on the API stage, with its throttle and quota per key, the key
    ``docpipe-<stage>-default`` and their link; returns the key id.

    Chalice marks routes ``api_key_required`` but creates no key or usage plan (chalice #420), so without this
    step every call to those routes is refused. Everything is found by name, so running it again changes nothing
    but limits that differ from the configured ones.
    """
    plan_name = f"docpipe-{stage}"
    binding = {"apiId": rest_api_id, "stage": api_stage}
    throttle, quota = _plan_limits(limits)
    plan = next((p for p in _all_items(apigateway, "get_usage_plans") if p["name"] == plan_name), None)
    if plan is None:
        plan = apigateway.create_usage_plan(name=plan_name, description=f"docpipe {stage} API clients",
                                            apiStages=[binding], throttle=throttle, quota=quota, tags=dict(tags or {}))
    else:
        patches = []
        if not any({"apiId": s["apiId"], "stage": s["stage"]} == binding for s in plan.get("apiStages", [])):
            # The rest API was recreated (new id) or the API Gateway stage renamed: bind the plan to the live one.
            patches.append({"op": "add", "path": "/apiStages", "value": f"{rest_api_id}:{api_stage}"})
        for part, wanted in (("throttle", throttle), ("quota", quota)):
            current = plan.get(part) or {}
            for name, value in wanted.items():
                if _differs(current.get(name), value):
                    patches.append({"op": "replace", "path": f"/{part}/{name}",
                                    "value": f"{value:g}" if isinstance(value, float) else str(value)})
        if patches:
            apigateway.update_usage_plan(usagePlanId=plan["id"], patchOperations=patches)

    key_name = f"docpipe-{stage}-default"
    # nameQuery is a prefix match, hence the exact comparison.
    key = next((k for k in _all_items(apigateway, "get_api_keys", nameQuery=key_name) if k["name"] == key_name),
               None)
    if key is None:
        key = apigateway.create_api_key(name=key_name, description=f"docpipe {stage} default client key",
                                        enabled=True, tags=dict(tags or {}))
    elif not key["enabled"]:
        # A disabled key was most likely revoked on purpose, so the deploy does not switch it back on.
        print(f"WARNING: API key {key_name} ({key['id']}) is disabled; requests with it are refused")

    linked = {k["id"] for k in _all_items(apigateway, "get_usage_plan_keys", usagePlanId=plan["id"])}
    if key["id"] not in linked:
        apigateway.create_usage_plan_key(usagePlanId=plan["id"], keyId=key["id"], keyType="API_KEY")
    return key["id"]


def name_rest_api(apigateway: Any, rest_api_id: str, name: str) -> None:
    """Give the REST API the stage's name (``docpipe-<stage>``), which its metrics, the dashboard and the 5xx alarm
    use. The build already titles its definition so (scripts/stage.py); an API made before keeps the name it had
    until renamed here."""
    if apigateway.get_rest_api(restApiId=rest_api_id)["name"] != name:
        apigateway.update_rest_api(restApiId=rest_api_id,
                                   patchOperations=[{"op": "replace", "path": "/name", "value": name}])


def activate_cost_allocation_tags(ce: Any, keys: Sequence[str]) -> str:
    """Make the stack's tag keys active cost-allocation tags, which the stage's budget filters on; returns what the
    deploy's summary says about them.

    A budget filtered on a tag that is not active counts nothing and never alerts. Billing lists a tag key only
    once a tagged resource has cost something (up to a day after the first deploy), and in an AWS Organization only
    the management account may activate it: both are reported, not fatal.
    """
    from botocore.exceptions import ClientError

    try:
        status = {}
        request: dict[str, Any] = {"TagKeys": list(keys), "Type": "UserDefined"}
        while True:
            page = ce.list_cost_allocation_tags(**request)
            status.update({tag["TagKey"]: tag["Status"] for tag in page.get("CostAllocationTags", [])})
            if not page.get("NextToken"):
                break
            request["NextToken"] = page["NextToken"]
        inactive = [key for key in keys if status.get(key) == "Inactive"]
        failed: dict[str, str] = {}
        if inactive:
            answer = ce.update_cost_allocation_tags_status(
                CostAllocationTagsStatus=[{"TagKey": key, "Status": "Active"} for key in inactive])
            failed = {error["TagKey"]: error.get("Message", error.get("Code", ""))
                      for error in answer.get("Errors", [])}
    except ClientError as exc:
        return (f"not checked ({exc.response['Error'].get('Code')}): activate {', '.join(keys)} under Billing > Cost "
                f"allocation tags in the account that pays, or the budget counts nothing")
    parts = []
    active = [key for key in keys if status.get(key) == "Active"]
    activated = [key for key in inactive if key not in failed]
    unknown = [key for key in keys if key not in status]
    if active:
        parts.append(f"{', '.join(active)} active")
    if activated:
        parts.append(f"{', '.join(activated)} activated now (billing applies it within a day)")
    if failed:
        parts.append("could not activate " + "; ".join(f"{key}: {message}" for key, message in failed.items()))
    if unknown:
        parts.append(f"{', '.join(unknown)} not yet known to billing (listed up to a day after a tagged resource "
                     f"first costs): deploy again tomorrow, or activate it under Billing > Cost allocation tags")
    return "; ".join(parts)


def alarm_recipients(sns: Any, topic_arn: str) -> str:
    """Who the alarm topic reaches, as the deploy's summary says it."""
    subscriptions = [s for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic_arn)
                     for s in page["Subscriptions"]]
    if not subscriptions:
        return "NOBODY: set DOCPIPE_ALERT_EMAIL for the stage and deploy again"
    return ", ".join(f"{s['Endpoint']} ({s['Protocol']}"
                     + (", waiting for its confirmation: follow the link AWS e-mailed" if
                        s["SubscriptionArn"] == "PendingConfirmation" else "") + ")" for s in subscriptions)


def tag_chalice_resources(session: Any, resources: Sequence[Mapping[str, Any]], *, facts: StageFacts,
                          api_stage: str, tags: Mapping[str, str]) -> None:
    """Chalice tags only the functions: tag the roles, the API stage and the schedule's rule for cost allocation."""
    iam, apigateway, events = session.client("iam"), session.client("apigateway"), session.client("events")
    tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
    for resource in resources:
        kind = resource["resource_type"]
        if kind == "iam_role":
            iam.tag_role(RoleName=resource["role_name"], Tags=tag_list)
        elif kind == "rest_api":
            apigateway.tag_resource(resourceArn=f"arn:{facts.partition}:apigateway:{facts.region}::/restapis/"
                                                f"{resource['rest_api_id']}/stages/{api_stage}", tags=dict(tags))
        elif kind == "cloudwatch_event":
            arn = events.describe_rule(Name=resource["rule_name"])["Arn"]
            events.tag_resource(ResourceARN=arn, Tags=tag_list)


def print_summary(stage: str, api_url: str, outputs: Mapping[str, str], mapping_uuid: str, api_key_id: str,
                  built: package.Artefacts, secret: str, key_is_set: bool,
                  operations: Mapping[str, str] | None = None) -> None:
    sizes = {name: entry["bytes"] for name, entry in built.manifest["artefacts"].items()}
    print(f"\ndocpipe {stage} is deployed")
    print(f"  API URL:      {api_url}")
    print(f"  runtime:      {built.manifest['runtime']}; function {sizes[package.FUNCTION_ZIP] / 1024:.0f} kB, "
          f"layer {sizes[package.LAYER_ZIP] / 1024:.0f} kB (the checked build in {built.directory})")
    print(f"  bucket:       {outputs['BucketName']}")
    print(f"  jobs queue:   {outputs['JobsQueueName']} (dead letters: {outputs['DeadLetterQueueName']})")
    print(f"  worker:       ReportBatchItemFailures is on (event source mapping {mapping_uuid})")
    # The key's value is a secret: never printed, only how to read it.
    print(f"  API key id:   {api_key_id}")
    print(f"  its value:    aws apigateway get-api-key --api-key {api_key_id} --include-value")
    if key_is_set:
        print(f"  LLM key:      in secret {secret} (rotate: make llm-key STAGE={stage})")
    else:
        print(f"  LLM key:      NOT SET. Jobs use the offline provider until you run `make llm-key STAGE={stage}`")
    for label, line in (operations or {}).items():
        print(f"  {label + ':':<13} {line}")


def _deploy_app(project_dir: Path, facts: StageFacts, s3: Any, lambda_client: Any,
                built: package.Artefacts) -> tuple[dict[str, Any], str]:
    """Chalice's deploy, the record stored at once (even if a later step fails), and the worker's mapping set."""
    deployed = chalice_deploy(project_dir, built, facts)
    deploystate.store_record(s3, facts.bucket, project_dir, facts.stage)
    return deployed, enable_batch_item_failures(lambda_client, deployed["resources"])


def deploy(project_dir: Path, stage: str, session: Any) -> None:
    """The whole sequence, in the order the steps depend on each other (see the module docstring)."""
    config = load_config(project_dir)
    check_stage(config, stage)
    region = session.region_name
    if not region:
        raise DeployError("no AWS region configured: set AWS_REGION (or AWS_DEFAULT_REGION) or a profile region")
    account, partition = caller_identity(session)
    tags = stage_tags(config, stage)
    s3, lambda_client = session.client("s3"), session.client("lambda")

    # Nothing is written to AWS before the artefacts are built and checked.
    facts = stage_facts(config, stage, account=account, partition=partition, region=region)
    facts = replace(facts, api_url=api_url_of(deploystate.read_record(s3, facts.bucket, stage)))
    built = package.build(project_dir, facts)
    print(package.describe(built))

    outputs = deploy_stack(session.client("cloudformation"), project_dir / TEMPLATE_FILE, stage,
                           stack_parameters(config, stage, facts.bucket), tags)
    secretsmanager = session.client("secretsmanager")
    secret = llm_secret_name(config, stage)
    if secret is None:
        raise DeployError(f"stage {stage} names no LLM secret: set DOCPIPE_LLM_SECRET for process_jobs in "
                          ".chalice/config.json")
    llm_key.ensure_secret(secretsmanager, secret, stage=stage, tags=tags)

    owner = f"{getpass.getuser()}@{socket.gethostname()}"
    with deploystate.DeployLock(s3, facts.bucket, stage, owner=owner):
        record = deploystate.fetch_record(s3, facts.bucket, project_dir, stage)
        if api_url_of(record) != facts.api_url:
            # The stage's record changed since the build looked (another checkout deployed): build with it.
            facts = replace(facts, api_url=api_url_of(record))
            built = package.build(project_dir, facts)
        deployed, mapping_uuid = _deploy_app(project_dir, facts, s3, lambda_client, built)
        if api_url_of(deployed) != facts.api_url:
            print("First deploy of the API: deploying again so the keep-warm schedule pings its URL")
            facts = replace(facts, api_url=api_url_of(deployed))
            built = package.build(project_dir, facts)
            deployed, mapping_uuid = _deploy_app(project_dir, facts, s3, lambda_client, built)
        verify_uploaded(lambda_client, deployed["resources"], built)
        state_machine = deploy_workflow(session.client("cloudformation"), project_dir, facts, deployed["resources"],
                                        tags)

        rest_api = deployed_resource(deployed["resources"], "rest_api", "rest_api")
        api_stage = chalice_config(config, stage).api_gateway_stage
        apigateway = session.client("apigateway")
        name_rest_api(apigateway, rest_api["rest_api_id"], rest_api_name(config["app_name"], stage))
        capacity = api_capacity(lambda_client, apigateway, config, stage, deployed["resources"], built)
        api_key_id = ensure_api_key(apigateway, stage, rest_api["rest_api_id"], api_stage,
                                    limits=api_limits(config, stage), tags=tags)
        tag_chalice_resources(session, deployed["resources"], facts=facts, api_stage=api_stage, tags=tags)
    operations = {
        "alarms": f"{outputs['AlarmTopicArn'].rsplit(':', 1)[-1]} e-mails "
                  + alarm_recipients(session.client("sns"), outputs["AlarmTopicArn"]),
        "dashboard": f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#dashboards/dashboard/"
                     f"{outputs['DashboardName']}",
        "budget": budget_line(config, stage, activate_cost_allocation_tags(session.client("ce"), list(tags))),
        "API capacity": capacity,
        "worker cap": worker_capacity_line(config, stage),
        "workflow": state_machine,
    }
    print_summary(stage, facts.api_url, outputs, mapping_uuid, api_key_id, built, secret,
                  llm_key.has_value(secretsmanager, secret), operations)


def api_capacity(lambda_client: Any, apigateway: Any, config: Mapping[str, Any], stage: str,
                 resources: Sequence[Mapping[str, Any]], built: package.Artefacts) -> str:
    """The API's provisioned concurrency as the stage sets it (scripts/provisioned.py); returns the summary line."""
    function_arn = deployed_resource(resources, "lambda_function", "api_handler")["lambda_arn"]
    instances = api_provisioned_concurrency(config, stage)
    if not instances:
        return "provisioned concurrency " + provisioned.release_api(lambda_client, function_arn)
    settings = chalice_config(config, stage)
    return "provisioned concurrency " + provisioned.provision_api(
        lambda_client, apigateway, function_arn=function_arn, instances=instances,
        code_sha256=built.manifest["artefacts"][package.FUNCTION_ZIP]["sha256"],
        rest_api_id=deployed_resource(resources, "rest_api", "rest_api")["rest_api_id"],
        api_stage=settings.api_gateway_stage, xray=bool(settings.xray_enabled))


def budget_line(config: Mapping[str, Any], stage: str, tags_status: str) -> str:
    budget = alarm_parameters(config, stage)["MonthlyBudgetUsd"]
    if budget == "0":
        return "none (DOCPIPE_MONTHLY_BUDGET_USD is 0)"
    return (f"docpipe-{stage}-monthly, USD {budget} a month, e-mails at 80 % spent and 100 % forecast; "
            f"tags: {tags_status}")


def worker_capacity_line(config: Mapping[str, Any], stage: str) -> str:
    reserved = chalice_config(config, stage, WORKER_FUNCTION).reserved_concurrency
    maximum = _setting(config, stage, "DOCPIPE_WORKER_MAX_CONCURRENCY", DEFAULT_WORKER_MAX_CONCURRENCY, minimum=2)
    shared = "none reserved (they share the account's pool)"
    return f"at most {maximum:g} workers at once (the SQS mapping); " + (
        f"{reserved} reserved for them" if reserved is not None else shared)


def explain(exc: Exception) -> str:
    """What went wrong, in a sentence an operator can act on (credentials, network, a refused call)."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
        ProfileNotFound,
        TokenRetrievalError,
    )

    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return ("no AWS credentials found: set AWS_PROFILE (after `aws sso login` or `aws configure`) or "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if isinstance(exc, TokenRetrievalError):
        return f"the AWS session has expired: sign in again (`aws sso login`) ({exc})"
    if isinstance(exc, ProfileNotFound):
        return f"{exc}: check AWS_PROFILE against ~/.aws/config"
    if isinstance(exc, NoRegionError):
        return "no AWS region configured: set AWS_REGION (or AWS_DEFAULT_REGION) or a profile region"
    if isinstance(exc, EndpointConnectionError):
        return f"cannot reach AWS ({exc}): check the network and the region"
    if isinstance(exc, ClientError):
        code = exc.response["Error"].get("Code", "")
        message = exc.response["Error"].get("Message", "")
        if code in ("ExpiredToken", "ExpiredTokenException", "RequestExpired"):
            return "the AWS credentials have expired: refresh them (`aws sso login`, or new keys) and deploy again"
        if code in ("InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch",
                    "InvalidAccessKeyId"):
            return f"AWS does not accept these credentials ({code}): check AWS_PROFILE or the access keys"
        if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
            return f"these credentials may not {exc.operation_name}: {message}"
        return f"AWS refused {exc.operation_name}: {code}: {message}"
    return str(exc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Deploy a docpipe stage: checked build, infrastructure stack, "
                                                 "Chalice app, and the settings Chalice cannot make.")
    parser.add_argument("--stage", default="dev", help="stage in .chalice/config.json (default: dev)")
    parser.add_argument("--project-dir", type=Path, default=Path.cwd(),
                        help="docpipe project directory (default: the current directory)")
    args = parser.parse_args(argv)
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        deploy(args.project_dir.resolve(), args.stage, boto3.session.Session())
    except (DeployError, StageError, artefacts.ArtefactError, deploystate.StateError,
            provisioned.ProvisioningError) as exc:
        print(f"deploy failed: {exc}", file=sys.stderr)
        return 1
    except (BotoCoreError, ClientError) as exc:
        print(f"deploy failed: {explain(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
