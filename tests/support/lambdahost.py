"""A stand-in for the Lambda Python runtime, hosting one function from its unpacked deployment artefacts.

Run it as Lambda would run the function, in a bare interpreter of the runtime's version that sees nothing but the
standard library until this script builds ``sys.path`` the way Lambda does: the function's code (``/var/task``), the
layer (``/opt/python/lib/pythonX.Y/site-packages``, ``/opt/python``) and the runtime's own boto3::

    python3.13 -I -S tests/support/lambdahost.py --task DIR --opt DIR --runtime DIR --handler app.process_jobs \
        --function-name docpipe-dev-process_jobs --memory 1769 --timeout 300

The function is initialised once (a cold start) and then invoked once per JSON line on stdin, ``{"event": {...}}``;
each answer is one JSON line on the original stdout, ``{"result": ...}`` or ``{"error": ...}``. Whatever the
function prints or logs goes to stderr, as it would go to CloudWatch. Standard library only.
"""

import argparse
import importlib
import json
import os
import sys
import time
import traceback
import uuid


class LambdaContext:
    """The attributes and method of Lambda's context object that handlers and Powertools use."""

    def __init__(self, function_name, memory_mb, timeout_seconds, region, account):
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{account}:function:{function_name}"
        self.memory_limit_in_mb = str(memory_mb)
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = time.strftime("%Y/%m/%d/[$LATEST]") + uuid.uuid4().hex
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def main():
    parser = argparse.ArgumentParser()
    for name in ("task", "opt", "runtime", "handler", "function-name", "region", "account"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--memory", type=int, required=True)
    parser.add_argument("--timeout", type=int, required=True)
    args = parser.parse_args()
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    sys.path[:0] = [args.task, os.path.join(args.opt, "python", "lib", f"python{version}", "site-packages"),
                    os.path.join(args.opt, "python"), args.runtime]
    answers = os.fdopen(os.dup(1), "w")
    # The function's output, and that of any process it forks, goes to the log, never into the answers.
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    os.chdir(args.task)

    module_name, function_name = args.handler.rsplit(".", 1)
    started = time.monotonic()
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
    except Exception:
        answers.write(json.dumps({"ready": False, "error": traceback.format_exc()}) + "\n")
        answers.flush()
        return 1
    answers.write(json.dumps({"ready": True, "init_ms": round((time.monotonic() - started) * 1000, 1),
                              "sys_path": sys.path}) + "\n")
    answers.flush()
    for line in sys.stdin:
        request = json.loads(line)
        context = LambdaContext(args.function_name, args.memory, args.timeout, args.region, args.account)
        try:
            answer = {"result": handler(request["event"], context)}
        except Exception as exc:
            answer = {"error": {"type": type(exc).__name__, "message": str(exc), "trace": traceback.format_exc()}}
        sys.stderr.flush()
        answers.write(json.dumps(answer, default=str) + "\n")
        answers.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
