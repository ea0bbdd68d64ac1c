"""`api.client` is importable by a workstation app without the server's stack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER_STACK = ("fastapi", "starlette", "sqlalchemy", "neo4j", "asyncpg", "pydantic", "boto3")

PROBE = f"""
import sys
import api.client
from api.client import SyncClient
loaded = sorted({{m.split('.')[0] for m in sys.modules}} & set({SERVER_STACK!r}))
assert not loaded, f"import api.client loaded {{loaded}}"
assert not any(m == 'api.sync' or m.startswith('api.sync.') for m in sys.modules)
"""


def test_importing_the_client_loads_nothing_of_the_server() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
