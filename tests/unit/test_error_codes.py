"""The API's error codes are a contract: every code a route can answer with is listed in the OpenAPI document and in
the README, and neither lists a code the code never sends.

The codes are read from the source (every literal handed to ``RequestError``, ``error_response`` or the task parser's
``_bad``, and the codes of ``RequestError``'s subclasses), so a new refusal cannot ship undocumented.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
CODE = re.compile(r'[a-z_]+')
RAISED = [
    re.compile(r'RequestError\(\s*"([a-z_]+)"'),
    re.compile(r'error_response\(\s*"([a-z_]+)"'),
    re.compile(r'_bad\([^()]*(?:\([^()]*\)[^()]*)*,\s*"([a-z_]+)"\)'),
]
# Answered without a RequestError: the catch-all for a bug, and the default of _bad.
IMPLICIT = {"internal_error", "invalid_task"}


def raised_codes() -> set[str]:
    from chalicelib.errors import RequestError

    found = set(IMPLICIT) | {kind("message").code for kind in RequestError.__subclasses__()}
    for path in [PROJECT / "app.py", *(PROJECT / "chalicelib").rglob("*.py")]:
        source = path.read_text(encoding="utf-8")
        for pattern in RAISED:
            found.update(pattern.findall(source))
    return found


def openapi_codes() -> list[str]:
    spec = json.loads((PROJECT / "chalicelib" / "entry" / "openapi.json").read_text(encoding="utf-8"))
    description = spec["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["description"]
    return CODE.findall(description.split(":", 1)[1])


def readme_codes() -> set[str]:
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    paragraph = readme[readme.index("The codes are\n  stable words:"):readme.index("- A job that cannot succeed")]
    return set(re.findall(r"`([a-z_]+)`", paragraph))


def test_the_source_yields_the_codes_this_test_relies_on():
    assert {"invalid_cursor", "document_not_found", "not_found", "service_unavailable", "invalid_schema",
            "not_retryable", "workflow_unavailable"} <= raised_codes()


def test_every_code_the_api_sends_is_in_the_openapi_document_once_and_nothing_else_is():
    listed = openapi_codes()

    assert sorted(set(listed)) == sorted(listed), "a code is listed twice"
    assert set(listed) == raised_codes()


def test_every_code_the_api_sends_is_in_the_readme_and_nothing_else_is():
    assert readme_codes() == raised_codes()
