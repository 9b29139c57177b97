"""The opaque cursor of ``GET /jobs``: where the next page of one client's listing starts.

It holds a position in the jobs table's client index (the last row shown: its creation time and id), the status
filter it was made for and a digest of the client's id, base64url-encoded. Nothing in it chooses whose jobs are
read: the listing's key is always the caller's client, from the request's identity, so an altered or borrowed
cursor can move only within the caller's own jobs. One made for another client or another filter is refused
(400 ``invalid_cursor``), as is one that does not decode::

    cursor = encode_cursor("alice", "FAILED", ("1764500000.123", "9f…"))
    decode_cursor(cursor, "alice", "FAILED")    # ("1764500000.123", "9f…")
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re

from chalicelib.errors import RequestError
from chalicelib.jobs import JOB_ID_PATTERN

_VERSION = 1
_MAX_LENGTH = 512
_CREATED_AT = re.compile(r"\d{1,12}(\.\d{1,6})?")


def _owner(client: str) -> str:
    return hashlib.sha256(client.encode()).hexdigest()[:16]


def encode_cursor(client: str, status: str | None, position: tuple[str, str]) -> str:
    payload = {"v": _VERSION, "o": _owner(client), "s": status or "", "t": position[0], "j": position[1]}
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, client: str, status: str | None) -> tuple[str, str]:
    """The position ``cursor`` holds, for ``client`` listing with ``status``; a 400 ``invalid_cursor`` otherwise."""
    invalid = RequestError("invalid_cursor", "cursor is not one this listing returned: pass next_cursor from the "
                                             "previous page as it was")
    if not cursor or len(cursor) > _MAX_LENGTH:
        raise invalid
    try:
        payload = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise invalid from None
    if not isinstance(payload, dict) or payload.get("v") != _VERSION:
        raise invalid
    created, job_id, owner, made_for = payload.get("t"), payload.get("j"), payload.get("o"), payload.get("s")
    if not (isinstance(created, str) and _CREATED_AT.fullmatch(created) and isinstance(job_id, str)
            and JOB_ID_PATTERN.fullmatch(job_id) and isinstance(owner, str) and isinstance(made_for, str)):
        raise invalid
    if not hmac.compare_digest(owner, _owner(client)):
        raise RequestError("invalid_cursor", "this cursor belongs to another client's listing")
    if made_for != (status or ""):
        raise RequestError("invalid_cursor", f"this cursor continues the listing with status={made_for or '(any)'}: "
                                             "ask with the same status filter")
    return created, job_id
