"""Every SQL statement on a tenant-owned table names the tenant (DESIGN.md §2), checked statically.

The Postgres side of tests/test_tenant_binding.py: every string in `api/` and
`relational/` that is a SQL statement touching a table that holds `customer_id`
must mention `customer_id` (a filter, a join on it, or the column it inserts),
unless it is cross-tenant by design and listed below with the reason. ORM
queries (`select(Model).where(...)`) are not strings and are not checked here;
the two-tenant endpoint tests cover them.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Tables whose rows belong to one tenant (they carry `customer_id`).
TENANT_TABLES = (
    "kits",
    "drones",
    "heartbeats",
    "device_events",
    "update_history",
    "occupancy_history",
    "sync_journal",
    "journal_applied",
    "sync_entities",
    "sync_mutations",
    "embedding_queue",
    "blobs",
    "workstations",
    "api_keys",
    "customer_versions",
    "stream_presence",
    "sync_conflicts",
    "sync_scopes",
    "sync_scope_venues",
    "sync_scope_removals",
    "sync_scope_exits",
)
_TABLE = re.compile(r"\b(FROM|JOIN|UPDATE|INTO)\s+(" + "|".join(TENANT_TABLES) + r")\b", re.I)
_SQL = re.compile(r"^\s*(\(?\s*SELECT|INSERT|UPDATE|DELETE|WITH)\b", re.I)

# Statements that are cross-tenant by design: "path:first words" -> why.
RETENTION = "retention across every tenant (`overwatch prune`, background sweeps)"
OWN_WORKSTATION = (
    "scoped by the caller's own workstation id, which belongs to one tenant "
    "(push checks it against the tenant first)"
)
ALLOWED = {
    "api/auth/service.py:SELECT k.id, k.key_hash": (
        "authentication finds the key by its id before any tenant is known"
    ),
    "api/fleet/service.py:DELETE FROM heartbeats": RETENTION,
    "api/streams/occupancy.py:DELETE FROM occupancy_history": RETENTION,
    "api/sync/prune.py:DELETE FROM sync_journal": RETENTION,
    "api/sync/prune.py:DELETE FROM sync_mutations": RETENTION,
    "api/streams/hub.py:DELETE FROM stream_presence": "expires dead processes' rows, any tenant",
    "api/search/embedding_worker.py:DELETE FROM embedding_queue": (
        "deletes queue rows by the ids this worker just claimed"
    ),
    "api/search/embedding_worker.py:SELECT count(*) FROM": "the queue depth gauge, all tenants",
    "api/sync/push.py:SELECT mutation_id, status,": OWN_WORKSTATION,
    "api/sync/workstations.py:SELECT max(mutation_id) FROM": OWN_WORKSTATION,
    "api/sync/workstations.py:SELECT max(version) FROM": OWN_WORKSTATION,
}


def statements() -> list[tuple[str, str]]:
    found = []
    for path in sorted([*(ROOT / "api").rglob("*.py"), *(ROOT / "relational").rglob("*.py")]):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                if _SQL.match(text) and _TABLE.search(text):
                    found.append((rel, text))
    return found


def key(rel: str, text: str) -> str:
    return f"{rel}:{' '.join(text.split()[:3])}"


def test_the_scan_finds_the_statements() -> None:
    """A scan that finds nothing would pass everything: it must see the write core's SQL."""
    found = statements()
    assert len(found) >= 30, len(found)
    assert any(rel.startswith("api/journal/") for rel, _ in found)


@pytest.mark.parametrize(("rel", "text"), statements(), ids=lambda v: v[:60] if "/" in v else "")
def test_every_tenant_statement_names_the_tenant(rel: str, text: str) -> None:
    if "customer_id" in text:
        return
    assert key(rel, text) in ALLOWED, (
        f"{rel}: a statement on a tenant table without customer_id:\n{text[:300]}"
    )
