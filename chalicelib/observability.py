"""Powertools Logger and Metrics, shared by every handler.

Logs are JSON with the job id on every line of a job (``logger.append_keys(job_id=…)``); keys are cleared at the
start of each invocation so a worker's job id never leaks into a later HTTP log line of the same container.
Metrics are CloudWatch EMF lines in the ``docpipe`` namespace, flushed at the end of each worker invocation.
"""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "docpipe"))
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "docpipe"))
