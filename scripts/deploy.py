"""Deploy one docpipe stage to AWS: ``python -m scripts.deploy --stage dev`` (``make deploy STAGE=dev``).

``chalice deploy`` alone cannot ship docpipe. Chalice creates no buckets, queues or tables, and it never turns on
ReportBatchItemFailures for an SQS event source (chalice #2029). Without that setting, Lambda ignores the worker's
``batchItemFailures`` answer and deletes the failed messages. Chalice also creates no API key for routes that require
one (chalice #420). This script runs the whole sequence:

1. create or update the CloudFormation stack ``docpipe-<stage>`` from infra/template.json;
2. write the bucket name into .chalice/config.json, because app.py subscribes the upload trigger to it;
3. run ``chalice deploy --stage <stage>``;
4. switch on ReportBatchItemFailures on the ``process_jobs`` event source mapping and read the setting back;
5. record the API URL in config.json for the keep-warm schedule, and redeploy if the URL changed;
6. when the stage requires an API key (prod), ensure a usage plan, a key and the link between them.

Each step is a function that takes its boto3 client and paths, so the tests can run it against moto.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import boto3
from botocore.exceptions import ClientError, WaiterError
from chalice.config import Config
from chalice.constants import DEFAULT_APIGATEWAY_STAGE_NAME, DEFAULT_LAMBDA_TIMEOUT

CONFIG_FILE = Path(".chalice") / "config.json"
TEMPLATE_FILE = Path("infra") / "template.json"
WORKER_FUNCTION = "process_jobs"
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


class DeployError(RuntimeError):
    """A deploy that cannot go on; main prints the message instead of a traceback."""


def load_config(config_file: Path) -> dict[str, Any]:
    return json.loads(config_file.read_text())


def chalice_config(config: Mapping[str, Any], stage: str, function_name: str = "api_handler") -> Config:
    """The stage's settings as Chalice resolves them, so a value inherited from the top level or a default counts.

    A hand-written lookup of ``stages.<stage>.lambda_functions.<fn>`` would miss inherited values.
    """
    if stage not in config.get("stages", {}):
        raise DeployError(f"stage {stage!r} is not defined in {CONFIG_FILE}")
    return Config(chalice_stage=stage, function_name=function_name, config_from_disk=dict(config),
                  default_params={"lambda_timeout": DEFAULT_LAMBDA_TIMEOUT,
                                  "api_gateway_stage": DEFAULT_APIGATEWAY_STAGE_NAME})


def visibility_timeout(config: Mapping[str, Any], stage: str) -> int:
    """The jobs queue's visibility timeout: 6x the worker's timeout, so a message is not redelivered while a
    worker still runs it (including Lambda's own retries of a throttled batch)."""
    worker_timeout = int(chalice_config(config, stage, WORKER_FUNCTION).lambda_timeout)
    return min(max(VISIBILITY_TIMEOUT_FACTOR * worker_timeout, MIN_VISIBILITY_TIMEOUT), MAX_VISIBILITY_TIMEOUT)


def bucket_name(config: Mapping[str, Any], stage: str, sts: Any, region: str) -> str:
    """The configured bucket, or on first deploy a name that is globally unique (account and region in it)."""
    configured = chalice_config(config, stage).environment_variables.get("DOCPIPE_BUCKET", "").strip()
    if configured:
        return configured
    account = sts.get_caller_identity()["Account"]
    return f"docpipe-{stage}-{account}-{region}"


def _stack_status(cloudformation: Any, stack_name: str) -> str | None:
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


def deploy_stack(cloudformation: Any, template_file: Path, stage: str, parameters: Mapping[str, str]) -> dict[str, str]:
    """Create or update ``docpipe-<stage>`` and wait for it; returns the stack outputs by key.

    No capabilities are passed because the template creates no IAM resources; Chalice manages the roles.
    """
    stack_name = f"docpipe-{stage}"
    request = {
        "StackName": stack_name,
        "TemplateBody": template_file.read_text(),
        "Parameters": [{"ParameterKey": key, "ParameterValue": value} for key, value in parameters.items()],
    }
    status = _stack_status(cloudformation, stack_name)
    if status == "ROLLBACK_COMPLETE":
        raise DeployError(f"stack {stack_name} failed its first creation and cannot be updated; delete it with "
                          f"`aws cloudformation delete-stack --stack-name {stack_name}` and deploy again")
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
        except WaiterError as exc:
            raise DeployError(f"stack {stack_name} did not deploy ({exc}): "
                              f"{_failure_reasons(cloudformation, stack_name)}") from None
    stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    return {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs", [])}


def set_stage_env(config_file: Path, stage: str, values: Mapping[str, str]) -> bool:
    """Write stage environment variables into config.json, leaving everything else as it was.

    Config.json is the record of a stage: a later plain ``chalice deploy`` keeps these values. Returns whether
    anything changed.
    """
    config = load_config(config_file)
    env = config["stages"][stage].setdefault("environment_variables", {})
    if all(env.get(key) == value for key, value in values.items()):
        return False
    env.update(values)
    config_file.write_text(json.dumps(config, indent=2) + "\n")
    return True


def record_api_url(config_file: Path, stage: str, rest_api_url: str) -> bool:
    """Store the deployed API URL as DOCPIPE_API_URL, which the keep-warm schedule pings; returns whether it changed.

    Chalice records the URL with a trailing slash; the keep-warm adds ``/health`` itself, so it is stored
    without one and compared without one.
    """
    url = rest_api_url.rstrip("/")
    current = chalice_config(load_config(config_file), stage).environment_variables.get("DOCPIPE_API_URL", "")
    if current.rstrip("/") == url:
        return False
    return set_stage_env(config_file, stage, {"DOCPIPE_API_URL": url})


def chalice_deploy(project_dir: Path, stage: str) -> None:
    """Run the Chalice CLI installed next to this interpreter, so the deploy uses the same Chalice version."""
    chalice = Path(sys.executable).parent / "chalice"
    if not chalice.exists():
        raise DeployError(f"{chalice} not found; install the dev requirements into this Python environment")
    try:
        subprocess.run([str(chalice), "deploy", "--stage", stage], cwd=project_dir, check=True)
    except subprocess.CalledProcessError as exc:
        raise DeployError(f"chalice deploy --stage {stage} exited with status {exc.returncode}") from None


def read_deployed(project_dir: Path, stage: str) -> list[dict[str, Any]]:
    """The resources Chalice recorded for the stage in .chalice/deployed/<stage>.json."""
    path = project_dir / ".chalice" / "deployed" / f"{stage}.json"
    if not path.exists():
        raise DeployError(f"{path} does not exist; chalice deploy did not record the stage")
    return json.loads(path.read_text())["resources"]


def deployed_resource(resources: Sequence[Mapping[str, Any]], resource_type: str, name: str) -> Mapping[str, Any]:
    for resource in resources:
        if resource["resource_type"] == resource_type and resource["name"] == name:
            return resource
    raise DeployError(f"chalice recorded no {resource_type} named {name!r}")


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


def enable_batch_item_failures(lambda_client: Any, project_dir: Path, stage: str, *, poll_seconds: float = 2.0,
                               attempts: int = 90) -> str:
    """Turn on ReportBatchItemFailures for the worker's SQS event source, check it, and return the mapping UUID.

    The worker answers ``{"batchItemFailures": [...]}``. Without this setting Lambda treats that answer as
    success and deletes the failed messages, so a deploy that cannot confirm the setting must fail.
    fail_dead_letters returns no batch failures, so its mapping is left as Chalice made it.
    """
    uuid = deployed_resource(read_deployed(project_dir, stage), "sqs_event", WORKER_EVENT_SOURCE)["event_uuid"]
    _settled_mapping(lambda_client, uuid, poll_seconds, attempts)
    lambda_client.update_event_source_mapping(UUID=uuid, FunctionResponseTypes=BATCH_ITEM_FAILURES)
    mapping = _settled_mapping(lambda_client, uuid, poll_seconds, attempts)
    if mapping.get("FunctionResponseTypes") != BATCH_ITEM_FAILURES:
        raise DeployError(f"event source mapping {uuid} of {WORKER_FUNCTION} reports FunctionResponseTypes="
                          f"{mapping.get('FunctionResponseTypes')}; failed jobs would be deleted instead of retried")
    return uuid


def _all_items(apigateway: Any, operation: str, **params: Any) -> list[dict[str, Any]]:
    return [item for page in apigateway.get_paginator(operation).paginate(**params) for item in page["items"]]


def ensure_api_key(apigateway: Any, stage: str, rest_api_id: str, api_stage: str) -> str:
    """Ensure the usage plan ``docpipe-<stage>`` on the API stage, the key ``docpipe-<stage>-default`` and their
    link; returns the key id.

    Chalice marks routes ``api_key_required`` but creates no key or usage plan (chalice #420), so without this
    step every call to those routes is refused. Everything is found by name, so running it again changes nothing.
    """
    plan_name = f"docpipe-{stage}"
    binding = {"apiId": rest_api_id, "stage": api_stage}
    plan = next((p for p in _all_items(apigateway, "get_usage_plans") if p["name"] == plan_name), None)
    if plan is None:
        plan = apigateway.create_usage_plan(name=plan_name, description=f"docpipe {stage} API clients",
                                            apiStages=[binding])
    elif not any({"apiId": s["apiId"], "stage": s["stage"]} == binding for s in plan.get("apiStages", [])):
        # The rest API was recreated (new id) or the API Gateway stage renamed: bind the plan to the live one.
        apigateway.update_usage_plan(usagePlanId=plan["id"], patchOperations=[
            {"op": "add", "path": "/apiStages", "value": f"{rest_api_id}:{api_stage}"}])

    key_name = f"docpipe-{stage}-default"
    # nameQuery is a prefix match, hence the exact comparison.
    key = next((k for k in _all_items(apigateway, "get_api_keys", nameQuery=key_name) if k["name"] == key_name),
               None)
    if key is None:
        key = apigateway.create_api_key(name=key_name, description=f"docpipe {stage} default client key",
                                        enabled=True)
    elif not key["enabled"]:
        # A disabled key was most likely revoked on purpose, so the deploy does not switch it back on.
        print(f"WARNING: API key {key_name} ({key['id']}) is disabled; requests with it are refused")

    linked = {k["id"] for k in _all_items(apigateway, "get_usage_plan_keys", usagePlanId=plan["id"])}
    if key["id"] not in linked:
        apigateway.create_usage_plan_key(usagePlanId=plan["id"], keyId=key["id"], keyType="API_KEY")
    return key["id"]


def print_summary(stage: str, api_url: str, outputs: Mapping[str, str], mapping_uuid: str,
                  api_key_id: str | None) -> None:
    print(f"\ndocpipe {stage} is deployed")
    print(f"  API URL:      {api_url}")
    print(f"  bucket:       {outputs['BucketName']}")
    print(f"  jobs queue:   {outputs['JobsQueueName']} (dead letters: {outputs['DeadLetterQueueName']})")
    print(f"  worker:       ReportBatchItemFailures is on (event source mapping {mapping_uuid})")
    if api_key_id:
        # The key value is a secret: it is never printed, only how to read it.
        print(f"  API key id:   {api_key_id}")
        print(f"  its value:    aws apigateway get-api-key --api-key {api_key_id} --include-value")


def deploy(project_dir: Path, stage: str, session: boto3.session.Session) -> None:
    """The whole sequence, in the order the steps depend on each other (see the module docstring)."""
    config_file = project_dir / CONFIG_FILE
    config = load_config(config_file)
    settings = chalice_config(config, stage)
    region = session.region_name
    if not region:
        raise DeployError("no AWS region configured: set AWS_REGION (or AWS_DEFAULT_REGION) or a profile region")

    outputs = deploy_stack(session.client("cloudformation"), project_dir / TEMPLATE_FILE, stage, {
        "Stage": stage,
        "BucketName": bucket_name(config, stage, session.client("sts"), region),
        "VisibilityTimeoutSeconds": str(visibility_timeout(config, stage)),
    })
    # app.py reads DOCPIPE_BUCKET when Chalice imports it, to subscribe the upload trigger: write it first.
    set_stage_env(config_file, stage, {"DOCPIPE_BUCKET": outputs["BucketName"]})

    chalice_deploy(project_dir, stage)
    lambda_client = session.client("lambda")
    mapping_uuid = enable_batch_item_failures(lambda_client, project_dir, stage)

    rest_api = deployed_resource(read_deployed(project_dir, stage), "rest_api", "rest_api")
    if record_api_url(config_file, stage, rest_api["rest_api_url"]):
        print("DOCPIPE_API_URL changed; deploying again so the keep-warm schedule pings the new URL")
        chalice_deploy(project_dir, stage)
        # The second deploy updates the mapping without FunctionResponseTypes; set it again and check it.
        mapping_uuid = enable_batch_item_failures(lambda_client, project_dir, stage)

    api_key_id = None
    if settings.environment_variables.get("DOCPIPE_REQUIRE_API_KEY") == "true":
        api_key_id = ensure_api_key(session.client("apigateway"), stage, rest_api["rest_api_id"],
                                    settings.api_gateway_stage)
    print_summary(stage, rest_api["rest_api_url"].rstrip("/"), outputs, mapping_uuid, api_key_id)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Deploy a docpipe stage: infrastructure stack, Chalice app, "
                                                 "and the settings Chalice cannot make.")
    parser.add_argument("--stage", default="dev", help="stage in .chalice/config.json (default: dev)")
    parser.add_argument("--project-dir", type=Path, default=Path.cwd(),
                        help="docpipe project directory (default: the current directory)")
    args = parser.parse_args(argv)
    if args.stage == "local":
        # The local stage carries the emulator's endpoint and dummy credentials; it must never reach AWS.
        print("deploy failed: the local stage is for the local stack only (make serve)", file=sys.stderr)
        return 1
    try:
        deploy(args.project_dir.resolve(), args.stage, boto3.session.Session())
    except DeployError as exc:
        print(f"deploy failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
