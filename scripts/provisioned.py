"""Provisioned concurrency for the API function: instances Lambda keeps initialised, so a request never waits for a
cold start.

Chalice cannot configure it (chalice #1322), and Lambda provisions only a published version or an alias of one, never
``$LATEST``, while Chalice points every API Gateway route at the unqualified function (``$LATEST``) and puts it back
there on each deploy (it re-imports the API's definition). So after Chalice's deploy, for a stage whose
``DOCPIPE_API_PROVISIONED_CONCURRENCY`` is above 0, ``provision_api``:

1. waits for the function's last update to settle and publishes a version of exactly the checked code (Lambda
   refuses to publish when the code's digest is not the one given);
2. points the alias ``live`` at that version and provisions it, waiting until Lambda reports the instances READY;
3. lets API Gateway invoke the alias, points every route's integration at it and deploys the API stage again;
4. deletes the versions before the previous one, which nothing can reach any more.

Until step 3 requests reach ``$LATEST``: the same code, without the provisioned instances, so a deploy never breaks the
API and a provisioning failure leaves it working, as on a stage without the setting. With the setting at 0,
``release_api`` removes the alias's provisioned instances, the only part that costs anything while idle::

    summary = provision_api(lambda_client, apigateway, function_arn=arn, code_sha256=digest, rest_api_id=api_id,
                            api_stage="api", instances=2, xray=True)
"""

from __future__ import annotations

import time
from typing import Any

ALIAS = "live"
# Versions kept: the alias's and the one before it, to point the alias back by hand if a release goes wrong.
KEEP_VERSIONS = 2
# Lambda accepts a change to a function only once its last update has settled.
SETTLED_UPDATE = {"Successful", "Failed"}


class ProvisioningError(RuntimeError):
    """The API's provisioned concurrency could not be set up; the message says why and what still works."""


def integration_uri(function_arn: str) -> str:
    """What API Gateway invokes for a Lambda proxy route: the function (or its alias) by ARN."""
    partition, region = function_arn.split(":")[1], function_arn.split(":")[3]
    return f"arn:{partition}:apigateway:{region}:lambda:path/2015-03-31/functions/{function_arn}/invocations"


def _unqualified(function_arn: str) -> str:
    """The function's ARN without a version or alias (``...:function:name``)."""
    return ":".join(function_arn.split(":")[:7])


def _settle(lambda_client: Any, function_arn: str, poll_seconds: float, attempts: int) -> None:
    for attempt in range(attempts):
        configuration = lambda_client.get_function_configuration(FunctionName=function_arn)
        if configuration.get("LastUpdateStatus", "Successful") in SETTLED_UPDATE:
            return
        if attempt + 1 < attempts:
            time.sleep(poll_seconds)
    raise ProvisioningError(f"{function_arn} stayed {configuration.get('LastUpdateStatus')}")


def _point_alias(lambda_client: Any, function_arn: str, version: str) -> str:
    """Create the alias or move it to ``version``; returns the alias's ARN."""
    name = function_arn.rsplit(":", 1)[-1]
    try:
        lambda_client.get_alias(FunctionName=name, Name=ALIAS)
    except lambda_client.exceptions.ResourceNotFoundException:
        return lambda_client.create_alias(FunctionName=name, Name=ALIAS, FunctionVersion=version,
                                          Description="What API Gateway invokes: provisioned instances")["AliasArn"]
    return lambda_client.update_alias(FunctionName=name, Name=ALIAS, FunctionVersion=version)["AliasArn"]


def _provision(lambda_client: Any, function_arn: str, instances: int, poll_seconds: float, attempts: int) -> None:
    """Ask for ``instances`` on the alias and wait for READY (Lambda initialises each one, minutes at most)."""
    name = function_arn.rsplit(":", 1)[-1]
    lambda_client.put_provisioned_concurrency_config(FunctionName=name, Qualifier=ALIAS,
                                                     ProvisionedConcurrentExecutions=instances)
    for attempt in range(attempts):
        config = lambda_client.get_provisioned_concurrency_config(FunctionName=name, Qualifier=ALIAS)
        if config["Status"] == "READY":
            return
        if config["Status"] == "FAILED":
            raise ProvisioningError(f"Lambda could not provision {instances} instances of {name}:{ALIAS}: "
                                    f"{config.get('StatusReason', 'no reason given')}. The API still answers, from "
                                    f"$LATEST without provisioned instances")
        if attempt + 1 < attempts:
            time.sleep(poll_seconds)
    raise ProvisioningError(f"the provisioned instances of {name}:{ALIAS} were not READY after "
                            f"{poll_seconds * attempts:.0f} s (status {config['Status']}); the API still answers, "
                            f"from $LATEST without them")


def _allow_api_gateway(lambda_client: Any, function_arn: str, rest_api_id: str) -> None:
    """API Gateway may invoke the alias (a permission of its own: the function's does not cover its aliases)."""
    name = function_arn.rsplit(":", 1)[-1]
    fields = function_arn.split(":")
    source = f"arn:{fields[1]}:execute-api:{fields[3]}:{fields[4]}:{rest_api_id}/*"
    try:
        lambda_client.add_permission(FunctionName=name, Qualifier=ALIAS, StatementId=f"docpipe-api-{rest_api_id}",
                                     Action="lambda:InvokeFunction", Principal="apigateway.amazonaws.com",
                                     SourceArn=source)
    except lambda_client.exceptions.ResourceConflictException:
        pass  # granted by an earlier deploy: the statement's id names the API


def _routes(apigateway: Any, rest_api_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(resource id, method, integration) of every route of the API."""
    found = []
    for page in apigateway.get_paginator("get_resources").paginate(restApiId=rest_api_id):
        for resource in page["items"]:
            for method in resource.get("resourceMethods", {}):
                integration = apigateway.get_integration(restApiId=rest_api_id, resourceId=resource["id"],
                                                         httpMethod=method)
                found.append((resource["id"], method, integration))
    return found


def route_to_alias(apigateway: Any, rest_api_id: str, function_arn: str) -> int:
    """Point every route that invokes the function at its alias; returns how many routes moved."""
    unqualified = integration_uri(_unqualified(function_arn))
    aliased = integration_uri(f"{_unqualified(function_arn)}:{ALIAS}")
    moved = reached = 0
    for resource_id, method, integration in _routes(apigateway, rest_api_id):
        if integration.get("uri") == unqualified:
            apigateway.update_integration(restApiId=rest_api_id, resourceId=resource_id, httpMethod=method,
                                          patchOperations=[{"op": "replace", "path": "/uri", "value": aliased}])
            moved += 1
        reached += integration.get("uri") in (unqualified, aliased)
    if not reached:
        raise ProvisioningError(f"no route of API {rest_api_id} invokes {_unqualified(function_arn)}")
    return moved


def _prune_versions(lambda_client: Any, function_arn: str) -> list[str]:
    name = function_arn.rsplit(":", 1)[-1]
    versions = [v["Version"] for page in lambda_client.get_paginator("list_versions_by_function").paginate(
        FunctionName=name) for v in page["Versions"] if v["Version"] != "$LATEST"]
    old = sorted(versions, key=int)[:-KEEP_VERSIONS]
    for version in old:
        lambda_client.delete_function(FunctionName=name, Qualifier=version)
    return old


def provision_api(lambda_client: Any, apigateway: Any, *, function_arn: str, code_sha256: str, rest_api_id: str,
                  api_stage: str, instances: int, xray: bool, poll_seconds: float = 5.0,
                  attempts: int = 120) -> str:
    """The whole sequence of the module docstring; returns what the deploy's summary says about it."""
    function_arn = _unqualified(function_arn)
    _settle(lambda_client, function_arn, poll_seconds, attempts)
    try:
        version = lambda_client.publish_version(FunctionName=function_arn, CodeSha256=code_sha256,
                                                Description="Published by make deploy for provisioned concurrency")
    except lambda_client.exceptions.InvalidParameterValueException as exc:
        raise ProvisioningError(f"Lambda would not publish the checked code of {function_arn}: {exc}") from None
    _point_alias(lambda_client, function_arn, version["Version"])
    _provision(lambda_client, function_arn, instances, poll_seconds, attempts)
    _allow_api_gateway(lambda_client, function_arn, rest_api_id)
    if route_to_alias(apigateway, rest_api_id, function_arn):
        apigateway.create_deployment(restApiId=rest_api_id, stageName=api_stage, tracingEnabled=xray,
                                     description=f"routes on alias {ALIAS} (provisioned concurrency)")
    pruned = _prune_versions(lambda_client, function_arn)
    return (f"{instances} provisioned on alias {ALIAS} (version {version['Version']}), every route invokes it"
            + (f"; versions {', '.join(pruned)} deleted" if pruned else ""))


def release_api(lambda_client: Any, function_arn: str) -> str:
    """No provisioned instances (the stage's setting is 0): remove any an earlier deploy made, since they cost by
    the hour. Chalice's deploy has already pointed the routes back at ``$LATEST``."""
    name = _unqualified(function_arn).rsplit(":", 1)[-1]
    try:
        lambda_client.delete_provisioned_concurrency_config(FunctionName=name, Qualifier=ALIAS)
    except (lambda_client.exceptions.ProvisionedConcurrencyConfigNotFoundException,
            lambda_client.exceptions.ResourceNotFoundException):
        return "off"
    return f"off (the instances provisioned on alias {ALIAS} were released)"
