"""Checks that a built Lambda package will run: what Chalice could not install fails the build, not the first job.

Chalice only *warns* when it cannot install a dependency for the Lambda platform, and reuses its cached zip on the
next build without warning again (its cache key is requirements.txt and the Python version). So each build's zips are
checked as they are, whether fresh or cached:

* the layer holds every distribution requirements.txt names, at its pinned version, and everything those need in
  turn (their ``Requires-Dist``, with markers evaluated for the Lambda runtime), each with all the files of its
  RECORD;
* every wheel's tags and every compiled module fit the runtime (CPython of the pinned version, x86_64, the glibc
  of Amazon Linux 2023);
* the function zip holds the app (app.py, chalicelib/) and no dependencies (they belong in the layer);
* a fresh interpreter of the pinned version, whose ``sys.path`` holds only the two unpacked zips and boto3, imports
  app.py, every chalicelib module and every top-level module the requirements provide, and counts tokens.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path, PurePosixPath

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

# Python 3.12 and later Lambda runtimes run on Amazon Linux 2023 (glibc 2.34); only x86_64 is deployed.
RUNTIME_GLIBC = (2, 34)
MACHINE = "x86_64"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)\s*(?:#.*)?$")
_MANYLINUX = re.compile(r"^manylinux_(\d+)_(\d+)_(.+)$")
_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
_EXTENSION = re.compile(r"\.cpython-(\d+)-([a-z0-9_]+)-linux-gnu\.so$")


class ArtefactError(RuntimeError):
    """The package would not run on Lambda; the message lists every problem found."""


@dataclass(frozen=True)
class Distribution:
    name: str
    version: str
    requires: tuple[str, ...]
    files: tuple[str, ...]
    wheel_tags: tuple[str, ...]
    top_level: tuple[str, ...]


def pinned_requirements(requirements_file: Path) -> dict[str, str]:
    """``name -> version`` of requirements.txt, which must pin every line exactly (the layer is built from it)."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(requirements_file.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _PIN.match(line)
        if not match:
            raise ArtefactError(f"{requirements_file.name}:{number}: {line!r} does not pin an exact version "
                                "(name==x.y)")
        pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def layer_prefix(python_version: str) -> str:
    return f"python/lib/python{python_version}/site-packages/"


def read_distributions(layer: zipfile.ZipFile, prefix: str) -> dict[str, Distribution]:
    """Every installed distribution in the layer, by canonical name, from its ``.dist-info``."""
    names = set(layer.namelist())
    found: dict[str, Distribution] = {}
    for path in names:
        if not (path.startswith(prefix) and path.endswith(".dist-info/METADATA")):
            continue
        info_dir = path[: -len("METADATA")]
        metadata = Parser().parsestr(layer.read(path).decode("utf-8"))
        record = layer.read(info_dir + "RECORD").decode("utf-8") if info_dir + "RECORD" in names else ""
        files = tuple(prefix + line.split(",", 1)[0] for line in record.splitlines() if line.strip())
        wheel = layer.read(info_dir + "WHEEL").decode("utf-8") if info_dir + "WHEEL" in names else ""
        top_level = (layer.read(info_dir + "top_level.txt").decode("utf-8").split()
                     if info_dir + "top_level.txt" in names else _top_level_from(files, prefix))
        found[canonicalize_name(metadata["Name"])] = Distribution(
            name=metadata["Name"], version=metadata["Version"], requires=tuple(metadata.get_all("Requires-Dist") or ()),
            files=files, wheel_tags=tuple(Parser().parsestr(wheel).get_all("Tag") or ()), top_level=tuple(top_level))
    return found


def _top_level_from(files: tuple[str, ...], prefix: str) -> list[str]:
    tops = set()
    for path in files:
        parts = PurePosixPath(path[len(prefix):]).parts
        if len(parts) > 1 and not parts[0].endswith((".dist-info", ".data", ".libs")) and parts[0] != "bin":
            tops.add(parts[0])
        elif len(parts) == 1 and parts[0].endswith(".py"):
            tops.add(parts[0][:-3])
    return sorted(tops)


def runtime_markers(python_version: str) -> dict[str, str]:
    """The marker environment of the Lambda runtime, for evaluating ``Requires-Dist`` conditions."""
    env = {name: str(value) for name, value in default_environment().items()}
    env.update(python_version=python_version, python_full_version=f"{python_version}.0", sys_platform="linux",
               platform_system="Linux", platform_machine=MACHINE, os_name="posix", implementation_name="cpython",
               platform_python_implementation="CPython")
    return env


def missing_distributions(pins: dict[str, str], found: dict[str, Distribution], python_version: str) -> list[str]:
    """What the layer lacks: each pinned requirement and, transitively, what the installed ones require."""
    problems = []
    markers = runtime_markers(python_version)
    wanted = [(Requirement(f"{name}=={version}"), "requirements.txt") for name, version in pins.items()]
    seen: set[tuple[str, str]] = set()
    while wanted:
        requirement, needed_by = wanted.pop()
        if requirement.marker and not requirement.marker.evaluate({**markers, "extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if (name, str(requirement.specifier)) in seen:
            continue
        seen.add((name, str(requirement.specifier)))
        dist = found.get(name)
        if dist is None:
            problems.append(f"{requirement} (needed by {needed_by}) is not in the layer")
            continue
        if requirement.specifier and not requirement.specifier.contains(Version(dist.version), prereleases=True):
            problems.append(f"{dist.name} {dist.version} is in the layer but {needed_by} needs {requirement}")
            continue
        wanted.extend((Requirement(r), dist.name) for r in dist.requires)
    return sorted(problems)


def _platform_fits(tag: str) -> bool:
    if tag == "any":
        return True
    match = _MANYLINUX.match(tag)
    if match:
        return match.group(3) == MACHINE and (int(match.group(1)), int(match.group(2))) <= RUNTIME_GLIBC
    for legacy, glibc in _LEGACY_MANYLINUX.items():
        if tag == f"{legacy}_{MACHINE}":
            return glibc <= RUNTIME_GLIBC
    return False


def wheel_fits(tags: tuple[str, ...], python_version: str) -> bool:
    """Some tag of the wheel names an interpreter, ABI and platform that the Lambda runtime is."""
    cp = "cp" + python_version.replace(".", "")
    for tag in tags:
        interpreters, abis, platforms = tag.split("-")
        if not any(i in (cp, "py3", f"py{python_version.replace('.', '')}") or (i.startswith("cp3") and "abi3" in abis)
                   for i in interpreters.split(".")):
            continue
        if not any(a in (cp, "abi3", "none") for a in abis.split(".")):
            continue
        if any(_platform_fits(p) for p in platforms.split(".")):
            return True
    return False


def check_layer(layer_zip: Path, requirements_file: Path, python_version: str) -> list[str]:
    problems = []
    prefix = layer_prefix(python_version)
    with zipfile.ZipFile(layer_zip) as layer:
        names = set(layer.namelist())
        outside = sorted(n for n in names if not n.startswith(prefix) and not n.endswith("/"))
        if outside:
            problems.append(f"the layer has files outside {prefix} (Lambda would not find them): {outside[:5]}")
        found = read_distributions(layer, prefix)
    problems += missing_distributions(pinned_requirements(requirements_file), found, python_version)
    for dist in found.values():
        absent = [f for f in dist.files if f not in names and not f.endswith(".pyc")]
        if absent:
            problems.append(f"{dist.name} {dist.version} is incomplete: {len(absent)} files of its RECORD are missing "
                            f"(e.g. {absent[0]})")
        if dist.wheel_tags and not wheel_fits(dist.wheel_tags, python_version):
            problems.append(f"{dist.name} {dist.version} was built for {', '.join(dist.wheel_tags)}, not for "
                            f"CPython {python_version} on manylinux {MACHINE}")
    abi = python_version.replace(".", "")
    for name in names:
        match = _EXTENSION.search(name)
        if match and (match.group(1) != abi or match.group(2) != MACHINE):
            problems.append(f"{name} is compiled for another Python or machine")
        elif name.endswith((".dylib", ".pyd")) or "-darwin.so" in name:
            problems.append(f"{name} is not a Linux binary")
    return problems


def check_function(function_zip: Path, project_dir: Path) -> list[str]:
    problems = []
    with zipfile.ZipFile(function_zip) as function:
        names = set(function.namelist())
    expected = {"app.py", "chalice/app.py", "chalice/__init__.py"}
    expected |= {p.relative_to(project_dir).as_posix() for p in (project_dir / "chalicelib").rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    for name in sorted(expected - names):
        problems.append(f"the function zip lacks {name}")
    dependencies = sorted({n.split("/", 1)[0] for n in names if ".dist-info/" in n})
    if dependencies:
        problems.append(f"the function zip carries dependencies that belong in the layer: {dependencies[:5]}")
    return problems


def top_level_modules(layer_zip: Path, requirements_file: Path, python_version: str) -> list[str]:
    """The importable top-level modules of the distributions requirements.txt names."""
    with zipfile.ZipFile(layer_zip) as layer:
        found = read_distributions(layer, layer_prefix(python_version))
    modules = []
    for name in pinned_requirements(requirements_file):
        if name in found:
            modules += [m for m in found[name].top_level if not m.startswith("_") and m.isidentifier()]
    return sorted(set(modules))


# Runs in the pinned interpreter with -I -S: nothing but the standard library until sys.path is set.
_SMOKE = r"""
import importlib, json, os, sys, pathlib
task, site, runtime, modules = json.loads(sys.argv[1])
sys.path[:0] = [task, site, runtime]
import app
root = pathlib.Path(task)
for path in sorted((root / "chalicelib").rglob("*.py")):
    importlib.import_module(".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__"))
for module in modules:
    importlib.import_module(module)
from chalicelib.documents.tokens import count_tokens
assert count_tokens("docpipe runs on Lambda", "gpt-4o-mini") > 0
print(json.dumps({"python": sys.version.split()[0], "app": app.app.app_name}))
"""


def unpacked_layer(layer_zip: Path, cache_dir: Path) -> Path:
    """The layer unpacked under ``cache_dir``, keyed by its digest: unpacked once, with the bytecode its first
    import leaves, for every later check of the same layer."""
    import hashlib
    import shutil

    target = cache_dir / hashlib.sha256(layer_zip.read_bytes()).hexdigest()
    if not target.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=".unpacking-", dir=cache_dir))
        zipfile.ZipFile(layer_zip).extractall(partial)
        try:
            partial.rename(target)  # atomic: a concurrent build finds the whole layer or none
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)
    return target


def smoke_test(function_zip: Path, layer_zip: Path, runtime_dir: Path, interpreter: str, python_version: str,
               modules: list[str], layer_cache: Path) -> str:
    """Import the app and its dependencies from the unpacked zips in a fresh interpreter; returns its answer."""
    opt = unpacked_layer(layer_zip, layer_cache)
    with tempfile.TemporaryDirectory(prefix="docpipe-smoke-") as tmp:
        task = Path(tmp, "task")
        zipfile.ZipFile(function_zip).extractall(task)
        site = opt / layer_prefix(python_version)
        env = {"PATH": "/usr/bin:/bin", "TMPDIR": tmp, "LANG": "C.UTF-8", "AWS_DEFAULT_REGION": "us-east-1",
               "POWERTOOLS_METRICS_DISABLED": "true", "DOCPIPE_STAGE": "smoke"}
        result = subprocess.run([interpreter, "-I", "-S", "-c", _SMOKE,
                                 json.dumps([str(task), str(site), str(runtime_dir), modules])],
                                cwd=task, env=env, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise ArtefactError("the unpacked package does not import in a fresh Python "
                            f"{python_version}:\n{result.stderr.strip()[-3000:]}")
    return result.stdout.strip().splitlines()[-1]


def check(function_zip: Path, layer_zip: Path, project_dir: Path, python_version: str) -> None:
    """Raise ArtefactError listing every problem of the two zips (the static checks above)."""
    problems = check_function(function_zip, project_dir)
    problems += check_layer(layer_zip, project_dir / "requirements.txt", python_version)
    if problems:
        raise ArtefactError("the Lambda package would not work on AWS:\n  - " + "\n  - ".join(problems))

