"""Hostile clients: the REST API fuzzed from its own OpenAPI description, against the real local stack.

Every generated request — valid, boundary or malformed — must get an answer that matches the description: never a
5xx, and every error in the documented ``{"error": {"code", "message"}}`` shape.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from devstack.emulator import free_port
from devstack.stack import LOCAL_DIR, LocalStack
from tests.support import PROJECT

pytestmark = pytest.mark.e2e
SPEC = PROJECT / "chalicelib" / "entry" / "openapi.json"
schema = schemathesis.openapi.from_path(SPEC)


@pytest.fixture(scope="module")
def stack():
    LOCAL_DIR.mkdir(exist_ok=True)
    with LocalStack(api_port=free_port(), emulator_port=free_port(), app_log=LOCAL_DIR / "fuzz.log") as s:
        yield s


def error_shape(ctx, response, case):
    """Any 4xx from docpipe's routes carries the documented error object with a code and a message.

    A 405 (a method the path does not declare) and a 414 (a URL over the server's length limit) come from the
    platform, before docpipe's code runs.
    """
    if response.status_code >= 400 and response.status_code not in (405, 414):
        body = response.json()
        assert isinstance(body.get("error"), dict), f"{response.status_code} without an error object: {body}"
        assert body["error"].get("code") and body["error"].get("message"), body


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_answers_every_generated_request_as_documented(case, stack):
    if case.method.upper() != case.operation.method.upper():
        # An undeclared method is the platform's to answer (API Gateway on AWS; locally HEAD/OPTIONS succeed and
        # methods the local HTTP server does not speak get 501): it must simply never be a server failure.
        status = case.call(base_url=stack.api_url).status_code
        assert status < 500 or status == 501, status
        return
    # A schema-valid request may still be refused: docpipe checks what a schema cannot say (the base64 must hold a
    # PDF, exactly one document source, an s3_key must exist, query options only with a raw body), so the check
    # that expects every schema-valid request to be accepted is left out.
    case.call_and_validate(base_url=stack.api_url, additional_checks=[error_shape],
                           excluded_checks=[positive_data_acceptance])
