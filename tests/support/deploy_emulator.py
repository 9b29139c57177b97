"""The AWS emulator the deploy tests run against: moto in server mode, with what a real deploy needs of it.

``python -m tests.support.deploy_emulator --denials FILE`` starts it on a free port of 127.0.0.1 and prints that
port. It
differs from plain moto 5.2.5 where moto differs from AWS in a way the deploy or the IAM check would trip on:

* S3 accepts bucket-notification filter rules named ``Prefix``/``Suffix`` (as AWS does; ``chalice deploy`` sends
  them capitalised, and moto asserts lower case);
* API Gateway imports a Swagger 2.0 definition (``chalice deploy`` sends one; moto knows only OpenAPI 3);
* Lambda answers ``GetLayerVersionByArn`` (a redeploy asks it; moto implements only ``GetLayerVersion``);
* IAM enforcement (switched on with ``POST /moto-api/reset-auth`` ``0``) checks the *resource* of DynamoDB and
  Secrets Manager calls too, where moto checks only the action, and of SQS ``GetQueueUrl`` (moto knows the queue
  only from a queue URL), and matches ``*`` and ``?`` in policy resources the way IAM does (moto turns the pattern
  into an unescaped regular expression);
* every request IAM denies is appended to ``--denials`` as one JSON line (principal, action, resource), so a test
  can prove that nothing was denied instead of hoping the code under test did not swallow an AccessDenied.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
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


def _iam_glob(pattern: str, value: str) -> re.Match[str] | None:
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.match(f"^{regex}$", value)


def _patch_iam(denials_path: str) -> None:
    from moto.dynamodb.responses import DynamoHandler
    from moto.iam import access_control
    from moto.secretsmanager.responses import SecretsManagerResponse
    from moto.sqs.responses import SQSResponse

    def table_arn(self: Any) -> str:
        table = (getattr(self, "body", None) or {}).get("TableName")
        if not table:
            return "*"
        return f"arn:aws:dynamodb:{self.region}:{self.current_account}:table/{table}"

    def secret_arn(self: Any) -> str:
        secret_id = self._get_param("SecretId")
        if not secret_id:
            return "*"
        secret = self.backend.secrets.get(secret_id)  # by name or ARN
        return secret.arn if secret is not None else "*"

    original_queue_name = SQSResponse._get_queue_name

    def queue_name(self: Any) -> str:
        return self._get_param("QueueName") or original_queue_name(self)

    SQSResponse._get_queue_name = queue_name
    DynamoHandler._determine_resource = table_arn
    SecretsManagerResponse._determine_resource = secret_arn
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
