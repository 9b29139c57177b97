"""The app process of the local stack: the Chalice routes (as ``chalice local`` serves them) plus the dispatcher,
and the printer of job events.

Run as ``python -m devstack app --port 8000 --emulator http://127.0.0.1:4566``; ``devstack serve`` starts it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import threading
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


def load_stage_environment(stage: str, emulator_url: str, api_port: int, *,
                           workflow: bool = False) -> dict[str, str]:
    """The stage's variables from .chalice/config.json, pointed at this emulator and this API port (and at the
    emulator's state machine when ``workflow``: the emulator runs it)."""
    from chalice.cli.factory import CLIFactory

    from devstack.resources import state_machine_arn

    config = CLIFactory(project_dir=str(PROJECT)).create_config_obj(chalice_stage_name=stage)
    env = dict(config.environment_variables)
    env.update(AWS_ENDPOINT_URL=emulator_url, DOCPIPE_API_URL=f"http://127.0.0.1:{api_port}")
    if workflow:
        env.setdefault("DOCPIPE_STATE_MACHINE_ARN", state_machine_arn(stage))
    env.setdefault("TIKTOKEN_CACHE_DIR", str(PROJECT / ".local" / "tiktoken"))
    return env


def import_app(stage: str, emulator_url: str, api_port: int, *, workflow: bool = False):
    # Variables set before the import, as Chalice and Lambda do: app.py reads queue and bucket names at import.
    os.environ.update(load_stage_environment(stage, emulator_url, api_port, workflow=workflow))
    sys.path.insert(0, str(PROJECT))
    import app as app_module

    return app_module


def function_settings(stage: str) -> dict[str, dict]:
    config = json.loads((PROJECT / ".chalice" / "config.json").read_text())
    return config["stages"][stage].get("lambda_functions", {})


def run(port: int, emulator_url: str, *, stage: str = "local", schedule_seconds: float | None = None,
        worker_timeout: int | None = None, duplicate_deliveries: bool = False,
        invoke_port: int | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app_module = import_app(stage, emulator_url, port, workflow=invoke_port is not None)
    from chalice.app import S3EventConfig
    from chalice.cli.factory import CLIFactory

    from devstack.containers import ContainerPool
    from devstack.dispatcher import Dispatcher
    from devstack.jobevents import JobEventPrinter
    from devstack.resources import client, provision, provision_workflow

    # Idempotent: the first start creates the resources, a restart finds them (and the jobs in them) intact.
    resources = provision(emulator_url, stage=stage, bucket=os.environ["DOCPIPE_BUCKET"],
                          s3_notifications=[s for s in app_module.app.event_sources if isinstance(s, S3EventConfig)],
                          visibility_timeout=6 * worker_timeout if worker_timeout else None,
                          event_bus=os.environ.get("DOCPIPE_EVENT_BUS") or "default")
    if invoke_port is not None:
        provision_workflow(emulator_url, stage=stage)
    settings = function_settings(stage)
    if worker_timeout:
        # Every function that does a job's long work: the worker, and the workflow's stages that read or ask.
        for name in ("process_jobs", "workflow_extract", "workflow_map", "workflow_aggregate"):
            settings.setdefault(name, {})["lambda_timeout"] = worker_timeout

    config = CLIFactory(project_dir=str(PROJECT)).create_config_obj(chalice_stage_name=stage)
    server = local_server(app_module.app, config, port)
    handlers = {source.name: getattr(app_module, source.name) for source in app_module.app.event_sources}
    handlers.update({function.name: getattr(app_module, function.name)
                     for function in app_module.app.pure_lambda_functions})
    # Each concurrent invocation in a process of its own, as Lambda runs it in an execution environment of its own.
    containers = ContainerPool("app", settings, preload=["devstack.image"]).start()
    dispatcher = Dispatcher(app_module.app, handlers, client("sqs", emulator_url),
                            function_settings=settings,
                            s3_events_queue=f"docpipe-{stage}-s3-events", schedule_seconds=schedule_seconds,
                            duplicate_deliveries=duplicate_deliveries, runner=containers.invoke)
    dispatcher.start()
    # The emulator knows a function by its deployed name, docpipe-<stage>-<function>.
    invokes = serve_invokes(dispatcher, invoke_port, prefix=f"{app_module.app.app_name}-{stage}-") \
        if invoke_port is not None else None
    printer = JobEventPrinter(client("sqs", emulator_url), resources.job_events_queue).start()

    def shut_down(*_):
        dispatcher.request_stop()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shut_down)
    signal.signal(signal.SIGINT, shut_down)
    print(f"docpipe app serving on http://127.0.0.1:{port} (emulator {emulator_url})", flush=True)
    try:
        server.serve_forever()
    finally:
        if invokes is not None:
            invokes.shutdown()
        dispatcher.stop()
        printer.stop()
        containers.close()


def local_server(app, config, port: int):
    """``chalice local``'s server (``chalice.local.create_local_server``), taking a burst's connections as API Gateway
    does: socketserver listens with a backlog of 5, and a sixth client connecting at once is reset or kept waiting
    for a SYN retransmit (a second) while the server is busy."""
    from chalice.local import CustomLocalChalice, LocalChalice, LocalDevServer, ThreadedHTTPServer

    class Listening(ThreadedHTTPServer):
        request_queue_size = 256

    CustomLocalChalice.__bases__ = (LocalChalice, app.__class__)
    app.__class__ = CustomLocalChalice
    return LocalDevServer(app, config, "127.0.0.1", port, server_cls=Listening)


def serve_invokes(dispatcher, port: int, *, prefix: str):
    """Lambda's Invoke API for the emulator's launcher (``devstack.lambdas``): ``POST /invoke/<function>`` runs the
    function through the dispatcher; an exception answers as Lambda's unhandled error (its type and message)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Invoke(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            name = self.path.rsplit("/", 1)[-1].removeprefix(prefix)
            event = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            error = None
            try:
                body = json.dumps(dispatcher.invoke(name, event)).encode("utf-8")
            except Exception as exc:
                error_type, message = lambda_error(exc)
                logging.getLogger("devstack.invoke").warning("%s raised %s: %s", name, error_type, message[:300])
                error = "Unhandled"
                body = json.dumps({"errorType": error_type, "errorMessage": message}).encode("utf-8")
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if error:
                self.send_header("X-Function-Error", error)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # the app's own logs say what each stage did
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Invoke)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="lambda-invokes", daemon=True).start()
    return server


def lambda_error(exc: Exception) -> tuple[str, str]:
    """(errorType, errorMessage) as Lambda reports an unhandled error: the handler's own exception class, also when
    a container reported it (``<function> raised <Type>: <message>`` and its traceback), which the state machine's
    Retry and Catch match on."""
    from devstack.containers import ContainerFailed

    if isinstance(exc, ContainerFailed):
        reported = re.match(r"\S+ raised (\w+): (.*?)(?:\n|$)", str(exc))
        if reported:
            return reported.group(1), reported.group(2)
        return "Runtime.ExitError", str(exc)  # the container died or ran out of time
    return type(exc).__name__, str(exc)
