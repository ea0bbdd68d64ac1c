"""`overwatch migrate` as a user runs it: a real process on a fresh database,
its output read as text. It once printed Alembic's raw logging format string
(`%(levelname)-5.5s [%(name)s] %(message)s`) instead of each log line."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from api.core.migrate import alembic_config
from tests.conftest import ROOT, Servers, _asyncpg_dsn
from tests.processes import api_env

OVERWATCH = Path(sys.executable).parent / "overwatch"
# `<iso time> [info     ] Running upgrade  -> 0001_baseline, ... [alembic.runtime.migration]`
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+Z \[(info|warning)\s*\] \S.* \[alembic[\w.]*\]$")
SUMMARY = re.compile(r"^postgres: at head; neo4j: applied .+$")


@pytest.fixture
async def fresh_database_url(servers: Servers) -> AsyncIterator[str]:
    admin = make_url(servers.admin_database_url)
    name = f"{admin.database or 'overwatch'}_migrate_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(_asyncpg_dsn(servers.admin_database_url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    yield admin.set(database=name).render_as_string(hide_password=False)
    conn = await asyncpg.connect(_asyncpg_dsn(servers.admin_database_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def run_migrate(settings, database_url: str, log_level: str) -> tuple[list[str], str]:
    env = api_env(settings, DATABASE_URL=database_url, LOG_LEVEL=log_level)
    env.pop("NO_COLOR", None)
    env.pop("FORCE_COLOR", None)
    done = subprocess.run(
        [str(OVERWATCH), "migrate"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return [line for line in output.splitlines() if line.strip()], output


async def test_migrate_prints_readable_lines(settings, fresh_database_url):
    head = ScriptDirectory.from_config(alembic_config(fresh_database_url)).get_current_head()

    lines, output = run_migrate(settings, fresh_database_url, "INFO")
    assert "%(" not in output, output
    assert "\x1b[" not in output, output  # piped: no colour codes
    assert SUMMARY.match(lines[-1]), output
    for line in lines[:-1]:
        assert LOG_LINE.match(line), f"unreadable line {line!r} in:\n{output}"
    upgrades = [line for line in lines if "Running upgrade" in line]
    assert any(" -> 0001_baseline, " in line for line in upgrades), output
    assert any(f" -> {head}, " in line for line in upgrades), output

    # Already at head, at WARNING: the summary alone.
    lines, output = run_migrate(settings, fresh_database_url, "WARNING")
    assert len(lines) == 1 and SUMMARY.match(lines[0]), output
