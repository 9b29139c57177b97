"""The API's provisioned concurrency (scripts/provisioned.py), step by step against the deploy emulator: a function
and a REST API shaped as ``chalice deploy`` leaves them (every route on the unqualified function), then what the
deploy does to put the routes on a provisioned alias, do it again after Chalice has put them back, fail without
breaking the API, and release the instances. The whole deploy with the setting on is in test_rehearsal.py.
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

from scripts import provisioned
from tests.support.rehearsal import Emulator

REGION = "us-east-1"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    emulator = Emulator(tmp_path_factory.mktemp("provisioned"))
    yield emulator
    emulator.stop()


@pytest.fixture
def aws(emulator) -> Callable[[str], Any]:
    """Clients of the emulator in an AWS account of this test's own (moto keeps one state per account)."""
    account = str(random.randrange(10**11, 10**12))

    def in_account(request: Any, **kwargs: Any) -> None:
        request.headers["x-moto-account-id"] = account

    def client(service: str) -> Any:
        made = boto3.client(service, endpoint_url=emulator.url, region_name=REGION, aws_access_key_id="testing",
                            aws_secret_access_key="testing")
        made.meta.events.register("before-sign", in_account)
        return made

    return client


def code(version: str) -> bytes:
    package = io.BytesIO()
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("app.py", f"VERSION = {version!r}\ndef app(event, context):\n    return {{}}\n")
    return package.getvalue()


class ChaliceDeployed:
    """The API function and its REST API as Chalice deploys them: two routes, each a Lambda proxy integration of
    the unqualified function."""

    def __init__(self, aws: Callable[[str], Any]) -> None:
        self.lambda_client, self.apigateway = aws("lambda"), aws("apigateway")
        role = aws("iam").create_role(RoleName="docpipe-dev-api_handler", AssumeRolePolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                   "Principal": {"Service": "lambda.amazonaws.com"}}]}))["Role"]["Arn"]
        function = self.lambda_client.create_function(FunctionName="docpipe-dev", Runtime="python3.13", Role=role,
                                                      Handler="app.app", Code={"ZipFile": code("1")})
        self.function_arn, self.code_sha256 = function["FunctionArn"], function["CodeSha256"]
        self.api_id = self.apigateway.create_rest_api(name="docpipe-dev")["id"]
        root = self.apigateway.get_resources(restApiId=self.api_id)["items"][0]["id"]
        jobs = self.apigateway.create_resource(restApiId=self.api_id, parentId=root, pathPart="jobs")["id"]
        self.routes = [(root, "GET"), (jobs, "POST")]
        self.put_routes_on_latest()

    def put_routes_on_latest(self) -> None:
        """What every ``chalice deploy`` does: it re-imports the API's definition, whose routes invoke $LATEST."""
        for resource, method in self.routes:
            self.apigateway.put_method(restApiId=self.api_id, resourceId=resource, httpMethod=method,
                                       authorizationType="NONE")
            self.apigateway.put_integration(restApiId=self.api_id, resourceId=resource, httpMethod=method,
                                            type="AWS_PROXY", integrationHttpMethod="POST",
                                            uri=provisioned.integration_uri(self.function_arn))
        self.apigateway.create_deployment(restApiId=self.api_id, stageName="api")

    def new_code(self, version: str) -> None:
        self.code_sha256 = self.lambda_client.update_function_code(FunctionName="docpipe-dev",
                                                                   ZipFile=code(version))["CodeSha256"]

    def uris(self) -> set[str]:
        return {self.apigateway.get_integration(restApiId=self.api_id, resourceId=resource,
                                                httpMethod=method)["uri"] for resource, method in self.routes}

    def provision(self, lambda_client: Any = None, instances: int = 2) -> str:
        return provisioned.provision_api(lambda_client or self.lambda_client, self.apigateway,
                                         function_arn=self.function_arn, code_sha256=self.code_sha256,
                                         rest_api_id=self.api_id, api_stage="api", instances=instances, xray=True,
                                         poll_seconds=0.01, attempts=5)


def test_every_route_moves_to_the_alias_once_its_instances_are_provisioned(aws):
    deployed = ChaliceDeployed(aws)
    deployments_before = len(deployed.apigateway.get_deployments(restApiId=deployed.api_id)["items"])

    summary = deployed.provision(instances=2)

    alias = deployed.lambda_client.get_alias(FunctionName="docpipe-dev", Name=provisioned.ALIAS)
    version = deployed.lambda_client.get_function_configuration(FunctionName="docpipe-dev",
                                                                Qualifier=alias["FunctionVersion"])
    assert version["CodeSha256"] == deployed.code_sha256
    config = deployed.lambda_client.get_provisioned_concurrency_config(FunctionName="docpipe-dev",
                                                                       Qualifier=provisioned.ALIAS)
    assert (config["RequestedProvisionedConcurrentExecutions"], config["Status"]) == (2, "READY")
    assert deployed.uris() == {provisioned.integration_uri(alias["AliasArn"])}
    # The routes' change is live only once the stage is deployed again.
    assert len(deployed.apigateway.get_deployments(restApiId=deployed.api_id)["items"]) == deployments_before + 1
    [grant] = json.loads(deployed.lambda_client.get_policy(FunctionName="docpipe-dev",
                                                           Qualifier=provisioned.ALIAS)["Policy"])["Statement"]
    assert grant["Principal"] == {"Service": "apigateway.amazonaws.com"}
    assert grant["Condition"]["ArnLike"]["AWS:SourceArn"].endswith(f":{deployed.api_id}/*")
    assert summary.startswith(f"2 provisioned on alias {provisioned.ALIAS} (version {alias['FunctionVersion']})")


def test_after_chalice_puts_the_routes_back_a_redeploy_moves_them_again_and_keeps_two_versions(aws):
    deployed = ChaliceDeployed(aws)
    deployed.provision()
    for release in ("2", "3", "4"):
        deployed.new_code(release)
        deployed.put_routes_on_latest()
        assert deployed.uris() == {provisioned.integration_uri(deployed.function_arn)}

        deployed.provision()

    alias = deployed.lambda_client.get_alias(FunctionName="docpipe-dev", Name=provisioned.ALIAS)
    assert deployed.uris() == {provisioned.integration_uri(alias["AliasArn"])}
    versions = {v["Version"] for v in deployed.lambda_client.list_versions_by_function(
        FunctionName="docpipe-dev")["Versions"]} - {"$LATEST"}
    assert len(versions) == provisioned.KEEP_VERSIONS and alias["FunctionVersion"] in versions


class FailingProvisioning:
    """The emulator's Lambda, except that provisioning ends FAILED as it does when the account lacks concurrency."""

    def __init__(self, lambda_client: Any) -> None:
        self._client = lambda_client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def get_provisioned_concurrency_config(self, **kwargs: Any) -> dict[str, Any]:
        return {"Status": "FAILED", "StatusReason": "FUNCTION_ERROR_INIT_FAILURE"}


def test_a_failed_provisioning_stops_the_deploy_and_leaves_every_route_on_the_working_function(aws):
    deployed = ChaliceDeployed(aws)

    with pytest.raises(provisioned.ProvisioningError, match="FUNCTION_ERROR_INIT_FAILURE") as raised:
        deployed.provision(FailingProvisioning(deployed.lambda_client))

    assert "still answers" in str(raised.value)
    assert deployed.uris() == {provisioned.integration_uri(deployed.function_arn)}


def test_a_stage_set_to_zero_releases_the_instances_an_earlier_deploy_provisioned(aws):
    deployed = ChaliceDeployed(aws)
    assert provisioned.release_api(deployed.lambda_client, deployed.function_arn) == "off"
    deployed.provision()

    assert "released" in provisioned.release_api(deployed.lambda_client, deployed.function_arn)

    with pytest.raises(deployed.lambda_client.exceptions.ProvisionedConcurrencyConfigNotFoundException):
        deployed.lambda_client.get_provisioned_concurrency_config(FunctionName="docpipe-dev",
                                                                  Qualifier=provisioned.ALIAS)


def test_an_api_none_of_whose_routes_invoke_the_function_is_refused(aws):
    deployed = ChaliceDeployed(aws)
    other = deployed.function_arn.replace("function:docpipe-dev", "function:someone-else")
    for resource, method in deployed.routes:
        deployed.apigateway.put_integration(restApiId=deployed.api_id, resourceId=resource, httpMethod=method,
                                            type="AWS_PROXY", integrationHttpMethod="POST",
                                            uri=provisioned.integration_uri(other))

    with pytest.raises(provisioned.ProvisioningError, match="no route"):
        provisioned.route_to_alias(deployed.apigateway, deployed.api_id, deployed.function_arn)
