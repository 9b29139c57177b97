"""Build and check what a deploy uploads: ``python -m scripts.package --stage dev`` (``make package STAGE=dev``).

Into ``build/<stage>/`` go the function zip (app.py and chalicelib only), the layer zip (every dependency, Chalice's
``automatic_layer``), the Terraform template Chalice generates for the stage (``chalice package --pkg-format
terraform``: CloudFormation packaging cannot express the S3 upload trigger), each function's rendered IAM policy and
``manifest.json`` (sizes and the SHA-256 digests Lambda reports as ``CodeSha256``). ``scripts/deploy.py`` calls the
same ``build()`` with the account's real facts before it uploads anything, and Chalice's deployer then reuses these
very zips from its cache; after the upload, the deploy compares Lambda's digests with the manifest.

Without AWS credentials the template's ARNs name a placeholder account (000000000000): the zips are the same.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chalice import __version__ as chalice_version
from chalice.deploy.packager import AppOnlyDeploymentPackager, DependencyBuilder, LayerDeploymentPackager
from chalice.utils import UI, OSUtils

from scripts import artefacts
from scripts.stage import StageError, StageFacts, load_config, pinned_python, placeholder_facts, stage_factory

FUNCTION_ZIP = "deployment.zip"
LAYER_ZIP = "layer-deployment.zip"
TEMPLATE = "chalice.tf.json"
MANIFEST = "manifest.json"
# Where the make file installs what the Lambda runtime provides besides the package: boto3.
RUNTIME_DIR = Path("build") / "lambda-runtime"


@dataclass(frozen=True)
class Artefacts:
    """A checked build of one stage."""

    directory: Path
    function_zip: Path
    layer_zip: Path
    template: Path
    manifest: dict[str, Any]


def lambda_digest(path: Path) -> str:
    """The zip's SHA-256 as Lambda reports it (``CodeSha256``): base64 of the raw digest."""
    return base64.b64encode(hashlib.sha256(path.read_bytes()).digest()).decode()


def cached_zips(project_dir: Path, runtime: str) -> dict[str, Path]:
    """Where Chalice's deployer looks for the stage's zips before building them (.chalice/deployments/)."""
    osutils = OSUtils()
    args = (osutils, DependencyBuilder(osutils), UI())
    return {
        FUNCTION_ZIP: Path(AppOnlyDeploymentPackager(*args).deployment_package_filename(str(project_dir), runtime)),
        LAYER_ZIP: Path(LayerDeploymentPackager(*args).deployment_package_filename(str(project_dir), runtime)),
    }


def require_pinned_interpreter(project_dir: Path) -> str:
    """The pinned version, after checking this interpreter is it: Chalice targets the Python it runs under."""
    pinned = pinned_python(project_dir)
    running = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if running != pinned:
        raise StageError(f"the Lambda runtime is pinned to Python {pinned} (.chalice/python-version) but this is "
                         f"Python {running}; run `make package` or `make deploy`, which use .venv-deploy")
    return pinned


def _check_template(template: dict[str, Any], runtime: str) -> list[str]:
    problems = []
    functions = template.get("resource", {}).get("aws_lambda_function", {})
    if not functions:
        problems.append("the template defines no Lambda function")
    for name, function in functions.items():
        if function.get("runtime") != runtime:
            problems.append(f"function {name} runs {function.get('runtime')}, not {runtime}")
        if not function.get("layers"):
            problems.append(f"function {name} has no layer: its dependencies would be missing")
    return problems


def build(project_dir: Path, facts: StageFacts, *, runtime_dir: Path | None = None,
          out_dir: Path | None = None) -> Artefacts:
    """Package the stage with Chalice and check the result; raise ArtefactError (nothing is written to AWS)."""
    python_version = require_pinned_interpreter(project_dir)
    runtime = f"python{python_version}"
    out = out_dir or project_dir / "build" / facts.stage
    if out.exists():
        shutil.rmtree(out)
    # Chalice zips all of chalicelib/: bytecode a local run left there would ride along (and change the zip's hash).
    sys.dont_write_bytecode = True
    for cache in (project_dir / "chalicelib").rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    # Chalice asks botocore for the region's service principals even when it only packages.
    if not (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")):
        os.environ["AWS_DEFAULT_REGION"] = facts.region
    started = time.monotonic()
    factory = stage_factory(project_dir, facts, out / "policies")
    config = factory.create_config_obj(chalice_stage_name=facts.stage)
    packager = factory.create_app_packager(config, factory.create_package_options(), "terraform", "json")
    packager.package_app(config, str(out), facts.stage)
    built_seconds = time.monotonic() - started
    checks_started = time.monotonic()

    function_zip, layer_zip, template_path = out / FUNCTION_ZIP, out / LAYER_ZIP, out / TEMPLATE
    if not layer_zip.exists():
        raise artefacts.ArtefactError("Chalice built no layer: set automatic_layer in .chalice/config.json")
    template = json.loads(template_path.read_text())
    try:
        problems = _check_template(template, runtime)
        if problems:
            raise artefacts.ArtefactError("the generated template is wrong:\n  - " + "\n  - ".join(problems))
        artefacts.check(function_zip, layer_zip, project_dir, python_version)
        modules = artefacts.top_level_modules(layer_zip, project_dir / "requirements.txt", python_version)
        smoke = artefacts.smoke_test(function_zip, layer_zip, (runtime_dir or project_dir / RUNTIME_DIR).resolve(),
                                     sys.executable, python_version, modules,
                                     project_dir / ".chalice" / "deployments" / "unpacked")
    except artefacts.ArtefactError:
        # A cached layer that lacks something would be reused silently next time: drop it so the next build retries.
        for cached in cached_zips(project_dir, runtime).values():
            cached.unlink(missing_ok=True)
        raise

    manifest = {
        "stage": facts.stage,
        "runtime": runtime,
        "chalice": chalice_version,
        "built_seconds": round(built_seconds, 2),
        "checked_seconds": round(time.monotonic() - checks_started, 2),
        "smoke_test": json.loads(smoke),
        "imports_checked": modules,
        "artefacts": {name: {"bytes": path.stat().st_size, "sha256": lambda_digest(path)}
                      for name, path in ((FUNCTION_ZIP, function_zip), (LAYER_ZIP, layer_zip),
                                         (TEMPLATE, template_path))},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return Artefacts(out, function_zip, layer_zip, template_path, manifest)


def describe(built: Artefacts) -> str:
    sizes = {name: entry["bytes"] for name, entry in built.manifest["artefacts"].items()}
    return (f"built {built.directory} for {built.manifest['runtime']} in {built.manifest['built_seconds']} s, "
            f"checked in {built.manifest['checked_seconds']} s (every requirement and what it needs is in the layer, "
            f"and a fresh {built.manifest['runtime']} imports the app from the unpacked zips)\n"
            f"  {FUNCTION_ZIP:<22} {sizes[FUNCTION_ZIP] / 1024:>9.1f} kB  (app.py, chalicelib)\n"
            f"  {LAYER_ZIP:<22} {sizes[LAYER_ZIP] / 1024:>9.1f} kB  (the dependencies)\n"
            f"  {TEMPLATE:<22} {sizes[TEMPLATE] / 1024:>9.1f} kB  (what Chalice deploys; IAM policies in policies/)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build and check a docpipe stage's Lambda artefacts into "
                                                 "build/<stage>/ without touching AWS.")
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--project-dir", type=Path, default=Path.cwd())
    args = parser.parse_args(argv)
    project_dir = args.project_dir.resolve()
    try:
        facts = placeholder_facts(load_config(project_dir), args.stage)
        print(describe(build(project_dir, facts)))
    except (StageError, artefacts.ArtefactError) as exc:
        print(f"package failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
