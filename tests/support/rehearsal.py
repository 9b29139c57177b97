"""What the deploy rehearsal is made of: a private AWS emulator, clean checkouts of the project, ``make deploy``'s own
code path run against the emulator, and each deployed function hosted from its unpacked artefacts.

The events handed to the functions are built from AWS's payloads in ``tests/events``: an API Gateway REST proxy
request, an SQS batch made of messages really received from the queue, an S3 ``ObjectCreated`` notification and an
EventBridge scheduled event.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import boto3

from tests.support import PROJECT

DEPLOY_PYTHON = PROJECT / ".venv-deploy" / "bin" / "python"
LAMBDA_RUNTIME_DIR = PROJECT / "build" / "lambda-runtime"
REGION = "us-east-1"


def require_deploy_environment() -> None:
    """The rehearsal needs what ``make test`` installs first: the pinned Python's virtualenv and Lambda's boto3."""
    missing = [str(p.relative_to(PROJECT)) for p in (DEPLOY_PYTHON, LAMBDA_RUNTIME_DIR) if not p.exists()]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} missing: run `make test` (or `make build/lambda-runtime/.installed`)")


class Emulator:
    """tests/support/deploy_emulator.py in a process of its own, listening on 127.0.0.1."""

    def __init__(self, workdir: Path) -> None:
        self.denials_file = workdir / "denials.jsonl"
        self.denials_file.touch()
        self._log = open(workdir / "emulator.log", "ab")
        self._process = subprocess.Popen([sys.executable, "-m", "tests.support.deploy_emulator", "--denials",
                                          str(self.denials_file)], cwd=PROJECT, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self._log)
        port = self._process.stdout.readline().decode().strip()
        if not port.isdigit():
            self.stop()
            raise RuntimeError(f"the emulator did not start (see {workdir / 'emulator.log'})")
        self.url = f"http://127.0.0.1:{port}"

    def enforce_iam(self, enforce: bool) -> None:
        """From now on every request is (or is no longer) checked against its caller's IAM policies."""
        # Not form-encoded: moto reads the raw body, which a form content type would have parsed away.
        request = urllib.request.Request(f"{self.url}/moto-api/reset-auth", data=b"0" if enforce else b"inf",
                                         method="POST", headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=10):
            pass

    @contextlib.contextmanager
    def without_iam(self):
        """IAM enforcement paused, for the operator's own calls to Lambda and API Gateway: moto cannot verify the
        signatures of those REST services' requests (the functions under test call neither)."""
        self.enforce_iam(False)
        try:
            yield
        finally:
            self.enforce_iam(True)

    def denials(self) -> list[dict[str, str]]:
        return [json.loads(line) for line in self.denials_file.read_text().splitlines() if line.strip()]

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()


def clean_checkout(destination: Path) -> Path:
    """The project as a fresh clone has it (tracked and new files, nothing git ignores), at ``destination``.

    Chalice's package cache (.chalice/deployments, keyed by requirements.txt and the app's files) is shared with
    the working copy, so each checkout does not download and unpack the dependencies again.
    """
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=PROJECT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = PROJECT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    cache = PROJECT / ".chalice" / "deployments"
    cache.mkdir(parents=True, exist_ok=True)
    (destination / ".chalice" / "deployments").symlink_to(cache, target_is_directory=True)
    return destination


def aws_env(emulator: Emulator, credentials: dict[str, str], home: Path) -> dict[str, str]:
    """A process environment that reaches the emulator with ``credentials`` and nothing of the developer's AWS."""
    env = {key: value for key, value in os.environ.items() if key.startswith(("PIP_", "LANG", "LC_"))}
    env.update(PATH=os.environ.get("PATH", "/usr/bin:/bin"), HOME=str(home), AWS_ENDPOINT_URL=emulator.url,
               AWS_REGION=REGION, AWS_DEFAULT_REGION=REGION, AWS_CONFIG_FILE=str(home / "no-aws-config"),
               AWS_SHARED_CREDENTIALS_FILE=str(home / "no-aws-credentials"), **credentials)
    # pip keeps its download cache under the developer's home; Chalice's packager runs pip.
    env["PIP_CACHE_DIR"] = os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))
    return env


def client(emulator: Emulator, service: str, credentials: dict[str, str]) -> Any:
    return boto3.client(service, endpoint_url=emulator.url, region_name=REGION,
                        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
                        aws_session_token=credentials.get("AWS_SESSION_TOKEN"))


def create_admin(emulator: Emulator) -> dict[str, str]:
    """An IAM user allowed everything: the operator who deploys, and the rehearsal's own bookkeeping."""
    iam = client(emulator, "iam", {"AWS_ACCESS_KEY_ID": "bootstrap", "AWS_SECRET_ACCESS_KEY": "bootstrap"})
    iam.create_user(UserName="operator")
    iam.put_user_policy(UserName="operator", PolicyName="everything", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="operator")["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def assume(emulator: Emulator, admin: dict[str, str], role_arn: str) -> dict[str, str]:
    """Temporary credentials of a function's execution role, as Lambda hands them to the function."""
    session = client(emulator, "sts", admin).assume_role(RoleArn=role_arn, RoleSessionName="rehearsal")
    creds = session["Credentials"]
    return {"AWS_ACCESS_KEY_ID": creds["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"],
            "AWS_SESSION_TOKEN": creds["SessionToken"]}


def run_make_step(project_dir: Path, module: str, env: dict[str, str], *args: str,
                  stdin: str | None = None) -> subprocess.CompletedProcess:
    """``python -m scripts.<module>`` in the checkout, with the pinned Python: what ``make deploy`` runs."""
    return subprocess.run([str(DEPLOY_PYTHON), "-m", f"scripts.{module}", "--project-dir", str(project_dir), *args],
                          cwd=project_dir, env=env, input=stdin, capture_output=True, text=True, timeout=900)


class LambdaHost:
    """One deployed function, hosted by tests/support/lambdahost.py from the unpacked artefacts (one cold start, then
    warm)."""

    def __init__(self, *, configuration: dict[str, Any], task: Path, opt: Path, credentials: dict[str, str],
                 emulator: Emulator, account: str, log: Path, overrides: dict[str, str] | None = None) -> None:
        self.name = configuration["FunctionName"]
        env = {
            **configuration.get("Environment", {}).get("Variables", {}),
            # What the Lambda runtime sets for every function.
            "AWS_LAMBDA_FUNCTION_NAME": self.name, "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(configuration["MemorySize"]),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{self.name}", "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION, "AWS_EXECUTION_ENV": f"AWS_Lambda_{configuration['Runtime']}",
            "LAMBDA_TASK_ROOT": str(task), "_HANDLER": configuration["Handler"], "TZ": ":UTC",
            "LANG": "en_US.UTF-8", "PATH": "/usr/local/bin:/usr/bin:/bin", "TMPDIR": str(log.parent / "tmp"),
            # Only the emulator is not Lambda's: its endpoint, and the role's credentials it knows.
            "AWS_ENDPOINT_URL": emulator.url, **credentials, **(overrides or {}),
        }
        (log.parent / "tmp").mkdir(exist_ok=True)
        self._log = open(log, "ab")
        self._process = subprocess.Popen(
            [str(DEPLOY_PYTHON), "-I", "-S", str(PROJECT / "tests" / "support" / "lambdahost.py"), "--task", str(task),
             "--opt", str(opt), "--runtime", str(LAMBDA_RUNTIME_DIR), "--handler", configuration["Handler"],
             "--function-name", self.name, "--memory", str(configuration["MemorySize"]),
             "--timeout", str(configuration["Timeout"]), "--region", REGION, "--account", account],
            cwd=task, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True)
        self.ready = self._answer(120)
        if not self.ready.get("ready"):
            raise RuntimeError(f"{self.name} failed its cold start:\n{self.ready.get('error')}")

    def _answer(self, timeout: float) -> dict[str, Any]:
        readable, _, _ = select.select([self._process.stdout], [], [], timeout)
        line = self._process.stdout.readline() if readable else ""
        if not line:
            raise RuntimeError(f"{self.name} did not answer within {timeout} s (exit code {self._process.poll()})")
        return json.loads(line)

    def invoke(self, event: dict[str, Any], timeout: float = 180) -> Any:
        """The handler's return value; an exception it raised fails the caller with its traceback."""
        self._process.stdin.write(json.dumps({"event": event}) + "\n")
        self._process.stdin.flush()
        answer = self._answer(timeout)
        if "error" in answer:
            raise AssertionError(f"{self.name} raised {answer['error']['type']}: {answer['error']['trace']}")
        return answer["result"]

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()
