"""The whole local stack: emulator process + resources + app process, started and stopped as one.

Used by ``make serve``, ``make demo`` and the end-to-end tests, so all three run exactly the same thing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from devstack.appserver import PROJECT
from devstack.emulator import Emulator, free_port, require_free, wait_until_up

LOCAL_DIR = PROJECT / ".local"


class LocalStack:
    def __init__(self, *, api_port: int, emulator_port: int, stage: str = "local",
                 extra_env: dict[str, str] | None = None, worker_timeout: int | None = None,
                 schedule_seconds: float | None = None, app_log: Path | None = None,
                 duplicate_deliveries: bool = False) -> None:
        self.api_port = api_port
        self.api_url = f"http://127.0.0.1:{api_port}"
        self.stage = stage
        # The app process serves Lambda invokes here: the emulator's Step Functions run its stage functions.
        self.invoke_port = free_port()
        self.emulator = Emulator(emulator_port, LOCAL_DIR / f"emulator-{emulator_port}.log",
                                 invoke_url=f"http://127.0.0.1:{self.invoke_port}")
        self._extra_env = extra_env or {}
        self._worker_timeout = worker_timeout
        self._schedule_seconds = schedule_seconds
        self._app_log = app_log
        self._duplicate_deliveries = duplicate_deliveries
        self._app: subprocess.Popen | None = None

    def start(self) -> LocalStack:
        require_free(self.api_port, "docpipe API")
        self.emulator.start()
        try:
            self.start_app()
        except BaseException:
            self.stop()
            raise
        return self

    def start_app(self) -> None:
        command = [sys.executable, "-m", "devstack", "app", "--port", str(self.api_port), "--emulator",
                   self.emulator.url, "--stage", self.stage, "--invoke-port", str(self.invoke_port)]
        if self._schedule_seconds:
            command += ["--schedule-seconds", str(self._schedule_seconds)]
        if self._worker_timeout:
            command += ["--worker-timeout", str(self._worker_timeout)]
        if self._duplicate_deliveries:
            command.append("--duplicate-deliveries")
        output = open(self._app_log, "ab") if self._app_log else None
        self._app = subprocess.Popen(command, cwd=PROJECT, env={**os.environ, **self._extra_env},
                                     stdout=output, stderr=subprocess.STDOUT if output else None)
        if output:
            output.close()
        wait_until_up(f"{self.api_url}/health", timeout=60)

    def kill_app(self) -> None:
        """SIGKILL the app process, as a crashed Lambda would die: no cleanup, no goodbye."""
        if self._app:
            self._app.kill()
            self._app.wait()
            self._app = None

    def app_exit_code(self) -> int | None:
        return self._app.poll() if self._app else None

    def wait_app(self) -> int:
        return self._app.wait() if self._app else 0

    def stop(self) -> None:
        if self._app and self._app.poll() is None:
            self._app.terminate()
            try:
                self._app.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._app.kill()
                self._app.wait()
        self._app = None
        self.emulator.stop()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
