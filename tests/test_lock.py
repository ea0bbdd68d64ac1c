"""Reproducible installs: one lock (uv.lock) behind every install path.

`make install` (and so `make test`, `make run` and CI), the Dockerfile and the
lock itself must agree: an install path that resolves on its own would take
whatever PyPI serves that day (FastAPI 0.165 once changed when request
dependencies finish, silently).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Packages whose upgrades changed behaviour before: bounded above in pyproject.toml.
SENSITIVE = ("fastapi", "neo4j", "neo4j-rust-ext", "sqlalchemy", "pydantic")


def _dependencies() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    found: dict[str, str] = {}
    for spec in project["dependencies"]:
        name = re.split(r"[\[<>=!~; ]", spec, maxsplit=1)[0].lower()
        found[name] = spec
    return found


def _locked_versions() -> dict[str, str]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text(encoding="utf-8"))
    return {
        package["name"]: package["version"] for package in lock["package"] if "version" in package
    }


def test_sensitive_packages_are_bounded_above():
    dependencies = _dependencies()
    for name in SENSITIVE:
        assert name in dependencies, f"{name} is not a dependency"
        assert "<" in dependencies[name], f"{dependencies[name]} needs an upper bound"


def test_neo4j_rust_ext_matches_the_driver_version():
    locked = _locked_versions()
    driver, ext = locked["neo4j"], locked["neo4j-rust-ext"]
    assert ext.startswith(driver + ".") or ext == driver, (driver, ext)


def test_every_install_path_uses_the_lock():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"uv\)? sync --frozen", makefile, re.IGNORECASE), (
        "make install must install from uv.lock"
    )
    assert "pip install -e" not in makefile
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "COPY pyproject.toml uv.lock" in dockerfile
    assert dockerfile.count("uv sync --frozen") >= 1
    assert "pip install -r" not in dockerfile
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci  # which installs through `make install`


def test_the_lock_matches_pyproject():
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH (make install puts it there)")
    result = subprocess.run(
        [uv, "lock", "--check", "--offline"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_the_environment_holds_the_locked_versions():
    from importlib.metadata import version

    locked = _locked_versions()
    for name in (*SENSITIVE, "starlette", "uvicorn", "asyncpg", "torch"):
        assert version(name) == locked[name], name
