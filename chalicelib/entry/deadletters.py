"""The dead-letter backstop: a message that reached the DLQ (its worker died on every delivery) fails its job with
the last reason it recorded (``Lifecycle.fail_dead_letter``)."""

from __future__ import annotations

from typing import Any

from chalicelib.bootstrap import Services
from chalicelib.jobs import job_id_from
from chalicelib.observability import job_context, logger, metrics


def handle_dead_letters(event: dict[str, Any], services: Services) -> None:
    for record in event.get("Records", []):
        job_id = job_id_from(record.get("body", ""))
        if job_id is None:
            logger.error("dead letter that is not a docpipe job", extra={"body": record.get("body", "")[:500]})
            continue
        with job_context(job_id):
            if services.lifecycle.fail_dead_letter(job_id):
                # The failure-rate alarm counts these jobs too (infra/METRICS.md).
                metrics.add_metric(name="JobsFailed", unit="Count", value=1)
