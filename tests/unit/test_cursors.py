"""GET /jobs's cursor: opaque to the client, bound to the client and the filter it was made for."""

from __future__ import annotations

import pytest

from chalicelib.entry.cursors import decode_cursor, encode_cursor
from chalicelib.errors import RequestError

POSITION = ("1764500000.123", "f" * 32)


def test_a_cursor_gives_back_the_position_it_was_made_with():
    assert decode_cursor(encode_cursor("alice", "FAILED", POSITION), "alice", "FAILED") == POSITION


@pytest.mark.parametrize("client, status, message", [("bob", None, "another client"),
                                                     ("alice", "FAILED", r"status=\(any\)")])
def test_a_cursor_is_refused_for_another_client_or_filter(client, status, message):
    with pytest.raises(RequestError, match=message) as refused:
        decode_cursor(encode_cursor("alice", None, POSITION), client, status)
    assert (refused.value.code, refused.value.status) == ("invalid_cursor", 400)


@pytest.mark.parametrize("cursor", ["", "%%%", "x" * 600, encode_cursor("alice", None, ("1e9", "f" * 32)),
                                    encode_cursor("alice", None, ("1764500000.1", "not-a-job-id"))])
def test_a_cursor_that_does_not_decode_to_a_position_is_refused(cursor):
    with pytest.raises(RequestError) as refused:
        decode_cursor(cursor, "alice", None)
    assert refused.value.code == "invalid_cursor"
