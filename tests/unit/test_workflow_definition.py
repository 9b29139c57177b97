"""infra/workflow.asl.json and its stack: generated from scripts/workflow.py, the README's diagram rendered from it,
and cfn-lint clean — its Step Functions checks validate every state of the definition."""

from __future__ import annotations

import json

import cfnlint.api

from scripts import workflow
from scripts.deploy import workflow_template
from tests.support import PROJECT

LINT_EVERYTHING = cfnlint.api.ManualArgs(include_checks=["I"])


def asl() -> dict:
    return json.loads(workflow.ASL_FILE.read_text())


def test_the_definition_and_the_readme_diagram_are_generated_from_the_current_code():
    assert workflow.ASL_FILE.read_text() == workflow.render_asl(), "run python -m scripts.workflow"
    readme = workflow.README.read_text()
    assert workflow.readme_with_diagram(readme, asl()) == readme, "run python -m scripts.workflow"


def test_the_check_notices_a_readme_diagram_that_no_longer_matches_the_definition():
    changed = asl()
    changed["States"]["Extract and chunk"]["Next"] = "Store"
    readme = workflow.README.read_text()
    assert workflow.readme_with_diagram(readme, changed) != readme


def test_the_workflow_stack_as_deployed_passes_cfn_lint_with_the_definition_in_it():
    rendered = workflow_template(PROJECT)
    assert [str(match) for match in cfnlint.api.lint(rendered, config=LINT_EVERYTHING)] == []


def test_cfn_lint_checks_every_state_of_the_definition():
    arns = {f"{name}Arn": f"arn:aws:lambda:us-east-1:123456789012:function:docpipe-dev-{function}"
            for name, function in workflow.STAGE_FUNCTIONS.items()}
    text = workflow.ASL_FILE.read_text()
    for name, arn in arns.items():
        text = text.replace(f"${{{name}}}", arn)

    def lint(definition: dict) -> list[str]:
        template = {"AWSTemplateFormatVersion": "2010-09-09", "Resources": {"Workflow": {
            "Type": "AWS::StepFunctions::StateMachine",
            "Properties": {"RoleArn": "arn:aws:iam::123456789012:role/docpipe-dev-workflow",
                           "Definition": definition}}}}
        return [str(match) for match in cfnlint.api.lint(json.dumps(template), config=LINT_EVERYTHING)]

    assert lint(json.loads(text)) == []
    broken = json.loads(text)
    broken["States"]["Store"]["Retry"][1]["BackoffRate"] = "twice"
    assert lint(broken)


def test_every_stage_task_retries_by_error_class_and_every_top_level_stage_is_caught():
    states = asl()["States"]
    tasks = [s for s in _all_states(states) if s["Type"] == "Task"]
    assert len(tasks) == 2 + 2 * workflow.BRANCHES + 2
    for task in tasks:
        classes = [rule["ErrorEquals"] for rule in task["Retry"]]
        assert classes[0] == ["StageFailed", "RunSuperseded"] and task["Retry"][0]["MaxAttempts"] == 0
        assert ["StageRetryable"] in classes
    for name in ("Validate", "Extract and chunk", "Tasks", "Store"):
        assert states[name]["Catch"][-1] == {"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure",
                                             "Next": "Record failure"}
    assert states["Record failure"]["Next"] == "Job failed"


def _all_states(states: dict) -> list[dict]:
    found = []
    for state in states.values():
        found.append(state)
        for branch in state.get("Branches", []):
            found += _all_states(branch["States"])
        if "ItemProcessor" in state:
            found += _all_states(state["ItemProcessor"]["States"])
    return found
