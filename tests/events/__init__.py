"""AWS's event payloads, one JSON file per event source, in the shape the service delivers them to Lambda.

Tests load one and change only what their case needs, so every handler is fed what AWS sends rather than a dict
that drifts from it. The recordings of other projects in ``../shared/corpus/events`` are used beside them where
present::

    event = load("api-gateway-rest", body="not base64!", isBase64Encoded=True)
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parent


@cache
def _read(name: str) -> dict[str, Any]:
    return json.loads((FOLDER / f"{name}.json").read_text())


def load(name: str, **top_level: Any) -> dict[str, Any]:
    """A fresh copy of the event ``name`` (``api-gateway-rest``, ``sqs-jobs``, ``s3-object-created``, ``scheduled``),
    with ``top_level`` keys replaced."""
    event = copy.deepcopy(_read(name))
    event.update(top_level)
    return event
