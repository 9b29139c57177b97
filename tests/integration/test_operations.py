"""What reaches a person when a deployed docpipe goes wrong, checked on infra/template.json: every alarm e-mails the
stage's topic, each function's errors and throttles are watched, the dashboard and the alarms read the metrics
docpipe really emits (or infra/METRICS.md specifies), and every alarm and the budget, rendered for a stage as
CloudFormation would, is a request AWS's API accepts. moto's CloudFormation skips alarms and budgets, so the
alarms are also created in the emulator directly, as the stack would create them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.validate import ParamValidator

from scripts import deploy
from scripts.stage import chalice_config, load_config
from tests.support.taskflow import run_job, submit

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "template.json"
METRICS_SPEC = ROOT / "infra" / "METRICS.md"
ACCOUNT, REGION = "123456789012", "us-east-1"


def template() -> dict[str, Any]:
    return json.loads(TEMPLATE.read_text())


def of_type(kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template()["Resources"].items() if r["Type"] == kind}


class Rendered:
    """The template's values as CloudFormation resolves them for one stage, with the deploy's own parameters."""

    def __init__(self, stage: str) -> None:
        config = load_config(ROOT)
        parameters = {name: str(spec.get("Default", "")) for name, spec in template()["Parameters"].items()}
        parameters.update(deploy.stack_parameters(config, stage, f"docpipe-{stage}-{ACCOUNT}-{REGION}"))
        self.values = {**parameters, "AWS::AccountId": ACCOUNT, "AWS::Region": REGION, "AWS::Partition": "aws",
                       "AlarmTopic": f"arn:aws:sns:{REGION}:{ACCOUNT}:docpipe-{stage}-alarms",
                       "JobsQueue.QueueName": f"docpipe-{stage}-jobs"}

    def __call__(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self(item) for item in value]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Ref"}:
            return self.values[value["Ref"]]
        if set(value) == {"Fn::Sub"}:
            return re.sub(r"\$\{([^}!]+)\}", lambda m: self.values[m.group(1)], value["Fn::Sub"])
        if set(value) == {"Fn::GetAtt"}:
            return self.values[".".join(value["Fn::GetAtt"])]
        return {key: self(inner) for key, inner in value.items()}


def as_shape(value: Any, shape: Any) -> Any:
    """A rendered value with the types the API's shape wants: CloudFormation turns "20" into 20 where it must."""
    if shape.type_name == "structure":
        return {k: as_shape(v, shape.members[k]) if k in shape.members else v for k, v in value.items()}
    if shape.type_name == "list":
        return [as_shape(item, shape.member) for item in value]
    if shape.type_name in ("integer", "long"):
        return int(value)
    if shape.type_name in ("double", "float"):
        return float(value)
    if shape.type_name == "string":
        return str(value)
    return value


def api_request(service: str, operation: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` typed as ``operation`` wants, after botocore's own validation found nothing wrong."""
    shape = boto3.client(service, region_name=REGION).meta.service_model.operation_model(operation).input_shape
    typed = as_shape(params, shape)
    report = ParamValidator().validate(typed, shape)
    assert not report.has_errors(), report.generate_report()
    return typed


def rendered_alarms(stage: str) -> dict[str, dict[str, Any]]:
    render = Rendered(stage)
    return {name: api_request("cloudwatch", "PutMetricAlarm", render(alarm["Properties"]))
            for name, alarm in of_type("AWS::CloudWatch::Alarm").items()}


def dashboard(stage: str) -> dict[str, Any]:
    [resource] = of_type("AWS::CloudWatch::Dashboard").values()
    return json.loads(Rendered(stage)(resource["Properties"]["DashboardBody"]))


def lambda_names() -> dict[str, str]:
    """Each function of the app (its Chalice name) and its deployed name, with ``${Stage}`` in it."""
    from app import app

    functions = {"api_handler"} | {source.name for source in app.event_sources}
    functions |= {function.name for function in app.pure_lambda_functions}
    return {f: "docpipe-${Stage}" if f == "api_handler" else f"docpipe-${{Stage}}-{f}" for f in functions}


# --- alarms reach a person ------------------------------------------------------------------------------------------

def test_every_alarm_notifies_the_stages_topic_when_it_fires_and_when_it_clears():
    alarms = of_type("AWS::CloudWatch::Alarm")
    assert len(alarms) >= 16
    for name, alarm in alarms.items():
        properties = alarm["Properties"]
        assert properties["AlarmActions"] == properties["OKActions"] == [{"Ref": "AlarmTopic"}], name
        assert properties["AlarmName"]["Fn::Sub"].startswith("docpipe-${Stage}-"), name
        assert properties["TreatMissingData"] == "notBreaching", name


def test_the_topic_emails_the_configured_address_and_nobody_when_there_is_none():
    template_ = template()
    [subscription] = of_type("AWS::SNS::Subscription").values()
    assert subscription["Condition"] == "HasAlertEmail"
    assert template_["Conditions"]["HasAlertEmail"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlertEmail"}, ""]}]}
    assert subscription["Properties"] == {"TopicArn": {"Ref": "AlarmTopic"}, "Protocol": "email",
                                          "Endpoint": {"Ref": "AlertEmail"}}
    config = load_config(ROOT)
    config["stages"]["prod"]["environment_variables"]["DOCPIPE_ALERT_EMAIL"] = "oncall@example.com"
    assert deploy.stack_parameters(config, "prod", "b")["AlertEmail"] == "oncall@example.com"
    config["stages"]["prod"]["environment_variables"]["DOCPIPE_ALERT_EMAIL"] = "oncall at example"
    with pytest.raises(deploy.DeployError, match="DOCPIPE_ALERT_EMAIL"):
        deploy.stack_parameters(config, "prod", "b")


def test_only_this_accounts_alarms_and_budgets_may_publish_to_the_topic_and_only_over_tls():
    [policy] = of_type("AWS::SNS::TopicPolicy").values()
    statements = {s["Sid"]: s for s in policy["Properties"]["PolicyDocument"]["Statement"]}
    for sid, service in (("CloudWatchAlarmsOfThisAccount", "cloudwatch.amazonaws.com"),
                         ("BudgetsOfThisAccount", "budgets.amazonaws.com")):
        statement = statements[sid]
        assert (statement["Effect"], statement["Principal"], statement["Action"]) == (
            "Allow", {"Service": service}, "sns:Publish")
        assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert statements["DenyPublishingWithoutTls"]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_every_function_has_an_errors_and_a_throttles_alarm():
    watched = {(a["Properties"]["MetricName"], a["Properties"]["Dimensions"][0]["Value"]["Fn::Sub"])
               for a in of_type("AWS::CloudWatch::Alarm").values()
               if a["Properties"].get("Namespace") == "AWS/Lambda" and a["Properties"]["MetricName"] != "Invocations"}
    expected = {(kind, name) for name in lambda_names().values() for kind in ("Errors", "Throttles")}
    assert watched == expected


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_every_alarm_is_a_request_cloudwatch_accepts_and_lands_with_its_topic(stage):
    cloudwatch = boto3.client("cloudwatch")  # the suite's emulator
    alarms = rendered_alarms(stage)

    for alarm in alarms.values():
        cloudwatch.put_metric_alarm(**alarm)

    names = [a["AlarmName"] for a in alarms.values()]
    stored = {a["AlarmName"]: a for page in cloudwatch.get_paginator("describe_alarms").paginate(AlarmNames=names)
              for a in page["MetricAlarms"]}
    assert set(stored) == set(names) and len(names) == len(set(names))
    topic = f"arn:aws:sns:{REGION}:{ACCOUNT}:docpipe-{stage}-alarms"
    assert all(a["AlarmActions"] == a["OKActions"] == [topic] for a in stored.values())


def test_thresholds_come_from_the_stages_settings():
    config = load_config(ROOT)
    config["stages"]["dev"]["environment_variables"].update(
        DOCPIPE_ALARM_FAILED_JOBS_PERCENT="35", DOCPIPE_ALARM_LLM_USD_PER_HOUR="2.5", DOCPIPE_MONTHLY_BUDGET_USD="0")
    config["stages"]["dev"]["lambda_functions"]["process_jobs"]["environment_variables"][
        "DOCPIPE_BREAKER_RECOVERY_SECONDS"] = "90"

    parameters = deploy.stack_parameters(config, "dev", "b")

    assert parameters["FailedJobsAlarmPercent"] == "35"
    assert parameters["LlmSpendAlarmMicroUsdPerHour"] == "2500000"
    # Two whole-minute periods, each at least the 90 s recovery window.
    assert parameters["CircuitAlarmPeriodSeconds"] == "120"
    assert parameters["MonthlyBudgetUsd"] == "0"
    defaults = deploy.stack_parameters(load_config(ROOT), "dev", "b")
    assert (defaults["FailedJobsAlarmPercent"], defaults["LlmSpendAlarmMicroUsdPerHour"],
            defaults["CircuitAlarmPeriodSeconds"], defaults["MonthlyBudgetUsd"]) == ("20", "5000000", "60", "50")
    config["stages"]["dev"]["environment_variables"]["DOCPIPE_ALARM_FAILED_JOBS_PERCENT"] = "250"
    with pytest.raises(deploy.DeployError, match="DOCPIPE_ALARM_FAILED_JOBS_PERCENT"):
        deploy.stack_parameters(config, "dev", "b")


def test_the_spend_alarm_adds_every_models_cost_of_the_stage_over_an_hour():
    alarm = rendered_alarms("prod")["LlmSpendAlarm"]
    [query] = alarm["Metrics"]
    assert query["Period"] == 3600 and query["ReturnData"] is True
    assert query["Expression"] == ("SELECT SUM(CostMicroUSD) FROM SCHEMA(docpipe, model, service) "
                                   "WHERE service = 'docpipe-prod'")
    assert alarm["Threshold"] == 5_000_000 and alarm["ComparisonOperator"] == "GreaterThanThreshold"


def test_the_api_alarm_and_graphs_name_the_api_as_the_deploy_names_it():
    alarm = rendered_alarms("prod")["Api5xxAlarm"]
    config = load_config(ROOT)
    assert {d["Name"]: d["Value"] for d in alarm["Dimensions"]} == {
        "ApiName": deploy.rest_api_name(config["app_name"], "prod"),
        "Stage": chalice_config(config, "prod").api_gateway_stage}


# --- the budget -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_budget_counts_what_carries_both_of_the_stages_cost_allocation_tags(stage):
    [budget] = of_type("AWS::Budgets::Budget").values()
    rendered = Rendered(stage)(budget["Properties"])
    request = api_request("budgets", "CreateBudget", {"AccountId": ACCOUNT, **rendered})

    tags = deploy.stage_tags(load_config(ROOT), stage)
    filters = request["Budget"]["FilterExpression"]["And"]
    assert {f["Tags"]["Key"]: f["Tags"]["Values"] for f in filters} == {k: [v] for k, v in tags.items()}
    assert request["Budget"]["BudgetLimit"] == {"Amount": "50", "Unit": "USD"}
    notifications = {(n["Notification"]["NotificationType"], n["Notification"]["Threshold"])
                     for n in request["NotificationsWithSubscribers"]}
    assert notifications == {("ACTUAL", 80.0), ("FORECASTED", 100.0)}
    topic = f"arn:aws:sns:{REGION}:{ACCOUNT}:docpipe-{stage}-alarms"
    assert all(n["Subscribers"] == [{"SubscriptionType": "SNS", "Address": topic}]
               for n in request["NotificationsWithSubscribers"])
    assert budget["Condition"] == "HasBudget"  # DOCPIPE_MONTHLY_BUDGET_USD=0 leaves it out


# --- the dashboard and the metrics ---------------------------------------------------------------------------------

def docpipe_metrics_read() -> set[str]:
    """Every metric of namespace docpipe the dashboard graphs or an alarm reads."""
    names = set()
    for widget in dashboard("prod")["widgets"]:
        for row in widget["properties"].get("metrics", []):
            if row[0] == "docpipe":
                names.add(row[1])
            names.update(re.findall(r'MetricName=\\?"(\w+)\\?"', json.dumps(row)))
    for alarm in rendered_alarms("prod").values():
        if alarm.get("Namespace") == "docpipe":
            names.add(alarm["MetricName"])
        for query in alarm.get("Metrics", []):
            if query.get("MetricStat", {}).get("Metric", {}).get("Namespace") == "docpipe":
                names.add(query["MetricStat"]["Metric"]["MetricName"])
            names.update(re.findall(r"SELECT \w+\((\w+)\) FROM SCHEMA\(docpipe", query.get("Expression", "")))
    return names


def specified_metrics() -> set[str]:
    """The metrics infra/METRICS.md specifies for code to emit (its "To emit" section)."""
    to_emit = METRICS_SPEC.read_text().split("## To emit", 1)[1]
    return set(re.findall(r"^### `(\w+)`", to_emit, re.M))


@pytest.fixture
def emitted_by_a_job(client, sqs, drain_queue, llm, monkeypatch, capsys) -> set[str]:
    """The metric names a real job emits through the worker, read from its EMF lines as CloudWatch reads them."""
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "docpipe-prod")
    capsys.readouterr()
    job, _ = run_job(client, sqs, drain_queue, submit(client, {"text": "Harbour lights guide ships. " * 40},
                                                      {"type": "summarize"}))
    assert job["status"] == "SUCCEEDED", job
    names = set()
    for line in capsys.readouterr().out.splitlines():
        if '"_aws"' in line:
            for directive in json.loads(line)["_aws"]["CloudWatchMetrics"]:
                assert directive["Namespace"] == "docpipe"
                assert all("service" in dimensions for dimensions in directive["Dimensions"])
                names.update(metric["Name"] for metric in directive["Metrics"])
    return names


def test_a_job_emits_the_metrics_the_dashboard_graphs(emitted_by_a_job):
    assert {"JobsSucceeded", "ExtractMilliseconds", "ChunkMilliseconds", "MapMilliseconds", "LLMCalls",
            "CostMicroUSD"} <= emitted_by_a_job
    assert emitted_by_a_job - docpipe_metrics_read() == set()


def test_every_metric_the_dashboard_and_alarms_read_is_emitted_or_specified(emitted_by_a_job):
    source = "\n".join(path.read_text() for path in (ROOT / "chalicelib").rglob("*.py"))
    named_in_code = set(re.findall(r'add_metric\(name="(\w+)"', source))
    known = named_in_code | emitted_by_a_job | specified_metrics()

    assert docpipe_metrics_read() - known == set()
    assert named_in_code - docpipe_metrics_read() == set()  # nothing docpipe emits goes unseen
    assert {"LLMCircuitOpen", "JobsFailed"} <= named_in_code


def test_the_stages_functions_emit_under_the_service_the_template_filters_on():
    config = load_config(ROOT)
    for stage in ("dev", "prod"):
        for function in config["stages"][stage]["lambda_functions"]:
            env = chalice_config(config, stage, function).environment_variables
            assert env["POWERTOOLS_SERVICE_NAME"] == f"docpipe-{stage}", (stage, function)
            assert env["POWERTOOLS_METRICS_NAMESPACE"] == "docpipe"


def test_the_dashboard_shows_every_alarm_and_fits_its_grid():
    widgets = dashboard("dev")["widgets"]
    [alarm_widget] = [w for w in widgets if w["type"] == "alarm"]
    alarm_names = {a["AlarmName"] for a in rendered_alarms("dev").values()}
    assert {arn.split(":alarm:")[1] for arn in alarm_widget["properties"]["alarms"]} == alarm_names
    assert all(0 <= w["x"] and w["x"] + w["width"] <= 24 for w in widgets)
    cells = [(x, y) for w in widgets for x in range(w["x"], w["x"] + w["width"])
             for y in range(w["y"], w["y"] + w["height"])]
    assert len(cells) == len(set(cells)), "widgets overlap"
    for widget in widgets:
        for row in widget["properties"].get("metrics", []):
            assert isinstance(row, list), row  # a metric, or [{"expression": ...}]
            if row[0] == "docpipe":
                assert row[2:4] == ["service", "docpipe-dev"], row


def test_the_dashboards_function_graphs_name_every_function():
    body = json.dumps(dashboard("dev"))
    for name in lambda_names().values():
        assert f'"FunctionName", "{name.replace("${Stage}", "dev")}"' in body
        assert f"SOURCE '/aws/lambda/{name.replace('${Stage}', 'dev')}'" in body
