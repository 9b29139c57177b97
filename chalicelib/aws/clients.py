"""boto3 clients, created on first use and reused while the Lambda container stays warm.

Plain ``boto3.client(...)`` with no endpoint argument: on AWS it reaches AWS; on a developer's machine the standard
``AWS_ENDPOINT_URL`` variable points it at the local emulator. There is no other local branch. Only the composition
point (``chalicelib.bootstrap``) calls these; everything else receives the client it uses.
"""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def client(service: str) -> Any:
    import boto3
    from botocore.config import Config

    # Standard retry mode backs off on throttling; S3 presigned URLs need SigV4 to work in every region.
    return boto3.client(service, config=Config(retries={"mode": "standard"}, signature_version="s3v4")
                        if service == "s3" else Config(retries={"mode": "standard"}))


@cache
def table(name: str) -> Any:
    """A DynamoDB table as a boto3 resource (items as Python values, numbers as Decimal)."""
    import boto3

    return boto3.resource("dynamodb").Table(name)
