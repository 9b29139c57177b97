"""The emulator's server: each DynamoDB table's requests one at a time, each host's service looked up once."""

from __future__ import annotations

import io
import json
import threading

import pytest
from moto import backends
from moto.moto_server.werkzeug_app import DomainDispatcherApplication

from devstack import motoserver
from devstack.motoserver import _EmulatorDispatcher, tables_of


@pytest.mark.parametrize(("request_body", "tables"), [
    ({"TableName": "jobs", "Key": {"job_id": {"S": "1"}}}, {"jobs"}),
    ({"TableName": "arn:aws:dynamodb:us-east-1:123456789012:table/jobs"}, {"jobs"}),
    ({"RequestItems": {"jobs": [], "state": []}}, {"jobs", "state"}),
    ({"TransactItems": [{"Put": {"TableName": "jobs"}}, {"ConditionCheck": {"TableName": "state"}}]},
     {"jobs", "state"}),
    ({}, {""}),  # ListTables names none: one lock of its own
])
def test_a_request_locks_the_tables_it_names(request_body, tables):
    assert tables_of(json.dumps(request_body).encode()) == tables


def test_a_request_whose_tables_are_not_named_in_its_json_locks_every_table(monkeypatch):
    monkeypatch.setattr(motoserver, "_TABLES", {"jobs": threading.Lock(), "state": threading.Lock()})
    every = {"jobs", "state", ""}

    assert tables_of(b'{"Statement": "UPDATE jobs SET a = 1"}', "DynamoDB_20120810.ExecuteStatement") == every
    assert tables_of(b"\x1f\x8b compressed", "DynamoDB_20120810.PutItem", "gzip") == every
    assert tables_of(b"\x00not json", "DynamoDB_20120810.PutItem") == every


def _serve_two(monkeypatch, first: str, second: str) -> tuple[bool, list[bytes]]:
    """Two requests at once through the dispatcher: whether both were inside moto together, and the bodies moto got."""
    both_inside = threading.Barrier(2, timeout=5)
    together: list[bool] = []
    bodies: list[bytes] = []

    def moto_app(self, environ, start_response):
        bodies.append(environ["wsgi.input"].read())
        try:
            both_inside.wait()
            together.append(True)
        except threading.BrokenBarrierError:  # the other request never came in while this one was inside
            together.append(False)
        return [b"{}"]

    monkeypatch.setattr(DomainDispatcherApplication, "__call__", moto_app)
    dispatcher = _EmulatorDispatcher(lambda backend: None)

    def send(table: str) -> None:
        body = json.dumps({"TableName": table}).encode()
        dispatcher({"HTTP_X_AMZ_TARGET": "DynamoDB_20120810.PutItem", "CONTENT_LENGTH": str(len(body)),
                    "wsgi.input": io.BytesIO(body)}, lambda *a: None)

    threads = [threading.Thread(target=send, args=(table,)) for table in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return all(together), bodies


def test_requests_to_one_table_run_one_at_a_time(monkeypatch):
    together, bodies = _serve_two(monkeypatch, "jobs", "jobs")

    assert not together
    assert sorted(bodies) == [b'{"TableName": "jobs"}'] * 2  # each body reaches moto whole


def test_requests_to_two_tables_run_side_by_side(monkeypatch):
    together, _ = _serve_two(monkeypatch, "jobs", "state")

    assert together


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
