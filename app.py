"""docpipe: every entry point of the system, each handing its event to chalicelib.

Read top to bottom, this file is the list of ways into docpipe: the REST routes, the jobs-queue worker, the
dead-letter backstop, the S3 upload trigger, the keep-warm schedule and the stages of the Step Functions workflow
(infra/workflow.asl.json) for long documents and multi-task jobs. (A job's end goes out as an EventBridge event
from ``jobs.lifecycle``: an exit, not an entry.)
"""

from chalice import Chalice, ConvertToMiddleware, Rate

from chalicelib.bootstrap import get_services
from chalicelib.config import get_settings
from chalicelib.entry import api
from chalicelib.observability import invocation_logs, metrics, traced

# What the decorators need, from the stage's variables: Chalice sets them before it imports this file for a deploy,
# Lambda before it imports it to run a function. An unusable value stops the import (and so the deploy) here.
settings = get_settings()

app = Chalice(app_name="docpipe")
app.api.binary_types.append("application/pdf")
app.register_middleware(invocation_logs)
app.register_middleware(ConvertToMiddleware(metrics.log_metrics), "sqs")
# The workflow's stage functions and its status-change handler finish jobs too: their metrics are flushed alike.
app.register_middleware(ConvertToMiddleware(metrics.log_metrics), "pure_lambda")
app.register_middleware(ConvertToMiddleware(metrics.log_metrics), "cloudwatch")
# The upload trigger fails a refused upload's job, which counts a job event it could not publish, if any.
app.register_middleware(ConvertToMiddleware(metrics.log_metrics), "s3")

# Every route accepts any Content-Type: POST /jobs takes JSON, PDF and text (Chalice refuses a list that mixes
# binary and text types), and the body's media type is checked in chalicelib, so a client always gets docpipe's
# own error shape (415 unsupported_media_type) rather than Chalice's.
ANY_BODY = ["*/*"]


@app.route("/health", methods=["GET"], content_types=ANY_BODY)
def health():
    return {"status": "ok", "service": "docpipe"}


@app.route("/openapi.json", methods=["GET"], content_types=ANY_BODY)
def openapi():
    return api.openapi_document()


@app.route("/jobs", methods=["POST"], content_types=ANY_BODY, api_key_required=settings.require_api_key)
def submit_job():
    request, context = app.current_request, app.lambda_context
    return api.guarded(lambda: api.submit_job(request, get_services(), context))


@app.route("/jobs", methods=["GET"], content_types=ANY_BODY, api_key_required=settings.require_api_key)
def list_jobs():
    request = app.current_request
    return api.guarded(lambda: api.list_jobs(request, get_services()))


@app.route("/uploads", methods=["POST"], content_types=ANY_BODY, api_key_required=settings.require_api_key)
def create_upload():
    request = app.current_request
    return api.guarded(lambda: api.create_upload(request, get_services()))


@app.route("/jobs/{job_id}", methods=["GET"], content_types=ANY_BODY, api_key_required=settings.require_api_key)
def get_job(job_id):
    request = app.current_request
    return api.guarded(lambda: api.get_job(request, job_id, get_services()))


@app.route("/jobs/{job_id}/result", methods=["GET"], content_types=ANY_BODY,
           api_key_required=settings.require_api_key)
def get_job_result(job_id):
    request = app.current_request
    return api.guarded(lambda: api.get_result(request, job_id, get_services()))


@app.route("/jobs/{job_id}/retry", methods=["POST"], content_types=ANY_BODY,
           api_key_required=settings.require_api_key)
def retry_job(job_id):
    request = app.current_request
    return api.guarded(lambda: api.retry_job(request, job_id, get_services()))


# The operator's live page: every client's jobs, so only where DOCPIPE_DASHBOARD is on (the local stage).
if settings.dashboard:
    @app.route("/dashboard", methods=["GET"], content_types=ANY_BODY)
    def dashboard():
        from chalicelib.entry import dashboard as page

        return page.page()

    @app.route("/dashboard/data", methods=["GET"], content_types=ANY_BODY, api_key_required=settings.require_api_key)
    def dashboard_data():
        from chalicelib.entry import dashboard as page

        return page.snapshot(get_services())


# Back-pressure: how many messages one worker takes at once, and how many workers may run.
@app.on_sqs_message(queue=settings.jobs_queue, batch_size=settings.worker_batch_size,
                    maximum_batching_window_in_seconds=1, maximum_concurrency=settings.worker_max_concurrency)
@traced
def process_jobs(event):
    from chalicelib.entry.worker import handle_job_batch

    return handle_job_batch(event.to_dict(), event.context, get_services())


@app.on_sqs_message(queue=settings.dead_letter_queue, batch_size=10)
@traced
def fail_dead_letters(event):
    from chalicelib.entry.deadletters import handle_dead_letters

    handle_dead_letters(event.to_dict(), get_services())


@app.on_s3_event(bucket=settings.bucket, prefix="incoming/", events=["s3:ObjectCreated:*"])
@traced
def start_job_from_upload(event):
    from chalicelib.entry.uploads import handle_upload

    handle_upload(event.bucket, event.key, get_services(), event.context)


@app.schedule(Rate(5, unit=Rate.MINUTES))
def keep_warm(event):
    from chalicelib.entry.keepwarm import ping

    return ping(get_settings().api_url, get_settings().keep_warm_instances)


# The Step Functions workflow's stages (infra/workflow.asl.json names them; each state passes its stage's input).
def _stage(name, event, context):
    from chalicelib.entry.stages import run_stage

    return run_stage(name, event, context, get_services())


@app.lambda_function(name="workflow_validate")
@traced
def workflow_validate(event, context):
    return _stage("validate", event, context)


@app.lambda_function(name="workflow_extract")
@traced
def workflow_extract(event, context):
    return _stage("extract", event, context)


@app.lambda_function(name="workflow_map")
@traced
def workflow_map(event, context):
    return _stage("map", event, context)


@app.lambda_function(name="workflow_aggregate")
@traced
def workflow_aggregate(event, context):
    return _stage("aggregate", event, context)


@app.lambda_function(name="workflow_store")
@traced
def workflow_store(event, context):
    return _stage("store", event, context)


@app.lambda_function(name="workflow_failed")
@traced
def workflow_failed(event, context):
    return _stage("failed", event, context)


# An execution that ends without its last stage (aborted, timed out, failed outside a stage) fails its job: the
# status change as it happens, and a sweep for any event that never arrived.
@app.on_cw_event({"source": ["aws.states"], "detail-type": ["Step Functions Execution Status Change"],
                  "detail": {"status": ["FAILED", "TIMED_OUT", "ABORTED"],
                             **({"stateMachineArn": [settings.state_machine_arn]} if settings.state_machine_arn
                                else {})}})
def workflow_ended(event):
    from chalicelib.entry.stages import handle_execution_event

    handle_execution_event(event.to_dict(), get_services())


@app.schedule(Rate(10, unit=Rate.MINUTES))
def workflow_sweep(event):
    from chalicelib.entry.stages import sweep_executions

    return {"failed": sweep_executions(get_services())}
