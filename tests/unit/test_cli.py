"""The ``docpipe`` command without a network: its arguments, what it sends, what it prints and its exit codes,
against an in-memory API (httpx's MockTransport) and a clock that never sleeps."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from docpipe_cli.inputs import UsageError, build_task
from docpipe_cli.main import main
from docpipe_cli.render import print_result
from tests.support.pdfs import make_pdf

API = "http://docpipe.test"
JOB_A, JOB_B = "a" * 32, "b" * 32


class FakeAPI:
    """docpipe's routes and S3's form upload, in memory; ``script`` lists what GET /jobs/{id} answers in turn (an
    exception is raised as a lost connection)."""

    def __init__(self, *, status_script=None, s3_status=204):
        self.requests: list[httpx.Request] = []
        self.script = list(status_script or [])
        self.s3_status = s3_status
        self.next_ids = [JOB_A, JOB_B]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if request.url.host == "s3.test":
            if self.s3_status != 204:
                return httpx.Response(self.s3_status, text="<Error><Code>EntityTooLarge</Code><Message>Your proposed "
                                                           "upload exceeds the maximum allowed size</Message></Error>")
            return httpx.Response(204)
        if request.method == "POST" and path == "/uploads":
            return httpx.Response(201, json={"url": "http://s3.test/bucket", "fields": {"key": "uploads/local/x/f.pdf",
                                                                                       "policy": "p"},
                                             "s3_key": "uploads/x/f.pdf", "max_bytes": 10_000_000})
        if request.method == "POST" and path == "/jobs":
            return httpx.Response(202, json={"job_id": self.next_ids.pop(0), "status": "QUEUED"})
        if request.method == "GET" and path.endswith("/result"):
            return httpx.Response(200, json=summary_result())
        if request.method == "GET" and path.startswith("/jobs/"):
            step = self.script.pop(0) if self.script else "SUCCEEDED"
            if isinstance(step, Exception):
                raise step
            job = {"job_id": path.rsplit("/", 1)[-1], "status": step, "progress": {"chunks_done": 1,
                                                                                    "chunks_total": 2}}
            if step == "FAILED":
                job["error"] = {"code": "encrypted", "message": "the PDF is encrypted"}
            return httpx.Response(200, json=job)
        if request.method == "GET" and path == "/jobs":
            cursor = request.url.params.get("cursor")
            page = {"jobs": [{"job_id": JOB_B if cursor else JOB_A, "status": "SUCCEEDED", "task": "summarize"}],
                    "next_cursor": None if cursor else "c1"}
            return httpx.Response(200, json=page)
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "no such route"}})

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]


def summary_result() -> dict:
    return {"task": {"type": "summarize"}, "summary": "Keepers kept the light burning (p. 2).", "pages_cited": [2],
            "provider": "offline-extractive", "document": {"pages": 3, "chunks": 1},
            "usage": {"calls": 0, "total_tokens": 0, "cost_usd": 0.0}, "warnings": []}


def run(argv: list[str], api: FakeAPI | None = None, env: dict | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, out=Console(file=out, width=200, highlight=False, soft_wrap=True),
                err=Console(file=err, width=200, highlight=False, soft_wrap=True),
                environ={"DOCPIPE_API_URL": API, **(env or {})}, sleep=lambda seconds: None,
                transport=httpx.MockTransport(api or FakeAPI()))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def pdfs(tmp_path: Path) -> Path:
    folder = tmp_path / "scans"
    folder.mkdir()
    for name in ("one.pdf", "two.PDF"):
        (folder / name).write_bytes(make_pdf(["Harbour lights were built where ships broke on the rocks."]))
    (folder / "notes.txt").write_text("not a PDF, so not submitted")
    return folder


# --- usage errors: nothing is sent ----------------------------------------------------------------------------------

def test_a_missing_file_is_a_usage_error_and_nothing_is_sent(tmp_path):
    api = FakeAPI()
    code, _, err = run(["submit", str(tmp_path / "nope.pdf")], api)
    assert code == 2 and "nope.pdf: no such file or directory" in err and api.requests == []


def test_a_directory_without_pdfs_is_a_usage_error(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    code, _, err = run(["submit", str(tmp_path)])
    assert code == 2 and "holds no PDF" in err


def test_an_unknown_option_or_command_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["submit", "x.pdf", "--task", "translate"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize("kind, options, wanted", [
    (None, {}, {"type": "summarize"}),
    (None, {"labels": "invoice, contract"}, {"type": "classify", "labels": ["invoice", "contract"]}),
    (None, {"map_text": "Who is named?", "reduce_text": "Merge."}, {"type": "prompt", "map": "Who is named?",
                                                                    "reduce": "Merge."}),
    ("summarize", {"target_words": 80, "model": "gpt-4o"}, {"type": "summarize", "target_words": 80,
                                                            "model": "gpt-4o"})])
def test_the_options_given_imply_the_task(kind, options, wanted):
    assert build_task(kind, **options) == wanted


@pytest.mark.parametrize("kind, options, message", [
    ("summarize", {"labels": "a,b"}, "--labels: not an option of --task summarize"),
    ("classify", {"labels": "only-one"}, "at least two labels"),
    ("prompt", {"map_text": "x"}, "needs both --map"),
    ("extract", {}, "needs --schema"),
    ("extract", {"schema": "/no/such/schema.json"}, "no such file")])
def test_options_that_do_not_make_a_task_are_usage_errors(kind, options, message):
    with pytest.raises(UsageError, match=message):
        build_task(kind, **options)


# --- submitting ---------------------------------------------------------------------------------------------------

def test_a_directory_submits_each_pdf_in_it_and_prints_every_job_id(pdfs):
    api = FakeAPI()
    code, out, err = run(["submit", str(pdfs)], api)

    assert code == 0
    sent = [json.loads(r.content) for r in api.sent("POST", "/jobs")]
    assert sorted(s["document"]["filename"] for s in sent) == ["one.pdf", "two.PDF"]
    assert all(base64.b64decode(s["document"]["pdf_base64"]).startswith(b"%PDF-") for s in sent)
    assert all(s["task"] == {"type": "summarize"} for s in sent)
    assert len({r.headers["Idempotency-Key"] for r in api.sent("POST", "/jobs")}) == 2
    assert JOB_A in err and JOB_B in err and {JOB_A, JOB_B} <= set(out.split())


def test_a_file_over_the_inline_size_goes_through_uploads_and_s3_never_sees_the_key(pdfs):
    api = FakeAPI()
    code, _, _ = run(["submit", str(pdfs / "one.pdf"), "--upload-over", "100", "--api-key", "k-123"], api)

    assert code == 0
    [form_post] = [r for r in api.requests if r.url.host == "s3.test"]
    assert "x-api-key" not in form_post.headers and b"%PDF-" in form_post.content
    assert form_post.content.index(b'name="policy"') < form_post.content.index(b'name="file"')  # S3: file last
    [job] = [json.loads(r.content) for r in api.sent("POST", "/jobs")]
    assert job["document"] == {"s3_key": "uploads/x/f.pdf", "filename": "one.pdf"}
    assert api.sent("POST", "/uploads")[0].headers["x-api-key"] == "k-123"


def test_an_upload_s3_refuses_fails_with_s3s_reason(pdfs):
    code, out, err = run(["submit", str(pdfs / "one.pdf"), "--upload-over", "100"], FakeAPI(s3_status=400))
    assert code == 1 and "EntityTooLarge" in err + out and "exceeds the maximum allowed size" in out


# --- waiting ------------------------------------------------------------------------------------------------------

def test_waiting_survives_a_lost_connection_and_the_job_id_is_printed_before_it(pdfs):
    lost = httpx.ConnectError("connection refused")
    api = FakeAPI(status_script=["RUNNING", lost, lost, "RUNNING", "SUCCEEDED"])

    code, out, err = run(["submit", str(pdfs / "one.pdf"), "--wait"], api)

    assert code == 0
    assert err.index(JOB_A) < err.index("SUCCEEDED")
    assert "Keepers kept the light burning (p. 2)." in out and "Pages cited: 2" in out
    assert len(api.sent("GET", f"/jobs/{JOB_A}")) == 5


def test_a_failed_job_exits_1_with_its_reason(pdfs):
    code, out, _ = run(["submit", str(pdfs / "one.pdf"), "--wait"], FakeAPI(status_script=["FAILED"]))
    assert code == 1 and f"job {JOB_A} FAILED: encrypted: the PDF is encrypted" in out


def test_json_output_is_one_object_per_document_with_its_result(pdfs):
    code, out, _ = run(["submit", str(pdfs), "--wait", "--json"])
    shown = json.loads(out)
    assert code == 0 and [s["status"] for s in shown] == ["SUCCEEDED", "SUCCEEDED"]
    assert shown[0]["result"]["summary"].startswith("Keepers")


# --- the other commands -------------------------------------------------------------------------------------------

def test_jobs_follows_the_cursor_and_prints_a_table():
    api = FakeAPI()
    code, out, _ = run(["jobs", "--status", "succeeded"], api)
    assert code == 0 and JOB_A in out and JOB_B in out
    assert [r.url.params.get("status") for r in api.sent("GET", "/jobs")] == ["SUCCEEDED", "SUCCEEDED"]


def test_status_of_a_failed_job_exits_1_and_an_unknown_job_prints_docpipes_error():
    assert run(["status", JOB_A], FakeAPI(status_script=["FAILED"]))[0] == 1
    code, _, err = run(["retry", "nonsense"])
    assert code == 1 and "not_found" in err


@pytest.mark.parametrize("result, expected", [
    ({"task": {"type": "extract"}, "data": {"customer": "Acme"}, "valid": False, "errors": ["items is missing"]},
     ['"customer": "Acme"', "Not valid for the schema: items is missing"]),
    ({"task": {"type": "classify"}, "label": "invoice", "confidence": 0.8, "scores": {"invoice": 0.8}},
     ["Label: invoice (confidence 0.80)", "invoice 0.80"]),
    ({"task": {"type": "prompt"}, "answer": "[bold]Ada[/bold] and Grace", "pages_cited": [1]},
     ["[bold]Ada[/bold] and Grace", "Pages cited: 1"])])
def test_each_task_types_result_prints_readably_and_server_text_is_never_markup(result, expected):
    out = io.StringIO()
    print_result(Console(file=out, width=200), {"usage": {}, "document": {}, **result})
    for text in expected:
        assert text in out.getvalue()
