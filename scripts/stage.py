"""A docpipe stage as Chalice packages and deploys it: config.json plus what only the deploy knows.

config.json says how a stage runs (memory, timeouts, settings, tags). The deploy adds the facts of the account it
deploys into: the bucket's name, the API's URL once it exists, and each function's IAM policy rendered from its
template in ``.chalice/`` for that account, region and stage. They are laid over config.json in memory (the file
in the repository is never rewritten) and handed to Chalice's own CLI factory, so ``make package`` and
``make deploy`` run Chalice's packager and deployer on exactly the same configuration::

    facts = StageFacts(stage="dev", account="123456789012", region="eu-west-1", partition="aws",
                       bucket="docpipe-dev-123456789012-eu-west-1", llm_secret_arn="arn:aws:secretsmanager:...")
    factory = stage_factory(project_dir, facts, Path("build/dev/policies"))   # a chalice.cli.factory.CLIFactory
    config = factory.create_config_obj(chalice_stage_name="dev")
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chalice.cli.factory import CLIFactory
from chalice.config import Config
from chalice.constants import DEFAULT_APIGATEWAY_STAGE_NAME, DEFAULT_LAMBDA_TIMEOUT

CONFIG_FILE = Path(".chalice") / "config.json"
PYTHON_VERSION_FILE = Path(".chalice") / "python-version"
# The only grants a policy may hold on every resource: these actions have no resource-level permissions.
RESOURCE_WIDE_ACTIONS = {"xray:PutTraceSegments", "xray:PutTelemetryRecords", "textract:DetectDocumentText",
                         "textract:StartDocumentTextDetection", "textract:GetDocumentTextDetection"}
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z]+)\}")


class StageError(RuntimeError):
    """The stage cannot be built or deployed as configured; the message says why."""


def load_config(project_dir: Path) -> dict[str, Any]:
    return json.loads((project_dir / CONFIG_FILE).read_text())


def pinned_python(project_dir: Path) -> str:
    """The Lambda runtime's Python version (``3.13``), pinned in .chalice/python-version."""
    return (project_dir / PYTHON_VERSION_FILE).read_text().strip()


def chalice_config(config: Mapping[str, Any], stage: str, function_name: str = "api_handler") -> Config:
    """The stage's settings for one function as Chalice resolves them (top level, stage, function, defaults)."""
    if stage not in config.get("stages", {}):
        raise StageError(f"stage {stage!r} is not defined in {CONFIG_FILE}")
    return Config(chalice_stage=stage, function_name=function_name, config_from_disk=dict(config),
                  default_params={"lambda_timeout": DEFAULT_LAMBDA_TIMEOUT,
                                  "api_gateway_stage": DEFAULT_APIGATEWAY_STAGE_NAME})


def function_names(config: Mapping[str, Any], stage: str) -> list[str]:
    """The stage's Lambda functions by their Chalice names (``api_handler``, ``process_jobs``, ...)."""
    return list(config["stages"][stage].get("lambda_functions", {}))


def lambda_name(app_name: str, stage: str, function: str) -> str:
    """The deployed function's name: Chalice calls the REST API's function ``<app>-<stage>``."""
    return f"{app_name}-{stage}" if function == "api_handler" else f"{app_name}-{stage}-{function}"


def rest_api_name(app_name: str, stage: str) -> str:
    """The REST API's name, ``<app>-<stage>``: API Gateway's metrics know an API by its name alone, so two stages in
    one account must not share one (Chalice would call both ``<app>``)."""
    return f"{app_name}-{stage}"


@dataclass(frozen=True)
class StageFacts:
    """What a stage's configuration needs from the account it is deployed into."""

    stage: str
    account: str
    region: str
    partition: str
    bucket: str
    llm_secret_arn: str
    api_url: str = ""
    app_name: str = "docpipe"
    event_bus: str = "default"

    def _arn(self, service: str, resource: str) -> str:
        return f"arn:{self.partition}:{service}:{self.region}:{self.account}:{resource}"

    @property
    def state_machine_arn(self) -> str:
        """The workflow's state machine (infra/workflow.json names it so): known before it exists, so the worker's
        configuration and policy can name it in the same deploy that creates it."""
        return self._arn("states", f"stateMachine:{self.app_name}-{self.stage}-workflow")

    def policy_values(self, function: str) -> dict[str, str]:
        """The values a policy template may name, for ``function``: every one an exact resource of this stage."""
        prefix = f"{self.app_name}-{self.stage}"
        return {
            "Account": self.account,
            "BucketArn": f"arn:{self.partition}:s3:::{self.bucket}",
            "JobsTableArn": self._arn("dynamodb", f"table/{prefix}-jobs"),
            "IdempotencyTableArn": self._arn("dynamodb", f"table/{prefix}-idempotency"),
            "JobsQueueArn": self._arn("sqs", f"{prefix}-jobs"),
            "DeadLetterQueueArn": self._arn("sqs", f"{prefix}-jobs-dlq"),
            "LlmSecretArn": self.llm_secret_arn,
            "StateMachineArn": self.state_machine_arn,
            "WorkflowExecutionsArn": self.state_machine_arn.replace(":stateMachine:", ":execution:") + ":*",
            "EventBusArn": self._arn("events", f"event-bus/{self.event_bus}"),
            "LogGroupArn": self._arn("logs", "log-group:/aws/lambda/"
                                             + lambda_name(self.app_name, self.stage, function)),
        }


def placeholder_facts(config: Mapping[str, Any], stage: str) -> StageFacts:
    """Facts for building without an AWS account (``make package``): the account is all zeros, the region is the
    configured one or us-east-1. Only the template's ARNs carry them; the zips do not depend on them."""
    account = "000000000000"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    app_name = config["app_name"]
    secret = llm_secret_name(config, stage) or f"{app_name}/{stage}/llm"
    return StageFacts(stage=stage, account=account, region=region, partition="aws",
                      bucket=f"{app_name}-{stage}-{account}-{region}", app_name=app_name,
                      event_bus=event_bus_name(config, stage),
                      llm_secret_arn=f"arn:aws:secretsmanager:{region}:{account}:secret:{secret}-??????")


def llm_secret_name(config: Mapping[str, Any], stage: str) -> str | None:
    """The secret holding the stage's LLM key, as the worker's configuration names it (DOCPIPE_LLM_SECRET)."""
    return chalice_config(config, stage, "process_jobs").environment_variables.get("DOCPIPE_LLM_SECRET") or None


def event_bus_name(config: Mapping[str, Any], stage: str) -> str:
    """The EventBridge bus the stage's job events go to (DOCPIPE_EVENT_BUS; the account's default bus unless set)."""
    return chalice_config(config, stage, "process_jobs").environment_variables.get("DOCPIPE_EVENT_BUS") or "default"


def render_policy(template: str, values: Mapping[str, str]) -> dict[str, Any]:
    """A policy template with its ``${Name}`` placeholders filled in; an unknown name is an error."""
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise StageError(f"policy template names ${{{name}}}, which the deploy does not know")
        return values[name]

    return json.loads(_PLACEHOLDER.sub(fill, template))


def write_policies(project_dir: Path, config: Mapping[str, Any], facts: StageFacts, out_dir: Path) -> dict[str, Path]:
    """Render each function's policy template (its ``iam_policy_file``) for the stage; returns the files by function."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for function in function_names(config, facts.stage):
        template_name = chalice_config(config, facts.stage, function).iam_policy_file
        if not template_name:
            raise StageError(f"function {function} of stage {facts.stage} has no iam_policy_file in {CONFIG_FILE}")
        template = (project_dir / ".chalice" / template_name).read_text()
        values = facts.policy_values(function)
        policy = render_policy(template, values)
        if function == "api_handler" and dashboard_on(config, facts.stage):
            policy["Statement"].append(dashboard_statement(values))
        path = out_dir / f"{function}.json"
        path.write_text(json.dumps(policy, indent=2) + "\n")
        written[function] = path.resolve()
    return written


def dashboard_on(config: Mapping[str, Any], stage: str) -> bool:
    """Whether the stage serves GET /dashboard (DOCPIPE_DASHBOARD, as config.py reads it)."""
    value = chalice_config(config, stage).environment_variables.get("DOCPIPE_DASHBOARD", "false")
    return str(value).strip().lower() == "true"


def dashboard_statement(values: Mapping[str, str]) -> dict[str, Any]:
    """What the dashboard reads beyond the API's own grants, granted only where an operator turns it on: every job
    (a scan of the table) and the depth of the queue and the dead-letter queue."""
    return {"Sid": "OperatorDashboard", "Effect": "Allow",
            "Action": ["dynamodb:Scan", "sqs:GetQueueAttributes"],
            "Resource": [values["JobsTableArn"], values["JobsQueueArn"], values["DeadLetterQueueArn"]]}


def overlay(config: Mapping[str, Any], facts: StageFacts, policies: Mapping[str, Path]) -> dict[str, Any]:
    """config.json as the deploy hands it to Chalice: the stage's bucket and API URL, and the rendered policies."""
    merged = json.loads(json.dumps(config))
    stage = merged["stages"][facts.stage]
    env = stage.setdefault("environment_variables", {})
    env["DOCPIPE_BUCKET"] = facts.bucket
    env["DOCPIPE_STATE_MACHINE_ARN"] = facts.state_machine_arn
    if facts.api_url:
        env["DOCPIPE_API_URL"] = facts.api_url
    for function, path in policies.items():
        # An absolute path: Chalice joins it to .chalice/, and os.path.join keeps an absolute second part.
        stage["lambda_functions"][function]["iam_policy_file"] = str(path)
    return merged


class _StageFactory(CLIFactory):
    """Chalice's CLI factory, reading config.json through the deploy's overlay instead of from disk."""

    def __init__(self, project_dir: Path, config: dict[str, Any], api_name: str) -> None:
        # As the chalice CLI does: the stage's variables reach os.environ before app.py is imported.
        super().__init__(project_dir=str(project_dir), environ=os.environ)
        self._config = config
        self._api_name = api_name

    def load_project_config(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._config))

    def load_chalice_app(self, environment_variables: Any = None, validate_feature_flags: bool | None = True) -> Any:
        """The app, under the stage's API name: Chalice titles the REST API's definition with the app's name, and
        API Gateway names the API after that title. A copy, so the imported app keeps its own name."""
        app = copy.copy(super().load_chalice_app(environment_variables, validate_feature_flags))
        app.app_name = self._api_name
        return app


def stage_factory(project_dir: Path, facts: StageFacts, policy_dir: Path) -> CLIFactory:
    """The factory ``chalice package`` and ``chalice deploy`` would use, for this stage in this account."""
    config = load_config(project_dir)
    policies = write_policies(project_dir, config, facts, policy_dir)
    return _StageFactory(project_dir, overlay(config, facts, policies), rest_api_name(facts.app_name, facts.stage))
