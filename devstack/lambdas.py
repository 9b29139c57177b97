"""The emulator's launcher: moto's server with Lambda invokes forwarded to the app process.

``python -m devstack.lambdas --invoke-url http://127.0.0.1:P -H 127.0.0.1 -p 4566`` starts moto as ``moto.server``
does, with two changes made before it serves: Step Functions executions really run (moto's ASL interpreter), and
its Lambda (the simple backend, no Docker) forwards each invocation — function name and payload — over loopback
HTTP to the app process, where ``devstack.dispatcher`` runs the handler as it runs the SQS worker. So a state
machine's Task runs docpipe's own stage function, and a killed app fails the task as a crashed Lambda would.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from typing import Any

# A stage may run as long as a Lambda function may; the interpreter's own call waits for it.
INVOKE_TIMEOUT_SECONDS = 900


def forward(invoke_url: str, function_name: str, body: Any, response_headers: dict[str, str]) -> bytes:
    """Run ``function_name`` in the app process; a handler's exception comes back as Lambda's unhandled error."""
    name = function_name.rsplit(":function:", 1)[-1].split(":", 1)[0]
    data = body if isinstance(body, bytes) else (body or "{}").encode("utf-8")
    request = urllib.request.Request(f"{invoke_url}/invoke/{name}", data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=INVOKE_TIMEOUT_SECONDS) as response:
            if response.headers.get("X-Function-Error"):
                response_headers["x-amz-function-error"] = response.headers["X-Function-Error"]
            return response.read()
    except (urllib.error.URLError, OSError) as exc:
        # The app process is gone (killed, restarting): as a Lambda runtime that died mid-invocation.
        response_headers["x-amz-function-error"] = "Unhandled"
        return json.dumps({"errorType": "Runtime.ExitError", "errorMessage": f"the function's process is gone: "
                                                                            f"{exc}"}).encode("utf-8")


def _reuse_lambda_client() -> None:
    """moto's interpreter builds a new boto3 client for every Lambda task (tens of milliseconds of CPU, more on a busy
    machine), where Step Functions on AWS has its invoke path ready: one client per region, reused, as on AWS."""
    import functools

    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

    build = lambda_eval_utils.boto_client_for

    @functools.cache
    def client(region: str, service: str) -> Any:
        return build(region=region, service=service)

    def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        return client(region, service)

    lambda_eval_utils.boto_client_for = boto_client_for


def main(argv: list[str]) -> None:
    invoke_url = argv[argv.index("--invoke-url") + 1]
    server_args = [a for i, a in enumerate(argv) if a != "--invoke-url" and (i == 0 or argv[i - 1] != "--invoke-url")]
    from moto.awslambda_simple.models import LambdaSimpleBackend
    from moto.core.config import default_user_config

    default_user_config["stepfunctions"] = {"execute_state_machine": True}
    default_user_config["lambda"] = {"use_docker": False}

    def invoke(self: Any, function_name: str, qualifier: str | None, body: Any, headers: Any,
               response_headers: Any) -> bytes:
        return forward(invoke_url, function_name, body, response_headers)

    LambdaSimpleBackend.invoke = invoke  # type: ignore[method-assign]
    _reuse_lambda_client()
    from moto.server import main as serve

    from devstack.motoserver import install_dispatcher

    install_dispatcher()
    serve(server_args)


if __name__ == "__main__":
    main(sys.argv[1:])
