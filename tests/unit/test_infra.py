"""infra/template.json and the IAM policies the deploy renders: cfn-lint clean (its informational checks too), and
the safe defaults an operator expects of a deployed stage."""

from __future__ import annotations

import json

import cfnlint.api
import pytest

from scripts.stage import StageFacts, load_config, write_policies
from tests.support import PROJECT

ROOT = PROJECT
TEMPLATE = ROOT / "infra" / "template.json"
LINT_EVERYTHING = cfnlint.api.ManualArgs(include_checks=["I"])


def template() -> dict:
    return json.loads(TEMPLATE.read_text())


def resources_of_type(kind: str) -> dict[str, dict]:
    return {name: r for name, r in template()["Resources"].items() if r["Type"] == kind}


def test_the_infrastructure_template_passes_cfn_lint_with_informational_checks():
    assert [str(match) for match in cfnlint.api.lint_file(TEMPLATE, config=LINT_EVERYTHING)] == []


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_every_policy_the_deploy_renders_passes_cfn_lints_iam_checks(stage, tmp_path):
    secret = f"arn:aws:secretsmanager:eu-west-1:123456789012:secret:docpipe/{stage}/llm-??????"
    facts = StageFacts(stage=stage, account="123456789012", region="eu-west-1", partition="aws",
                       bucket=f"docpipe-{stage}-123456789012-eu-west-1", llm_secret_arn=secret)
    policies = write_policies(ROOT, load_config(ROOT), facts, tmp_path)
    # cfn-lint knows every service's actions and ARN formats; it reads policies inside a template.
    wrapped = {"AWSTemplateFormatVersion": "2010-09-09", "Resources": {
        function.title().replace("_", ""): {"Type": "AWS::IAM::ManagedPolicy",
                                            "Properties": {"PolicyDocument": json.loads(path.read_text())}}
        for function, path in policies.items()}}
    assert [str(match) for match in cfnlint.api.lint(json.dumps(wrapped), config=LINT_EVERYTHING)] == []


def test_a_misspelt_action_would_fail_the_policy_lint():
    wrapped = {"AWSTemplateFormatVersion": "2010-09-09", "Resources": {"P": {
        "Type": "AWS::IAM::ManagedPolicy", "Properties": {"PolicyDocument": {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "s3:GetObjectTaging", "Resource": "arn:aws:s3:::b/*"}]}}}}}
    assert cfnlint.api.lint(json.dumps(wrapped), config=LINT_EVERYTHING)


def test_the_bucket_refuses_every_request_without_tls():
    [policy] = resources_of_type("AWS::S3::BucketPolicy").values()
    assert policy["Properties"]["Bucket"] == {"Ref": "DocumentsBucket"}
    [statement] = policy["Properties"]["PolicyDocument"]["Statement"]
    assert (statement["Effect"], statement["Principal"], statement["Action"]) == ("Deny", "*", "s3:*")
    assert statement["Resource"] == [{"Fn::GetAtt": ["DocumentsBucket", "Arn"]},
                                     {"Fn::Sub": "${DocumentsBucket.Arn}/*"}]
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_uploads_incoming_documents_and_unfinished_multipart_uploads_expire():
    bucket = template()["Resources"]["DocumentsBucket"]["Properties"]
    rules = {r["Id"]: r for r in bucket["LifecycleConfiguration"]["Rules"]}
    expiring = {r["Prefix"] for r in rules.values() if "ExpirationInDays" in r and r["Status"] == "Enabled"}
    assert {"incoming/", "uploads/", "inputs/", "results/", "cache/", "ocr/"} <= expiring
    [abort] = [r for r in rules.values() if "AbortIncompleteMultipartUpload" in r]
    assert abort["Status"] == "Enabled" and "Prefix" not in abort  # the whole bucket


def test_queues_tables_and_the_bucket_say_what_happens_when_deleted_or_replaced():
    resources = template()["Resources"]
    for name, resource in resources.items():
        if resource["Type"] in ("AWS::SQS::Queue", "AWS::DynamoDB::Table", "AWS::S3::Bucket", "AWS::Logs::LogGroup"):
            assert {"DeletionPolicy", "UpdateReplacePolicy"} <= set(resource), name
    # Job history and documents outlive the stack; a queue holds only messages in flight.
    for name in ("JobsTable", "IdempotencyTable", "DocumentsBucket"):
        assert resources[name]["DeletionPolicy"] == resources[name]["UpdateReplacePolicy"] == "Retain"


def test_the_dead_letter_queue_hides_a_message_for_its_own_consumers_timeout():
    dlq = template()["Resources"]["JobsDeadLetterQueue"]["Properties"]
    assert dlq["VisibilityTimeout"] == {"Ref": "DeadLetterVisibilityTimeoutSeconds"}


def test_every_function_of_the_app_has_a_log_group_with_retention_and_a_policy_in_every_deployed_stage():
    from app import app

    functions = {"api_handler"} | {source.name for source in app.event_sources}
    functions |= {function.name for function in app.pure_lambda_functions}
    lambda_names = {"docpipe-${Stage}" if f == "api_handler" else f"docpipe-${{Stage}}-{f}" for f in functions}
    groups = resources_of_type("AWS::Logs::LogGroup").values()
    assert {g["Properties"]["LogGroupName"]["Fn::Sub"] for g in groups} == {f"/aws/lambda/{n}" for n in lambda_names}
    assert all(g["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"} for g in groups)
    config = load_config(ROOT)
    for stage in ("dev", "prod"):
        configured = config["stages"][stage]["lambda_functions"]
        assert set(configured) == functions, stage
        assert all((ROOT / ".chalice" / fn["iam_policy_file"]).exists() for fn in configured.values())
