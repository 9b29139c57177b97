"""The extract task: a client JSON Schema filled chunk by chunk, validated, re-asked, merged with provenance."""

from __future__ import annotations

import json
import re

import pytest

from chalicelib.errors import RequestError
from chalicelib.tasks.extract import relaxed_schema
from chalicelib.tasks.jsonmerge import merge_answers
from chalicelib.tasks.spec import parse_task, task_from_query
from tests.support.fake_openai import error_body
from tests.support.taskflow import (
    API_KEY,
    configure,
    excerpt,
    job_count,
    map_requests,
    queued_job_ids,
    run_job,
    submit,
    user_text,
)

pytestmark = pytest.mark.timeout(60)

SCHEMA = {
    "type": "object",
    "properties": {
        "invoice_number": {"type": "string"},
        "customer": {"type": "string"},
        "items": {"type": "array", "items": {"type": "string"}},
        "total": {"type": "number"},
    },
    "required": ["invoice_number", "customer", "items"],
    "additionalProperties": False,
}
FILLER = "The lighthouse supply office keeps a copy of this page in the ledger for seven years."
PAGES = [
    f"Invoice number INV-7. Customer: Ada Lovelace. Items: brass lamp, glass lens. {FILLER}",
    f"Customer: Ada Lovelace. Items: Glass  lens, oil can. Total: 120. {FILLER}",
    f"Customer: Ada Byron. Items: wick. {FILLER}",
]
TEXT = "\f".join(PAGES)


def facts(body: dict) -> str:
    """What a diligent model would extract from the excerpt of a request ``body``, as JSON."""
    text = excerpt({"json": body})[1]
    found: dict = {}
    if number := re.search(r"Invoice number (\S+)\.", text):
        found["invoice_number"] = number.group(1)
    if customer := re.search(r"Customer: ([^.]+)\.", text):
        found["customer"] = customer.group(1)
    items = [i.strip() for listed in re.findall(r"Items: ([^.]+)\.", text) for i in listed.split(",")]
    if items:
        found["items"] = items
    if total := re.search(r"Total: (\d+)", text):
        found["total"] = int(total.group(1))
    return json.dumps(found)


@pytest.fixture
def extractor(llm, monkeypatch):
    """The fake model answers with the facts of each excerpt; chunks of about a page."""
    configure(monkeypatch, DOCPIPE_CHUNK_TOKENS="50", DOCPIPE_CHUNK_OVERLAP_TOKENS="0")
    llm.responder = facts
    return llm


def extract_job(client) -> str:
    return submit(client, {"text": TEXT}, {"type": "extract", "schema": SCHEMA})


def test_chunk_answers_merge_into_one_valid_object_with_provenance(client, sqs, drain_queue, extractor):
    job, result = run_job(client, sqs, drain_queue, extract_job(client))

    assert job["status"] == "SUCCEEDED", job
    assert result["valid"] is True and result["errors"] == []
    data = result["data"]
    assert data["invoice_number"] == "INV-7" and data["total"] == 120
    assert data["customer"] == "Ada Lovelace"  # the majority; the other value is kept with its page
    assert {"value": "Ada Byron", "pages": [3]} in result["provenance"]["/customer"]["alternatives"]
    assert data["items"] == ["brass lamp", "glass lens", "oil can", "wick"]  # "Glass  lens" is the same item
    assert result["provenance"]["/items/3"] == {"pages": [3]}
    assert result["response_format"] == "json_schema" and result["prompt_version"] == "extract/1"
    assert result["reduce_levels"] == 0 and job["usage"]["calls"] == extractor.calls == result["document"]["chunks"]


def test_map_requests_use_structured_outputs_with_a_schema_one_excerpt_can_satisfy(client, sqs, drain_queue,
                                                                                   extractor):
    run_job(client, sqs, drain_queue, extract_job(client))

    request = map_requests(extractor)[0]["json"]
    assert request["response_format"]["type"] == "json_schema"
    sent = request["response_format"]["json_schema"]["schema"]
    assert sent == relaxed_schema(SCHEMA) and "required" not in sent
    assert request["messages"][1]["content"].startswith('<document pages="')


def test_an_answer_invalid_against_the_schema_is_re_asked_with_the_errors(client, sqs, drain_queue, extractor,
                                                                          monkeypatch):
    configure(monkeypatch, DOCPIPE_LLM_CONCURRENCY="1")
    extractor.script([("ok", '{"customer": 42, "items": "lamp"}')])

    job, result = run_job(client, sqs, drain_queue, extract_job(client))

    assert job["status"] == "SUCCEEDED" and result["valid"], result
    first, again = extractor.chat_requests[:2]
    assert again["json"]["messages"][:2] == first["json"]["messages"]
    assistant, complaint = again["json"]["messages"][2:]
    assert assistant == {"role": "assistant", "content": '{"customer": 42, "items": "lamp"}'}
    assert "/customer: 42 is not of type 'string'" in complaint["content"]
    assert "/items: 'lamp' is not of type 'array'" in complaint["content"]
    assert job["usage"]["calls"] == result["document"]["chunks"] + 1


def test_a_chunk_never_answered_validly_is_skipped_with_a_warning(client, sqs, drain_queue, extractor):
    extractor.responder = lambda body: "I'm sorry, I can't." if "wick" in str(body["messages"][1]) else facts(body)

    job, result = run_job(client, sqs, drain_queue, extract_job(client))

    assert job["status"] == "SUCCEEDED", job
    assert any(re.search(r"chunk \d+ \(pages [\d-]+\) was skipped: no answer valid", w) for w in job["warnings"])
    assert "wick" not in result["data"]["items"] and "Ada Byron" not in json.dumps(result["provenance"])
    refused = [r for r in extractor.chat_requests if "wick" in user_text(r)]
    assert len(refused) == 3  # the first answer and two re-prompts


def test_a_document_whose_every_answer_is_unusable_fails_with_a_clear_code(client, sqs, drain_queue, extractor):
    extractor.responder = lambda body: "[1, 2, 3]"

    job, _result = run_job(client, sqs, drain_queue, extract_job(client))

    assert job["status"] == "FAILED" and job["error"]["code"] == "unusable_answers", job


def test_an_endpoint_without_structured_outputs_is_asked_in_json_mode(client, sqs, drain_queue, extractor,
                                                                      monkeypatch):
    configure(monkeypatch, DOCPIPE_LLM_CONCURRENCY="1")
    extractor.script([("status", 400, None, error_body(
        "Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model.",
        "invalid_request_error", None, "response_format"))])

    job, result = run_job(client, sqs, drain_queue, extract_job(client))

    assert job["status"] == "SUCCEEDED" and result["valid"], job
    refused, resent, *rest = extractor.chat_requests
    assert refused["json"]["response_format"]["type"] == "json_schema"
    assert resent["json"]["response_format"] == {"type": "json_object"}
    assert resent["json"]["messages"] == refused["json"]["messages"]
    assert all(r["json"]["response_format"] == {"type": "json_object"} for r in rest)
    assert result["response_format"] == "json_object"


def test_a_resubmitted_extract_job_makes_no_call_at_all(client, sqs, drain_queue, extractor):
    first = run_job(client, sqs, drain_queue, extract_job(client))[1]
    extractor.reset()

    job, result = run_job(client, sqs, drain_queue, extract_job(client))

    assert extractor.calls == 0
    assert job["usage"]["cache_hits"] == result["document"]["chunks"] and job["usage"]["calls"] == 0
    assert result["data"] == first["data"]


def test_a_job_whose_spend_reaches_its_budget_stops_cleanly(client, sqs, drain_queue, extractor, monkeypatch):
    configure(monkeypatch, DOCPIPE_LLM_CONCURRENCY="1")
    probe = submit(client, {"text": TEXT}, {"type": "extract", "schema": SCHEMA, "max_total_tokens": 1})
    estimate = run_job(client, sqs, drain_queue, probe)[0]["usage"]["estimated_tokens"]
    # Each excerpt is answered validly only on the last re-prompt, after two long broken answers.
    extractor.responder = lambda body: facts(body) if len(body["messages"]) == 6 else '{"notes": "' + "blah " * 600

    job_id = submit(client, {"text": TEXT}, {"type": "extract", "schema": SCHEMA, "max_total_tokens": estimate})
    job, _result = run_job(client, sqs, drain_queue, job_id)

    assert job["status"] == "FAILED" and job["error"]["code"] == "budget_exceeded", job
    assert "it was stopped" in job["error"]["message"]
    assert job["usage"]["total_tokens"] >= estimate
    assert job["usage"]["calls"] == extractor.calls < 3 * job["progress"]["chunks_total"]


def test_a_rejected_api_key_fails_the_job_at_the_first_call_without_leaking_it(client, sqs, drain_queue,
                                                                                extractor, monkeypatch):
    configure(monkeypatch, DOCPIPE_LLM_CONCURRENCY="1")
    extractor.script([("status", 401)])

    job, _result = run_job(client, sqs, drain_queue, extract_job(client))

    assert job["status"] == "FAILED" and job["error"]["code"] == "llm_unavailable"
    assert "401" in job["error"]["message"] and "invalid_api_key" in job["error"]["message"]
    assert extractor.calls == 1 and API_KEY not in json.dumps(job)


def test_without_an_llm_endpoint_extract_is_refused_at_submit_and_says_why(client, services, sqs, drain_queue):
    before = job_count(services)

    response = client.http.post("/jobs", headers={"content-type": "application/json"}, body=json.dumps(
        {"document": {"text": TEXT}, "task": {"type": "extract", "schema": SCHEMA}}))

    assert response.status_code == 422 and response.json_body["error"]["code"] == "llm_unavailable"
    assert "extract task needs an LLM endpoint" in response.json_body["error"]["message"]
    assert job_count(services) == before and queued_job_ids(sqs, drain_queue) == []


# --- validation -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("schema, fragment", [
    (None, "needs task.schema"),
    ("a string", "must be a JSON Schema object"),
    ({"type": "array", "items": {"type": "string"}}, 'root needs "type": "object"'),
    ({"type": "object", "properties": {"a": {"type": "strnig"}}}, "at /properties/a/type"),
    ({"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}},
     "at /properties/a/$ref: 'https://example.com/s.json' does not resolve inside the schema"),
    ({"type": "object", "description": "x" * 30_000}, "at most 20000 bytes"),
])
def test_a_bad_schema_is_a_client_error_with_its_own_code(schema, fragment):
    task = {"type": "extract"} if schema is None else {"type": "extract", "schema": schema}

    with pytest.raises(RequestError) as refused:
        parse_task(task)

    assert refused.value.code == "invalid_schema" and refused.value.status == 400
    assert fragment in refused.value.message


def test_a_bad_schema_is_refused_by_post_jobs(client):
    response = client.http.post("/jobs", headers={"content-type": "application/json"}, body=json.dumps(
        {"document": {"text": TEXT}, "task": {"type": "extract", "schema": {"type": "object", "required": 3}}}))

    assert response.status_code == 400 and response.json_body["error"]["code"] == "invalid_schema"


def test_a_schema_can_come_in_the_query_string_of_a_raw_upload():
    schema = {"type": "object", "properties": {"title": {"type": "string"}}}

    assert task_from_query({"task": "extract", "schema": json.dumps(schema)}) == {"type": "extract", "schema": schema}


# --- the merge ------------------------------------------------------------------------------------------------------

def test_nested_objects_merge_key_by_key_and_missing_values_are_never_invented():
    schema = {"type": "object", "properties": {
        "author": {"type": "object", "properties": {"name": {"type": "string"}, "email": {"type": "string"}}},
        "year": {"type": ["integer", "null"]}, "title": {"type": "string"}}}

    merged, provenance, notes = merge_answers([({"author": {"name": "Ada"}, "year": None}, [1]),
                                               ({"author": {"email": "ada@example.org"}}, [2])], schema)

    assert merged == {"author": {"name": "Ada", "email": "ada@example.org"}, "year": None}
    assert provenance["/author/email"] == {"pages": [2]}
    assert notes == []


def test_lists_longer_than_max_items_keep_the_first_items_and_say_so():
    schema = {"type": "object", "properties": {"tags": {"type": "array", "maxItems": 2}}}

    merged, _provenance, notes = merge_answers([({"tags": ["a", "b"]}, [1]), ({"tags": ["B", "c"]}, [2])], schema)

    assert merged == {"tags": ["a", "b"]}
    assert notes and "3 distinct items" in notes[0]


def test_relaxing_a_schema_drops_only_whole_document_constraints():
    schema = {"type": "object", "required": ["a"], "properties": {
        "required": {"type": "string"},
        "a": {"type": "array", "minItems": 2, "items": {"type": "object", "required": ["b"],
                                                        "properties": {"b": {"type": "integer"}}}}},
        "$defs": {"x": {"type": "object", "minProperties": 1}}}

    assert relaxed_schema(schema) == {"type": "object", "properties": {
        "required": {"type": "string"},
        "a": {"type": "array", "items": {"type": "object", "properties": {"b": {"type": "integer"}}}}},
        "$defs": {"x": {"type": "object"}}}


def test_a_job_over_budget_for_fresh_calls_runs_from_the_cache(client, sqs, drain_queue, extractor):
    first = run_job(client, sqs, drain_queue, extract_job(client))[1]
    extractor.reset()

    job, result = run_job(client, sqs, drain_queue, submit(client, {"text": TEXT}, {
        "type": "extract", "schema": SCHEMA, "max_total_tokens": 1}))

    assert job["status"] == "SUCCEEDED", job
    assert extractor.calls == 0 and job["usage"]["estimated_tokens"] == 0
    assert result["data"] == first["data"]
