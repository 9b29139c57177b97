"""The stage's LLM key in AWS Secrets Manager, read through Powertools Parameters.

Powertools keeps a value it read for ``max_age_seconds`` across invocations of a warm container, so a worker calls
Secrets Manager at most once in that time, and a rotated key is in use within it::

    read = secret_reader(secretsmanager_client, "docpipe/dev/llm", max_age_seconds=300)
    read()   # '{"api_key": "sk-...", "base_url": "..."}', or None while the secret holds no value yet
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def secret_reader(secretsmanager: Any, name: str, *, max_age_seconds: int) -> Callable[[], str | None]:
    """Read the secret ``name``; None while it has no value (created by the deploy, not yet set by ``make llm-key``)."""
    from aws_lambda_powertools.utilities.parameters import SecretsProvider
    from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError
    from botocore.exceptions import ClientError

    provider = SecretsProvider(boto3_client=secretsmanager)

    def read() -> str | None:
        try:
            value = provider.get(name, max_age=max_age_seconds)
        except GetParameterError as exc:
            cause = exc.__context__
            if isinstance(cause, ClientError) and cause.response["Error"]["Code"] == "ResourceNotFoundException":
                return None
            raise
        if isinstance(value, bytes):
            return value.decode()
        return value if isinstance(value, str) else None

    return read
