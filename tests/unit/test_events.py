"""tests/events holds the payloads AWS sends: each has every field of a recording of the real event (the shared
corpus's, from other projects' test suites), at every depth."""

from __future__ import annotations

import json
from typing import Any

from tests.events import api_gateway_event, load, s3_event, scheduled_event, sqs_event, sqs_event_of_bodies
from tests.support.corpus import corpus_file


def _shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _shape(inner) for key, inner in value.items()}
    return type(value).__name__ if value is not None else None


# Fields whose keys are the request's own data (header names, query parameters, an event's detail), not its shape.
DATA_FIELDS = {"headers", "multiValueHeaders", "queryStringParameters", "multiValueQueryStringParameters",
               "pathParameters", "stageVariables", "detail", "messageAttributes"}


def _missing_keys(recorded: Any, ours: Any, path: str = "") -> list[str]:
    """The fields of a recorded event that ours lacks, at any depth (a field AWS may send as null counts)."""
    if not isinstance(recorded, dict):
        return []
    missing = []
    for key, value in recorded.items():
        if key not in ours:
            missing.append(path + key)
        elif ours[key] is not None and key not in DATA_FIELDS:
            missing += _missing_keys(value, ours[key], f"{path}{key}.")
    return missing


def test_the_events_we_build_have_every_field_of_the_recorded_ones():
    recorded_api = json.loads(corpus_file("events/sam-cli__AwsProxy.rendered-defaults.json").read_text())
    recorded_s3 = json.loads(corpus_file("events/powertools-py__s3Event.json").read_text())
    recorded_schedule = json.loads(
        corpus_file("events/powertools-py__eventbridge-scheduled-with-detail.json").read_text())
    recorded_sqs = json.loads(corpus_file("events/powertools-py__sqsEvent.json").read_text())
    ours_api = api_gateway_event("POST", "/jobs", body=b"{}", headers={"Content-Type": "application/json"},
                                 query={"a": "b"}, path_parameters={"job_id": "x"})
    ours_s3 = s3_event("b", "incoming/k.pdf", size=1, etag="e", account="123456789012")
    ours_schedule = scheduled_event("arn:aws:events:us-east-1:123456789012:rule/r", "123456789012")
    message = {"MessageId": "m", "ReceiptHandle": "r", "Body": "{}", "MD5OfBody": "d",
               "Attributes": recorded_sqs["Records"][0]["attributes"], "MessageAttributes": {}}
    ours_sqs = sqs_event([message], "arn:aws:sqs:us-east-1:123456789012:q")

    assert _missing_keys(recorded_api, ours_api) == []
    assert _missing_keys(recorded_s3["Records"][0], ours_s3["Records"][0]) == []
    assert _missing_keys(recorded_schedule, ours_schedule) == []
    assert _missing_keys(recorded_sqs["Records"][0], ours_sqs["Records"][0]) == []


def test_the_event_files_themselves_have_every_field_of_the_recorded_ones():
    recorded_sqs = json.loads(corpus_file("events/powertools-py__sqsEvent.json").read_text())
    recorded_s3 = json.loads(corpus_file("events/powertools-py__s3Event.json").read_text())
    recorded_api = json.loads(corpus_file("events/sam-cli__AwsProxy.rendered-defaults.json").read_text())

    assert _missing_keys(recorded_api, load("api-gateway-rest")) == []
    assert _missing_keys(recorded_s3["Records"][0], load("s3-object-created")["Records"][0]) == []
    assert _missing_keys(recorded_sqs["Records"][0], load("sqs-jobs")["Records"][0]) == []
    assert _missing_keys(recorded_sqs["Records"][0], sqs_event_of_bodies(["{}"])["Records"][0]) == []
