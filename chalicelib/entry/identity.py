"""Who is asking: the client a request acts for, which owns every job, document, result, Idempotency-Key and map
cache entry the request creates.

One rule, the same on AWS and on a laptop; only configuration differs:

1. API Gateway checked the request's API key: the client is that key's id (``requestContext.identity.apiKeyId``).
2. Otherwise an ``x-api-key`` header is looked up in ``DOCPIPE_API_KEYS`` (for stacks with no API Gateway in front,
   such as ``make serve``): a listed key acts as its client, any other key is refused (403 ``invalid_api_key``).
3. A request with no key at all acts as ``DOCPIPE_KEYLESS_CLIENT`` when that is set (the local stage sets
   ``local``), and is refused otherwise (401 ``api_key_required``)::

    client = client_of(request.context, request.headers, settings)   # "a1b2c3d4e5" on AWS, "local" locally
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from chalicelib.config import CLIENT_ID, Settings
from chalicelib.errors import RequestError

_MAX_KEY = 256


def client_of(context: Mapping[str, Any] | None, headers: Mapping[str, str], settings: Settings) -> str:
    """The client id of a request (its API Gateway request context and headers), or a 401/403 ``RequestError``."""
    identity = (context or {}).get("identity") or {}
    gateway_key_id = identity.get("apiKeyId") if isinstance(identity, Mapping) else None
    if gateway_key_id:
        if not isinstance(gateway_key_id, str) or not CLIENT_ID.fullmatch(gateway_key_id):
            raise RequestError("invalid_api_key", "the API key's id is not one docpipe can use", status=403)
        return gateway_key_id
    key = headers.get("x-api-key")
    if key is not None:
        client = _listed(key, settings.api_keys)
        if client is None:
            raise RequestError("invalid_api_key", "the x-api-key header holds no key docpipe knows", status=403)
        return client
    if settings.keyless_client is None:
        raise RequestError("api_key_required", "send your API key in the x-api-key header", status=401)
    return settings.keyless_client


def _listed(key: str, table: tuple[tuple[str, str], ...]) -> str | None:
    """The client of ``key``, compared in constant time with every listed key (so timing reveals none of them)."""
    candidate = key.encode("utf-8", "surrogateescape")[:_MAX_KEY + 1]
    found = None
    for listed, client in table:
        if hmac.compare_digest(candidate, listed.encode("ascii")):
            found = client
    return found
