"""Set or rotate a stage's LLM key: ``python -m scripts.llm_key --stage dev`` (``make llm-key STAGE=dev``).

The key goes from this process straight into AWS Secrets Manager, never into a file, an argument or a log: it is
read from ``OPENAI_API_KEY`` if set, else from the terminal without echo (or from stdin when that is not a
terminal). The endpoint's URL may come along (``OPENAI_BASE_URL`` or ``--base-url``; it is not secret). The secret
is the one the stage's worker reads (``DOCPIPE_LLM_SECRET`` in .chalice/config.json), as
``{"api_key": ..., "base_url": ...}``; a new value is in use within ``DOCPIPE_LLM_SECRET_MAX_AGE_SECONDS``.

    OPENAI_API_KEY=sk-... make llm-key STAGE=prod
    make llm-key STAGE=dev                       # asks for the key
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scripts.stage import StageError, chalice_config, llm_secret_name, load_config


def ensure_secret(secretsmanager: Any, name: str, *, stage: str, tags: Mapping[str, str]) -> str:
    """The secret's ARN, creating it without a value when it does not exist (a value is only ever set here)."""
    from botocore.exceptions import ClientError

    try:
        return secretsmanager.describe_secret(SecretId=name)["ARN"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
    return secretsmanager.create_secret(
        Name=name, Description=f"docpipe {stage}: the LLM endpoint's key, read by the worker (make llm-key)",
        Tags=[{"Key": k, "Value": v} for k, v in tags.items()])["ARN"]


def has_value(secretsmanager: Any, name: str) -> bool:
    """The secret has a current value (set by ``make llm-key``)."""
    versions = secretsmanager.describe_secret(SecretId=name).get("VersionIdsToStages") or {}
    return any("AWSCURRENT" in stages for stages in versions.values())


def secret_value(api_key: str, base_url: str | None) -> str:
    value = {"api_key": api_key}
    if base_url:
        value["base_url"] = base_url
    return json.dumps(value)


def read_key(stage: str, environ: Mapping[str, str] = os.environ) -> str:
    key = environ.get("OPENAI_API_KEY", "").strip()
    if key:
        return key
    if sys.stdin.isatty():
        key = getpass.getpass(f"LLM API key for docpipe {stage} (not shown): ").strip()
    else:
        key = sys.stdin.readline().strip()
    if not key:
        raise StageError("no key given: set OPENAI_API_KEY or type it when asked")
    return key


def set_key(secretsmanager: Any, name: str, value: str, *, stage: str, tags: Mapping[str, str]) -> str:
    """Store ``value`` as the secret's current version; returns the version id (the value is never echoed)."""
    ensure_secret(secretsmanager, name, stage=stage, tags=tags)
    return secretsmanager.put_secret_value(SecretId=name, SecretString=value)["VersionId"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Set or rotate a docpipe stage's LLM key in AWS Secrets Manager.")
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL"),
                        help="the OpenAI-compatible endpoint (default: OPENAI_BASE_URL, else OpenAI's)")
    parser.add_argument("--project-dir", type=Path, default=Path.cwd())
    args = parser.parse_args(argv)
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        config = load_config(args.project_dir)
        name = llm_secret_name(config, args.stage)
        if not name:
            raise StageError(f"stage {args.stage} names no DOCPIPE_LLM_SECRET for process_jobs in .chalice/config.json")
        tags = chalice_config(config, args.stage).tags
        version = set_key(boto3.client("secretsmanager"), name, secret_value(read_key(args.stage), args.base_url),
                          stage=args.stage, tags=tags)
    except (StageError, ClientError, BotoCoreError) as exc:
        print(f"llm-key failed: {exc}", file=sys.stderr)
        return 1
    print(f"Stored a new value of secret {name} (version {version}); the worker uses it within "
          f"DOCPIPE_LLM_SECRET_MAX_AGE_SECONDS (default 300 s).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
