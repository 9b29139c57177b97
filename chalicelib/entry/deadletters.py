"""The dead-letter backstop: a message that reached the DLQ (its worker died on every delivery) fails its job with
the last reason it recorded (``Lifecycle.fail_dead_letter``)."""

from __future__ import annotations

from typing import Any

from chalicelib.bootstrap import Services
from chalicelib.jobs import job_id_from
from chalicelib.observability import logger


def handle_dead_letters(event: dict[str, Any], services: Services) -> None:
    for record in event.get("Records", []):
        job_id = job_id_from(record.get("body", ""))
        if job_id is None:
            logger.error("dead letter that is not a docpipe job", extra={"body": record.get("body", "")[:500]})
            continue
        services.lifecycle.fail_dead_letter(job_id)
