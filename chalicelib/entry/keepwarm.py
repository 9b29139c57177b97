"""Keep the user-facing function warm.

A scheduled Lambda only warms itself (each ``@app.schedule`` is its own function), so the keep-warm pings the
API's cheap ``/health`` route: API Gateway invokes the API handler, which stays warm. With no API URL configured
(nothing deployed yet) it does nothing, and a failed ping is logged, never raised — a schedule must not retry.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request

from chalicelib.observability import logger

PING_TIMEOUT_SECONDS = 5


def ping(api_url: str | None) -> dict:
    if not api_url:
        logger.info("keep-warm skipped: DOCPIPE_API_URL is not set")
        return {"pinged": False, "reason": "DOCPIPE_API_URL is not set"}
    url = api_url.rstrip("/") + "/health"
    started = time.monotonic()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "docpipe-keep-warm"}),
                                    timeout=PING_TIMEOUT_SECONDS) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        logger.warning("keep-warm ping failed", extra={"url": url, "reason": str(exc)[:200]})
        return {"pinged": False, "url": url, "reason": str(exc)[:200]}
    elapsed_ms = round((time.monotonic() - started) * 1000, 1)
    logger.info("keep-warm ping", extra={"url": url, "status": status, "elapsed_ms": elapsed_ms})
    return {"pinged": True, "url": url, "status": status, "elapsed_ms": elapsed_ms}
