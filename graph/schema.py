"""Versioned Neo4j schema migrations.

Each file `cypher/migrations/NNNN_name.cypher` holds statements separated by
`;`. Applied versions are recorded in the graph itself as
`(:SchemaMigration {version, name, checksum, applied_at})`, so the graph says
which schema it has. Statements use `IF NOT EXISTS`, so re-running a file that
was interrupted half-way is safe.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import structlog

from graph.driver import GraphClient

log = structlog.get_logger("graph.schema")

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "cypher" / "migrations"
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.cypher$")

_APPLIED = """
MATCH (m:SchemaMigration) RETURN m.version AS version, m.checksum AS checksum
ORDER BY m.version
"""
_RECORD = """
MERGE (m:SchemaMigration {version: $version})
SET m.name = $name, m.checksum = $checksum, m.applied_at = datetime()
"""


@dataclass(frozen=True)
class SchemaMigration:
    version: int
    name: str
    statements: tuple[str, ...]
    checksum: str


def split_statements(text: str) -> list[str]:
    """Split a migration file on `;`, dropping `//` comment lines and blanks."""
    lines = [line for line in text.splitlines() if not line.strip().startswith("//")]
    return [stmt.strip() for stmt in "\n".join(lines).split(";") if stmt.strip()]


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[SchemaMigration]:
    """All migration files, ordered by version; refuses gaps and duplicates."""
    found: list[SchemaMigration] = []
    for path in sorted(directory.glob("*.cypher")):
        match = _FILE_RE.match(path.name)
        if not match:
            raise ValueError(f"badly named schema migration: {path.name}")
        text = path.read_text(encoding="utf-8")
        found.append(
            SchemaMigration(
                version=int(match.group(1)),
                name=match.group(2),
                statements=tuple(split_statements(text)),
                checksum=hashlib.sha256(text.encode()).hexdigest(),
            )
        )
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise ValueError(f"schema migrations must be numbered 0001.. without gaps: {versions}")
    return found


async def applied_versions(graph: GraphClient) -> dict[int, str]:
    rows = await graph.read("schema.applied", _APPLIED)
    return {int(r["version"]): str(r["checksum"]) for r in rows}


async def migrate_graph(graph: GraphClient, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply every migration not yet recorded; return the versions applied now.

    A recorded migration whose file changed since is reported (the file is
    history; change the schema with a new file), not silently re-applied.
    """
    done = await applied_versions(graph)
    applied_now: list[int] = []
    for migration in load_migrations(directory):
        if migration.version in done:
            if done[migration.version] != migration.checksum:
                log.warning(
                    "schema.migration_changed", version=migration.version, name=migration.name
                )
            continue
        for index, statement in enumerate(migration.statements):
            await graph.run_schema(f"schema.{migration.version:04d}.{index}", statement)
        await graph.write(
            "schema.record",
            _RECORD,
            {
                "version": migration.version,
                "name": migration.name,
                "checksum": migration.checksum,
            },
        )
        log.info("schema.migration_applied", version=migration.version, name=migration.name)
        applied_now.append(migration.version)
    return applied_now
