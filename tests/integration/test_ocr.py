"""OCR with Amazon Textract, wired against the AWS emulator (moto's Textract backend) and botocore's Stubber.

What this can show: the requests docpipe sends are valid for Textract's API model (botocore checks every parameter
against it), the asynchronous flow (start, poll, page through the results) and the synchronous one, how LINE blocks
become page text and land on the right pages of the document, what is billed and timed, and what happens when
Textract fails, throttles or does not finish. What it cannot show: moto answers every job at once with the blocks a
test gives it, never reads the document in S3 (it does not even check that it exists) and recognises nothing, so
neither the quality of Textract's OCR, nor its real latency, nor IAM permissions are tested here.
"""

from __future__ import annotations

import base64

import pytest
from botocore.stub import Stubber
from moto.textract.models import TextractBackend

from chalicelib.documents.ocr import OCR_PREFIX, TextractOCR
from chalicelib.errors import TransientError
from tests.support.languages import GOOD
from tests.support.pdfs import crafted_pdf, image_page, unicode_page
from tests.support.taskflow import BUCKET, aws_client, configure, deliver_job, get_result, submit

pytestmark = pytest.mark.timeout(120)


def lines(*pages: list[str]) -> list[dict]:
    """Textract's answer for pages of lines: a PAGE block per page and a LINE block per line, as the API gives them."""
    blocks: list[dict] = []
    for number, texts in enumerate(pages, start=1):
        blocks.append({"BlockType": "PAGE", "Id": f"p{number}", "Page": number})
        blocks += [{"BlockType": "LINE", "Id": f"p{number}l{i}", "Page": number, "Text": text, "Confidence": 99.1}
                   for i, text in enumerate(texts)]
        blocks.append({"BlockType": "WORD", "Id": f"p{number}w", "Page": number, "Text": "ignored-word"})
    return blocks


@pytest.fixture
def textract_answers(monkeypatch):
    """What the emulator's Textract answers every job with (it reads no document)."""
    def answer(blocks: list[dict], status: str = "SUCCEEDED") -> None:
        monkeypatch.setattr(TextractBackend, "BLOCKS", blocks)
        monkeypatch.setattr(TextractBackend, "JOB_STATUS", status)
    return answer


def reader(**kwargs) -> TextractOCR:
    return TextractOCR(aws_client("textract"), aws_client("s3"), BUCKET, usd_per_page=0.0015,
                       sleep=lambda seconds: None, **kwargs)


def ocr_objects() -> list[str]:
    listing = aws_client("s3").list_objects_v2(Bucket=BUCKET, Prefix=OCR_PREFIX)
    return [item["Key"] for item in listing.get("Contents", [])]


def test_two_pages_go_through_the_asynchronous_api_as_a_pdf_of_their_own(services, textract_answers):
    textract_answers(lines(["HARBOUR LEDGER 1921", "Ships in port: 14"], ["Storm warning at dusk"]))
    before = ocr_objects()

    result = reader().read("inputs/some-job", [3, 7], subset=b"%PDF-1.7 two pages", document_pages=9, seconds=30)

    assert result.problem is None
    assert result.texts == {3: "HARBOUR LEDGER 1921\nShips in port: 14", 7: "Storm warning at dusk"}
    assert result.pages_billed == 2 and result.cost_usd == pytest.approx(0.003)
    assert ocr_objects() == before  # the pages' own PDF is deleted once read


def test_one_page_goes_through_the_synchronous_api_on_the_document_itself(services, textract_answers):
    textract_answers(lines(["A single scanned page"]))

    result = reader().read("inputs/one-page", [1], subset=None, document_pages=1, seconds=30)

    assert result.texts == {1: "A single scanned page"} and result.pages_billed == 1


def test_a_failed_textract_job_leaves_the_pages_unread_and_says_so(services, textract_answers):
    textract_answers([], status="FAILED")

    result = reader().read("inputs/x", [1, 2], subset=None, document_pages=2, seconds=30)

    assert result.texts == {} and "Textract could not read the pages" in result.problem
    assert result.pages_billed == 2


def test_a_textract_job_still_running_when_time_is_up_leaves_the_pages_unread(services, textract_answers):
    textract_answers([], status="IN_PROGRESS")

    result = reader().read("inputs/x", [1, 2], subset=None, document_pages=2, seconds=3)

    assert result.texts == {} and "did not finish" in result.problem


def stubbed(responses: list[tuple[str, dict]]) -> TextractOCR:
    """A reader whose Textract client answers ``responses`` in turn: a client of its own (the app's is shared), and
    without botocore's retries, so each stubbed error reaches docpipe once."""
    import boto3
    from botocore.config import Config

    client = boto3.client("textract", config=Config(retries={"mode": "standard", "total_max_attempts": 1}))
    stubber = Stubber(client)
    for operation, response in responses:
        if operation == "error":
            stubber.add_client_error("start_document_text_detection", service_error_code=response["code"],
                                     http_status_code=response["status"])
        else:
            stubber.add_response(operation, response)
    stubber.activate()
    return TextractOCR(client, aws_client("s3"), BUCKET, usd_per_page=0.0015, sleep=lambda s: None)


def test_results_are_read_across_every_page_of_the_answer():
    ocr = stubbed([
        ("start_document_text_detection", {"JobId": "j1"}),
        ("get_document_text_detection", {"JobStatus": "IN_PROGRESS"}),
        ("get_document_text_detection", {"JobStatus": "SUCCEEDED", "DocumentMetadata": {"Pages": 2},
                                         "Blocks": lines(["first page"]), "NextToken": "t2"}),
        ("get_document_text_detection", {"JobStatus": "SUCCEEDED", "Blocks": lines([], ["second page"])}),
    ])

    result = ocr.read("inputs/x", [1, 2], subset=None, document_pages=2, seconds=30)

    assert result.texts == {1: "first page", 2: "second page"} and result.pages_billed == 2


@pytest.mark.parametrize("code, status", [("ProvisionedThroughputExceededException", 400),
                                          ("InternalServerError", 500)])
def test_throttling_and_outages_retry_the_job_later(code, status):
    ocr = stubbed([("error", {"code": code, "status": status})])

    with pytest.raises(TransientError) as info:
        ocr.read("inputs/x", [1, 2], subset=None, document_pages=2, seconds=30)
    assert info.value.code == "ocr_unavailable"


def test_a_document_textract_refuses_leaves_the_pages_unread():
    ocr = stubbed([("error", {"code": "UnsupportedDocumentException", "status": 400})])

    result = ocr.read("inputs/x", [1, 2], subset=None, document_pages=2, seconds=30)

    assert result.texts == {} and "UnsupportedDocumentException" in result.problem


# --- through the worker -------------------------------------------------------------------------------------------

SCAN = crafted_pdf([unicode_page(GOOD["english"]), image_page("ARCHIVE COPY"), image_page()])


def test_with_ocr_on_the_pages_without_text_are_read_and_their_cost_and_time_recorded(
        client, sqs, drain_queue, monkeypatch, textract_answers):
    configure(monkeypatch, DOCPIPE_OCR="textract")
    textract_answers(lines(["The keeper's log for the second page, written by hand."],
                           ["The third page lists the lamp oil delivered each month."]))
    job_id = submit(client, {"pdf_base64": base64.b64encode(SCAN).decode(), "filename": "scan.pdf"})

    _payload, job = deliver_job(client, sqs, drain_queue, job_id, first_receive=True)

    assert job["status"] == "SUCCEEDED", job
    assert job["usage"]["ocr"] == {"provider": "textract", "pages": 2, "cost_usd": 0.003}
    assert job["timings"]["ocr_seconds"] >= 0
    assert "pages 2–3 were read by OCR" in job["warnings"]
    assert get_result(client, job_id)["document"]["pages"] == 3


def test_without_ocr_a_scan_fails_as_no_text_before_any_llm_call(client, sqs, drain_queue, llm):
    data = crafted_pdf([image_page("ARCHIVE COPY"), image_page()])
    job_id = submit(client, {"pdf_base64": base64.b64encode(data).decode(), "filename": "scan.pdf"})

    _payload, job = deliver_job(client, sqs, drain_queue, job_id, first_receive=True)

    assert job["status"] == "FAILED" and job["error"]["code"] == "no_text"
    assert "images without text" in job["error"]["message"] and "DOCPIPE_OCR=textract" in job["error"]["message"]
    assert llm.calls == 0 and job["usage"]["calls"] == 0 and "ocr" not in job["usage"]


def test_ocr_settings_are_validated():
    from chalicelib.config import ConfigError, load_settings

    assert load_settings({}).ocr is None
    assert load_settings({"DOCPIPE_OCR": "textract", "DOCPIPE_OCR_MAX_PAGES": "20"}).ocr_max_pages == 20
    with pytest.raises(ConfigError, match="DOCPIPE_OCR"):
        load_settings({"DOCPIPE_OCR": "tesseract"})
