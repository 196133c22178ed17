"""What the image and the Kustomize tree are built from, checked without a cluster.

Scope: `Containerfile`, `.dockerignore`, `constraints.txt` (deploy/lock.py),
the Kustomize base's copies of deploy/*.yaml (deploy/kustomize/sync.py) and
deploy/crds/Kustomization. There is no container engine where the tests run,
so the image build is checked in its parts: the build context that
`.dockerignore` lets through builds the wheel (with the backend the
Containerfile uses, and without deprecation warnings, which setuptools turns
into errors later), the wheel runs `destination` and its subcommands with no
HOME and no TMPDIR, and the pins the Containerfile installs are the versions
the tests run with. Rendering and applying the Kustomize overlays is
tests/integration/test_packaging.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = REPO_ROOT / "Containerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
CONSTRAINTS = REPO_ROOT / "constraints.txt"
PYPROJECT = REPO_ROOT / "pyproject.toml"


def run_script(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def pins() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and name.strip() == name and version, f"not name==version: {line!r}"
            found[canonicalize_name(name)] = version
    return found


def context_entries() -> list[str]:
    """What `.dockerignore` lets into the build context: it excludes all, then allows these."""
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines[0] == "*", ".dockerignore should exclude everything, then allow what is needed"
    return [line[1:].rstrip("/") for line in lines if line.startswith("!")]


def copy_build_context(target: Path) -> Path:
    """The build context a container engine would send, copied to `target`."""
    target.mkdir()
    for entry in context_entries():
        source = REPO_ROOT / entry
        if source.is_dir():
            shutil.copytree(
                source, target / entry, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            shutil.copy2(source, target / entry)
    return target


def test_the_kustomize_base_copies_are_up_to_date() -> None:
    result = run_script("deploy/kustomize/sync.py", "--check")
    assert result.returncode == 0, result.stderr


def test_the_crd_kustomization_lists_every_crd() -> None:
    crds = REPO_ROOT / "deploy" / "crds"
    kustomization = yaml.safe_load((crds / "Kustomization").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in crds.glob("*.yaml"))


def test_constraints_are_the_installed_runtime_dependencies() -> None:
    """The tests run with the versions the image installs (make setup installs with -c)."""
    result = run_script("deploy/lock.py", "--check")
    assert result.returncode == 0, result.stderr


def test_constraints_pin_each_runtime_requirement_within_its_range_and_no_dev_tool() -> None:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    pinned = pins()
    for text in project["dependencies"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is a runtime dependency but is not pinned"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{name}=={pinned[name]} is outside {requirement.specifier}"
        )
    runtime = {canonicalize_name(Requirement(t).name) for t in project["dependencies"]}
    dev_only = {
        canonicalize_name(Requirement(t).name) for t in project["optional-dependencies"]["dev"]
    } - runtime
    assert not dev_only & set(pinned), f"dev tools in the runtime pins: {dev_only & set(pinned)}"


def test_the_image_runs_the_tests_python_as_a_numeric_user_with_pinned_binary_wheels() -> None:
    text = CONTAINERFILE.read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=python:(\d+)\.(\d+)-slim$", text, re.MULTILINE)
    assert base is not None, "the base image should be python:X.Y-slim"
    assert (int(base[1]), int(base[2])) == sys.version_info[:2]
    (user,) = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or gid.isdigit())
    assert re.search(r'^ENTRYPOINT \["destination"\]$', text, re.MULTILINE)
    install = re.search(r"pip --python \S+ install([^&]*)", text)
    assert install is not None
    assert "--only-binary=:all:" in install[1] and "--constraint constraints.txt" in install[1]


def test_the_containerfile_copies_only_what_the_build_context_holds() -> None:
    allowed = set(context_entries())
    sources = [
        source
        for line in CONTAINERFILE.read_text().splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for source in line.split()[1:-1]
    ]
    assert sources
    assert {s.rstrip("/") for s in sources} <= allowed


def test_the_build_context_builds_a_wheel_that_runs_without_home_or_tmpdir(
    tmp_path: Path,
) -> None:
    context = copy_build_context(tmp_path / "context")
    wheels = tmp_path / "wheels"
    # The Containerfile lets pip fetch the build backend; here the venv's
    # setuptools stands in for it (no network in unit tests).
    built = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"),
            *("--wheel-dir", str(wheels), str(context)),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env=os.environ | {"PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert built.returncode == 0, built.stderr
    assert "Warning" not in built.stderr and "deprecated" not in built.stderr, built.stderr
    (wheel,) = wheels.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names if not name.startswith("multicluster")} == {
        "destination",
        "discovery",
        "mirror",
    }

    site = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=os.environ | {"PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert installed.returncode == 0, installed.stderr
    # What the image's environment has: PATH, nothing writable; the dependencies
    # come from this venv (the same pins), the package from the wheel.
    bare = {"PATH": f"{site / 'bin'}:/usr/bin:/bin", "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import destination, discovery, mirror; print(mirror.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=bare,
        cwd=tmp_path,
    )
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(site)
    for argv in (["--help"], ["serve", "--help"], ["mirror", "--help"]):
        result = subprocess.run(
            [str(site / "bin" / "destination"), *argv],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=bare,
            cwd=tmp_path,
        )
        assert result.returncode == 0, (argv, result.stderr)
        assert result.stdout.startswith("usage: destination"), argv
    assert "DESTINATION_MIRROR_NAMESPACE" in result.stdout


@pytest.mark.parametrize("entry", ["tests", ".venv", "bench", "deploy", ".git"])
def test_the_build_context_leaves_out(entry: str) -> None:
    assert not any(
        allowed == entry or allowed.startswith(f"{entry}/") for allowed in context_entries()
    )
