"""Hostile clients: what a client sends to make docpipe reach the network, hang a worker, spend without bound or
answer 5xx — each answered with its documented 4xx or FAILED code.

Every request goes through the real route (Chalice's test client) and, where a job runs, through the real worker
handler against the session's emulator; the LLM is the fake OpenAI-compatible server. A schema that names an address
names a listening socket this test owns on 127.0.0.1, which must see no connection at all. Worker runs are bounded by
the test's timeout, never by a timed assertion.
"""

from __future__ import annotations

import json
import socket
import time
import uuid

import pytest

from chalicelib.jobs.store import Job
from chalicelib.llm.prompts import as_data
from tests.support.taskflow import configure, deliver, get_job, job_count, queued_job_ids, receive, run_job, submit

pytestmark = pytest.mark.timeout(120)

JSON_HEADERS = {"content-type": "application/json"}
TEXT = "The harbour master logs every ship that enters. Codes are written in the margin of the ledger. " * 4


def post(client, payload, headers=None):
    body = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    return client.http.post("/jobs", headers={**JSON_HEADERS, **(headers or {})}, body=body)


def assert_refused(response, status: int, code: str) -> str:
    assert response.status_code == status, response.body
    error = response.json_body["error"]
    assert error["code"] == code, error
    assert len(error["message"]) <= 500
    return error["message"]


def assert_short_refusal_logged(caplog, code: str) -> None:
    """The refusal was logged, in a line (as docpipe's logger writes it) that echoes nothing of the request."""
    from chalicelib.observability import logger

    lines = [logger.registered_formatter.format(r) for r in caplog.records if r.name == "docpipe"]
    refusals = [json.loads(line) for line in lines if '"request refused"' in line]
    assert [r["code"] for r in refusals] == [code], lines[-5:]
    assert max(map(len, lines)) < 1_000


@pytest.fixture
def listener():
    """A socket on 127.0.0.1 that counts the connections made to it (it never accepts one while the test runs)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    probe = Probe(sock)
    yield probe
    sock.close()


class Probe:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    def connections(self) -> int:
        """Connections the kernel completed for this socket (each one a request docpipe would have sent)."""
        count = 0
        while True:
            try:
                conn, _ = self._sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1


# --- schemas are data: no reference leaves the schema -----------------------------------------------------------------

def remote_schemas(url: str) -> list:
    obj = {"type": "object"}
    return [
        pytest.param({**obj, "properties": {"a": {"$ref": f"{url}/probe"}}}, "/properties/a/$ref", id="ref-url"),
        pytest.param({**obj, "$dynamicRef": f"{url}/probe"}, "/$dynamicRef", id="dynamicRef-url"),
        pytest.param({**obj, "properties": {"a": {"$dynamicRef": f"{url}/probe#meta"}}}, "/properties/a/$dynamicRef",
                     id="dynamicRef-url-anchor"),
        pytest.param({"$schema": "https://json-schema.org/draft/2019-09/schema", **obj,
                      "properties": {"a": {"$recursiveRef": f"{url}/probe"}}}, "/properties/a/$recursiveRef",
                     id="recursiveRef-url"),
        pytest.param({**obj, "$id": f"{url}/", "properties": {"a": {"$ref": "probe"}}}, "/properties/a/$ref",
                     id="root-id-then-relative-ref"),
        pytest.param({**obj, "properties": {"a": {"$id": f"{url}/sub/", "$ref": "probe.json"}}},
                     "/properties/a/$ref", id="nested-id-then-relative-ref"),
        pytest.param({**obj, "$defs": {"d": {"$id": f"{url}/d", "type": "string"}},
                      "properties": {"a": {"$ref": f"{url}/other"}}}, "/properties/a/$ref",
                     id="id-of-a-definition-does-not-cover-its-host"),
        pytest.param({"$schema": "http://json-schema.org/draft-04/schema#", **obj, "id": f"{url}/",
                      "properties": {"a": {"$ref": "probe"}}}, "/properties/a/$ref", id="draft4-id-then-relative-ref"),
        pytest.param({**obj, "const": {"$ref": f"{url}/probe"}, "properties": {"a": {"$ref": "#/const"}}},
                     "/properties/a/$ref →/$ref", id="ref-into-data-holding-a-url"),
        pytest.param({**obj, "$schema": f"{url}/meta"}, "/$schema", id="schema-keyword-url"),
        pytest.param({**obj, "properties": {"a": {"$ref": "file:///etc/passwd"}}}, "/properties/a/$ref",
                     id="ref-file-url"),
        pytest.param({**obj, "$defs": {"a": {"type": "string"}}, "properties": {"a": {"$ref": "\uff03/$defs/a"}}},
                     "/properties/a/$ref", id="ref-with-full-width-hash"),
    ]


@pytest.mark.parametrize("index", range(len(remote_schemas("http://x"))),
                         ids=[p.id for p in remote_schemas("http://x")])
def test_a_schema_reaching_outside_itself_is_refused_at_submit_and_nothing_connects(client, services, sqs,
                                                                                    drain_queue, llm, listener, index):
    schema, path = remote_schemas(listener.url)[index].values
    before = job_count(services)

    message = assert_refused(post(client, {"document": {"text": TEXT}, "task": {"type": "extract", "schema": schema}}),
                             400, "invalid_schema")

    assert f"task.schema at {path}:" in message
    assert job_count(services) == before and queued_job_ids(sqs, drain_queue) == []
    assert listener.connections() == 0 and llm.calls == 0


OBJ = {"type": "object"}
UNUSABLE_SCHEMAS = [
    pytest.param({**OBJ, "properties": {"a": {"$ref": "#/$defs/missing"}}}, "/properties/a/$ref", "does not resolve",
                 id="dangling-pointer"),
    pytest.param({**OBJ, "properties": {"a": {"$ref": "#no-such-anchor"}}}, "/properties/a/$ref", "does not resolve",
                 id="dangling-anchor"),
    pytest.param({**OBJ, "required": ["a"], "properties": {"a": {"$ref": "#/required"}}}, "/properties/a/$ref",
                 "not a schema", id="ref-to-a-non-schema"),
    pytest.param({**OBJ, "$ref": "#"}, "/$ref", "recursion without a base case", id="root-refers-to-itself"),
    pytest.param({**OBJ, "not": {"$ref": "#"}}, "/not/$ref", "recursion without a base case", id="not-of-itself"),
    pytest.param({**OBJ, "$defs": {"a": {"allOf": [{"$ref": "#/$defs/b"}]}, "b": {"anyOf": [{"$ref": "#/$defs/a"}]}},
                  "properties": {"x": {"$ref": "#/$defs/a"}}}, "/$defs/", "recursion without a base case",
                 id="cycle-through-combinators"),
    pytest.param({**OBJ, "$defs": {"n": {"$dynamicAnchor": "n", "allOf": [{"$dynamicRef": "#n"}]}},
                  "properties": {"x": {"$ref": "#/$defs/n"}}}, "/$defs/n/allOf/0/$dynamicRef",
                 "recursion without a base case", id="dynamic-anchor-cycle"),
    pytest.param({**OBJ, "$defs": {**{f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"}] * 2} for i in range(24)},
                                   "d24": {"type": "string"}},
                  "properties": {"x": {"$ref": "#/$defs/d0"}}}, "/$defs/d", "more than 2000 subschemas",
                 id="references-doubling-24-times"),
    pytest.param({**OBJ, "properties": {"a": {"type": "string", "pattern": "^(a)\\1$"}}}, "/properties/a/pattern",
                 "linear-time engine", id="pattern-backreference"),
    pytest.param({**OBJ, "properties": {"a": {"type": "string", "pattern": "^(?=a)a+$"}}}, "/properties/a/pattern",
                 "linear-time engine", id="pattern-lookahead"),
    pytest.param({**OBJ, "patternProperties": {"(?<!x)y": {"type": "string"}}}, "/patternProperties/(?<!x)y",
                 "linear-time engine", id="pattern-properties-lookbehind"),
    pytest.param({**OBJ, "properties": {"a": {"$schema": "http://json-schema.org/draft-07/schema#"}}},
                 "/properties/a/$schema", "only appear at the schema's root", id="nested-schema-keyword"),
    pytest.param({**OBJ, "properties": {"a": {"type": "strnig"}}}, "/properties/a/type", "is not valid",
                 id="metaschema-violation"),
]


@pytest.mark.parametrize("schema, path, reason", UNUSABLE_SCHEMAS)
def test_a_schema_docpipe_could_not_check_safely_is_refused_at_submit(client, services, sqs, drain_queue, llm,
                                                                      schema, path, reason):
    before = job_count(services)

    message = assert_refused(post(client, {"document": {"text": TEXT}, "task": {"type": "extract", "schema": schema}}),
                             400, "invalid_schema")

    assert f"task.schema at {path}" in message and reason in message, message
    assert job_count(services) == before and queued_job_ids(sqs, drain_queue) == []
    assert llm.calls == 0


def test_a_recursive_schema_with_a_base_case_is_accepted(client, llm, drain_queue):
    tree = {**OBJ, "properties": {"name": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#"}}}}

    assert post(client, {"document": {"text": TEXT}, "task": {"type": "extract", "schema": tree}}).status_code == 202


def test_a_job_stored_with_an_unsafe_schema_fails_in_the_worker_without_a_connection(client, services, sqs,
                                                                                      drain_queue, llm, listener):
    # As a row written before submit-time checks existed: the worker checks the schema again before any call.
    job_id = uuid.uuid4().hex
    key = services.documents.put_input(job_id, TEXT.encode(), "text/plain")
    services.jobs.create(Job(job_id=job_id, status="QUEUED", client="local", created_at=time.time(),
                             task={"type": "extract", "schema": {**OBJ, "$dynamicRef": f"{listener.url}/probe"}},
                             document={"source": "upload", "s3_key": key, "content_type": "text/plain"}))
    services.lifecycle.queue.send(job_id)

    deliver(client, sqs, drain_queue, receive(sqs, drain_queue, job_id))

    job = get_job(client, job_id)
    assert job["status"] == "FAILED" and job["error"]["code"] == "invalid_schema", job
    assert listener.connections() == 0 and llm.calls == 0


# --- bounded validation: a pattern or a schema that would take forever fails that one answer ------------------------

CATASTROPHIC = {**OBJ, "properties": {"code": {"type": "string", "pattern": "^(a+)+$"}}, "required": ["code"]}


@pytest.mark.timeout(60)
def test_a_catastrophic_pattern_fails_only_its_answers_and_the_job_beside_it_succeeds(client, sqs, drain_queue, llm):
    # 40 "a"s and a "!": a backtracking engine needs about 2^40 steps for each check; RE2 needs 41.
    llm.responder = lambda body: (json.dumps({"code": "a" * 40 + "!"}) if "response_format" in body
                                  else "A short summary of the ledger (p. 1).")
    hostile = submit(client, {"text": TEXT}, {"type": "extract", "schema": CATASTROPHIC})
    neighbour = submit(client, {"text": TEXT + " Another ledger."}, {"type": "summarize"})

    payload = deliver(client, sqs, drain_queue, receive(sqs, drain_queue, hostile),
                      receive(sqs, drain_queue, neighbour))

    assert payload == {"batchItemFailures": []}
    failed, done = get_job(client, hostile), get_job(client, neighbour)
    assert failed["status"] == "FAILED" and failed["error"]["code"] == "unusable_answers", failed
    assert any("does not match" in warning for warning in failed["warnings"]), failed["warnings"]
    assert done["status"] == "SUCCEEDED", done


@pytest.mark.timeout(60)
def test_a_schema_whose_check_explodes_on_an_answer_fails_that_answer_within_its_step_budget(client, sqs,
                                                                                            drain_queue, llm):
    # Each level tries two branches that both descend into "a": 2^depth evaluations for an answer nested deep.
    branch = {"properties": {"a": {"$ref": "#"}}}
    schema = {**OBJ, "anyOf": [branch, {**branch, "required": ["a"]}]}
    answer: object = 1
    for _ in range(40):
        answer = {"a": answer}
    llm.responder = lambda body: json.dumps(answer)

    job, _result = run_job(client, sqs, drain_queue, submit(client, {"text": TEXT}, {"type": "extract",
                                                                                     "schema": schema}))

    assert job["status"] == "FAILED" and job["error"]["code"] == "unusable_answers", job
    assert any("more steps than docpipe allows" in warning for warning in job["warnings"]), job["warnings"]


# --- bounded spend --------------------------------------------------------------------------------------------------

def test_a_cost_budget_for_a_model_without_a_price_is_refused_at_submit(client, services, sqs, drain_queue, llm):
    before = job_count(services)

    message = assert_refused(post(client, {"document": {"text": TEXT}, "task": {
        "type": "summarize", "model": "o1-pro", "max_cost_usd": 1e-6}}), 422, "unpriced_model")

    assert "o1-pro" in message
    assert job_count(services) == before and queued_job_ids(sqs, drain_queue) == [] and llm.calls == 0


def test_a_configured_default_price_holds_an_unlisted_model_to_its_cost_budget(client, sqs, drain_queue, llm,
                                                                               monkeypatch):
    configure(monkeypatch, DOCPIPE_PRICES='{"*": [150, 600]}')

    job, _result = run_job(client, sqs, drain_queue, submit(client, {"text": TEXT}, {
        "type": "summarize", "model": "o1-pro", "max_cost_usd": 1e-6}))

    assert job["status"] == "FAILED" and job["error"]["code"] == "budget_exceeded", job
    assert job["usage"]["estimated_cost_usd"] > 1e-6 and llm.calls == 0


def test_max_total_tokens_bounds_a_model_without_a_price(client, sqs, drain_queue, llm):
    job, _result = run_job(client, sqs, drain_queue, submit(client, {"text": TEXT}, {
        "type": "summarize", "model": "o1-pro", "max_total_tokens": 10}))

    assert job["status"] == "FAILED" and job["error"]["code"] == "budget_exceeded", job
    assert llm.calls == 0


@pytest.mark.parametrize("task", [
    pytest.param({"type": "extract", "schema": {**OBJ, "properties": {"a": {"type": "string"}}}}, id="extract"),
    pytest.param({"type": "prompt", "map": "List the ships.", "reduce": "Merge the lists."}, id="prompt"),
])
def test_a_task_that_needs_a_model_is_refused_at_submit_when_there_is_none(client, services, sqs, drain_queue, task):
    before = job_count(services)

    assert_refused(post(client, {"document": {"text": TEXT}, "task": task}), 422, "llm_unavailable")

    assert job_count(services) == before and queued_job_ids(sqs, drain_queue) == []


# --- never a 5xx for a client's mistake -------------------------------------------------------------------------------

def nested(depth: int, leaf: str = "1") -> str:
    return '{"a": ' * depth + leaf + "}" * depth


CLIENT_MISTAKES = [
    pytest.param(nested(10_000), 400, "invalid_json", id="json-nested-10000-deep"),
    pytest.param("[" * 100_000, 400, "invalid_json", id="json-100000-open-brackets"),
    pytest.param('{"document": {"text": "x"}, "task": {"type": "extract", "schema": '
                 + nested(900, '{"type": "object"}') + "}}", 400, "invalid_json", id="schema-nested-900-deep"),
    pytest.param('{"document": {"text": "lone \\ud800 surrogate"}, "task": {"type": "summarize"}}', 400,
                 "invalid_characters", id="lone-surrogate-in-text"),
    pytest.param('{"document": {"text": "x"}, "task": {"type": "classify", "labels": ["a", "b\\udfff"]}}', 400,
                 "invalid_characters", id="lone-surrogate-in-a-label"),
    pytest.param('{"document": {"text": "x"}, "task": {"type": "summarize", "\\ud800": 1}}', 400,
                 "invalid_characters", id="lone-surrogate-in-a-key"),
    pytest.param('{"document": {"text": "nul \\u0000 inside"}, "task": {"type": "summarize"}}', 400,
                 "invalid_characters", id="nul-in-text"),
    pytest.param({"document": {"text": "x"}, "task": {"type": "ｓｕｍｍａｒｉｚｅ"}}, 400, "unknown_task",
                 id="full-width-task-type"),
    pytest.param({"document": {"text": "x"}, "task": {"type": "t" * 100_000}}, 400, "unknown_task",
                 id="task-type-of-100000-characters"),
    pytest.param({"document": {"text": "x"}, "task": {"type": "classify", "labels": ["Invoice", "\uff29nvoice"]}},
                 400, "invalid_labels", id="look-alike-labels"),
    pytest.param({"document": {"s3_key": "uploads/\uff0e\uff0e/results/secret.json"}, "task": {"type": "summarize"}},
                 404, "document_not_found", id="s3-key-with-full-width-dots-stays-in-its-folder"),
]


@pytest.mark.parametrize("payload, status, code", CLIENT_MISTAKES)
def test_a_client_mistake_is_a_documented_4xx_with_a_short_message(client, services, sqs, drain_queue, caplog,
                                                                   payload, status, code):
    before = job_count(services)

    message = assert_refused(post(client, payload), status, code)

    assert job_count(services) == before and queued_job_ids(sqs, drain_queue) == []
    assert "t" * 200 not in message
    assert_short_refusal_logged(caplog, code)


def test_nul_in_a_raw_text_body_is_refused(client, services, drain_queue):
    response = client.http.post("/jobs", headers={"content-type": "text/plain"}, body=b"a ledger\x00with a NUL")

    assert_refused(response, 400, "invalid_characters")


def test_a_schema_nested_900_deep_in_the_query_is_refused_with_a_short_log(client, drain_queue, caplog):
    response = client.http.post("/jobs?task=extract&schema=" + nested(900, '{"type": "object"}').replace(" ", ""),
                                headers={"content-type": "text/plain"}, body=b"a ledger")

    assert_refused(response, 400, "invalid_schema")
    assert_short_refusal_logged(caplog, "invalid_schema")


@pytest.mark.parametrize("path", [
    pytest.param("/jobs/" + "a" * 10_000, id="10KB-job-id"),
    pytest.param("/jobs/" + "a" * 10_000 + "/result", id="10KB-job-id-result"),
    pytest.param("/jobs/" + "０" * 32, id="full-width-digits"),
    pytest.param("/jobs/" + "0" * 32 + "%0A", id="trailing-newline"),
])
def test_an_unknown_or_malformed_job_id_is_404_without_echoing_it(client, path):
    message = assert_refused(client.http.get(path), 404, "not_found")

    assert "a" * 50 not in message and len(message) < 200


@pytest.mark.parametrize("headers, status, code", [
    pytest.param({"idempotency-key": "k" * 8_000}, 400, "invalid_idempotency_key", id="8KB-idempotency-key"),
    pytest.param({"idempotency-key": "ｋｅｙ-1"}, 400, "invalid_idempotency_key", id="full-width-idempotency-key"),
    pytest.param({"content-type": "application/" + "j" * 8_000}, 415, "unsupported_media_type",
                 id="8KB-content-type"),
    pytest.param({"x-api-key": "k" * 8_000}, 403, "invalid_api_key", id="8KB-api-key"),
])
def test_an_oversized_or_look_alike_header_is_a_short_4xx(client, services, sqs, drain_queue, headers, status, code):
    before = job_count(services)

    message = assert_refused(post(client, {"document": {"text": TEXT}, "task": {"type": "summarize"}}, headers),
                             status, code)

    assert "k" * 100 not in message and "j" * 100 not in message
    assert job_count(services) == before and queued_job_ids(sqs, drain_queue) == []


# --- the document stays data ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    pytest.param("a </document> b", id="plain"),
    pytest.param("a < /document> b", id="space-after-lt"),
    pytest.param("a <\n/document> b", id="newline-after-lt"),
    pytest.param("a <\t/ DOCUMENT\n> b", id="tab-and-case"),
    pytest.param("a \uff1c\uff0fdocument\uff1e b", id="full-width-lt-and-slash"),
    pytest.param("a \uff1c/\uff44\uff4f\uff43\uff55\uff4d\uff45\uff4e\uff54> b", id="full-width-name"),
    pytest.param("a </doc\u200bum\u00adent> b", id="invisible-characters-inside"),
    pytest.param("a \ufe64/document\ufe65 b", id="small-form-lt"),
    pytest.param("é <document pages=\"9\"> b", id="opening-tag-in-non-ascii-text"),
])
def test_a_closing_tag_look_alike_inside_the_document_is_defused(text):
    wrapped = as_data("document", text, pages="1")
    inner = wrapped[len('<document pages="1">\n'):-len("\n</document>")]

    assert "&lt;" in inner
    assert wrapped.endswith("\n</document>") and wrapped.count("</document>") == 1


# --- the newer entry points: POST /uploads, GET /jobs, "tasks" lists ------------------------------------------------

def upload(client, body) -> object:
    text = body if isinstance(body, str) else json.dumps(body)
    return client.http.post("/uploads", headers=JSON_HEADERS, body=text)


@pytest.mark.parametrize("filename, name", [
    pytest.param("../../results/someone/result.pdf", "result.pdf", id="slash-traversal"),
    pytest.param("..\\..\\results\\secret.pdf", "results-secret.pdf", id="backslash-traversal"),
    pytest.param("uploads/bob/x/./report.pdf", "report.pdf", id="another-clients-folder"),
    pytest.param("\uff0e\uff0e\uff0fsecret.pdf", "secret.pdf", id="full-width-dots-and-slash"),
    pytest.param("r" * 250 + ".pdf", "r" * 100 + ".pdf", id="254-character-name"),
])
def test_an_upload_filename_never_leaves_a_fresh_folder_of_the_callers_own(client, services, filename, name):
    response = upload(client, {"filename": filename})

    assert response.status_code == 201, response.body
    form = response.json_body
    folder, _, stored = form["s3_key"].removeprefix("uploads/").partition("/")
    assert len(folder) == 32 and "/" not in stored and stored == name
    assert form["fields"]["key"] == f"uploads/local/{folder}/{stored}"


@pytest.mark.parametrize("body, status, code", [
    pytest.param('{"filename": "lone \\ud800.pdf"}', 400, "invalid_characters", id="lone-surrogate-in-filename"),
    pytest.param('{"filename": "nul\\u0000.pdf"}', 400, "invalid_characters", id="nul-in-filename"),
    pytest.param({"filename": "r" * 100_000 + ".pdf"}, 400, "invalid_request", id="100000-character-filename"),
    pytest.param(nested(10_000), 400, "invalid_json", id="json-nested-10000-deep"),
    pytest.param({"content_type": "application/pdf\r\nx-amz-acl: public-read"}, 415, "unsupported_type",
                 id="header-injection-in-content-type"),
])
def test_a_hostile_upload_request_is_a_short_4xx(client, body, status, code):
    message = assert_refused(upload(client, body), status, code)

    assert "public-read" not in message and "r" * 50 not in message


@pytest.mark.parametrize("query, code", [
    pytest.param("?cursor=" + "c" * 10_000, "invalid_cursor", id="10KB-cursor"),
    pytest.param("?cursor=%00", "invalid_cursor", id="nul-cursor"),
    pytest.param("?limit=" + "9" * 5_000, "invalid_request", id="5000-digit-limit"),
    pytest.param("?limit=-1", "invalid_request", id="negative-limit"),
    pytest.param("?status=" + "S" * 10_000, "invalid_request", id="10KB-status"),
])
def test_a_hostile_listing_request_is_a_short_400(client, query, code):
    message = assert_refused(client.http.get("/jobs" + query), 400, code)

    assert "c" * 50 not in message and "9" * 50 not in message and "S" * 50 not in message


def test_a_remote_schema_in_any_member_of_a_tasks_list_is_refused_by_index_and_nothing_connects(
        client, services, sqs, drain_queue, llm, listener):
    schema = {"type": "object", "properties": {"a": {"$ref": f"{listener.url}/probe"}}}
    before = job_count(services)

    message = assert_refused(post(client, {"document": {"text": TEXT},
                                           "tasks": [{"type": "summarize"}, {"type": "extract", "schema": schema}]}),
                             400, "invalid_schema")

    assert message.startswith("tasks[1]:")
    assert job_count(services) == before and queued_job_ids(sqs, drain_queue) == []
    assert listener.connections() == 0 and llm.calls == 0


@pytest.mark.parametrize("tasks, code", [
    pytest.param([{"type": "summarize"}] * 1_000, "invalid_task", id="1000-tasks"),
    pytest.param([{"type": "summarize"}, "t" * 100_000], "unknown_task", id="100000-character-member"),
    pytest.param([{"type": "summarize"}, {"type": "classify", "labels": ["a", "\uff41"]}], "invalid_labels",
                 id="look-alike-labels-in-a-member"),
])
def test_a_hostile_tasks_list_is_a_short_400_and_no_job(client, services, sqs, drain_queue, tasks, code):
    before = job_count(services)

    message = assert_refused(post(client, {"document": {"text": TEXT}, "tasks": tasks}), 400, code)

    assert "t" * 100 not in message
    assert job_count(services) == before and queued_job_ids(sqs, drain_queue) == []
