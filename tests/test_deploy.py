"""The deploy steps of scripts/deploy.py against a moto server of this module's own (no real AWS, no env changes).

`chalice deploy` itself is not run here; the ESM test writes .chalice/deployed/<stage>.json in the shape Chalice
1.34 records it (chalice/deploy/planner.py), pointing at a mapping created in moto.
"""

from __future__ import annotations

import io
import json
import random
import shutil
import zipfile
from pathlib import Path
from typing import Any, Callable

import boto3
import pytest
from botocore.exceptions import ClientError

from scripts import deploy

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"


@pytest.fixture(scope="module")
def endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def account() -> str:
    return str(random.randrange(10**11, 10**12))


@pytest.fixture
def aws(endpoint, account) -> Callable[[str], Any]:
    """A client factory for the moto server, acting in an AWS account of this test's own.

    moto keeps its state per process, shared by every moto server in it (the suite's conftest starts one), so a
    reset would wipe other tests' resources; a fresh account per test isolates them instead.
    """

    def in_account(request: Any, **kwargs: Any) -> None:
        request.headers["x-moto-account-id"] = account

    def client(service: str) -> Any:
        made = boto3.client(service, endpoint_url=endpoint, region_name=REGION, aws_access_key_id="testing",
                            aws_secret_access_key="testing", aws_session_token="testing")
        made.meta.events.register("before-sign", in_account)
        return made

    return client


def repo_config() -> dict[str, Any]:
    return json.loads((ROOT / deploy.CONFIG_FILE).read_text())


def deploy_dev_stack(aws: Callable[[str], Any], cloudformation: Any = None) -> dict[str, str]:
    config = repo_config()
    return deploy.deploy_stack(cloudformation or aws("cloudformation"), ROOT / deploy.TEMPLATE_FILE, "dev", {
        "Stage": "dev",
        "BucketName": deploy.bucket_name(config, "dev", aws("sts"), REGION),
        "VisibilityTimeoutSeconds": str(deploy.visibility_timeout(config, "dev")),
    })


def test_stack_step_creates_queue_with_six_times_worker_timeout_redrive_to_dlq_and_both_tables(aws, account):
    outputs = deploy_dev_stack(aws)

    sqs = aws("sqs")
    worker_timeout = repo_config()["stages"]["dev"]["lambda_functions"]["process_jobs"]["lambda_timeout"]
    attributes = sqs.get_queue_attributes(QueueUrl=sqs.get_queue_url(QueueName="docpipe-dev-jobs")["QueueUrl"],
                                          AttributeNames=["All"])["Attributes"]
    assert int(attributes["VisibilityTimeout"]) == 6 * worker_timeout
    dlq_arn = sqs.get_queue_attributes(QueueUrl=sqs.get_queue_url(QueueName="docpipe-dev-jobs-dlq")["QueueUrl"],
                                       AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == dlq_arn
    assert int(redrive["maxReceiveCount"]) == 3

    assert {"docpipe-dev-jobs", "docpipe-dev-idempotency"} <= set(aws("dynamodb").list_tables()["TableNames"])
    # config.json leaves the dev bucket empty, so the name is made unique with the account and region.
    assert outputs["BucketName"] == f"docpipe-dev-{account}-{REGION}"
    assert outputs["JobsQueueName"] == "docpipe-dev-jobs"
    assert outputs["DeadLetterQueueName"] == "docpipe-dev-jobs-dlq"
    assert outputs["BucketName"] in [b["Name"] for b in aws("s3").list_buckets()["Buckets"]]


class UnchangedStackAnswer:
    """The moto client, except that UpdateStack answers as AWS does for an unchanged stack.

    moto compares the passed parameters with the stored ones including template defaults (MaxReceiveCount), so it
    never reports "No updates are to be performed" for this template; AWS does.
    """

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def update_stack(self, **kwargs: Any) -> None:
        raise ClientError({"Error": {"Code": "ValidationError", "Message": "No updates are to be performed."}},
                          "UpdateStack")


def test_stack_step_run_twice_without_changes_succeeds_with_same_outputs(aws, capsys):
    first = deploy_dev_stack(aws)
    second = deploy_dev_stack(aws)  # moto performs an (empty) update
    third = deploy_dev_stack(aws, UnchangedStackAnswer(aws("cloudformation")))  # AWS's answer
    assert first == second == third
    assert "already up to date" in capsys.readouterr().out
    status = aws("cloudformation").describe_stacks(StackName="docpipe-dev")["Stacks"][0]["StackStatus"]
    assert status in ("CREATE_COMPLETE", "UPDATE_COMPLETE")


def test_stack_step_updates_the_queue_when_the_worker_timeout_changes(aws, account):
    deploy_dev_stack(aws)
    deploy.deploy_stack(aws("cloudformation"), ROOT / deploy.TEMPLATE_FILE, "dev", {
        "Stage": "dev", "BucketName": f"docpipe-dev-{account}-{REGION}", "VisibilityTimeoutSeconds": "5400"})

    sqs = aws("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=sqs.get_queue_url(QueueName="docpipe-dev-jobs")["QueueUrl"],
                                          AttributeNames=["VisibilityTimeout"])["Attributes"]
    assert attributes["VisibilityTimeout"] == "5400"
    assert aws("cloudformation").describe_stacks(StackName="docpipe-dev")["Stacks"][0]["StackStatus"] \
        == "UPDATE_COMPLETE"


def test_visibility_timeout_follows_chalice_precedence_and_sqs_limits():
    config = {"lambda_timeout": 100, "stages": {
        "inherits": {},
        "tiny": {"lambda_functions": {"process_jobs": {"lambda_timeout": 3}}},
        "prod": {"lambda_functions": {"process_jobs": {"lambda_timeout": 900}}},
    }}
    assert deploy.visibility_timeout(config, "inherits") == 600
    assert deploy.visibility_timeout(config, "tiny") == 30  # the template's MinValue
    assert deploy.visibility_timeout(config, "prod") == 5400
    assert deploy.visibility_timeout(repo_config(), "prod") == 5400
    with pytest.raises(deploy.DeployError):
        deploy.visibility_timeout(config, "missing")


def make_worker_mapping(aws: Callable[[str], Any], stage: str) -> dict[str, str]:
    """A role, a function, a queue and an event source mapping like those `chalice deploy` creates."""
    role_arn = aws("iam").create_role(
        RoleName=f"docpipe-{stage}-process_jobs",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}),
    )["Role"]["Arn"]
    package = io.BytesIO()
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("app.py", "def process_jobs(event, context):\n    return {'batchItemFailures': []}\n")
    function_arn = aws("lambda").create_function(
        FunctionName=f"docpipe-{stage}-process_jobs", Runtime="python3.11", Role=role_arn,
        Handler="app.process_jobs", Code={"ZipFile": package.getvalue()},
    )["FunctionArn"]
    sqs = aws("sqs")
    queue_url = sqs.create_queue(QueueName=f"docpipe-{stage}-jobs")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    # As Chalice creates it: BatchSize and batching window only, no FunctionResponseTypes.
    uuid = aws("lambda").create_event_source_mapping(EventSourceArn=queue_arn, FunctionName=function_arn,
                                                     BatchSize=5, MaximumBatchingWindowInSeconds=1)["UUID"]
    return {"function_arn": function_arn, "queue_arn": queue_arn, "uuid": uuid}


def write_deployed(project_dir: Path, stage: str, worker: dict[str, str]) -> None:
    """.chalice/deployed/<stage>.json as Chalice 1.34 records it (only the records the deploy script reads)."""
    record = {
        "resources": [
            {"name": "process_jobs", "resource_type": "lambda_function", "lambda_arn": worker["function_arn"]},
            {"name": "process_jobs-sqs-event-source", "resource_type": "sqs_event",
             "queue_arn": worker["queue_arn"], "event_uuid": worker["uuid"], "queue": f"docpipe-{stage}-jobs",
             "lambda_arn": worker["function_arn"]},
            {"name": "rest_api", "resource_type": "rest_api", "rest_api_id": "abc123",
             "rest_api_url": f"https://abc123.execute-api.{REGION}.amazonaws.com/api/"},
        ],
        "schema_version": "2.0",
        "backend": "api",
    }
    (project_dir / ".chalice" / "deployed").mkdir(parents=True)
    (project_dir / ".chalice" / "deployed" / f"{stage}.json").write_text(json.dumps(record, indent=2))


def test_esm_step_turns_on_report_batch_item_failures(aws, tmp_path):
    worker = make_worker_mapping(aws, "dev")
    lambda_client = aws("lambda")
    assert not lambda_client.get_event_source_mapping(UUID=worker["uuid"]).get("FunctionResponseTypes")
    write_deployed(tmp_path, "dev", worker)

    assert deploy.enable_batch_item_failures(lambda_client, tmp_path, "dev") == worker["uuid"]

    mapping = lambda_client.get_event_source_mapping(UUID=worker["uuid"])
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BatchSize"] == 5  # the rest of Chalice's settings are untouched


def test_esm_step_fails_when_the_setting_does_not_read_back(tmp_path):
    class IgnoringLambda:
        """A Lambda API that accepts the update but does not keep it."""

        def get_event_source_mapping(self, UUID: str) -> dict[str, Any]:
            return {"UUID": UUID, "State": "Enabled"}

        def update_event_source_mapping(self, **kwargs: Any) -> None:
            pass

    write_deployed(tmp_path, "dev", {"function_arn": "arn:fn", "queue_arn": "arn:q", "uuid": "u-1"})
    with pytest.raises(deploy.DeployError, match="ReportBatchItemFailures|FunctionResponseTypes"):
        deploy.enable_batch_item_failures(IgnoringLambda(), tmp_path, "dev")


def test_config_step_writes_bucket_and_api_url_without_touching_other_keys(tmp_path):
    config_file = tmp_path / "config.json"
    shutil.copy(ROOT / deploy.CONFIG_FILE, config_file)
    original = json.loads(config_file.read_text())

    assert deploy.set_stage_env(config_file, "dev", {"DOCPIPE_BUCKET": "docpipe-dev-123456789012-us-east-1"})
    url = "https://abc123.execute-api.us-east-1.amazonaws.com/api/"
    assert deploy.record_api_url(config_file, "dev", url)
    # Same URL again (with or without the trailing slash): nothing to write, so no second chalice deploy.
    assert not deploy.record_api_url(config_file, "dev", url)
    assert not deploy.record_api_url(config_file, "dev", url.rstrip("/"))
    assert not deploy.set_stage_env(config_file, "dev", {"DOCPIPE_BUCKET": "docpipe-dev-123456789012-us-east-1"})

    text = config_file.read_text()
    written = json.loads(text)
    env = written["stages"]["dev"]["environment_variables"]
    assert env["DOCPIPE_BUCKET"] == "docpipe-dev-123456789012-us-east-1"
    assert env["DOCPIPE_API_URL"] == "https://abc123.execute-api.us-east-1.amazonaws.com/api"
    expected = json.loads(json.dumps(original))
    expected["stages"]["dev"]["environment_variables"].update(
        DOCPIPE_BUCKET=env["DOCPIPE_BUCKET"], DOCPIPE_API_URL=env["DOCPIPE_API_URL"])
    assert written == expected
    assert list(written) == list(original)  # key order kept
    assert text == json.dumps(expected, indent=2) + "\n"


def test_api_key_step_creates_one_usage_plan_and_one_key_when_run_twice(aws, capsys):
    apigateway = aws("apigateway")
    api_id = apigateway.create_rest_api(name="docpipe")["id"]
    root_id = apigateway.get_resources(restApiId=api_id)["items"][0]["id"]
    apigateway.put_method(restApiId=api_id, resourceId=root_id, httpMethod="GET", authorizationType="NONE",
                          apiKeyRequired=True)
    apigateway.put_integration(restApiId=api_id, resourceId=root_id, httpMethod="GET", type="MOCK")
    apigateway.create_deployment(restApiId=api_id, stageName="api")
    api_stage = deploy.chalice_config(repo_config(), "prod").api_gateway_stage

    first = deploy.ensure_api_key(apigateway, "prod", api_id, api_stage)
    second = deploy.ensure_api_key(apigateway, "prod", api_id, api_stage)

    assert second == first
    plans = [p for p in apigateway.get_usage_plans()["items"] if p["name"] == "docpipe-prod"]
    assert len(plans) == 1
    assert [(s["apiId"], s["stage"]) for s in plans[0]["apiStages"]] == [(api_id, "api")]
    keys = apigateway.get_api_keys(includeValues=True)["items"]
    assert [(k["id"], k["name"], k["enabled"]) for k in keys] == [(first, "docpipe-prod-default", True)]
    assert [k["id"] for k in apigateway.get_usage_plan_keys(usagePlanId=plans[0]["id"])["items"]] == [first]

    deploy.print_summary("prod", "https://x/api", {"BucketName": "b", "JobsQueueName": "q",
                                                   "DeadLetterQueueName": "d"}, "u-1", first)
    printed = capsys.readouterr().out
    assert first in printed and f"aws apigateway get-api-key --api-key {first} --include-value" in printed
    assert keys[0]["value"] not in printed


def test_every_policy_file_in_config_exists_and_lets_its_function_log():
    names = {fn["iam_policy_file"] for stage in repo_config()["stages"].values()
             for fn in stage.get("lambda_functions", {}).values()}
    assert names == {"policy-api.json", "policy-worker.json", "policy-dead-letters.json", "policy-upload.json",
                     "policy-keep-warm.json"}
    for name in names:
        statements = json.loads((ROOT / ".chalice" / name).read_text())["Statement"]
        actions = {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
        assert {"logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"} <= actions, name
    worker = json.loads((ROOT / ".chalice" / "policy-worker.json").read_text())["Statement"]
    # With autogen_policy false Chalice adds no receive permissions; without them the event source cannot poll.
    receive = next(s for s in worker if "sqs:ReceiveMessage" in s["Action"])
    assert {"sqs:DeleteMessage", "sqs:GetQueueAttributes"} <= set(receive["Action"])
    assert receive["Resource"] == "arn:*:sqs:*:*:docpipe-*-jobs"
