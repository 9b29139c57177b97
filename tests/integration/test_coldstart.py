"""What each function's cold import of app.py loads, checked as Lambda pays it: a fresh interpreter with the
function's environment (LAMBDA_TASK_ROOT, its name, its handler, X-Ray's daemon address, as Lambda sets them).

No clock here (a timed assertion flakes on a shared machine): the import's cost is measured by ``make bench``
(``bench/coldstart.py``). This checks its causes: no function loads the X-Ray SDK at import (the Tracer is made at
the first traced invocation, which the API function never has), and the API function, which answers every
request a client waits for, loads none of the worker's heavy libraries.
"""

from __future__ import annotations

import pytest

from bench.coldstart import FUNCTIONS, import_once

_LOADED = """
import json, sys
import {module}
print(json.dumps({{"modules": sorted(sys.modules)}}))
"""
# What the worker needs and a request never does: the LLM client, PDF reading, tokenizing, schema checking,
# batch processing and idempotency, the pipeline itself, and boto3 (the API builds its clients on first use).
WORKER_ONLY = ("openai", "httpx", "pypdf", "tiktoken", "jsonschema", "re2", "pydantic", "boto3",
               "aws_lambda_powertools.utilities.batch", "aws_lambda_powertools.utilities.idempotency",
               "chalicelib.pipeline", "chalicelib.documents")


def loaded(function: str) -> set[str]:
    return set(import_once("app", function, _LOADED)["modules"])


@pytest.mark.parametrize("function", FUNCTIONS)
def test_no_function_loads_the_xray_sdk_at_import(function):
    assert not {m for m in loaded(function) if m.split(".")[0] == "aws_xray_sdk"}


def test_the_api_function_loads_none_of_the_workers_libraries():
    modules = loaded("api_handler")

    assert [m for m in WORKER_ONLY if m in modules] == []


def test_the_check_sees_a_library_the_import_does_load():
    assert "chalice" in loaded("api_handler")
