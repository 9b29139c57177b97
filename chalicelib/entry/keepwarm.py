"""Keep the user-facing function warm.

A scheduled Lambda only warms itself (each ``@app.schedule`` is its own function), so the keep-warm pings the
API's cheap ``/health`` route: API Gateway invokes the API handler, which stays warm. ``instances`` pings leave
together, so Lambda needs that many instances at once when they overlap (it starts one for each ping that finds
none idle). With no API URL configured (nothing deployed yet) it does nothing, and a failed ping is logged, never
raised — a schedule must not retry.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from chalicelib.observability import logger

PING_TIMEOUT_SECONDS = 5


def ping(api_url: str | None, instances: int = 1) -> dict:
    if not api_url:
        logger.info("keep-warm skipped: DOCPIPE_API_URL is not set")
        return {"pinged": False, "reason": "DOCPIPE_API_URL is not set"}
    url = api_url.rstrip("/") + "/health"
    started = time.monotonic()
    # Every ping waits for the others to be ready, so they reach API Gateway together.
    together = threading.Barrier(instances)
    with ThreadPoolExecutor(max_workers=instances) as pool:
        outcomes = list(pool.map(lambda _: _ping_once(url, together), range(instances)))
    statuses = sorted(o for o in outcomes if isinstance(o, int))
    failures = [str(o)[:200] for o in outcomes if not isinstance(o, int)]
    elapsed_ms = round((time.monotonic() - started) * 1000, 1)
    if not statuses:
        logger.warning("keep-warm ping failed", extra={"url": url, "reason": failures[0], "pings": instances})
        return {"pinged": False, "url": url, "reason": failures[0]}
    answered = {str(status): statuses.count(status) for status in set(statuses)}
    logger.info("keep-warm ping", extra={"url": url, "statuses": answered, "pings": instances,
                                         "unanswered": len(failures), "elapsed_ms": elapsed_ms})
    # "status" is the worst answer: one 5xx among the pings is what an operator must see.
    return {"pinged": True, "url": url, "status": statuses[-1], "pings": instances, "statuses": answered,
            "unanswered": len(failures), "elapsed_ms": elapsed_ms}


def _ping_once(url: str, together: threading.Barrier) -> int | Exception:
    try:
        together.wait(timeout=PING_TIMEOUT_SECONDS)
    except threading.BrokenBarrierError:
        pass  # a slow thread start only costs this ping its company
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "docpipe-keep-warm"}),
                                    timeout=PING_TIMEOUT_SECONDS) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError) as exc:
        return exc
