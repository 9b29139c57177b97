"""Never pay twice: the answers of map calls, stored in S3 under the hash of everything that shaped them.

Each answer's key is the sha256 of the model (its endpoint and name: one name can mean different weights on two vLLM
servers), the prompt version, the task's parameters and the chunk (its text and the page span the prompt shows), so
changing any of those inputs can never return a stale answer. Answers are grouped under a *scope* — the same hash
over the whole document instead of one chunk — so a job finds every answer of its document with one LIST instead of
a GET per chunk, and stores them in batches, at most one PUT a second, instead of one per chunk. Each scope lies in
its owner's folder, the client whose job paid for the answers: one client never learns from the cache what another
submitted, unless the operator shares the cache (``DOCPIPE_MAP_CACHE_SHARED``, owner ``SHARED_OWNER``)::

    cache = MapCache(s3_client, "docpipe-prod-documents")
    scope = map_cache_scope(owner="alice", endpoint="", model="gpt-4o-mini", prompt_version="summarize/2",
                            params={"map_words": 200}, document=document.text)
    cache.load(scope)                    # {answer key: answer} of every earlier attempt or job
    cache.store(scope, {key: answer})    # one object, cache/map/alice/<scope hash>/<batch>.json
    cache.load(scope, ("batch0000032-",)) # only what the writers of that part stored

A redelivered job, or the same document submitted again with the same task, re-uses every chunk already answered;
a worker killed outright loses at most the last second of answers. The cache is an optimisation: when S3 fails, a
lookup finds nothing and a store is skipped, with a warning — a job never fails because of its cache. The bucket's
lifecycle rule decides how long ``cache/map/`` is kept.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from chalicelib.observability import logger

CACHE_PREFIX = "cache/map/"
# Client ids start with a letter or digit, so no client's folder can be the shared one.
SHARED_OWNER = "_shared"
# Bumped when the stored shape changes, so old entries are never misread.
_FORMAT = 2


def _digest(identity: dict[str, Any]) -> str:
    text = json.dumps({"format": _FORMAT, **identity}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def map_cache_key(*, endpoint: str, model: str, prompt_version: str, params: dict[str, Any], pages: str,
                  text: str) -> str:
    """The content address of one chunk's answer."""
    return _digest({"endpoint": endpoint, "model": model, "prompt_version": prompt_version, "params": params,
                    "pages": pages, "text": text})


def document_digest(text: str) -> str:
    """What a scope knows of the document: a stage that has only some of its chunks carries this instead."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def map_cache_scope(*, owner: str, endpoint: str, model: str, prompt_version: str, params: dict[str, Any],
                    document: str | None = None, document_sha256: str | None = None) -> str:
    """Where the answers about one document are kept: the owner's folder, then the hash of the same inputs with the
    whole document's text (or its ``document_digest``)."""
    digest = document_sha256 if document is None else document_digest(document)
    if digest is None:
        raise ValueError("a map cache scope needs the document or its digest")
    return owner + "/" + _digest({"endpoint": endpoint, "model": model, "prompt_version": prompt_version,
                                  "params": params, "document": digest})


class MapCache:
    def __init__(self, s3: Any, bucket: str, *, prefix: str = CACHE_PREFIX) -> None:
        self._s3 = s3
        self.bucket = bucket
        self._prefix = prefix

    def load(self, scope: str, parts: tuple[str, ...] = ("",)) -> dict[str, Any]:
        """Every answer stored under ``scope`` (empty when there is none, or S3 could not be read); with ``parts``,
        only those stored by the writers of those parts (a workflow batch reads its own, not its document's)."""
        from botocore.exceptions import BotoCoreError, ClientError

        answers: dict[str, Any] = {}
        try:
            keys = [item["Key"] for part in parts for page in self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{self._prefix}{scope}/{part}") for item in page.get("Contents", [])]
            with ThreadPoolExecutor(max_workers=min(16, max(1, len(keys)))) as pool:
                for entries in pool.map(self._entries, keys):
                    answers.update(entries)
        except ClientError as exc:
            logger.warning("map cache lookup failed", extra={"error": exc.response["Error"]["Code"]})
        except (BotoCoreError, ValueError, KeyError, TypeError) as exc:
            logger.warning("map cache lookup failed", extra={"error": type(exc).__name__})
        return answers

    def _entries(self, key: str) -> dict[str, Any]:
        return json.loads(self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())["entries"]

    def store(self, scope: str, entries: dict[str, Any], part: str = "") -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        body = json.dumps({"entries": entries}, ensure_ascii=False).encode("utf-8")
        try:
            self._s3.put_object(Bucket=self.bucket, Key=f"{self._prefix}{scope}/{part}{uuid.uuid4().hex}.json",
                                Body=body, ContentType="application/json")
        except (ClientError, BotoCoreError) as exc:
            logger.warning("map cache store failed", extra={"error": type(exc).__name__, "answers": len(entries)})


class CacheWriter:
    """Answers gathered as chunks finish and stored together, at most once per ``interval`` seconds.

    ``flush()`` stores what is pending; the pipeline calls it once the map ends, however it ends.
    """

    def __init__(self, cache: MapCache, scope: str, *, part: str = "", interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._cache = cache
        self._scope = scope
        self._part = part
        self._interval = interval
        self._clock = clock
        self._pending: dict[str, Any] = {}
        self._last = clock()

    async def add(self, key: str, value: Any) -> None:
        self._pending[key] = value
        if self._clock() - self._last >= self._interval:
            await self.flush()

    async def flush(self) -> None:
        if not self._pending:
            return
        # Swapped before the await: answers arriving during the store go into the next batch.
        entries, self._pending = self._pending, {}
        self._last = self._clock()
        await asyncio.to_thread(self._cache.store, self._scope, entries, self._part)
