"""The local stack's port checks: a stopped stack's ports are free again at once; a live one's are refused."""

from __future__ import annotations

import socket

import pytest

from devstack.emulator import PortInUse, require_free


def _listener() -> socket.socket:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    return server


def test_a_port_whose_server_just_closed_its_connections_counts_as_free():
    server = _listener()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server closes first, so its side of the connection lingers in TIME_WAIT
    client.close()
    server.close()

    require_free(port, "test server")


def test_a_port_another_process_listens_on_is_refused_with_the_settings_to_change():
    server = _listener()
    try:
        with pytest.raises(PortInUse, match="EMULATOR_PORT"):
            require_free(server.getsockname()[1], "test server")
    finally:
        server.close()
