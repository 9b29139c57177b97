"""Starting the Step Functions workflow's executions (the state machine in infra/workflow.asl.json).

An execution is named after the job's run (``Job.run_name``: the job id, then ``-retry<n>``): Step Functions keeps
an execution's name for 90 days and refuses to start a second one with it, so a redelivered message finds the
execution its first delivery started instead of running the job twice.
"""

from __future__ import annotations

import json
from typing import Any


class Executions:
    def __init__(self, sfn: Any, state_machine_arn: str) -> None:
        self._sfn = sfn
        self.state_machine_arn = state_machine_arn

    def execution_arn(self, name: str) -> str:
        """The ARN of the execution ``name`` of this state machine (Step Functions derives it the same way)."""
        return self.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"

    def start(self, name: str, job_id: str) -> str:
        """Start execution ``name`` for ``job_id``; its ARN, whether this call or an earlier one started it."""
        try:
            return self._sfn.start_execution(stateMachineArn=self.state_machine_arn, name=name,
                                             input=json.dumps({"job_id": job_id, "run": name}))["executionArn"]
        except self._sfn.exceptions.ExecutionAlreadyExists:
            return self.execution_arn(name)

    def status(self, execution_arn: str) -> tuple[str, str | None]:
        """(status, reason) of an execution: RUNNING, SUCCEEDED, FAILED, TIMED_OUT or ABORTED."""
        described = self._sfn.describe_execution(executionArn=execution_arn)
        return described["status"], described.get("error") or described.get("cause")
