"""The deploy steps of scripts/deploy.py one by one, against a moto server of this module's own (no real AWS, no
env changes), and its answers to what goes wrong (stack states, credentials). The whole deploy, run end to end from
clean checkouts, is in test_rehearsal.py.
"""

from __future__ import annotations

import io
import json
import random
import zipfile
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, NoCredentialsError

from scripts import deploy, deploystate, llm_key
from scripts.stage import StageFacts, load_config, overlay, render_policy, write_policies
from tests.support import PROJECT

ROOT = PROJECT
REGION = "us-east-1"
TEMPLATE = ROOT / deploy.TEMPLATE_FILE


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
    return load_config(ROOT)


def deploy_dev_stack(aws: Callable[[str], Any], account: str, cloudformation: Any = None) -> dict[str, str]:
    config = repo_config()
    bucket = deploy.bucket_name(config, "dev", account, REGION)
    return deploy.deploy_stack(cloudformation or aws("cloudformation"), TEMPLATE, "dev",
                               deploy.stack_parameters(config, "dev", bucket), deploy.stage_tags(config, "dev"))


def facts(account: str = "123456789012", stage: str = "dev") -> StageFacts:
    return deploy.stage_facts(repo_config(), stage, account=account, partition="aws", region=REGION)


# --- the stack -------------------------------------------------------------------------------------------------------

def test_stack_step_creates_queues_with_six_times_their_consumers_timeout_and_both_tables(aws, account):
    outputs = deploy_dev_stack(aws, account)

    sqs = aws("sqs")
    stage = repo_config()["stages"]["dev"]["lambda_functions"]
    attributes = sqs.get_queue_attributes(QueueUrl=sqs.get_queue_url(QueueName="docpipe-dev-jobs")["QueueUrl"],
                                          AttributeNames=["All"])["Attributes"]
    assert int(attributes["VisibilityTimeout"]) == 6 * stage["process_jobs"]["lambda_timeout"]
    dead_letters = sqs.get_queue_attributes(
        QueueUrl=sqs.get_queue_url(QueueName="docpipe-dev-jobs-dlq")["QueueUrl"], AttributeNames=["All"])["Attributes"]
    assert int(dead_letters["VisibilityTimeout"]) == 6 * stage["fail_dead_letters"]["lambda_timeout"]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == dead_letters["QueueArn"]
    assert int(redrive["maxReceiveCount"]) == 3

    assert {"docpipe-dev-jobs", "docpipe-dev-idempotency"} <= set(aws("dynamodb").list_tables()["TableNames"])
    # config.json names no dev bucket, so the name is made unique with the account and region.
    assert outputs["BucketName"] == f"docpipe-dev-{account}-{REGION}"
    assert outputs["BucketName"] in [b["Name"] for b in aws("s3").list_buckets()["Buckets"]]
    stack = aws("cloudformation").describe_stacks(StackName="docpipe-dev")["Stacks"][0]
    assert {t["Key"]: t["Value"] for t in stack["Tags"]} == {"project": "docpipe", "stage": "dev"}


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


def test_stack_step_run_twice_without_changes_succeeds_with_same_outputs(aws, account, capsys):
    first = deploy_dev_stack(aws, account)
    second = deploy_dev_stack(aws, account)  # moto performs an (empty) update
    third = deploy_dev_stack(aws, account, UnchangedStackAnswer(aws("cloudformation")))  # AWS's answer
    assert first == second == third
    assert "already up to date" in capsys.readouterr().out


def test_stack_step_updates_the_queue_when_the_worker_timeout_changes(aws, account):
    deploy_dev_stack(aws, account)
    parameters = deploy.stack_parameters(repo_config(), "dev", f"docpipe-dev-{account}-{REGION}")
    deploy.deploy_stack(aws("cloudformation"), TEMPLATE, "dev", {**parameters, "VisibilityTimeoutSeconds": "5400"})

    sqs = aws("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=sqs.get_queue_url(QueueName="docpipe-dev-jobs")["QueueUrl"],
                                          AttributeNames=["VisibilityTimeout"])["Attributes"]
    assert attributes["VisibilityTimeout"] == "5400"


class StackIn:
    """A CloudFormation client whose stack is in ``status``; it records whether the deploy tried to change it."""

    def __init__(self, status: str) -> None:
        self.status = status
        self.changed = False

    def describe_stacks(self, StackName: str) -> dict[str, Any]:
        return {"Stacks": [{"StackName": StackName, "StackStatus": self.status}]}

    def update_stack(self, **kwargs: Any) -> None:
        self.changed = True

    create_stack = update_stack


@pytest.mark.parametrize("status, advice", [
    ("UPDATE_IN_PROGRESS", "is busy"),
    ("UPDATE_ROLLBACK_IN_PROGRESS", "is busy"),
    ("DELETE_IN_PROGRESS", "is busy"),
    ("REVIEW_IN_PROGRESS", "is busy"),
    ("ROLLBACK_COMPLETE", "delete-stack"),
    ("ROLLBACK_FAILED", "delete-stack"),
    ("UPDATE_ROLLBACK_FAILED", "continue-update-rollback"),
    ("DELETE_FAILED", "delete-stack"),
])
def test_a_busy_or_stuck_stack_stops_the_deploy_with_what_to_do(status, advice):
    stack = StackIn(status)
    with pytest.raises(deploy.DeployError, match=advice) as raised:
        deploy.deploy_stack(stack, TEMPLATE, "dev", {"Stage": "dev"})
    assert status in str(raised.value) and "docpipe-dev" in str(raised.value)
    assert not stack.changed


def test_a_log_group_made_before_the_stack_managed_it_is_explained():
    from botocore.exceptions import WaiterError

    class CreateFailing:
        created = False

        def describe_stacks(self, StackName: str) -> dict[str, Any]:
            if not self.created:
                raise ClientError({"Error": {"Code": "ValidationError",
                                             "Message": f"Stack with id {StackName} does not exist"}}, "DescribeStacks")
            return {"Stacks": [{"StackStatus": "ROLLBACK_COMPLETE"}]}

        def create_stack(self, **kwargs: Any) -> None:
            self.created = True

        def get_waiter(self, name: str) -> Any:
            def wait(**kwargs: Any) -> None:
                raise WaiterError(name, "failure state", {})
            return type("Waiter", (), {"wait": staticmethod(wait)})()

        def describe_stack_events(self, StackName: str) -> dict[str, Any]:
            return {"StackEvents": [{"LogicalResourceId": "KeepWarmLogGroup", "ResourceStatus": "CREATE_FAILED",
                                     "ResourceStatusReason": "/aws/lambda/docpipe-dev-keep_warm already exists"}]}

    with pytest.raises(deploy.DeployError, match="delete-log-group") as raised:
        deploy.deploy_stack(CreateFailing(), TEMPLATE, "dev", {"Stage": "dev"})
    assert "KeepWarmLogGroup" in str(raised.value) and "ROLLBACK_COMPLETE" in str(raised.value)


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
    assert deploy.visibility_timeout(repo_config(), "prod", "fail_dead_letters") == 180
    with pytest.raises(Exception, match="not defined"):
        deploy.visibility_timeout(config, "missing")


# --- the stage's configuration ------------------------------------------------------------------------------------

@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_every_deployed_stage_requires_an_api_key_and_names_its_llm_secret(stage):
    config = repo_config()
    deploy.check_stage(config, stage)
    assert deploy.chalice_config(config, stage).environment_variables["DOCPIPE_REQUIRE_API_KEY"] == "true"
    assert deploy.llm_secret_name(config, stage) == f"docpipe/{stage}/llm"
    # Only the worker talks to the LLM, so only its configuration names the secret.
    assert "DOCPIPE_LLM_SECRET" not in deploy.chalice_config(config, stage, "api_handler").environment_variables


def test_a_stage_without_an_api_key_or_the_local_stage_is_refused():
    config = repo_config()
    with pytest.raises(deploy.DeployError, match="local stack only"):
        deploy.check_stage(config, "local")
    config["stages"]["dev"]["environment_variables"]["DOCPIPE_REQUIRE_API_KEY"] = "false"
    with pytest.raises(deploy.DeployError, match="API key"):
        deploy.check_stage(config, "dev")


def test_the_overlay_gives_chalice_the_bucket_url_and_rendered_policies_and_leaves_config_json_alone(tmp_path):
    before = (ROOT / ".chalice" / "config.json").read_text()
    config = repo_config()
    stage_facts = facts()
    policies = write_policies(ROOT, config, stage_facts, tmp_path)
    merged = overlay(config, stage_facts.__class__(**{**stage_facts.__dict__, "api_url": "https://x/api"}), policies)

    env = merged["stages"]["dev"]["environment_variables"]
    assert env["DOCPIPE_BUCKET"] == "docpipe-dev-123456789012-us-east-1"
    assert env["DOCPIPE_API_URL"] == "https://x/api"
    assert {name: fn["iam_policy_file"] for name, fn in merged["stages"]["dev"]["lambda_functions"].items()} == \
        {name: str(path) for name, path in policies.items()}
    assert merged["stages"]["prod"] == config["stages"]["prod"]
    assert (ROOT / ".chalice" / "config.json").read_text() == before


WORKFLOW_FUNCTIONS = ("workflow_validate", "workflow_extract", "workflow_map", "workflow_aggregate", "workflow_store",
                      "workflow_failed", "workflow_ended", "workflow_sweep")


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_every_policy_template_renders_to_exact_resources_of_its_stage(stage, tmp_path):
    config = repo_config()
    written = write_policies(ROOT, config, facts(stage=stage), tmp_path)
    assert set(written) == {"api_handler", "process_jobs", "fail_dead_letters", "start_job_from_upload", "keep_warm",
                            *WORKFLOW_FUNCTIONS}
    other = "prod" if stage == "dev" else "dev"
    for function, path in written.items():
        text = path.read_text()
        assert "${" not in text and "docpipe-*" not in text and f"docpipe-{other}" not in text, function
        resources = {r for s in json.loads(text)["Statement"]
                     for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])}
        assert all(r == "*" or ":123456789012:" in r or r.startswith(f"arn:aws:s3:::docpipe-{stage}-123456789012")
                   for r in resources), (function, resources)


def test_the_api_may_read_every_job_only_on_a_stage_that_serves_the_dashboard(tmp_path):
    def api_actions(config: dict[str, Any], out: str) -> set[str]:
        path = write_policies(ROOT, config, facts(stage="dev"), tmp_path / out)["api_handler"]
        statements = json.loads(path.read_text())["Statement"]
        return {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}

    config = repo_config()
    assert not {"dynamodb:Scan", "sqs:GetQueueAttributes"} & api_actions(config, "off")
    config["stages"]["dev"].setdefault("environment_variables", {})["DOCPIPE_DASHBOARD"] = "true"
    assert {"dynamodb:Scan", "sqs:GetQueueAttributes"} <= api_actions(config, "on")


def test_a_policy_template_naming_an_unknown_value_is_refused():
    with pytest.raises(Exception, match="Bucket"):
        render_policy('{"Resource": "${Bucket}"}', {"BucketArn": "arn:aws:s3:::b"})


def test_api_limits_come_from_the_stage_or_the_defaults():
    config = repo_config()
    assert deploy.api_limits(config, "dev") == deploy.DEFAULT_API_LIMITS
    config["stages"]["dev"]["environment_variables"].update(DOCPIPE_API_RATE_LIMIT="2.5",
                                                            DOCPIPE_API_DAILY_QUOTA="500")
    assert deploy.api_limits(config, "dev") == {"DOCPIPE_API_RATE_LIMIT": 2.5, "DOCPIPE_API_BURST_LIMIT": 20,
                                                "DOCPIPE_API_DAILY_QUOTA": 500}
    config["stages"]["dev"]["environment_variables"]["DOCPIPE_API_BURST_LIMIT"] = "lots"
    with pytest.raises(deploy.DeployError, match="DOCPIPE_API_BURST_LIMIT"):
        deploy.api_limits(config, "dev")


# --- the worker's event source mapping ----------------------------------------------------------------------------

def make_worker_mapping(aws: Callable[[str], Any], stage: str) -> list[dict[str, str]]:
    """A role, a function, a queue and an event source mapping like those `chalice deploy` creates, and the
    records Chalice keeps of them."""
    role_arn = aws("iam").create_role(
        RoleName=f"docpipe-{stage}-process_jobs",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}),
    )["Role"]["Arn"]
    package = io.BytesIO()
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("app.py", "def process_jobs(event, context):\n    return {'batchItemFailures': []}\n")
    function_arn = aws("lambda").create_function(
        FunctionName=f"docpipe-{stage}-process_jobs", Runtime="python3.13", Role=role_arn,
        Handler="app.process_jobs", Code={"ZipFile": package.getvalue()},
    )["FunctionArn"]
    sqs = aws("sqs")
    queue_url = sqs.create_queue(QueueName=f"docpipe-{stage}-jobs")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    # As Chalice creates it: BatchSize and batching window only, no FunctionResponseTypes.
    uuid = aws("lambda").create_event_source_mapping(EventSourceArn=queue_arn, FunctionName=function_arn,
                                                     BatchSize=5, MaximumBatchingWindowInSeconds=1)["UUID"]
    return [{"name": "process_jobs", "resource_type": "lambda_function", "lambda_arn": function_arn},
            {"name": "process_jobs-sqs-event-source", "resource_type": "sqs_event", "queue_arn": queue_arn,
             "event_uuid": uuid, "queue": f"docpipe-{stage}-jobs", "lambda_arn": function_arn}]


def test_esm_step_turns_on_report_batch_item_failures(aws):
    resources = make_worker_mapping(aws, "dev")
    lambda_client = aws("lambda")
    uuid = resources[1]["event_uuid"]
    assert not lambda_client.get_event_source_mapping(UUID=uuid).get("FunctionResponseTypes")

    assert deploy.enable_batch_item_failures(lambda_client, resources) == uuid

    mapping = lambda_client.get_event_source_mapping(UUID=uuid)
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BatchSize"] == 5  # the rest of Chalice's settings are untouched


def test_esm_step_fails_when_the_setting_does_not_read_back():
    class IgnoringLambda:
        """A Lambda API that accepts the update but does not keep it."""

        def get_event_source_mapping(self, UUID: str) -> dict[str, Any]:
            return {"UUID": UUID, "State": "Enabled"}

        def update_event_source_mapping(self, **kwargs: Any) -> None:
            pass

    resources = [{"name": "process_jobs-sqs-event-source", "resource_type": "sqs_event", "event_uuid": "u-1"}]
    with pytest.raises(deploy.DeployError, match=r"ReportBatchItemFailures|FunctionResponseTypes"):
        deploy.enable_batch_item_failures(IgnoringLambda(), resources)


def test_the_deploy_fails_when_lambda_holds_other_code_than_the_checked_build(tmp_path):
    class LambdaHolding:
        def get_function_configuration(self, FunctionName: str) -> dict[str, str]:
            return {"CodeSha256": "other"}

        def get_layer_version_by_arn(self, Arn: str) -> dict[str, Any]:
            return {"Content": {"CodeSha256": "layer"}}

    built = type("Built", (), {"manifest": {"artefacts": {"deployment.zip": {"sha256": "app"},
                                                          "layer-deployment.zip": {"sha256": "layer"}}}})()
    resources = [{"name": "keep_warm", "resource_type": "lambda_function", "lambda_arn": "arn:fn"},
                 {"name": "managed-layer", "resource_type": "lambda_layer", "layer_version_arn": "arn:layer:1"}]
    with pytest.raises(deploy.DeployError, match="function keep_warm"):
        deploy.verify_uploaded(LambdaHolding(), resources, built)


# --- deploy state shared by every checkout ---------------------------------------------------------------------

def test_the_record_goes_to_the_bucket_and_a_fresh_checkout_gets_it_back(aws, account, tmp_path):
    s3 = aws("s3")
    bucket = f"docpipe-dev-{account}-{REGION}"
    s3.create_bucket(Bucket=bucket)
    first, second = tmp_path / "first", tmp_path / "second"
    record = {"resources": [{"name": "rest_api", "resource_type": "rest_api", "rest_api_id": "abc",
                             "rest_api_url": "https://abc.execute-api.us-east-1.amazonaws.com/api/"}],
              "schema_version": "2.0", "backend": "api"}
    deploystate.local_record(first, "dev").parent.mkdir(parents=True)
    deploystate.local_record(first, "dev").write_text(json.dumps(record))

    assert deploystate.fetch_record(s3, bucket, second, "dev") is None  # nothing stored, nothing local
    deploystate.store_record(s3, bucket, first, "dev")
    fetched = deploystate.fetch_record(s3, bucket, second, "dev")

    assert fetched == record
    assert json.loads(deploystate.local_record(second, "dev").read_text()) == record
    assert deploy.api_url_of(fetched) == "https://abc.execute-api.us-east-1.amazonaws.com/api"


def test_a_second_deploy_of_the_same_stage_waits_for_the_lock(aws, account):
    s3 = aws("s3")
    bucket = f"docpipe-dev-{account}-{REGION}"
    s3.create_bucket(Bucket=bucket)
    with deploystate.DeployLock(s3, bucket, "dev", owner="alice@ci"):
        with pytest.raises(deploystate.StateError, match="alice@ci") as raised:
            with deploystate.DeployLock(s3, bucket, "dev", owner="bob@laptop"):
                pass
        assert f"aws s3 rm s3://{bucket}/deploy-state/dev/deploy.lock" in str(raised.value)
    with deploystate.DeployLock(s3, bucket, "dev", owner="bob@laptop"):  # released when the first deploy ended
        pass


# --- the API key and its usage plan --------------------------------------------------------------------------------

def make_api(apigateway: Any) -> str:
    api_id = apigateway.create_rest_api(name="docpipe")["id"]
    root_id = apigateway.get_resources(restApiId=api_id)["items"][0]["id"]
    apigateway.put_method(restApiId=api_id, resourceId=root_id, httpMethod="GET", authorizationType="NONE",
                          apiKeyRequired=True)
    apigateway.put_integration(restApiId=api_id, resourceId=root_id, httpMethod="GET", type="MOCK")
    apigateway.create_deployment(restApiId=api_id, stageName="api")
    return api_id


def test_api_key_step_creates_one_throttled_usage_plan_and_one_key_when_run_twice(aws, capsys):
    apigateway = aws("apigateway")
    api_id = make_api(apigateway)
    api_stage = deploy.chalice_config(repo_config(), "prod").api_gateway_stage

    first = deploy.ensure_api_key(apigateway, "prod", api_id, api_stage, tags={"stage": "prod"})
    second = deploy.ensure_api_key(apigateway, "prod", api_id, api_stage)

    assert second == first
    plans = [p for p in apigateway.get_usage_plans()["items"] if p["name"] == "docpipe-prod"]
    assert len(plans) == 1
    assert [(s["apiId"], s["stage"]) for s in plans[0]["apiStages"]] == [(api_id, "api")]
    assert plans[0]["throttle"] == {"rateLimit": 10.0, "burstLimit": 20}
    assert (plans[0]["quota"]["limit"], plans[0]["quota"]["period"]) == (10000, "DAY")
    keys = apigateway.get_api_keys(includeValues=True)["items"]
    assert [(k["id"], k["name"], k["enabled"]) for k in keys] == [(first, "docpipe-prod-default", True)]
    assert [k["id"] for k in apigateway.get_usage_plan_keys(usagePlanId=plans[0]["id"])["items"]] == [first]


def test_api_key_step_brings_an_existing_plan_to_the_configured_limits(aws):
    apigateway = aws("apigateway")
    api_id = make_api(apigateway)
    deploy.ensure_api_key(apigateway, "dev", api_id, "api")

    deploy.ensure_api_key(apigateway, "dev", api_id, "api", limits={
        "DOCPIPE_API_RATE_LIMIT": 3.0, "DOCPIPE_API_BURST_LIMIT": 6, "DOCPIPE_API_DAILY_QUOTA": 100})

    [plan] = [p for p in apigateway.get_usage_plans()["items"] if p["name"] == "docpipe-dev"]
    assert (float(plan["throttle"]["rateLimit"]), int(plan["throttle"]["burstLimit"])) == (3.0, 6)
    assert int(plan["quota"]["limit"]) == 100


# --- the LLM key --------------------------------------------------------------------------------------------------

def test_the_deploy_creates_the_llm_secret_without_a_value_and_make_llm_key_sets_it(aws, capsys):
    secrets = aws("secretsmanager")
    arn = llm_key.ensure_secret(secrets, "docpipe/dev/llm", stage="dev", tags={"stage": "dev"})
    assert llm_key.ensure_secret(secrets, "docpipe/dev/llm", stage="dev", tags={}) == arn  # found, not recreated
    assert not llm_key.has_value(secrets, "docpipe/dev/llm")

    llm_key.set_key(secrets, "docpipe/dev/llm", llm_key.secret_value("sk-test-1234", "https://llm.example/v1"),
                    stage="dev", tags={})

    assert llm_key.has_value(secrets, "docpipe/dev/llm")
    stored = json.loads(secrets.get_secret_value(SecretId="docpipe/dev/llm")["SecretString"])
    assert stored == {"api_key": "sk-test-1234", "base_url": "https://llm.example/v1"}
    assert "sk-test-1234" not in capsys.readouterr().out


def test_the_key_is_read_from_the_environment_first_then_from_stdin(monkeypatch):
    assert llm_key.read_key("dev", {"OPENAI_API_KEY": " sk-env "}) == "sk-env"
    monkeypatch.setattr("sys.stdin", io.StringIO("sk-piped\n"))
    assert llm_key.read_key("dev", {}) == "sk-piped"
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    with pytest.raises(Exception, match="no key given"):
        llm_key.read_key("dev", {})


# --- what an operator sees when it goes wrong ----------------------------------------------------------------------

def test_missing_credentials_end_the_deploy_with_a_message_not_a_traceback(monkeypatch, capsys):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    assert deploy.main(["--stage", "dev", "--project-dir", str(ROOT)]) == 1

    err = capsys.readouterr().err
    assert err.startswith("deploy failed: no AWS credentials found") and "Traceback" not in err


@pytest.mark.parametrize("error, says", [
    (NoCredentialsError(), "no AWS credentials found"),
    (ClientError({"Error": {"Code": "ExpiredToken", "Message": "expired"}}, "GetCallerIdentity"), "have expired"),
    (ClientError({"Error": {"Code": "InvalidClientTokenId", "Message": "bad"}}, "GetCallerIdentity"),
     "does not accept these credentials"),
    (ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "CreateStack"), "may not CreateStack"),
])
def test_aws_errors_are_explained(error, says):
    assert says in deploy.explain(error)


# --- capacity, names and who is told ------------------------------------------------------------------------------

def test_prod_reserves_the_workers_concurrency_and_provisions_the_api_and_dev_does_neither():
    config = repo_config()
    deploy.check_capacity(config, "prod")
    maximum = int(deploy.chalice_config(config, "prod").environment_variables.get(
        "DOCPIPE_WORKER_MAX_CONCURRENCY", deploy.DEFAULT_WORKER_MAX_CONCURRENCY))
    assert deploy.chalice_config(config, "prod", "process_jobs").reserved_concurrency >= maximum
    assert deploy.api_provisioned_concurrency(config, "prod") >= 1
    assert deploy.chalice_config(config, "dev", "process_jobs").reserved_concurrency is None
    assert deploy.api_provisioned_concurrency(config, "dev") == 0


def test_a_worker_reserving_less_than_its_mapping_may_run_at_once_is_refused():
    config = repo_config()
    config["stages"]["prod"]["lambda_functions"]["process_jobs"]["reserved_concurrency"] = 4
    config["stages"]["prod"]["environment_variables"]["DOCPIPE_WORKER_MAX_CONCURRENCY"] = "5"

    with pytest.raises(deploy.DeployError, match=r"reserves 4 .* may run 5") as raised:
        deploy.check_stage(config, "prod")
    assert "reserved_concurrency" in str(raised.value)


@pytest.mark.parametrize("value", ["1.5", "-1", "many"])
def test_provisioned_concurrency_must_be_a_whole_number_of_instances(value):
    config = repo_config()
    config["stages"]["prod"]["environment_variables"]["DOCPIPE_API_PROVISIONED_CONCURRENCY"] = value
    with pytest.raises(deploy.DeployError, match="DOCPIPE_API_PROVISIONED_CONCURRENCY"):
        deploy.check_stage(config, "prod")


def test_the_rest_api_takes_the_stages_name_which_its_metrics_and_alarms_use(aws):
    apigateway = aws("apigateway")
    api_id = apigateway.create_rest_api(name="docpipe")["id"]  # as Chalice named it before

    deploy.name_rest_api(apigateway, api_id, deploy.rest_api_name("docpipe", "prod"))
    deploy.name_rest_api(apigateway, api_id, deploy.rest_api_name("docpipe", "prod"))

    assert apigateway.get_rest_api(restApiId=api_id)["name"] == "docpipe-prod"


class CostExplorer:
    """Cost Explorer's answers about cost-allocation tags, and the activations asked of it."""

    def __init__(self, status: dict[str, str], error: str | None = None) -> None:
        self.status, self.error, self.activated = status, error, []

    def list_cost_allocation_tags(self, TagKeys: list[str], **kwargs: Any) -> dict[str, Any]:
        if self.error:
            raise ClientError({"Error": {"Code": self.error, "Message": "no"}}, "ListCostAllocationTags")
        return {"CostAllocationTags": [{"TagKey": k, "Type": "UserDefined", "Status": self.status[k]}
                                       for k in TagKeys if k in self.status]}

    def update_cost_allocation_tags_status(self, CostAllocationTagsStatus: list[dict[str, str]]) -> dict[str, Any]:
        self.activated += [entry["TagKey"] for entry in CostAllocationTagsStatus]
        return {"Errors": []}


def test_the_stacks_tags_are_made_active_cost_allocation_tags_so_the_budget_counts_them():
    ce = CostExplorer({"project": "Active", "stage": "Inactive"})

    said = deploy.activate_cost_allocation_tags(ce, ["project", "stage"])

    assert ce.activated == ["stage"]
    assert "project active" in said and "stage activated now" in said


def test_tags_billing_has_not_seen_yet_or_may_not_be_activated_here_are_reported_not_fatal():
    unseen = deploy.activate_cost_allocation_tags(CostExplorer({"project": "Active"}), ["project", "stage"])
    refused = deploy.activate_cost_allocation_tags(CostExplorer({}, error="AccessDeniedException"), ["project"])

    assert "stage not yet known to billing" in unseen and "deploy again" in unseen
    assert refused.startswith("not checked (AccessDeniedException)") and "Cost allocation tags" in refused


def test_the_summary_says_who_the_alarms_reach_and_warns_when_nobody(aws):
    sns = aws("sns")
    topic = sns.create_topic(Name="docpipe-prod-alarms")["TopicArn"]
    assert deploy.alarm_recipients(sns, topic).startswith("NOBODY")

    sns.subscribe(TopicArn=topic, Protocol="email", Endpoint="oncall@example.com")

    assert deploy.alarm_recipients(sns, topic).startswith("oncall@example.com (email")
