"""A TypeScript workstation app gets typed calls from our OpenAPI document.

The schema the service serves is exported, `openapi-typescript` (npm) turns it
into types, and `tests/typescript/client.ts` (register a workstation, push,
pull through `openapi-fetch`) must type-check with `tsc --strict`. This failed
before: the push body's `$ref`s pointed at `#/$defs/...`, which does not
resolve in an OpenAPI document, and every mutation required `force`.

`--default-non-nullable false`: openapi-typescript otherwise makes every
property with a default required, request bodies included.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from fastapi import FastAPI

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "tests" / "typescript"


def _npm_ci() -> None:
    lock = PROJECT / "package-lock.json"
    stamp = PROJECT / "node_modules" / ".overwatch-lock"
    if stamp.exists() and stamp.read_text() == lock.read_text():
        return
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=PROJECT,
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    stamp.write_text(lock.read_text())


def test_generated_types_compile_under_tsc_strict(app: FastAPI, tmp_path: Path):
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed (Node.js 20 with npm is needed)")
    _npm_ci()
    schema = tmp_path / "openapi.json"
    schema.write_text(json.dumps(app.openapi()))
    generated = PROJECT / "generated"
    generated.mkdir(exist_ok=True)
    bin_dir = PROJECT / "node_modules" / ".bin"
    made = subprocess.run(
        [
            str(bin_dir / "openapi-typescript"),
            str(schema),
            "--default-non-nullable",
            "false",
            "-o",
            str(generated / "api.d.ts"),
        ],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    checked = subprocess.run(
        [str(bin_dir / "tsc"), "--strict", "-p", "."],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
