"""The app process of the local stack: the Chalice routes (as ``chalice local`` serves them) plus the dispatcher,
and the printer of job events.

Run as ``python -m devstack app --port 8000 --emulator http://127.0.0.1:4566``; ``devstack serve`` starts it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


def load_stage_environment(stage: str, emulator_url: str, api_port: int) -> dict[str, str]:
    """The stage's variables from .chalice/config.json, pointed at this emulator and this API port."""
    from chalice.cli.factory import CLIFactory

    config = CLIFactory(project_dir=str(PROJECT)).create_config_obj(chalice_stage_name=stage)
    env = dict(config.environment_variables)
    env.update(AWS_ENDPOINT_URL=emulator_url, DOCPIPE_API_URL=f"http://127.0.0.1:{api_port}")
    env.setdefault("TIKTOKEN_CACHE_DIR", str(PROJECT / ".local" / "tiktoken"))
    return env


def import_app(stage: str, emulator_url: str, api_port: int):
    # Variables set before the import, as Chalice and Lambda do: app.py reads queue and bucket names at import.
    os.environ.update(load_stage_environment(stage, emulator_url, api_port))
    sys.path.insert(0, str(PROJECT))
    import app as app_module

    return app_module


def function_settings(stage: str) -> dict[str, dict]:
    config = json.loads((PROJECT / ".chalice" / "config.json").read_text())
    return config["stages"][stage].get("lambda_functions", {})


def run(port: int, emulator_url: str, *, stage: str = "local", schedule_seconds: float | None = None,
        worker_timeout: int | None = None, duplicate_deliveries: bool = False) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app_module = import_app(stage, emulator_url, port)
    from chalice.app import S3EventConfig
    from chalice.cli.factory import CLIFactory
    from chalice.local import create_local_server

    from devstack.containers import ContainerPool
    from devstack.dispatcher import Dispatcher
    from devstack.jobevents import JobEventPrinter
    from devstack.resources import client, provision

    # Idempotent: the first start creates the resources, a restart finds them (and the jobs in them) intact.
    resources = provision(emulator_url, stage=stage, bucket=os.environ["DOCPIPE_BUCKET"],
                          s3_notifications=[s for s in app_module.app.event_sources if isinstance(s, S3EventConfig)],
                          visibility_timeout=6 * worker_timeout if worker_timeout else None,
                          event_bus=os.environ.get("DOCPIPE_EVENT_BUS") or "default")
    settings = function_settings(stage)
    if worker_timeout:
        settings.setdefault("process_jobs", {})["lambda_timeout"] = worker_timeout

    config = CLIFactory(project_dir=str(PROJECT)).create_config_obj(chalice_stage_name=stage)
    server = create_local_server(app_module.app, config, "127.0.0.1", port)
    handlers = {source.name: getattr(app_module, source.name) for source in app_module.app.event_sources}
    # Each concurrent invocation in a process of its own, as Lambda runs it in an execution environment of its own.
    containers = ContainerPool("app", settings, preload=["devstack.image"]).start()
    dispatcher = Dispatcher(app_module.app, handlers, client("sqs", emulator_url),
                            function_settings=settings,
                            s3_events_queue=f"docpipe-{stage}-s3-events", schedule_seconds=schedule_seconds,
                            duplicate_deliveries=duplicate_deliveries, runner=containers.invoke)
    dispatcher.start()
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
        dispatcher.stop()
        printer.stop()
        containers.close()
