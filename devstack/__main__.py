"""``python -m devstack serve | demo | emulator | app`` — see the README's "Local stack" section."""

from __future__ import annotations

import argparse
import sys
import time

from devstack.emulator import Emulator, PortInUse

EMULATOR_PORT = 4566


def serve(port: int, emulator_port: int) -> int:
    from devstack.stack import LOCAL_DIR, LocalStack

    stack = LocalStack(api_port=port, emulator_port=emulator_port)
    try:
        stack.start()
    except PortInUse as exc:
        print(f"docpipe: {exc}", file=sys.stderr)
        return 2
    print(f"\ndocpipe is up: API {stack.api_url} · AWS emulator {stack.emulator.url} "
          f"(log: {LOCAL_DIR}/emulator-{emulator_port}.log)\n"
          f"  curl -s -X POST '{stack.api_url}/jobs?task=summarize' -H 'Content-Type: application/pdf' "
          f"--data-binary @samples/lighthouse-keeping.pdf\nCtrl-C stops everything.\n", flush=True)
    try:
        while True:
            code = stack.wait_app()
            if code == 0:
                return 0
            # The app died (crash, SIGKILL): jobs wait in the emulator's queue, so a restart loses nothing.
            print(f"docpipe: the app process exited with code {code}; restarting it", file=sys.stderr, flush=True)
            time.sleep(1)
            stack.start_app()
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()


def emulator(port: int) -> int:
    """Only the emulator (with the resources), for ``chalice local --stage local`` route development."""
    import os

    from devstack.appserver import import_app
    from devstack.resources import provision
    from devstack.stack import LOCAL_DIR

    try:
        emu = Emulator(port, LOCAL_DIR / f"emulator-{port}.log").start()
    except PortInUse as exc:
        print(f"docpipe: {exc}", file=sys.stderr)
        return 2
    try:
        app_module = import_app("local", emu.url, 8000)
        provision(emu.url, stage="local", bucket=os.environ["DOCPIPE_BUCKET"],
                  s3_notifications=[s for s in app_module.app.event_sources if type(s).__name__ == "S3EventConfig"],
                  event_bus=os.environ.get("DOCPIPE_EVENT_BUS") or "default")
        print(f"AWS emulator with docpipe's resources on {emu.url}; Ctrl-C stops it.", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        emu.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description="docpipe's local stack")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("serve", help="emulator + app in the foreground until Ctrl-C")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--emulator-port", type=int, default=EMULATOR_PORT)
    commands.add_parser("demo", help="run one real job end to end on a throwaway stack")
    p = commands.add_parser("emulator", help="only the emulator with docpipe's resources")
    p.add_argument("--port", type=int, default=EMULATOR_PORT)
    p = commands.add_parser("app", help="the app process (started by serve)")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--emulator", required=True)
    p.add_argument("--stage", default="local")
    p.add_argument("--schedule-seconds", type=float)
    p.add_argument("--worker-timeout", type=int, help="override the worker's timeout (the queue hides for 6x)")
    p.add_argument("--duplicate-deliveries", action="store_true", help="fault injection: deliver every message twice")
    p.add_argument("--invoke-port", type=int, help="serve the emulator's Lambda invokes on this port")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args.port, args.emulator_port)
    if args.command == "demo":
        from devstack.demo import run_demo

        return run_demo()
    if args.command == "emulator":
        return emulator(args.port)
    from devstack.appserver import run

    run(args.port, args.emulator, stage=args.stage, schedule_seconds=args.schedule_seconds,
        worker_timeout=args.worker_timeout, duplicate_deliveries=args.duplicate_deliveries,
        invoke_port=args.invoke_port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
