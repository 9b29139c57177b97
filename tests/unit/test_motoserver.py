"""The emulator's server: each DynamoDB table's requests one at a time, each host's service looked up once."""

from __future__ import annotations

import json

import pytest
from moto import backends

from devstack.motoserver import _EmulatorDispatcher, tables_of


@pytest.mark.parametrize(("request_body", "tables"), [
    ({"TableName": "jobs", "Key": {"job_id": {"S": "1"}}}, {"jobs"}),
    ({"RequestItems": {"jobs": [], "state": []}}, {"jobs", "state"}),
    ({"TransactItems": [{"Put": {"TableName": "jobs"}}, {"ConditionCheck": {"TableName": "state"}}]},
     {"jobs", "state"}),
    ({}, {""}),  # ListTables names none: one lock of its own
])
def test_a_request_locks_the_tables_it_names(request_body, tables):
    assert tables_of(json.dumps(request_body).encode()) == tables


def test_a_body_that_is_not_json_still_takes_a_lock():
    assert tables_of(b"\x00not json") == {""}


def test_the_service_of_a_host_is_looked_up_once(monkeypatch):
    listed = []
    modules = list(backends.list_of_moto_modules())

    def list_of_moto_modules():
        listed.append(1)
        return iter(modules)

    monkeypatch.setattr(backends, "list_of_moto_modules", list_of_moto_modules)
    dispatcher = _EmulatorDispatcher(lambda backend: None)

    first = dispatcher.get_backend_for_host("dynamodb.us-east-1.amazonaws.com")
    again = dispatcher.get_backend_for_host("dynamodb.us-east-1.amazonaws.com")

    assert first == again == "dynamodb" and len(listed) == 1
