"""The layout's rules, checked on the source: what may call what, so the folder tree stays the architecture.

Each rule names the one home of a concern (see chalicelib/__init__.py); a call from anywhere else fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import PROJECT

CHALICELIB = PROJECT / "chalicelib"
SOURCES = sorted(p for p in CHALICELIB.rglob("*.py") if "__pycache__" not in p.parts)


def module_of(path: Path) -> str:
    return ".".join(path.relative_to(PROJECT).with_suffix("").parts).removesuffix(".__init__")


def calls(path: Path) -> list[str]:
    """Every ``a.b(...)``/``b(...)`` call in the file, as the dotted text of what is called."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            found.append(ast.unparse(node.func))
    return found


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def who(predicate) -> set[str]:
    return {module_of(path) for path in SOURCES if any(predicate(call) for call in calls(path))}


@pytest.mark.parametrize("method", ["mark_failed", "mark_succeeded", "release", "requeue", "withdraw", "extend_lease",
                                    "record_spend", "set_chunks_total", "record_progress", "claim", "create"])
def test_only_the_lifecycle_writes_a_job(method):
    # The store's writers are called through ``self.store`` in the lifecycle and nowhere else (``jobs.claim`` or
    # ``services.jobs.mark_failed`` anywhere would be the store reached around it).
    writers = who(lambda call: call.endswith((f"store.{method}", f"jobs.{method}")))
    assert writers == {"chalicelib.jobs.lifecycle"}


def test_only_the_queue_adapter_changes_a_messages_visibility():
    assert who(lambda call: call.endswith(".change_message_visibility")) == {"chalicelib.jobs.queue"}


def test_only_the_composition_point_builds_aws_clients():
    builders = who(lambda call: call in ("boto3.client", "boto3.resource") or call.startswith("clients."))
    assert builders <= {"chalicelib.aws.clients", "chalicelib.bootstrap"}


def test_settings_are_read_in_config_alone():
    # Powertools and tiktoken read their own documented variables; docpipe's own are read in config.
    readers = {module_of(path) for path in SOURCES if "os.environ" in path.read_text() or "getenv" in path.read_text()}
    assert readers <= {"chalicelib.config", "chalicelib.observability", "chalicelib.documents.tokens"}
    assert "os.environ" not in (PROJECT / "app.py").read_text()


def test_powertools_circuit_breaker_errors_stay_in_the_breaker_adapter():
    users = {module_of(path) for path in SOURCES if "CircuitBreakerOpenError" in path.read_text()}
    assert users == {"chalicelib.llm.breaker"}


def test_the_pipeline_core_knows_nothing_of_lambda_sqs_or_http():
    for path in (CHALICELIB / "pipeline").glob("*.py"):
        names = imported(path)
        assert not any(n.split(".")[0] in ("chalice", "boto3", "botocore") for n in names), path
        assert not any(n.startswith("chalicelib.entry") for n in names), path


@pytest.mark.parametrize("package", ["aws", "documents", "llm", "tasks", "jobs"])
def test_lower_packages_never_import_the_adapters_or_the_pipeline(package):
    for path in (CHALICELIB / package).glob("*.py"):
        names = imported(path)
        assert not any(n.startswith(("chalicelib.entry", "chalicelib.bootstrap")) for n in names), path
        if package != "tasks":  # the task types fill in the map-reduce's shape
            assert not any(n.startswith("chalicelib.pipeline") for n in names), path
