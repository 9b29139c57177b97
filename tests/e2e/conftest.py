"""End-to-end suites: the real local stack (``make serve``'s processes), fault injection, fuzzing, the deployment
package and the deploy rehearsal. Each starts its own servers on 127.0.0.1 and stops them."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/e2e/" in item.nodeid or item.nodeid.startswith("e2e/"):
            item.add_marker(pytest.mark.e2e)
