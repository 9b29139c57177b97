"""AWS adapters: small classes that receive the boto3 client they use (``clients`` builds them, for
``chalicelib.bootstrap`` alone).

``storage`` (documents and results in S3), ``mapcache`` (map answers in S3), ``idempotency`` (Powertools records
in DynamoDB), ``versioned`` (DynamoDB items many workers replace by compare-and-set: the shared LLM limits),
``secrets`` (the stage's LLM key in Secrets Manager), ``executions`` (the Step Functions workflow's executions).
Job rows and messages are in ``jobs``; Textract
is in ``documents.ocr``.
"""

from chalicelib.aws.executions import Executions
from chalicelib.aws.idempotency import IdempotencyRecords, Once
from chalicelib.aws.mapcache import (
    CACHE_PREFIX,
    SHARED_OWNER,
    CacheWriter,
    MapCache,
    document_digest,
    map_cache_key,
    map_cache_scope,
)
from chalicelib.aws.secrets import secret_reader
from chalicelib.aws.storage import (
    INCOMING_PREFIX,
    UPLOAD_TYPES,
    DocumentStore,
    StoredObject,
    client_of_upload,
    key_of_client,
    new_upload_key,
    validate_client_key,
)
from chalicelib.aws.versioned import Versioned, VersionedItems

__all__ = ["CACHE_PREFIX", "INCOMING_PREFIX", "SHARED_OWNER", "UPLOAD_TYPES", "CacheWriter", "DocumentStore",
           "Executions", "IdempotencyRecords", "MapCache", "Once", "StoredObject", "Versioned", "VersionedItems",
           "client_of_upload", "document_digest", "key_of_client", "map_cache_key", "map_cache_scope", "new_upload_key",
           "secret_reader", "validate_client_key"]
