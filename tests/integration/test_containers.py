"""The local stack's Lambda execution environments (devstack.containers) and its concurrent dispatcher."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import types
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from devstack.containers import ContainerFailed, ContainerPool

pytestmark = pytest.mark.timeout(120)

MODULE = "tests.support.containerapp"


@pytest.fixture
def pool():
    containers = ContainerPool(MODULE, {"whoami": {"lambda_timeout": 30}, "whoami_short": {"lambda_timeout": 1}})
    yield containers
    containers.close()


def test_concurrent_invocations_each_have_a_container_and_a_warm_one_is_reused(pool):
    with ThreadPoolExecutor(3) as threads:
        first = list(threads.map(lambda _: pool.invoke("whoami", {"sleep": 1}), range(3)))
    again = pool.invoke("whoami", {})

    assert len({answer["pid"] for answer in first}) == 3, "three at once: three containers"
    assert [answer["invocations"] for answer in first] == [1, 1, 1], "module globals are each container's own"
    assert again["pid"] in {answer["pid"] for answer in first} and again["invocations"] == 2, "reused warm"
    assert pool.cold_starts == 3 and again["pid"] != os.getpid()
    assert 0 < again["remaining_ms"] <= 30_000, "the handler has a Lambda context with the function's timeout"


def test_a_handler_error_fails_the_invocation_and_the_container_stays_warm(pool):
    with pytest.raises(ContainerFailed, match="ValueError: the handler refused the event"):
        pool.invoke("fail", {})
    with pytest.raises(ContainerFailed):
        pool.invoke("fail", {})

    assert pool.cold_starts == 1


def test_an_invocation_past_its_timeout_is_ended_with_its_container():
    containers = ContainerPool(MODULE, {"whoami": {"lambda_timeout": 1}})
    try:
        with pytest.raises(ContainerFailed, match="timed out"):
            containers.invoke("whoami", {"sleep": 30})
        assert containers.invoke("whoami", {})["invocations"] == 1, "a fresh container serves the next one"
    finally:
        containers.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is not running any more
        return stat.read().split(") ")[1][0] != "Z"


def test_a_sigkilled_app_process_leaves_no_container_or_child_of_one_running(tmp_path):
    pids = tmp_path / "pids"
    script = (f"import sys; sys.path.insert(0, {os.getcwd()!r})\n"
              "from devstack.containers import ContainerPool\n"
              f"ContainerPool({MODULE!r}, {{}}).invoke('linger', {{'pids': {str(pids)!r}}})\n")
    app = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while not (pids.exists() and pids.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        container, child = map(int, pids.read_text().split())
        assert _alive(container) and _alive(child)
    finally:
        app.send_signal(signal.SIGKILL)
        app.wait()

    deadline = time.monotonic() + 20
    while (_alive(container) or _alive(child)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(container) and not _alive(child)


# --- the dispatcher -------------------------------------------------------------------------------------------------

def test_the_dispatcher_runs_as_many_batches_at_once_as_the_mappings_maximum_concurrency(sqs):
    from chalice.app import SQSEventConfig

    from devstack.dispatcher import Dispatcher

    name = f"burst-{uuid.uuid4().hex[:8]}"
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    for n in range(9):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{n}")
    together = threading.Barrier(3, timeout=20)  # broken unless three batches are in the handler at once
    lock = threading.Lock()
    running = {"now": 0, "most": 0}
    seen: list[str] = []
    done = threading.Event()
    invoked: list[str] = []

    def handler(event, context):
        with lock:
            running["now"] += 1
            running["most"] = max(running["most"], running["now"])
        try:
            together.wait()
        finally:
            with lock:
                running["now"] -= 1
                seen.extend(r["body"] for r in event["Records"])
                if len(seen) >= 9:
                    done.set()
        return {"batchItemFailures": []}

    def runner(function_name, event):
        invoked.append(function_name)
        return handler(event, None)

    app = types.SimpleNamespace(event_sources=[SQSEventConfig(
        name="consumer", handler_string="app.consumer", queue=name, queue_arn=None, batch_size=1,
        maximum_batching_window_in_seconds=0, maximum_concurrency=3)])
    dispatcher = Dispatcher(app, {}, sqs, function_settings={}, s3_events_queue="unused", runner=runner)
    dispatcher.start()
    try:
        assert done.wait(60)
    finally:
        dispatcher.stop()

    assert sorted(seen) == [f"m{n}" for n in range(9)] and not together.broken
    assert running["most"] == 3 and set(invoked) == {"consumer"}


def test_the_dispatcher_gathers_a_batch_for_the_mappings_batching_window_as_lambdas_poller_does(sqs):
    from chalice.app import SQSEventConfig

    from devstack.dispatcher import Dispatcher

    name = f"window-{uuid.uuid4().hex[:8]}"
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    batches: list[list[str]] = []
    done = threading.Event()

    def runner(function_name, event):
        batches.append([r["body"] for r in event["Records"]])
        if sum(map(len, batches)) >= 3:
            done.set()
        return {"batchItemFailures": []}

    # A window far longer than the test needs: the batch is handed over as soon as it holds batch_size messages.
    app = types.SimpleNamespace(event_sources=[SQSEventConfig(
        name="consumer", handler_string="app.consumer", queue=name, queue_arn=None, batch_size=3,
        maximum_batching_window_in_seconds=60, maximum_concurrency=2)])
    dispatcher = Dispatcher(app, {}, sqs, function_settings={}, s3_events_queue="unused", runner=runner)
    sqs.send_message(QueueUrl=url, MessageBody="m0")
    dispatcher.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]["ApproximateNumberOfMessagesNotVisible"] != "1":
            time.sleep(0.05)
        assert not batches  # the first message is received, and its batch waits for more
        sqs.send_message(QueueUrl=url, MessageBody="m1")
        sqs.send_message(QueueUrl=url, MessageBody="m2")
        assert done.wait(30)
    finally:
        dispatcher.stop()

    assert batches == [["m0", "m1", "m2"]]


def test_the_local_api_takes_a_bursts_connections_at_once_as_api_gateway_does():
    import socket

    from chalice import Chalice
    from chalice.config import Config

    from devstack.appserver import local_server
    from devstack.emulator import free_port

    app = Chalice("burst")

    @app.route("/")
    def index():
        return {"ok": True}

    port = free_port()
    server = local_server(app, Config(), port)
    clients = []
    try:
        # Nobody accepts yet (a busy server): the kernel completes each handshake only while the backlog has room.
        for _ in range(40):
            client = socket.create_connection(("127.0.0.1", port), timeout=3)
            client.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            clients.append(client)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        for client in clients:  # the handshakes were the test; the answers may take a loaded machine longer
            client.settimeout(30)
        answers = [b"".join(iter(lambda c=c: c.recv(4096), b"")) for c in clients]
    finally:
        for client in clients:
            client.close()
        server.shutdown()

    assert len(answers) == 40 and all(a.startswith(b"HTTP/1.") and b" 200 " in a[:20] for a in answers)
