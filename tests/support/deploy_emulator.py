"""The AWS emulator the deploy tests run against: moto in server mode, with what a real deploy needs of it.

``python -m tests.support.deploy_emulator --denials FILE`` starts it on a free port of 127.0.0.1 and prints that
port. It
differs from plain moto 5.2.5 where moto differs from AWS in a way the deploy or the IAM check would trip on:

* S3 accepts bucket-notification filter rules named ``Prefix``/``Suffix`` (as AWS does; ``chalice deploy`` sends
  them capitalised, and moto asserts lower case);
* API Gateway imports a Swagger 2.0 definition (``chalice deploy`` sends one; moto knows only OpenAPI 3);
* Lambda answers ``GetLayerVersionByArn`` (a redeploy asks it; moto implements only ``GetLayerVersion``);
* Lambda keeps provisioned concurrency configurations (``Put``/``Get``/``DeleteProvisionedConcurrencyConfig``, READY
  at once), API Gateway applies ``UpdateIntegration``'s ``replace /uri``, and Cost Explorer lists and activates
  cost-allocation tags (every tag key the deploy asks about is known, inactive until activated): the deploy's
  provisioned-concurrency and cost-allocation steps call them, and moto implements none of them;
* EventBridge matches no event put on a bus to a rule that only has a schedule (moto treats the missing pattern
  as one that matches everything, and then fails the ``PutEvents`` on the keep-warm rule's Lambda target, which it
  cannot invoke);
* Lambda never reuses the number of a deleted version (moto numbers a new one after the count of those left, and so
  overwrites the newest once the deploy has deleted old ones);
* IAM enforcement (switched on with ``POST /moto-api/reset-auth`` ``0``) checks the *resource* of DynamoDB (an
  index's own ARN for a query of it), Secrets Manager and EventBridge ``PutEvents`` calls too (the event bus), where
  moto checks only the action, and of SQS ``GetQueueUrl`` (moto knows the queue only from a queue URL), and matches
  ``*`` and ``?`` in policy resources the way IAM does (moto turns the pattern into an unescaped regular expression);
* every request IAM denies is appended to ``--denials`` as one JSON line (principal, action, resource), so a test
  can prove that nothing was denied instead of hoping the code under test did not swallow an AccessDenied.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import signal
import sys
import threading
import time
from typing import Any

_FILTER_NAME = re.compile(r"<Name>(Prefix|Suffix)</Name>")


def _patch_s3_filter_names() -> None:
    from moto.s3 import responses

    original = responses.S3Response._notification_config_from_body

    def lower_case_names(self: Any) -> Any:
        if isinstance(self.body, bytes):
            self.body = _FILTER_NAME.sub(lambda m: f"<Name>{m.group(1).lower()}</Name>", self.body.decode()).encode()
        elif isinstance(self.body, str):
            self.body = _FILTER_NAME.sub(lambda m: f"<Name>{m.group(1).lower()}</Name>", self.body)
        return original(self)

    responses.S3Response._notification_config_from_body = lower_case_names


def _patch_swagger_import() -> None:
    from moto.apigateway import models

    def as_openapi3(document: dict[str, Any]) -> dict[str, Any]:
        if not document.get("swagger"):
            return document
        converted = {key: value for key, value in document.items() if key != "swagger"}
        converted["openapi"] = "3.0.1"
        converted["info"] = {"description": "", **document.get("info", {})}
        return converted

    original_import = models.APIGatewayBackend.import_rest_api
    original_put = models.APIGatewayBackend.put_rest_api
    models.APIGatewayBackend.import_rest_api = (
        lambda self, document, fail_on_warnings: original_import(self, as_openapi3(document), fail_on_warnings))
    models.APIGatewayBackend.put_rest_api = (
        lambda self, api_id, document, fail_on_warnings, mode="merge":
        original_put(self, api_id, as_openapi3(document), fail_on_warnings, mode))


def _patch_layer_by_arn() -> None:
    from moto.awslambda.responses import LambdaResponse

    def get_layer_version_by_arn(self: Any) -> str:
        _, name, version = self._get_param("Arn").rsplit(":", 2)
        return json.dumps(self.backend.get_layer_version(name, version).get_layer_version())

    LambdaResponse.get_layer_version_by_arn = get_layer_version_by_arn


def _patch_provisioned_concurrency() -> None:
    from moto.awslambda import urls
    from moto.awslambda.responses import LambdaResponse

    urls.url_paths[r"{0}/(?P<api_version>[^/]+)/functions/(?P<function_name>[\w_:%-]+)/provisioned-concurrency/?$"] = (
        LambdaResponse.dispatch)
    configs: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    lock = threading.Lock()

    def key(self: Any) -> tuple[str, str, str, str]:
        function = self.path.rstrip("/").split("/")[-2]
        # The function must exist, by name or ARN, as on AWS (moto raises its own 404 otherwise).
        name = self.backend.get_function(function).function_name
        return self.current_account, self.region, name, self._get_param("Qualifier")

    def not_found(qualifier: str) -> tuple[int, dict[str, str], str]:
        error = "ProvisionedConcurrencyConfigNotFoundException"
        # moto takes a response's status from its "status" header.
        return 404, {"status": "404", "x-amzn-errortype": error}, json.dumps(
            {"Type": "User", "message": f"No Provisioned Concurrency Config found for this function ({qualifier})"})

    def put_config(self: Any) -> tuple[int, dict[str, str], str]:
        wanted = json.loads(self.body)["ProvisionedConcurrentExecutions"]
        config = {"RequestedProvisionedConcurrentExecutions": wanted, "Status": "READY",
                  "AvailableProvisionedConcurrentExecutions": wanted,
                  "AllocatedProvisionedConcurrentExecutions": wanted,
                  "LastModified": time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime())}
        with lock:
            configs[key(self)] = config
        return 202, {"status": "202"}, json.dumps(config)

    def get_config(self: Any) -> tuple[int, dict[str, str], str]:
        with lock:
            config = configs.get(key(self))
        return (200, {"status": "200"}, json.dumps(config)) if config else not_found(self._get_param("Qualifier"))

    def delete_config(self: Any) -> tuple[int, dict[str, str], str]:
        with lock:
            config = configs.pop(key(self), None)
        return (204, {"status": "204"}, "") if config else not_found(self._get_param("Qualifier"))

    LambdaResponse.put_provisioned_concurrency_config = put_config
    LambdaResponse.get_provisioned_concurrency_config = get_config
    LambdaResponse.delete_provisioned_concurrency_config = delete_config


def _patch_version_numbers() -> None:
    """moto numbers a new version len(versions) + 1, so after a deletion it overwrites the newest; AWS never reuses a
    version number. moto's PublishVersion, numbering from the highest version ever published."""
    from moto.awslambda.models import LambdaStorage

    def publish_version(self: Any, name_or_arn: str, description: str = "") -> Any:
        function = self.get_function_by_name_or_arn_forbid_qualifier(name_or_arn)
        name = function.function_name
        if name not in self._functions or not self._functions[name]["latest"]:
            return None
        versions = self._functions[name]["versions"]
        if versions and not function.code_or_config_updated:
            return versions[-1]  # nothing changed since the last version: Lambda publishes none
        function.code_or_config_updated = False
        highest = self.__dict__.setdefault("_highest_version", {})
        highest[name] = max([highest.get(name, 0)] + [int(v.version) for v in versions]) + 1
        published = copy.copy(self._functions[name]["latest"])
        published.set_version(highest[name])
        if description:
            published.description = description
        versions.append(published)
        self._arns[published.function_arn] = published
        return published

    LambdaStorage.publish_version = publish_version


def _patch_update_integration() -> None:
    from moto.apigateway.responses import APIGatewayResponse

    def update_integration(self: Any) -> str:
        _, _, api_id, _, resource_id, _, method = self.path.split("/")[:7]
        integration = self.backend.get_integration(api_id, resource_id, method)
        for operation in json.loads(self.body).get("patchOperations", []):
            if (operation["op"], operation["path"]) != ("replace", "/uri"):
                raise NotImplementedError(f"UpdateIntegration {operation['op']} {operation['path']}")
            integration.uri = operation["value"]
        return json.dumps(integration.to_json())

    APIGatewayResponse.update_integration = update_integration


def _patch_cost_allocation_tags() -> None:
    from moto.ce.responses import CostExplorerResponse

    active: set[tuple[str, str]] = set()

    def list_tags(self: Any) -> str:
        keys = json.loads(self.body).get("TagKeys", [])
        return json.dumps({"CostAllocationTags": [
            {"TagKey": k, "Type": "UserDefined",
             "Status": "Active" if (self.current_account, k) in active else "Inactive"} for k in keys]})

    def update_tags(self: Any) -> str:
        for entry in json.loads(self.body)["CostAllocationTagsStatus"]:
            (active.add if entry["Status"] == "Active" else active.discard)((self.current_account, entry["TagKey"]))
        return json.dumps({"Errors": []})

    CostExplorerResponse.list_cost_allocation_tags = list_tags
    CostExplorerResponse.update_cost_allocation_tags_status = update_tags


def _patch_scheduled_rules() -> None:
    from moto.events.models import Rule

    original = Rule.send_to_targets

    def send_to_targets(self: Any, event: Any, transform_input: bool = True) -> None:
        if self.scheduled_expression and not self.event_pattern._pattern:
            return  # a schedule's rule fires on its schedule only, never for an event put on its bus
        original(self, event, transform_input)

    Rule.send_to_targets = send_to_targets


def _iam_glob(pattern: str, value: str) -> re.Match[str] | None:
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.match(f"^{regex}$", value)


def _patch_iam(denials_path: str) -> None:
    from moto.dynamodb.responses import DynamoHandler
    from moto.events.responses import EventsHandler
    from moto.iam import access_control
    from moto.secretsmanager.responses import SecretsManagerResponse
    from moto.sqs.responses import SQSResponse
    from moto.stepfunctions.responses import StepFunctionResponse

    def table_arn(self: Any) -> str:
        body = getattr(self, "body", None) or {}
        table, index = body.get("TableName"), body.get("IndexName")
        if not table:
            return "*"
        arn = f"arn:aws:dynamodb:{self.region}:{self.current_account}:table/{table}"
        return f"{arn}/index/{index}" if index else arn  # a query of an index is authorised on the index

    def secret_arn(self: Any) -> str:
        secret_id = self._get_param("SecretId")
        if not secret_id:
            return "*"
        secret = self.backend.secrets.get(secret_id)  # by name or ARN
        return secret.arn if secret is not None else "*"

    def state_machine_arn(self: Any) -> str:
        # StartExecution names its state machine; an execution's calls name the execution.
        return self._get_param("stateMachineArn") or self._get_param("executionArn") or "*"
    def bus_arn(self: Any) -> str:
        buses = {entry.get("EventBusName") or "default" for entry in self._get_param("Entries") or []}
        if len(buses) != 1:
            return "*"
        bus = buses.pop()
        return bus if bus.startswith("arn:") else f"arn:aws:events:{self.region}:{self.current_account}:event-bus/{bus}"

    original_queue_name = SQSResponse._get_queue_name

    def queue_name(self: Any) -> str:
        return self._get_param("QueueName") or original_queue_name(self)

    SQSResponse._get_queue_name = queue_name
    DynamoHandler._determine_resource = table_arn
    SecretsManagerResponse._determine_resource = secret_arn
    StepFunctionResponse._determine_resource = state_machine_arn
    EventsHandler._determine_resource = bus_arn
    access_control.IAMPolicyStatement._match = staticmethod(_iam_glob)

    lock = threading.Lock()
    original = access_control.IAMRequestBase.check_action_permitted

    def recording(self: Any, resource: str) -> None:
        try:
            original(self, resource)
        except Exception:
            entry = {"principal": getattr(self._access_key, "arn", "?"), "action": self._action, "resource": resource}
            with lock, open(denials_path, "a") as denials:
                denials.write(json.dumps(entry) + "\n")
            raise

    access_control.IAMRequestBase.check_action_permitted = recording


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--denials", required=True, help="file to append each denied request to")
    args = parser.parse_args(argv)
    _patch_s3_filter_names()
    _patch_swagger_import()
    _patch_layer_by_arn()
    _patch_provisioned_concurrency()
    _patch_version_numbers()
    _patch_update_integration()
    _patch_cost_allocation_tags()
    _patch_scheduled_rules()
    _patch_iam(args.denials)
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    print(server.get_host_and_port()[1], flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # The parent holds our stdin open while it needs us; EOF means it is gone.
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
