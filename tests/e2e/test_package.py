"""The Lambda package: ``make package`` builds it without AWS, and its checks refuse a package that would not run.

The checks read the zips as they are (fresh or from Chalice's cache), so a dependency Chalice could only warn about
fails the build instead of every job. Here they meet hand-made zips with one thing wrong each.
"""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from scripts import artefacts
from tests.support import PROJECT, rehearsal

ROOT = PROJECT
SITE = "python/lib/python3.13/site-packages/"


def dist(name: str, version: str, *, requires: tuple[str, ...] = (), tag: str = "py3-none-any",
         files: tuple[str, ...] = (), record_extra: tuple[str, ...] = ()) -> dict[str, bytes]:
    """An installed distribution as a layer holds it: its files and its .dist-info."""
    info = f"{SITE}{name.replace('-', '_')}-{version}.dist-info/"
    package = name.replace("-", "_")
    contents = {f"{SITE}{package}/__init__.py": b"", **{f"{SITE}{f}": b"x" for f in files}}
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires)
    record = [f"{package}/__init__.py,,", *(f"{f},," for f in files), *(f"{f},," for f in record_extra)]
    contents[info + "METADATA"] = metadata.encode()
    contents[info + "WHEEL"] = f"Wheel-Version: 1.0\nTag: {tag}\n".encode()
    contents[info + "RECORD"] = "\n".join(record).encode()
    return contents


def layer(tmp_path: Path, *dists: dict[str, bytes]) -> Path:
    path = tmp_path / "layer.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for contents in dists:
            for name, data in contents.items():
                archive.writestr(name, data)
    return path


def requirements(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "requirements.txt"
    path.write_text(text)
    return path


def test_a_complete_layer_passes(tmp_path):
    built = layer(tmp_path, dist("tiktoken", "0.14.0", requires=("regex>=2022", 'colorama; sys_platform == "win32"'),
                                 tag="cp313-cp313-manylinux_2_28_x86_64",
                                 files=("tiktoken/_tiktoken.cpython-313-x86_64-linux-gnu.so",)),
                  dist("regex", "2026.1.1"))
    assert artefacts.check_layer(built, requirements(tmp_path, "tiktoken==0.14.0\n"), "3.13") == []


def test_a_requirement_chalice_could_not_install_fails_the_build(tmp_path):
    """What Python 3.11 gave: no Lambda-compatible tiktoken wheel, a warning, and a layer without it."""
    built = layer(tmp_path, dist("pypdf", "7.1.1"))
    problems = artefacts.check_layer(built, requirements(tmp_path, "pypdf==7.1.1\ntiktoken==0.14.0\n"), "3.13")
    assert problems == ["tiktoken==0.14.0 (needed by requirements.txt) is not in the layer"]


def test_a_missing_dependency_of_a_dependency_fails_the_build(tmp_path):
    built = layer(tmp_path, dist("openai", "3.57.0", requires=("jiter<1,>=0.4", 'tomli; python_version < "3.11"')))
    problems = artefacts.check_layer(built, requirements(tmp_path, "openai==3.57.0\n"), "3.13")
    assert problems == ["jiter<1,>=0.4 (needed by openai) is not in the layer"]


def test_a_dependency_at_a_version_its_dependant_refuses_fails_the_build(tmp_path):
    built = layer(tmp_path, dist("openai", "3.57.0", requires=("jiter<1,>=0.4",)), dist("jiter", "1.2.0"))
    problems = artefacts.check_layer(built, requirements(tmp_path, "openai==3.57.0\n"), "3.13")
    assert problems == ["jiter 1.2.0 is in the layer but openai needs jiter<1,>=0.4"]


@pytest.mark.parametrize("tag, file", [
    ("cp311-cp311-manylinux_2_17_x86_64", "pydantic_core/_core.cpython-311-x86_64-linux-gnu.so"),
    ("cp313-cp313-manylinux_2_39_x86_64", "pydantic_core/_core.cpython-313-x86_64-linux-gnu.so"),
    ("cp313-cp313-manylinux_2_17_aarch64", "pydantic_core/_core.cpython-313-aarch64-linux-gnu.so"),
    ("cp313-cp313-win_amd64", "pydantic_core/_core.cp313-win_amd64.pyd"),
])
def test_a_wheel_built_for_another_python_glibc_or_machine_fails_the_build(tmp_path, tag, file):
    built = layer(tmp_path, dist("pydantic-core", "2.50.5", tag=tag, files=(file,)))
    problems = artefacts.check_layer(built, requirements(tmp_path, "pydantic-core==2.50.5\n"), "3.13")
    assert any("was built for" in p for p in problems), problems


def test_a_distribution_missing_files_of_its_record_fails_the_build(tmp_path):
    built = layer(tmp_path, dist("pypdf", "7.1.1", record_extra=("pypdf/_page.py",)))
    problems = artefacts.check_layer(built, requirements(tmp_path, "pypdf==7.1.1\n"), "3.13")
    assert problems == ["pypdf 7.1.1 is incomplete: 1 files of its RECORD are missing "
                        f"(e.g. {SITE}pypdf/_page.py)"]


def test_requirements_must_pin_exact_versions(tmp_path):
    with pytest.raises(artefacts.ArtefactError, match="does not pin an exact version"):
        artefacts.pinned_requirements(requirements(tmp_path, "openai>=3\n"))
    assert artefacts.pinned_requirements(ROOT / "requirements.txt")["tiktoken"] == "0.14.0"


def test_the_function_zip_must_hold_the_app_and_no_dependencies(tmp_path):
    path = tmp_path / "deployment.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("app.py", "")
        archive.writestr("chalice/app.py", "")
        archive.writestr("chalice/__init__.py", "")
        archive.writestr("openai-3.57.0.dist-info/METADATA", "")
    problems = artefacts.check_function(path, ROOT)
    assert "the function zip lacks chalicelib/config.py" in problems
    assert any("carries dependencies" in p for p in problems)


def test_make_package_builds_and_checks_the_artefacts_without_aws_credentials(tmp_path):
    rehearsal.require_deploy_environment()
    checkout = rehearsal.clean_checkout(tmp_path / "checkout")
    home = tmp_path / "home"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "AWS_CONFIG_FILE": str(home / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(home / "none"), "AWS_EC2_METADATA_DISABLED": "true",
           "PIP_CACHE_DIR": str(Path.home() / ".cache" / "pip")}
    env.update({k: v for k, v in os.environ.items() if k.startswith("PIP_")})

    result = subprocess.run([str(rehearsal.DEPLOY_PYTHON), "-m", "scripts.package", "--stage", "dev",
                                       "--project-dir", str(checkout)], cwd=checkout, env=env, capture_output=True,
                                      text=True, timeout=900)

    assert result.returncode == 0, result.stdout + result.stderr
    build = checkout / "build" / "dev"
    manifest = json.loads((build / "manifest.json").read_text())
    pinned = (ROOT / ".chalice" / "python-version").read_text().strip()
    assert manifest["runtime"] == f"python{pinned}"
    assert {"aws_lambda_powertools", "openai", "pypdf", "tiktoken", "jsonschema"} <= set(manifest["imports_checked"])
    sizes = {name: entry["bytes"] for name, entry in manifest["artefacts"].items()}
    assert sizes["deployment.zip"] < 1_000_000 < sizes["layer-deployment.zip"]  # a code change uploads kilobytes
    with zipfile.ZipFile(build / "deployment.zip") as function:
        assert "app.py" in function.namelist() and not any(".pyc" in n for n in function.namelist())
        assert not any(n.startswith(("cli/", "docpipe_cli/")) for n in function.namelist())  # the command stays out
    with zipfile.ZipFile(build / "layer-deployment.zip") as layer:
        # (httpx is there: the openai SDK is built on it)
        assert not any(f"/{package}/" in n for n in layer.namelist() for package in ("rich", "docpipe_cli"))
    template = json.loads((build / "chalice.tf.json").read_text())
    functions = template["resource"]["aws_lambda_function"]
    assert len(functions) == 13 and {f["runtime"] for f in functions.values()} == {f"python{pinned}"}
    workflow = ["workflow_aggregate", "workflow_ended", "workflow_extract", "workflow_failed", "workflow_map",
                "workflow_store", "workflow_sweep", "workflow_validate"]
    assert sorted(p.name for p in (build / "policies").iterdir()) == [
        "api_handler.json", "fail_dead_letters.json", "keep_warm.json", "process_jobs.json",
        "start_job_from_upload.json", *(f"{name}.json" for name in workflow)]
    assert "layer-deployment.zip" in result.stdout
    assert not (checkout / ".chalice" / "deployed").exists()  # nothing was deployed
