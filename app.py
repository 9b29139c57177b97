"""docpipe: every entry point of the system, each handing its event to chalicelib.

Read top to bottom, this file is the list of ways into docpipe: the REST routes, the jobs-queue worker, the
dead-letter backstop, the S3 upload trigger and the keep-warm schedule.
"""

import functools
import os

from chalice import Chalice, ConvertToMiddleware, Rate

from chalicelib import api
from chalicelib.config import get_settings
from chalicelib.observability import logger, metrics
from chalicelib.services import get_services

app = Chalice(app_name="docpipe")
app.api.binary_types.append("application/pdf")
app.register_middleware(ConvertToMiddleware(functools.partial(logger.inject_lambda_context, clear_state=True)))
app.register_middleware(ConvertToMiddleware(metrics.log_metrics), "sqs")

# Names are stage-level environment variables, which Chalice sets before it imports this file for a deploy.
STAGE = os.environ.get("DOCPIPE_STAGE", "dev")
JOBS_QUEUE = os.environ.get("DOCPIPE_JOBS_QUEUE", f"docpipe-{STAGE}-jobs")
DEAD_LETTER_QUEUE = os.environ.get("DOCPIPE_DEAD_LETTER_QUEUE", f"docpipe-{STAGE}-jobs-dlq")
BUCKET = os.environ.get("DOCPIPE_BUCKET", f"docpipe-{STAGE}-documents")
REQUIRE_API_KEY = os.environ.get("DOCPIPE_REQUIRE_API_KEY", "false") == "true"
# Back-pressure: how many messages one worker takes at once, and how many workers may run (AWS allows 2-1000).
WORKER_BATCH_SIZE = int(os.environ.get("DOCPIPE_WORKER_BATCH_SIZE", "5"))
WORKER_MAX_CONCURRENCY = int(os.environ.get("DOCPIPE_WORKER_MAX_CONCURRENCY", "10"))
# Every route accepts any Content-Type: POST /jobs takes JSON, PDF and text (Chalice refuses a list that mixes
# binary and text types), and the body's media type is checked in chalicelib, so a client always gets docpipe's
# own error shape rather than Chalice's 415.
ANY_BODY = ["*/*"]


@app.route("/health", methods=["GET"], content_types=ANY_BODY)
def health():
    return {"status": "ok", "service": "docpipe"}


# "*/*": one route takes JSON, PDF and text bodies; Chalice would refuse a list mixing binary and text types,
# so the media type is checked in chalicelib and an unknown one gets the documented 415.
@app.route("/openapi.json", methods=["GET"], content_types=ANY_BODY)
def openapi():
    return api.openapi_document()


@app.route("/jobs", methods=["POST"], content_types=ANY_BODY, api_key_required=REQUIRE_API_KEY)
def submit_job():
    request, context = app.current_request, app.lambda_context
    return api.guarded(lambda: api.submit_job(request, get_services(), context))


@app.route("/jobs/{job_id}", methods=["GET"], content_types=ANY_BODY, api_key_required=REQUIRE_API_KEY)
def get_job(job_id):
    request = app.current_request
    return api.guarded(lambda: api.get_job(request, job_id, get_services()))


@app.route("/jobs/{job_id}/result", methods=["GET"], content_types=ANY_BODY,
           api_key_required=REQUIRE_API_KEY)
def get_job_result(job_id):
    request = app.current_request
    return api.guarded(lambda: api.get_result(request, job_id, get_services()))


@app.route("/jobs/{job_id}/retry", methods=["POST"], content_types=ANY_BODY,
           api_key_required=REQUIRE_API_KEY)
def retry_job(job_id):
    request = app.current_request
    return api.guarded(lambda: api.retry_job(request, job_id, get_services()))


@app.on_sqs_message(queue=JOBS_QUEUE, batch_size=WORKER_BATCH_SIZE, maximum_batching_window_in_seconds=1,
                    maximum_concurrency=WORKER_MAX_CONCURRENCY)
def process_jobs(event):
    from chalicelib.worker import handle_job_batch

    return handle_job_batch(event.to_dict(), event.context, get_services())


@app.on_sqs_message(queue=DEAD_LETTER_QUEUE, batch_size=10)
def fail_dead_letters(event):
    from chalicelib.worker import handle_dead_letters

    handle_dead_letters(event.to_dict(), get_services())


@app.on_s3_event(bucket=BUCKET, prefix="incoming/", events=["s3:ObjectCreated:*"])
def start_job_from_upload(event):
    from chalicelib.uploads import handle_upload

    handle_upload(event.bucket, event.key, get_services(), event.context)


@app.schedule(Rate(5, unit=Rate.MINUTES))
def keep_warm(event):
    from chalicelib.keepwarm import ping

    return ping(get_settings().api_url, get_settings().keep_warm_instances)
