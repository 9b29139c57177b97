"""Powertools Idempotency on docpipe's records table: a function's first answer stored, and replayed for repeats.

Two callers use it: ``POST /jobs`` with an ``Idempotency-Key`` (the same client's retried request gets the job the
first one created) and the S3 upload trigger (a repeated event for the same object finds the job its first
delivery started). Each gets a persistence layer of its own, since Powertools configures a layer for the one
function it guards::

    once = records.once(create, name="submissions", data_keyword="request", key="[client, key]",
                        payload="fingerprint", expires_after_seconds=86_400)
    once(request={...}, submission=..., lambda_context=context)   # the stored answer when the key was seen before
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Once:
    """A function guarded by Powertools Idempotency; the Lambda context of each call bounds its in-progress record."""

    def __init__(self, guarded: Callable[..., Any], config: Any) -> None:
        self._guarded = guarded
        self._config = config

    def __call__(self, *, lambda_context: Any = None, **arguments: Any) -> Any:
        if lambda_context is not None:
            # An invocation that dies mid-way frees its record when it ends, so a retry is not refused for 24 hours.
            self._config.register_lambda_context(lambda_context)
        return self._guarded(**arguments)


class IdempotencyRecords:
    """The DynamoDB table of Powertools Idempotency records, reached through ``dynamodb`` (a boto3 client), for the
    Lambda function ``function_name`` (each function's records are its own)."""

    def __init__(self, dynamodb: Any, table_name: str, *, function_name: str) -> None:
        self._dynamodb = dynamodb
        self.table_name = table_name
        self._function_name = function_name

    def once(self, function: Callable[..., Any], *, name: str, data_keyword: str, key: str,
             expires_after_seconds: int, payload: str | None = None) -> Once:
        """``function`` run once per value of the JMESPath ``key`` over its ``data_keyword`` argument; a repeat with
        a different ``payload`` (a JMESPath too) is refused with ``IdempotencyValidationError``.

        ``name`` goes into every record's key (``<function_name>.<name>#<hash>``), where Powertools would put the
        guarded function's module and qualified name: named here, records outlive any move of the code.
        """
        from aws_lambda_powertools.utilities.idempotency import (
            DynamoDBPersistenceLayer,
            IdempotencyConfig,
            idempotent_function,
        )

        persistence = DynamoDBPersistenceLayer(table_name=self.table_name, boto3_client=self._dynamodb)
        config = IdempotencyConfig(event_key_jmespath=key, payload_validation_jmespath=payload or "",
                                   raise_on_no_idempotency_key=True, expires_after_seconds=expires_after_seconds)
        # Configured now, not by the first call: Powertools marks a layer configured before it compiles the key's
        # JMESPath, so two first calls at once (two threads of one instance) could find it half-done.
        persistence.configure(config, key_prefix=f"{self._function_name}.{name}")
        guarded = idempotent_function(data_keyword_argument=data_keyword, persistence_store=persistence,
                                      config=config, key_prefix=f"{self._function_name}.{name}")(function)
        return Once(guarded, config)
