"""The deploy rehearsal: what ``make deploy`` ships, deployed and run the way AWS would run it, under least privilege.

A clean checkout of the project is deployed to a private emulator by ``make deploy``'s own code path
(``scripts/deploy.py`` in the pinned Python): the checked build, the stack, Chalice's deployer, the state in the
bucket, the API key. The LLM key is set the way an operator sets it (``make llm-key``), pointing at a fake
OpenAI-compatible server. Then each function runs from *its unpacked artefacts* (the function zip and the layer
Lambda holds, compared by digest with the checked build) in a fresh interpreter of the pinned version whose
``sys.path`` holds nothing but those and boto3, with the environment Lambda gives it and the temporary credentials
of *its deployed execution role*, while the emulator enforces IAM. Every request IAM denies is recorded, so each
scenario also proves that its function's policy allows all it does: its own calls (Textract's included, with OCR
on), those Powertools makes for it (idempotency, circuit breaker, parameters), and the event source mapping's
polling, which Lambda does with the function's role too. What the runtime does with the role and nobody can call
locally (writing logs and traces) is checked on the deployed policies themselves.
"""

from __future__ import annotations

import json
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from scripts.stage import RESOURCE_WIDE_ACTIONS
from tests.events import api_gateway_event, s3_event, scheduled_event, sqs_event
from tests.support import PROJECT, rehearsal
from tests.support.fake_openai import FakeOpenAI
from tests.support.pdfs import crafted_pdf, image_page
from tests.support.rehearsal import (
    REGION,
    Emulator,
    LambdaHost,
    assume,
    aws_env,
    clean_checkout,
    client,
    create_admin,
    run_make_step,
)

STAGE = "dev"
LLM_KEY = "sk-rehearsal-7f3a9c"
TEXT = ("Lighthouses guide ships at night. Keepers trimmed the wicks and wound the clockwork that turned the lens. "
        "Fog signals sounded when the light could not be seen. ") * 12
SAMPLE_PDF = PROJECT / "samples" / "lighthouse-keeping.pdf"
# Sources whose calls go through the function's role on AWS: Lambda's SQS poller for the two consumers.
QUEUES = {"process_jobs": "docpipe-dev-jobs", "fail_dead_letters": "docpipe-dev-jobs-dlq"}


@dataclass
class DeployedStage:
    checkout: Path
    env: dict[str, str]
    record: dict[str, Any]
    manifest: dict[str, Any]
    deploy_output: str
    account: str
    bucket: str
    api_key_id: str

    def resources(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {r["name"]: r for r in self.record["resources"] if r["resource_type"] == resource_type}


@dataclass
class Functions:
    """The stage's functions, each hosted from the unpacked artefacts with its role's credentials."""

    stage: DeployedStage
    emulator: Emulator
    admin: dict[str, str]
    workdir: Path
    configurations: dict[str, dict[str, Any]]
    credentials: dict[str, dict[str, str]]
    task: Path
    opt: Path
    _hosts: dict[tuple[str, tuple], LambdaHost] = field(default_factory=dict)

    def host(self, function: str, **overrides: str) -> LambdaHost:
        """The function's warm instance (one per set of environment ``overrides``), started on first use."""
        key = (function, tuple(sorted(overrides.items())))
        if key not in self._hosts:
            log = self.workdir / f"{function}-{len(self._hosts)}.log"
            self._hosts[key] = LambdaHost(configuration=self.configurations[function], task=self.task, opt=self.opt,
                                          credentials=self.credentials[function], emulator=self.emulator,
                                          account=self.stage.account, log=log, overrides=overrides)
        return self._hosts[key]

    def admin_client(self, service: str) -> Any:
        return client(self.emulator, service, self.admin)

    def deliver(self, function: str, *, max_batches: int = 5, **overrides: str) -> list[dict[str, Any]]:
        """What Lambda's SQS poller does, with the function's own role: take batches off its queue, invoke the
        function, delete the messages it did not report as failed. Returns each invocation's answer."""
        sqs = client(self.emulator, "sqs", self.credentials[function])
        queue = QUEUES[function]
        url = f"{self.emulator.url}/{self.stage.account}/{queue}"
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        answers = []
        for _ in range(max_batches):
            messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=5, WaitTimeSeconds=1,
                                           MessageSystemAttributeNames=["All"],
                                           MessageAttributeNames=["All"]).get("Messages", [])
            if not messages:
                break
            answer = self.host(function, **overrides).invoke(sqs_event(messages, arn))
            failed = {f["itemIdentifier"] for f in (answer or {}).get("batchItemFailures", [])}
            for message in messages:
                if message["MessageId"] not in failed:
                    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            answers.append(answer)
        return answers

    def api(self, method: str, resource: str, *, function: str = "api_handler", overrides: dict[str, str] | None = None,
            **request: Any) -> tuple[int, dict[str, Any]]:
        """A request through API Gateway to the API function: (status, JSON body)."""
        event = api_gateway_event(method, resource, api_key_id=self.stage.api_key_id, account=self.stage.account,
                                  **request)
        response = self.host(function, **(overrides or {})).invoke(event)
        return response["statusCode"], json.loads(response["body"])

    def close(self) -> None:
        for host in self._hosts.values():
            host.close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("rehearsal")


@pytest.fixture(scope="module")
def emulator(workdir):
    rehearsal.require_deploy_environment()
    emulator = Emulator(workdir)
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def admin(emulator) -> dict[str, str]:
    return create_admin(emulator)


@pytest.fixture(scope="module")
def fake_llm():
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def stage(emulator, admin, workdir, fake_llm) -> DeployedStage:
    """A clean checkout deployed by `make deploy`'s code path, and its LLM key set by `make llm-key`'s."""
    checkout = clean_checkout(workdir / "checkout")
    env = aws_env(emulator, admin, workdir / "home")
    deployed = run_make_step(checkout, "deploy", env, "--stage", STAGE)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-5000:]
    keyed = run_make_step(checkout, "llm_key", {**env, "OPENAI_API_KEY": LLM_KEY, "OPENAI_BASE_URL": fake_llm.base_url},
                          "--stage", STAGE)
    assert keyed.returncode == 0, keyed.stderr
    assert LLM_KEY not in keyed.stdout + keyed.stderr
    record = json.loads((checkout / ".chalice" / "deployed" / f"{STAGE}.json").read_text())
    manifest = json.loads((checkout / "build" / STAGE / "manifest.json").read_text())
    account = client(emulator, "sts", admin).get_caller_identity()["Account"]
    api_key_id = next(k["id"] for k in client(emulator, "apigateway", admin).get_api_keys()["items"]
                      if k["name"] == f"docpipe-{STAGE}-default")
    return DeployedStage(checkout, env, record, manifest, deployed.stdout, account,
                         f"docpipe-{STAGE}-{account}-{REGION}", api_key_id)


@pytest.fixture(scope="module")
def functions(stage, emulator, admin, workdir):
    """Each function's deployed configuration and code, its role's credentials, and IAM enforced from here on."""
    lambda_client = client(emulator, "lambda", admin)
    configurations = {name: lambda_client.get_function_configuration(FunctionName=r["lambda_arn"])
                      for name, r in stage.resources("lambda_function").items()}
    task, opt = workdir / "var-task", workdir / "opt"
    build = stage.checkout / "build" / STAGE
    zipfile.ZipFile(build / "deployment.zip").extractall(task)
    zipfile.ZipFile(build / "layer-deployment.zip").extractall(opt)
    credentials = {name: assume(emulator, admin, c["Role"]) for name, c in configurations.items()}
    emulator.enforce_iam(True)
    hosted = Functions(stage, emulator, admin, workdir, configurations, credentials, task, opt)
    yield hosted
    hosted.close()
    emulator.enforce_iam(False)


@pytest.fixture
def no_denials(functions):
    """Fails the test if IAM denied any request its scenario made (the scenario's own expected ones aside)."""
    before = len(functions.emulator.denials())
    expected: list[dict[str, str]] = []
    yield expected
    denied = functions.emulator.denials()[before:]
    assert denied == expected, f"IAM denied: {json.dumps(denied, indent=1)}"


def job_view(functions: Functions, job_id: str) -> dict[str, Any]:
    status, view = functions.api("GET", "/jobs/{job_id}", path_parameters={"job_id": job_id})
    assert status == 200, view
    return view


# --- the build Lambda holds ------------------------------------------------------------------------------------

def test_lambda_holds_exactly_the_checked_build_on_the_pinned_runtime(stage, functions, emulator, admin):
    pinned = (PROJECT / ".chalice" / "python-version").read_text().strip()
    layer_arn = stage.resources("lambda_layer")["managed-layer"]["layer_version_arn"]
    _, name, version = layer_arn.rsplit(":", 2)
    with emulator.without_iam():
        layer = client(emulator, "lambda", admin).get_layer_version(LayerName=name, VersionNumber=int(version))

    assert layer["Content"]["CodeSha256"] == stage.manifest["artefacts"]["layer-deployment.zip"]["sha256"]
    assert set(functions.configurations) == {"api_handler", "process_jobs", "fail_dead_letters",
                                             "start_job_from_upload", "keep_warm", "workflow_validate",
                                             "workflow_extract", "workflow_map", "workflow_aggregate",
                                             "workflow_store", "workflow_failed", "workflow_ended",
                                             "workflow_sweep"}
    for configuration in functions.configurations.values():
        assert configuration["CodeSha256"] == stage.manifest["artefacts"]["deployment.zip"]["sha256"]
        assert configuration["Runtime"] == f"python{pinned}"
        assert [layer["Arn"] for layer in configuration["Layers"]] == [layer_arn]
    # Every function starts from the artefacts alone: its sys.path is the unpacked zips and boto3.
    ready = functions.host("keep_warm").ready
    layer_site = functions.opt / f"python/lib/python{pinned}/site-packages"
    assert ready["sys_path"][:4] == [str(functions.task), str(layer_site), str(functions.opt / "python"),
                                     str(rehearsal.LAMBDA_RUNTIME_DIR)]
    assert not any("site-packages" in p and not p.startswith(str(functions.opt)) for p in ready["sys_path"])


# --- each entry point, through the packaged code ----------------------------------------------------------------

def test_a_job_submitted_through_the_packaged_api_succeeds_in_the_packaged_worker(functions, fake_llm, no_denials):
    fake_llm.reset()
    status, accepted = functions.api("POST", "/jobs", headers={"Content-Type": "application/json"},
                                     body=json.dumps({"document": {"text": TEXT},
                                                      "task": {"type": "summarize"}}).encode())
    assert status == 202, accepted

    assert functions.deliver("process_jobs") == [{"batchItemFailures": []}]

    view = job_view(functions, accepted["job_id"])
    assert view["status"] == "SUCCEEDED", view
    status, result = functions.api("GET", "/jobs/{job_id}/result", path_parameters={"job_id": accepted["job_id"]})
    assert status == 200 and result["provider"] == "openai" and result["summary"]
    # The key came from the stage's secret, set by `make llm-key`, through Powertools Parameters.
    assert fake_llm.calls >= 1
    assert {r["headers"]["authorization"] for r in fake_llm.chat_requests} == {f"Bearer {LLM_KEY}"}


def test_a_multi_task_job_is_handed_to_the_deployed_state_machine_and_each_stage_runs_under_its_role(
        functions, stage, fake_llm, no_denials):
    status, accepted = functions.api("POST", "/jobs", headers={"Content-Type": "application/json"},
                                     body=json.dumps({"document": {"text": TEXT}, "tasks": [
                                         {"type": "summarize", "target_words": 60},
                                         {"type": "summarize", "target_words": 90}]}).encode())
    assert status == 202, accepted
    job_id = accepted["job_id"]
    assert functions.deliver("process_jobs") == [{"batchItemFailures": []}]
    view = job_view(functions, job_id)
    assert view["orchestrator"] == "stepfunctions" and view["status"] == "RUNNING", view
    execution_arn = view["execution_arn"]
    state_machine = f"arn:aws:states:{REGION}:{stage.account}:stateMachine:docpipe-dev-workflow"
    assert execution_arn == state_machine.replace(":stateMachine:", ":execution:") + f":{job_id}"
    started = functions.admin_client("stepfunctions").describe_execution(executionArn=execution_arn)
    assert json.loads(started["input"]) == {"job_id": job_id, "run": job_id}

    # The emulator here does not run executions: each stage is invoked as the state machine would invoke it.
    state = {"job_id": job_id, "run": job_id}
    assert functions.host("workflow_validate").invoke({**state, "execution_arn": execution_arn}) == {"tasks": 2}
    document = functions.host("workflow_extract").invoke(state)
    for task in (0, 1):
        for start in document["batches"]:
            assert functions.host("workflow_map").invoke({**state, "task": task, "start": start}) == {}
        level = 0
        while True:
            reduced = functions.host("workflow_aggregate").invoke({**state, "task": task, "level": level,
                                                                   "batches": document["batches"]})
            if reduced["done"]:
                break
            level = reduced["level"]
    assert functions.host("workflow_store").invoke(state) == {"result_key": f"results/{job_id}.json"}
    view = job_view(functions, job_id)
    assert view["status"] == "SUCCEEDED", view
    _, result = functions.api("GET", "/jobs/{job_id}/result", path_parameters={"job_id": job_id})
    assert [r["task"]["target_words"] for r in result["results"]] == [60, 90]
    assert result["usage"]["calls"] == sum(r["usage"]["calls"] for r in result["results"]) > 0

    # The stack names the functions Chalice deployed, and its role may invoke them and nothing else.
    definition = json.loads(functions.admin_client("stepfunctions").describe_state_machine(
        stateMachineArn=state_machine)["definition"])
    assert definition["States"]["Validate"]["Resource"] == functions.configurations["workflow_validate"]["FunctionArn"]


def test_an_aborted_execution_fails_its_job_through_the_status_event_and_the_sweep_under_their_roles(
        functions, stage, fake_llm, no_denials):
    jobs = []
    for _ in range(2):
        body = {"document": {"text": TEXT}, "tasks": [{"type": "summarize"},
                                                      {"type": "summarize", "target_words": 40}]}
        status, accepted = functions.api("POST", "/jobs", headers={"Content-Type": "application/json"},
                                         body=json.dumps(body).encode())
        assert status == 202, accepted
        jobs.append(accepted["job_id"])
    functions.deliver("process_jobs")
    machine = f"arn:aws:states:{REGION}:{stage.account}:stateMachine:docpipe-dev-workflow"
    arns = [job_view(functions, job_id)["execution_arn"] for job_id in jobs]
    for arn in arns:
        functions.admin_client("stepfunctions").stop_execution(executionArn=arn, cause="operator")

    event = {"version": "0", "id": "e1", "source": "aws.states", "account": stage.account, "region": REGION,
             "detail-type": "Step Functions Execution Status Change", "time": "2026-01-01T00:00:00Z",
             "resources": [arns[0]], "detail": {"status": "ABORTED", "stateMachineArn": machine,
                                                "executionArn": arns[0], "input": json.dumps({"job_id": jobs[0]})}}
    functions.host("workflow_ended").invoke(event)
    assert job_view(functions, jobs[0])["error"]["code"] == "execution_aborted"
    rule = f"arn:aws:events:{REGION}:{stage.account}:rule/docpipe-dev-workflow_sweep-event"
    assert functions.host("workflow_sweep").invoke(scheduled_event(rule, stage.account))["failed"] >= 1
    view = job_view(functions, jobs[1])
    assert view["status"] == "FAILED" and view["error"]["code"] == "execution_aborted", view


def test_a_pdf_posted_raw_to_the_packaged_api_is_read_by_the_packaged_worker(functions, no_denials):
    status, accepted = functions.api("POST", "/jobs", headers={"Content-Type": "application/pdf"},
                                     body=SAMPLE_PDF.read_bytes(), binary=True, query={"task": "summarize"})
    assert status == 202, accepted

    assert functions.deliver("process_jobs") == [{"batchItemFailures": []}]
    view = job_view(functions, accepted["job_id"])
    assert view["status"] == "SUCCEEDED", view
    assert view["progress"]["chunks_total"] >= 1


def test_a_presigned_upload_becomes_a_listed_job_whose_end_reaches_the_bus(functions, stage, emulator, no_denials):
    """POST /uploads signs with the API's role (s3:PutObject on uploads/), GET /jobs queries the client index, and
    the worker's Job Succeeded event goes to the stage's bus: each under IAM, none denied."""
    sqs, events = functions.admin_client("sqs"), functions.admin_client("events")
    queue = sqs.create_queue(QueueName="rehearsal-job-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="rehearsal-job-ends", EventPattern=json.dumps({"source": ["docpipe"]}))
    events.put_targets(Rule="rehearsal-job-ends", Targets=[{"Id": "queue", "Arn": arn}])
    status, form = functions.api("POST", "/uploads", headers={"Content-Type": "application/json"},
                                 body=json.dumps({"filename": "lighthouse.pdf"}).encode())
    assert status == 201, form
    with emulator.without_iam():  # moto cannot authorise a form post (S3 checks the form's own signature)
        posted = httpx.post(form["url"], data=form["fields"],
                            files={"file": ("lighthouse.pdf", SAMPLE_PDF.read_bytes(), "application/pdf")})
    assert posted.status_code in (200, 204), posted.text
    status, accepted = functions.api("POST", "/jobs", headers={"Content-Type": "application/json"},
                                     body=json.dumps({**form["submit"], "task": {"type": "summarize"}}).encode())
    assert status == 202, accepted

    assert functions.deliver("process_jobs") == [{"batchItemFailures": []}]
    status, listed = functions.api("GET", "/jobs", query={"limit": "1"})
    assert status == 200, listed
    assert [j["job_id"] for j in listed["jobs"]] == [accepted["job_id"]] and listed["jobs"][0]["status"] == "SUCCEEDED"
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    announced = [json.loads(m["Body"]) for m in messages]
    assert [(e["detail-type"], e["detail"]["job_id"]) for e in announced] == [("Job Succeeded", accepted["job_id"])]


def test_an_upload_to_incoming_is_tagged_with_its_job_which_succeeds(functions, stage, no_denials):
    s3 = functions.admin_client("s3")
    # The client's folder is its API key's id: the job is then that client's, as its GET below must find.
    key = f"incoming/{stage.api_key_id}/lighthouse keeping.pdf"
    s3.put_object(Bucket=stage.bucket, Key=key, Body=SAMPLE_PDF.read_bytes(), ContentType="application/pdf",
                  Metadata={"task": "summarize"})
    head = s3.head_object(Bucket=stage.bucket, Key=key)

    functions.host("start_job_from_upload").invoke(
        s3_event(stage.bucket, key, size=head["ContentLength"], etag=head["ETag"], account=stage.account))

    tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=stage.bucket, Key=key)["TagSet"]}
    assert "docpipe-job-id" in tags
    assert functions.deliver("process_jobs") == [{"batchItemFailures": []}]
    assert job_view(functions, tags["docpipe-job-id"])["status"] == "SUCCEEDED"


def test_when_the_queue_is_unreachable_the_api_withdraws_the_job_and_answers_503(functions, stage, no_denials):
    table = functions.admin_client("dynamodb")
    rows_before = table.scan(TableName="docpipe-dev-jobs", Select="COUNT")["Count"]
    request = {"headers": {"Content-Type": "application/json", "Idempotency-Key": "rehearsal-503"},
               "body": json.dumps({"document": {"text": TEXT}, "task": {"type": "summarize"}}).encode()}
    # The API's own queue name points nowhere: its role may not reach it, exactly as if SQS failed.
    unreachable = {"DOCPIPE_JOBS_QUEUE": "docpipe-dev-unreachable"}
    no_denials.append({"principal": f"arn:aws:sts::{stage.account}:assumed-role/docpipe-dev-api_handler/rehearsal",
                       "action": "sqs:GetQueueUrl", "resource": "*"})

    status, body = functions.api("POST", "/jobs", overrides=unreachable, **request)

    assert (status, body["error"]["code"]) == (503, "service_unavailable")
    assert table.scan(TableName="docpipe-dev-jobs", Select="COUNT")["Count"] == rows_before  # no orphan QUEUED row
    # Powertools removed its in-progress record too: the client's retry with the same key is a fresh submission.
    status, accepted = functions.api("POST", "/jobs", **request)
    assert status == 202, accepted
    assert functions.deliver("process_jobs") == [{"batchItemFailures": []}]


def test_a_dead_letter_fails_its_job_through_the_packaged_handler(functions, stage, no_denials):
    status, accepted = functions.api("POST", "/jobs", headers={"Content-Type": "application/json"},
                                     body=json.dumps({"document": {"text": TEXT},
                                                      "task": {"type": "summarize"}}).encode())
    assert status == 202
    sqs = functions.admin_client("sqs")
    jobs = sqs.get_queue_url(QueueName="docpipe-dev-jobs")["QueueUrl"]
    # Its worker crashed on every delivery: SQS moved the message to the dead-letter queue.
    for message in sqs.receive_message(QueueUrl=jobs, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]:
        sqs.delete_message(QueueUrl=jobs, ReceiptHandle=message["ReceiptHandle"])
        sqs.send_message(QueueUrl=sqs.get_queue_url(QueueName="docpipe-dev-jobs-dlq")["QueueUrl"],
                         MessageBody=message["Body"])

    assert functions.deliver("fail_dead_letters") == [None]

    view = job_view(functions, accepted["job_id"])
    assert view["status"] == "FAILED" and view["error"]["code"] == "delivery_exhausted", view


def test_the_schedule_pings_the_api_through_the_packaged_keep_warm(functions, stage, no_denials):
    pings = []

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            pings.append((self.path, self.headers.get("User-Agent")))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    rule = stage.resources("cloudwatch_event")["keep_warm-event"]["rule_name"]
    rule_arn = functions.admin_client("events").describe_rule(Name=rule)["Arn"]
    try:
        # The deployed URL is the emulator's API Gateway, which serves nothing: the ping goes to a local stand-in.
        answer = functions.host("keep_warm", DOCPIPE_API_URL=f"http://127.0.0.1:{server.server_port}").invoke(
            scheduled_event(rule_arn, stage.account))
    finally:
        server.shutdown()
    assert answer["pinged"] is True and answer["status"] == 200
    assert pings == [("/health", "docpipe-keep-warm")]


def test_an_llm_outage_hands_the_job_back_to_the_queue(functions, fake_llm, no_denials):
    # A document of its own: the map cache holds the answers about TEXT, which would need no LLM call.
    text = TEXT.replace("Lighthouses", "Lightships")
    status, accepted = functions.api("POST", "/jobs", headers={"Content-Type": "application/json"},
                                     body=json.dumps({"document": {"text": text},
                                                      "task": {"type": "summarize"}}).encode())
    assert status == 202
    fake_llm.script([("status", 500)] * 3)  # every attempt of this delivery (DOCPIPE_LLM_MAX_ATTEMPTS)

    answers = functions.deliver("process_jobs", max_batches=1)

    assert len(answers) == 1 and len(answers[0]["batchItemFailures"]) == 1
    view = job_view(functions, accepted["job_id"])
    assert view["status"] == "RUNNING", view


def test_ocr_reaches_textract_and_the_pages_folder_under_the_workers_role(functions, stage, no_denials):
    scanned = crafted_pdf([image_page(), image_page()])  # two pages that are only pictures: the gate sends them to OCR
    status, accepted = functions.api("POST", "/jobs", headers={"Content-Type": "application/pdf"}, body=scanned,
                                     binary=True, query={"task": "summarize"})
    assert status == 202, accepted

    functions.deliver("process_jobs", DOCPIPE_OCR="textract")

    view = job_view(functions, accepted["job_id"])
    # The pages went to Textract through ocr/ and were billed; the emulator's Textract recognises nothing.
    assert view["usage"]["ocr"] == {"provider": "textract", "pages": 2, "cost_usd": 0.003}, view
    assert (view["status"], view["error"]["code"]) == ("FAILED", "no_text")
    left = functions.admin_client("s3").list_objects_v2(Bucket=stage.bucket, Prefix="ocr/")
    assert left.get("KeyCount", 0) == 0  # the pages' own PDF is deleted once read


# --- least privilege --------------------------------------------------------------------------------------------

def test_the_check_notices_an_action_missing_from_a_policy(functions, stage, emulator):
    """Without s3:GetObjectTagging the upload function cannot tag its object: the denial is recorded."""
    iam = functions.admin_client("iam")
    role = functions.configurations["start_job_from_upload"]["Role"].rsplit("/", 1)[-1]
    name = iam.list_role_policies(RoleName=role)["PolicyNames"][0]
    policy = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
    reduced = json.loads(json.dumps(policy))
    for statement in reduced["Statement"]:
        if isinstance(statement["Action"], list) and "s3:GetObjectTagging" in statement["Action"]:
            statement["Action"].remove("s3:GetObjectTagging")
    iam.put_role_policy(RoleName=role, PolicyName=name, PolicyDocument=json.dumps(reduced))
    key = f"incoming/{stage.api_key_id}/denied.pdf"
    s3 = functions.admin_client("s3")
    s3.put_object(Bucket=stage.bucket, Key=key, Body=SAMPLE_PDF.read_bytes(), ContentType="application/pdf")
    head = s3.head_object(Bucket=stage.bucket, Key=key)
    before = len(emulator.denials())
    try:
        with pytest.raises(AssertionError, match="AccessDenied"):
            functions.host("start_job_from_upload").invoke(
                s3_event(stage.bucket, key, size=head["ContentLength"], etag=head["ETag"], account=stage.account))
    finally:
        iam.put_role_policy(RoleName=role, PolicyName=name, PolicyDocument=json.dumps(policy))
    assert [(d["action"], d["resource"]) for d in emulator.denials()[before:]] == [
        ("s3:GetObjectTagging", f"arn:aws:s3:::{stage.bucket}/{key}")]


def policy_problems(policy: dict[str, Any], function: str, *, stage_name: str, account: str, bucket: str,
                    tracing: bool) -> list[str]:
    """What is wrong with a deployed function's policy beyond what its calls prove: the runtime's own grants
    (logs to its own log group, traces), and the scope of every grant (this stage's resources, this account)."""
    function_name = f"docpipe-{stage_name}" if function == "api_handler" else f"docpipe-{stage_name}-{function}"
    log_streams = f"arn:aws:logs:{REGION}:{account}:log-group:/aws/lambda/{function_name}:*"
    exact = {f"arn:aws:s3:::{bucket}", f"arn:aws:sqs:{REGION}:{account}:docpipe-{stage_name}-jobs",
             f"arn:aws:sqs:{REGION}:{account}:docpipe-{stage_name}-jobs-dlq", log_streams,
             f"arn:aws:dynamodb:{REGION}:{account}:table/docpipe-{stage_name}-jobs",
             f"arn:aws:dynamodb:{REGION}:{account}:table/docpipe-{stage_name}-jobs/index/client-created",
             f"arn:aws:dynamodb:{REGION}:{account}:table/docpipe-{stage_name}-idempotency",
             f"arn:aws:secretsmanager:{REGION}:{account}:secret:docpipe/{stage_name}/llm-??????",
             f"arn:aws:states:{REGION}:{account}:stateMachine:docpipe-{stage_name}-workflow",
             f"arn:aws:states:{REGION}:{account}:execution:docpipe-{stage_name}-workflow:*",
             # The stage's bus for job events: the account's default one unless the stage names its own.
             f"arn:aws:events:{REGION}:{account}:event-bus/default"}
    prefixes = {f"arn:aws:s3:::{bucket}/{p}/*" for p in ("inputs", "results", "uploads", "incoming", "cache", "ocr",
                                                         "work")}
    problems, granted = [], {}
    for statement in policy["Statement"]:
        actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        resources = [statement["Resource"]] if isinstance(statement["Resource"], str) else statement["Resource"]
        for action in actions:
            granted.setdefault(action, set()).update(resources)
        if statement["Effect"] != "Allow" or "NotAction" in statement or "NotResource" in statement:
            problems.append(f"{statement.get('Sid')}: only plain Allow statements are expected")
        for resource in resources:
            if resource == "*":
                if not set(actions) <= RESOURCE_WIDE_ACTIONS:
                    problems.append(f"{statement.get('Sid')}: {actions} on every resource")
            elif resource not in exact | prefixes:
                problems.append(f"{statement.get('Sid')}: {resource} is not one of stage {stage_name}'s resources")
        if any(a.startswith("s3:") for a in actions) and statement.get("Condition") != {
                "StringEquals": {"s3:ResourceAccount": account}}:
            problems.append(f"{statement.get('Sid')}: S3 access not conditioned on account {account}")
    for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
        if granted.get(action) != {log_streams}:
            problems.append(f"{action} must be granted on {log_streams} alone, not {sorted(granted.get(action, []))}")
    if "logs:CreateLogGroup" in granted:
        problems.append("logs:CreateLogGroup: the stack creates each log group, with its retention")
    if tracing and not {"xray:PutTraceSegments", "xray:PutTelemetryRecords"} <= set(granted):
        problems.append("X-Ray tracing is on but the role may not send traces")
    return problems


def test_every_deployed_policy_is_scoped_to_its_stage_and_lets_the_runtime_log(functions, stage):
    iam = functions.admin_client("iam")
    config = json.loads((PROJECT / ".chalice" / "config.json").read_text())
    for function, configuration in functions.configurations.items():
        role = configuration["Role"].rsplit("/", 1)[-1]
        [name] = iam.list_role_policies(RoleName=role)["PolicyNames"]
        policy = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        tracing = config["stages"][STAGE].get("xray", False)
        assert policy_problems(policy, function, stage_name=STAGE, account=stage.account, bucket=stage.bucket,
                               tracing=tracing) == [], function


def test_the_policy_check_refuses_wildcards_other_stages_and_missing_log_grants(functions, stage):
    iam = functions.admin_client("iam")
    role = functions.configurations["process_jobs"]["Role"].rsplit("/", 1)[-1]
    [name] = iam.list_role_policies(RoleName=role)["PolicyNames"]
    policy = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
    check = {"stage_name": STAGE, "account": stage.account, "bucket": stage.bucket, "tracing": True}
    assert policy_problems(policy, "process_jobs", **check) == []

    def altered(change) -> list[str]:
        copy = json.loads(json.dumps(policy))
        change(copy["Statement"])
        return policy_problems(copy, "process_jobs", **check)

    def by_sid(statements, sid):
        return next(s for s in statements if s["Sid"] == sid)

    assert altered(lambda s: by_sid(s, "WriteOwnLogs")["Action"].remove("logs:PutLogEvents"))
    assert altered(lambda s: by_sid(s, "JobRows").update(Resource="arn:aws:dynamodb:*:*:table/docpipe-*-jobs"))
    assert altered(lambda s: by_sid(s, "JobRows").update(
        Resource=f"arn:aws:dynamodb:{REGION}:{stage.account}:table/docpipe-prod-jobs"))
    assert altered(lambda s: by_sid(s, "WriteOwnLogs").update(Resource="arn:aws:logs:*:*:*"))
    assert altered(lambda s: by_sid(s, "WriteResultsCachedAnswersAndHandedOverChunks").pop("Condition"))
    assert altered(lambda s: by_sid(s, "WriteTraces")["Action"].clear())


def test_every_function_logs_to_a_group_with_a_retention(functions, stage):
    logs = functions.admin_client("logs")
    groups = {g["logGroupName"]: g for g in logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/docpipe-dev")[
        "logGroups"]}
    for configuration in functions.configurations.values():
        group = groups.get(f"/aws/lambda/{configuration['FunctionName']}")
        assert group is not None and group.get("retentionInDays") == 30, configuration["FunctionName"]


# --- the deploy's own records ----------------------------------------------------------------------------------

def test_the_deploy_left_a_usage_plan_with_a_throttle_and_a_quota_and_tagged_resources(functions, stage, emulator):
    with emulator.without_iam():
        check_usage_plan_and_tags(functions, stage)


def check_usage_plan_and_tags(functions: Functions, stage: DeployedStage) -> None:
    apigateway = functions.admin_client("apigateway")
    [plan] = [p for p in apigateway.get_usage_plans()["items"] if p["name"] == "docpipe-dev"]
    assert plan["throttle"] == {"rateLimit": 10.0, "burstLimit": 20}
    assert (plan["quota"]["limit"], plan["quota"]["period"]) == (10000, "DAY")
    assert [k["id"] for k in apigateway.get_usage_plan_keys(usagePlanId=plan["id"])["items"]] == [stage.api_key_id]
    tags = {"project": "docpipe", "stage": "dev"}
    lambda_client = functions.admin_client("lambda")
    for configuration in functions.configurations.values():
        assert tags.items() <= lambda_client.list_tags(Resource=configuration["FunctionArn"])["Tags"].items()
        role = configuration["Role"].rsplit("/", 1)[-1]
        role_tags = functions.admin_client("iam").list_role_tags(RoleName=role)["Tags"]
        assert tags.items() <= {t["Key"]: t["Value"] for t in role_tags}.items()
    stack = functions.admin_client("cloudformation").describe_stacks(StackName="docpipe-dev")["Stacks"][0]
    assert tags.items() <= {t["Key"]: t["Value"] for t in stack["Tags"]}.items()
    secret = functions.admin_client("secretsmanager").describe_secret(SecretId="docpipe/dev/llm")
    assert tags.items() <= {t["Key"]: t["Value"] for t in secret["Tags"]}.items()
    rest_api_id = stage.resources("rest_api")["rest_api"]["rest_api_id"]
    assert tags.items() <= apigateway.get_stage(restApiId=rest_api_id, stageName="api")["tags"].items()


def test_a_redeploy_from_a_fresh_checkout_updates_the_same_api_and_event_sources(stage, functions, emulator, admin,
                                                                                 workdir):
    apigateway, lambda_client = client(emulator, "apigateway", admin), client(emulator, "lambda", admin)

    def deployed_shape() -> dict[str, Any]:
        mappings = lambda_client.list_event_source_mappings()["EventSourceMappings"]
        return {"apis": sorted(a["id"] for a in apigateway.get_rest_apis()["items"]),
                "mappings": sorted((m["EventSourceArn"].rsplit(":", 1)[-1], m["UUID"]) for m in mappings),
                "functions": sorted(f["FunctionName"] for f in lambda_client.list_functions()["Functions"]),
                "plans": len(apigateway.get_usage_plans()["items"]), "keys": len(apigateway.get_api_keys()["items"])}

    with emulator.without_iam():
        before = deployed_shape()
        fresh = clean_checkout(workdir / "second-checkout")
        assert not (fresh / ".chalice" / "deployed").exists()

        redeployed = run_make_step(fresh, "deploy", aws_env(emulator, admin, workdir / "home"), "--stage", STAGE)

        assert redeployed.returncode == 0, redeployed.stdout[-3000:] + redeployed.stderr[-3000:]
        assert deployed_shape() == before
        assert before["apis"] == [stage.resources("rest_api")["rest_api"]["rest_api_id"]]
        assert [q for q, _ in before["mappings"]] == ["docpipe-dev-jobs", "docpipe-dev-jobs-dlq"]
        assert "First deploy of the API" not in redeployed.stdout  # the URL came with the stored record
        worker = stage.resources("sqs_event")["process_jobs-sqs-event-source"]["event_uuid"]
        mapping = lambda_client.get_event_source_mapping(UUID=worker)
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_the_deploy_left_the_dashboard_and_the_alarm_topic_and_says_who_they_reach(functions, stage, emulator):
    with emulator.without_iam():
        dashboard = functions.admin_client("cloudwatch").get_dashboard(DashboardName="docpipe-dev")
        topics = [t["TopicArn"] for t in functions.admin_client("sns").list_topics()["Topics"]]
        rest_api_id = stage.resources("rest_api")["rest_api"]["rest_api_id"]
        api_name = functions.admin_client("apigateway").get_rest_api(restApiId=rest_api_id)["name"]
        tags = functions.admin_client("ce").list_cost_allocation_tags(TagKeys=["project", "stage"])

    assert '"service","docpipe-dev"' in dashboard["DashboardBody"]
    assert f"arn:aws:sns:{REGION}:{stage.account}:docpipe-dev-alarms" in topics
    # API Gateway's metrics, the dashboard and the 5xx alarm know the API by this name.
    assert api_name == "docpipe-dev"
    assert {t["TagKey"]: t["Status"] for t in tags["CostAllocationTags"]} == {"project": "Active", "stage": "Active"}
    summary = stage.deploy_output
    # The dev stage names no address: the deploy says so rather than leaving the alarms unheard.
    assert "alarms:       docpipe-dev-alarms e-mails NOBODY: set DOCPIPE_ALERT_EMAIL" in summary
    assert "#dashboards/dashboard/docpipe-dev" in summary
    assert "budget:       docpipe-dev-monthly, USD 50 a month" in summary
    assert "API capacity: provisioned concurrency off" in summary


def test_with_provisioned_concurrency_every_route_invokes_the_checked_code_on_its_provisioned_alias(
        stage, functions, emulator, admin, workdir):
    with emulator.without_iam():
        lambda_client, apigateway = client(emulator, "lambda", admin), client(emulator, "apigateway", admin)
        rest_api_id = stage.resources("rest_api")["rest_api"]["rest_api_id"]

        def uris() -> set[str]:
            return {apigateway.get_integration(restApiId=rest_api_id, resourceId=resource["id"],
                                               httpMethod=method)["uri"]
                    for resource in apigateway.get_resources(restApiId=rest_api_id)["items"]
                    for method in resource.get("resourceMethods", {})}

        checkout = clean_checkout(workdir / "provisioned-checkout")
        config_file = checkout / ".chalice" / "config.json"
        config = json.loads(config_file.read_text())
        config["stages"][STAGE]["environment_variables"]["DOCPIPE_API_PROVISIONED_CONCURRENCY"] = "2"
        config_file.write_text(json.dumps(config, indent=2))

        provisioned = run_make_step(checkout, "deploy", stage.env, "--stage", STAGE)

        assert provisioned.returncode == 0, provisioned.stdout[-3000:] + provisioned.stderr[-3000:]
        assert "API capacity: provisioned concurrency 2 provisioned on alias live" in provisioned.stdout
        alias = lambda_client.get_alias(FunctionName="docpipe-dev", Name="live")
        version = lambda_client.get_function_configuration(FunctionName="docpipe-dev",
                                                           Qualifier=alias["FunctionVersion"])
        manifest = json.loads((checkout / "build" / STAGE / "manifest.json").read_text())
        assert version["CodeSha256"] == manifest["artefacts"]["deployment.zip"]["sha256"]
        config = lambda_client.get_provisioned_concurrency_config(FunctionName="docpipe-dev", Qualifier="live")
        assert (config["RequestedProvisionedConcurrentExecutions"], config["Status"]) == (2, "READY")
        assert len(uris()) == 1 and uris().pop().endswith(":function:docpipe-dev:live/invocations")

        # The stage's own setting (0) again: Chalice puts the routes back on the function, the deploy releases.
        released = run_make_step(stage.checkout, "deploy", stage.env, "--stage", STAGE)

        assert released.returncode == 0, released.stdout[-3000:] + released.stderr[-3000:]
        assert "instances provisioned on alias live were released" in released.stdout
        assert len(uris()) == 1 and uris().pop().endswith(":function:docpipe-dev/invocations")
        with pytest.raises(lambda_client.exceptions.ProvisionedConcurrencyConfigNotFoundException):
            lambda_client.get_provisioned_concurrency_config(FunctionName="docpipe-dev", Qualifier="live")

