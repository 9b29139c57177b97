"""Chalice's record of a deployed stage, kept in the stage's bucket so that every checkout deploys the same stage.

``chalice deploy`` remembers what it created (the REST API's id, each event source mapping's UUID, ...) only in
``.chalice/deployed/<stage>.json``, which git ignores. A deploy from a fresh clone or a CI job would not find it and
would create a second API and a second event source mapping. So the deploy fetches the record from
``s3://<bucket>/deploy-state/<stage>/deployed.json`` before Chalice runs and stores it back after, and holds a lock
object beside it meanwhile, so two deploys of one stage cannot interleave::

    with DeployLock(s3, bucket, "dev", owner="alice@laptop"):
        record = fetch_record(s3, bucket, project_dir, "dev")   # writes .chalice/deployed/dev.json
        ...                                                     # chalice deploy
        store_record(s3, bucket, project_dir, "dev")

Both use S3 conditional writes: the lock is created only if absent (``If-None-Match: *``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

STATE_PREFIX = "deploy-state"


class StateError(RuntimeError):
    """The stage's deploy state cannot be used as it is; the message says what to do."""


def record_key(stage: str) -> str:
    return f"{STATE_PREFIX}/{stage}/deployed.json"


def lock_key(stage: str) -> str:
    return f"{STATE_PREFIX}/{stage}/deploy.lock"


def local_record(project_dir: Path, stage: str) -> Path:
    return project_dir / ".chalice" / "deployed" / f"{stage}.json"


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def read_record(s3: Any, bucket: str, stage: str) -> dict[str, Any] | None:
    """The stored record, or None when the bucket or the record does not exist yet (a first deploy)."""
    from botocore.exceptions import ClientError

    try:
        body = s3.get_object(Bucket=bucket, Key=record_key(stage))["Body"].read()
    except ClientError as exc:
        if _error_code(exc) in ("NoSuchKey", "NoSuchBucket", "404"):
            return None
        raise
    return json.loads(body)


def fetch_record(s3: Any, bucket: str, project_dir: Path, stage: str) -> dict[str, Any] | None:
    """Make the checkout's .chalice/deployed/<stage>.json the stored record; returns it (None: nothing stored).

    With nothing stored, a local record (from a deploy made before the state lived in the bucket) is kept and
    stored after this deploy; without either, Chalice creates the stage afresh.
    """
    path = local_record(project_dir, stage)
    stored = read_record(s3, bucket, stage)
    if stored is None:
        if path.exists():
            print(f"No deploy record in s3://{bucket}/{record_key(stage)}: using this checkout's {path.name}")
            return json.loads(path.read_text())
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stored, indent=2) + "\n")
    return stored


def store_record(s3: Any, bucket: str, project_dir: Path, stage: str) -> None:
    """Store the checkout's record (Chalice wrote it) in the bucket, where the next deploy from anywhere finds it."""
    path = local_record(project_dir, stage)
    if not path.exists():
        raise StateError(f"{path} does not exist: Chalice recorded nothing for stage {stage}")
    s3.put_object(Bucket=bucket, Key=record_key(stage), Body=path.read_bytes(), ContentType="application/json",
                  ServerSideEncryption="AES256")


class DeployLock:
    """One deploy of a stage at a time: an object created only if absent, removed when the deploy ends."""

    def __init__(self, s3: Any, bucket: str, stage: str, *, owner: str) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._stage = stage
        self._owner = owner

    def __enter__(self) -> DeployLock:
        from botocore.exceptions import ClientError

        body = json.dumps({"owner": self._owner, "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        try:
            self._s3.put_object(Bucket=self._bucket, Key=lock_key(self._stage), Body=body.encode(),
                                IfNoneMatch="*", ContentType="application/json")
        except ClientError as exc:
            if _error_code(exc) not in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise
            holder = self._holder()
            raise StateError(f"another deploy of stage {self._stage} is running ({holder}). If it died, remove "
                             f"its lock: aws s3 rm s3://{self._bucket}/{lock_key(self._stage)}") from None
        return self

    def _holder(self) -> str:
        try:
            lock = json.loads(self._s3.get_object(Bucket=self._bucket, Key=lock_key(self._stage))["Body"].read())
            return f"by {lock.get('owner')} since {lock.get('since')}"
        except Exception:  # the lock's content only decorates the message
            return "holder unknown"

    def __exit__(self, *exc: object) -> None:
        self._s3.delete_object(Bucket=self._bucket, Key=lock_key(self._stage))
