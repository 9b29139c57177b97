"""The classify task: a label, its confidence and the pages that support it — from the model, or offline by words."""

from __future__ import annotations

import json

import pytest

from chalicelib.errors import RequestError
from chalicelib.tasks.classify import Vote, decide
from chalicelib.tasks.spec import parse_task, task_from_query
from tests.support.taskflow import configure, excerpt, map_requests, run_job, submit, system_text

pytestmark = pytest.mark.timeout(60)

FILLER = "This page was scanned by the records office and filed under the year of its writing."
PAGES = [
    f"Invoice for services rendered. Amount due: 300 euros, payable within thirty days. {FILLER}",
    f"The invoice lists three line items and the VAT. Please pay the amount due by bank transfer. {FILLER}",
    f"Dear colleague, thank you for the lovely dinner last week. Warm regards, Ada. {FILLER}",
]
TEXT = "\f".join(PAGES)
LABELS = [{"name": "invoice", "description": "a bill asking for payment"},
          {"name": "letter", "description": "personal correspondence"}, "contract"]


def judge(body: dict) -> str:
    """A fake model's verdict on one excerpt: invoices by their words, anything else a letter."""
    text = excerpt({"json": body})[1]
    if "invoice" in text.lower():
        return json.dumps({"label": "invoice", "confidence": 0.9})
    return json.dumps({"label": "letter", "confidence": 0.6})


@pytest.fixture
def classifier(llm, monkeypatch):
    configure(monkeypatch, DOCPIPE_CHUNK_TOKENS="50", DOCPIPE_CHUNK_OVERLAP_TOKENS="0")
    llm.responder = judge
    return llm


def test_the_label_with_most_confident_votes_wins_with_its_pages(client, sqs, drain_queue, classifier):
    job, result = run_job(client, sqs, drain_queue, submit(client, {"text": TEXT},
                                                           {"type": "classify", "labels": LABELS}))

    assert job["status"] == "SUCCEEDED", job
    assert result["label"] == "invoice"
    assert 0.5 < result["confidence"] < 1 and result["scores"]["contract"] == 0
    assert sum(result["scores"].values()) == pytest.approx(1)
    assert 1 in result["pages"] and 3 not in result["pages"]
    assert result["prompt_version"] == "classify/1" and result["reduce_levels"] == 0
    assert job["usage"]["calls"] == classifier.calls == result["document"]["chunks"]


def test_the_model_may_only_answer_with_one_of_the_labels(client, sqs, drain_queue, classifier):
    run_job(client, sqs, drain_queue, submit(client, {"text": TEXT}, {"type": "classify", "labels": LABELS}))

    request = map_requests(classifier)[0]
    schema = request["json"]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["label"]["enum"] == ["invoice", "letter", "contract"]
    assert "- invoice: a bill asking for payment" in system_text(request)


def test_an_answer_outside_the_labels_is_re_asked(client, sqs, drain_queue, classifier, monkeypatch):
    configure(monkeypatch, DOCPIPE_LLM_CONCURRENCY="1")
    classifier.script([("ok", '{"label": "receipt", "confidence": 0.8}')])

    job, result = run_job(client, sqs, drain_queue, submit(client, {"text": PAGES[0]},
                                                           {"type": "classify", "labels": LABELS}))

    assert result["label"] == "invoice"
    complaint = classifier.chat_requests[1]["json"]["messages"][-1]["content"]
    assert "/label: 'receipt' is not one of ['invoice', 'letter', 'contract']" in complaint
    assert job["usage"]["calls"] == 2


def test_offline_the_labels_words_decide_and_the_result_says_so(client, sqs, drain_queue, monkeypatch):
    configure(monkeypatch, DOCPIPE_CHUNK_TOKENS="50", DOCPIPE_CHUNK_OVERLAP_TOKENS="0")

    job, result = run_job(client, sqs, drain_queue, submit(client, {"text": TEXT},
                                                           {"type": "classify", "labels": LABELS}))

    assert job["status"] == "SUCCEEDED", job
    assert result["provider"] == "offline-keyword" and result["model"] is None
    assert "no language model judged the document" in result["note"]
    assert result["label"] == "invoice" and 1 in result["pages"]
    assert job["usage"]["calls"] == 0


def test_offline_a_document_sharing_no_word_with_any_label_gets_no_label(client, sqs, drain_queue):
    job, result = run_job(client, sqs, drain_queue, submit(client, {"text": PAGES[2]}, {
        "type": "classify", "labels": ["spreadsheet", "photograph"]}))

    assert job["status"] == "SUCCEEDED"
    assert (result["label"], result["confidence"], result["pages"]) == (None, 0.0, [])


def test_votes_are_weighted_by_confidence_and_chunk_size():
    votes = [Vote("a", 0.9, 1, 1, 100), Vote("b", 0.6, 2, 3, 100), Vote("b", 0.6, 4, 4, 100), Vote(None, 0, 5, 5, 10)]

    decision = decide(votes, ["a", "b"])

    assert decision.label == "b" and decision.pages == [2, 3, 4]
    assert decision.confidence == pytest.approx(1.2 / 2.1, abs=1e-4)


# --- validation -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("labels", [None, "invoice", ["only-one"], ["a", "A"], ["a", ""], ["a", {"name": "b", "x": 1}],
                                    ["a", {"name": "b", "description": 5}], [f"l{i}" for i in range(51)]])
def test_bad_labels_are_a_client_error_with_their_own_code(labels):
    task = {"type": "classify"} if labels is None else {"type": "classify", "labels": labels}

    with pytest.raises(RequestError) as refused:
        parse_task(task)

    assert refused.value.code == "invalid_labels" and refused.value.status == 400


def test_labels_can_come_comma_separated_in_the_query_string():
    assert task_from_query({"task": "classify", "labels": "invoice, letter"}) == {
        "type": "classify", "labels": ["invoice", "letter"]}
