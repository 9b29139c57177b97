"""The embedded AWS: moto in server mode, in its own process.

Its own process so the app can crash and restart without losing queues, tables or objects — as with real AWS.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                     "AWS_DEFAULT_REGION": "us-east-1"}


class PortInUse(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_free(port: int, what: str) -> None:
    """Refuse a port another process listens on. SO_REUSEADDR, as the servers themselves bind: connections of a
    stack that just stopped linger in TIME_WAIT for a minute and must not block a restart."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise PortInUse(f"port {port} ({what}) is already in use on 127.0.0.1 — is another `make serve` "
                            "running? Stop it, or pick other ports (make serve PORT=8001 EMULATOR_PORT=4567).") \
                from None


def wait_until_up(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up within {timeout:.0f} s") from None
            time.sleep(0.05)


class Emulator:
    """A moto server on 127.0.0.1:``port``; ``url`` is what AWS_ENDPOINT_URL should say."""

    def __init__(self, port: int, log_path: Path, *, invoke_url: str | None = None) -> None:
        self.port = port
        # Where Lambda invokes go (the app process's invoke server); None leaves moto's Lambda as it is.
        self.invoke_url = invoke_url
        self.url = f"http://127.0.0.1:{port}"
        self._log_path = log_path
        self._process: subprocess.Popen | None = None

    def start(self) -> Emulator:
        require_free(self.port, "AWS emulator")
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self._log_path, "ab")
        env = {**os.environ, **DUMMY_CREDENTIALS, "MOTO_PORT": str(self.port)}
        # moto's server, with DynamoDB's conditional writes as atomic as on AWS (devstack/motoserver.py).
        command = [sys.executable, "-m", "devstack.motoserver"]
        if self.invoke_url:
            command = [sys.executable, "-m", "devstack.lambdas", "--invoke-url", self.invoke_url]
        self._process = subprocess.Popen([*command, "-H", "127.0.0.1", "-p", str(self.port)],
                                         stdout=log, stderr=subprocess.STDOUT, env=env,
                                         cwd=Path(__file__).resolve().parent.parent)
        log.close()
        try:
            wait_until_up(f"{self.url}/moto-api/")
        except RuntimeError:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int:
        """The emulator's process id (it must be running)."""
        if self._process is None:
            raise RuntimeError("the emulator is not running")
        return self._process.pid

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
