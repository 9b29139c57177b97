"""Documents and results in S3.

Layout of the bucket:

* ``inputs/{job_id}`` — a document submitted through the API (text or PDF bytes);
* ``incoming/{client}/…`` — uploads that start a job by themselves (the S3 trigger), for the client named by the
  folder;
* ``uploads/{client}/…`` — documents staged for a client and referenced from ``POST /jobs`` by ``s3_key``: a
  client's own upload, through the presigned form ``POST /uploads`` hands out, goes to
  ``uploads/{client}/{random}/{filename}``;
* ``results/{job_id}.json`` — the result document of a finished job;
* ``work/{job_id}/{run}/…`` — what the Step Functions workflow's stages hand each other (chunks, answers).

A client names its documents relative to its own folders: ``{"s3_key": "uploads/report.pdf"}`` from client ``alice``
is ``uploads/alice/report.pdf`` in the bucket, so no ``s3_key`` reaches another client's documents, and whether a key
exists says nothing about anyone else's.
"""

from __future__ import annotations

import json
import posixpath
import re
import uuid
from dataclasses import dataclass
from typing import Any

from chalicelib.errors import JobFailure, RequestError

INPUTS_PREFIX = "inputs/"
INCOMING_PREFIX = "incoming/"
UPLOADS_PREFIX = "uploads/"
RESULTS_PREFIX = "results/"
CLIENT_KEY_PREFIXES = (INCOMING_PREFIX, UPLOADS_PREFIX)
# What a presigned upload may hold: the types the worker reads, each with the extension its key gets.
UPLOAD_TYPES = {"application/pdf": ".pdf", "text/plain": ".txt", "text/markdown": ".md"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    content_type: str | None
    metadata: dict[str, str]
    etag: str


def validate_client_key(key: str) -> str:
    """A key a client names must stay inside the documents prefixes: no traversal, no other bucket."""
    if not isinstance(key, str) or not key or len(key) > 1024:
        raise RequestError("invalid_document", "document.s3_key must be a non-empty string of at most 1024 characters")
    normal = posixpath.normpath(key)
    if (normal != key or key.startswith("/") or "\\" in key or any(ord(ch) < 32 for ch in key)
            or not key.startswith(CLIENT_KEY_PREFIXES) or normal.rstrip("/") in ("incoming", "uploads")):
        raise RequestError(
            "invalid_document",
            f"document.s3_key must name an object under {' or '.join(CLIENT_KEY_PREFIXES)} in the docpipe bucket",
        )
    return key


def key_of_client(client: str, key: str) -> str:
    """Where a client's ``s3_key`` (already validated) is in the bucket: inside that client's own folder."""
    prefix = next(p for p in CLIENT_KEY_PREFIXES if key.startswith(p))
    return f"{prefix}{client}/{key[len(prefix):]}"


def new_upload_key(filename: str | None, content_type: str) -> str:
    """A fresh key under ``uploads/`` (as the client names it) for one upload: a random folder, so no upload ever
    replaces another, and the file's name made safe, ending in its type's extension."""
    extension = UPLOAD_TYPES[content_type]
    stem = _UNSAFE.sub("-", (filename or "").rsplit("/", 1)[-1]).strip(".-")[:100] or "document"
    name = stem if stem.lower().endswith(extension) else stem + extension
    return f"{UPLOADS_PREFIX}{uuid.uuid4().hex}/{name}"


def client_of_upload(key: str) -> str | None:
    """The client an object under ``incoming/`` belongs to (its first folder), or None when it names none."""
    from chalicelib.config import CLIENT_ID

    folder, slash, name = key[len(INCOMING_PREFIX):].partition("/") if key.startswith(INCOMING_PREFIX) else ("", "", "")
    return folder if slash and name and CLIENT_ID.fullmatch(folder) else None


class DocumentStore:
    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self.bucket = bucket

    def put_input(self, job_id: str, data: bytes, content_type: str) -> str:
        key = f"{INPUTS_PREFIX}{job_id}"
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
        return key

    def head(self, key: str) -> StoredObject | None:
        from botocore.exceptions import ClientError

        try:
            response = self._s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return StoredObject(key, int(response["ContentLength"]), response.get("ContentType"),
                            dict(response.get("Metadata") or {}), response.get("ETag", "").strip('"'))

    def upload_form(self, key: str, content_type: str, *, max_bytes: int, expires_in: int) -> dict[str, Any]:
        """A presigned POST (``{"url", "fields"}``) for exactly ``key``: S3 itself refuses another key, another
        Content-Type, an empty file or one over ``max_bytes`` (the policy's ``content-length-range``), and the form
        once ``expires_in`` seconds have passed. It is signed with this function's credentials, which must allow
        ``s3:PutObject`` on the key."""
        return self._s3.generate_presigned_post(
            Bucket=self.bucket, Key=key, Fields={"Content-Type": content_type},
            Conditions=[{"Content-Type": content_type}, ["content-length-range", 1, max_bytes]],
            ExpiresIn=expires_in)

    def tag_with_job(self, key: str, job_id: str) -> None:
        """Mark an uploaded object with the job it started, so the uploader can find the job.

        S3 replaces an object's whole tag set, so the uploader's own tags are read and written back with ours.
        """
        tags = [t for t in self._s3.get_object_tagging(Bucket=self.bucket, Key=key)["TagSet"]
                if t["Key"] != "docpipe-job-id"]
        self._s3.put_object_tagging(Bucket=self.bucket, Key=key,
                                    Tagging={"TagSet": [*tags, {"Key": "docpipe-job-id", "Value": job_id}]})

    def read_document(self, key: str, max_bytes: int) -> bytes:
        """The document's bytes, refusing before download what would not fit the worker's memory budget."""
        from botocore.exceptions import ClientError

        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                raise JobFailure("document_missing", f"the document s3://{self.bucket}/{key} does not exist") from None
            raise
        size = int(response["ContentLength"])
        if size > max_bytes:
            response["Body"].close()
            raise JobFailure("too_large", f"the document is {size} bytes; the limit is {max_bytes}")
        return response["Body"].read()

    def put_result(self, job_id: str, result: dict[str, Any]) -> str:
        key = f"{RESULTS_PREFIX}{job_id}.json"
        body = json.dumps(result, ensure_ascii=False, indent=1).encode("utf-8")
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json")
        return key

    def put_json(self, key: str, body: dict[str, Any]) -> None:
        """A workflow stage's output (``work/<job id>/<run>/...``): the state carries its key, never the data."""
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=json.dumps(body, ensure_ascii=False).encode("utf-8"),
                            ContentType="application/json")

    def get_json(self, key: str) -> dict[str, Any]:
        return json.loads(self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def get_result(self, key: str) -> dict[str, Any]:
        return json.loads(self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
