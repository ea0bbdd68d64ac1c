"""Retention for sync history: applied journal rows, tombstones, retry outcomes.

Tombstones older than the window are removed and the tenant's
`pruned_through` is raised to the newest version removed: a pull from a cursor
below it could have missed a delete, so it answers 410 `cursor_expired` and
the client bootstraps again. Pending journal rows are never pruned.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text

from api.core.resources import Resources
from relational.database import unit_of_work

_PRUNE_TOMBSTONES = text(
    "WITH gone AS (DELETE FROM sync_entities WHERE deleted AND updated_at < :before "
    "RETURNING customer_id, version) "
    "SELECT customer_id, max(version) AS upto, count(*) AS n FROM gone GROUP BY customer_id"
)
_RAISE_HORIZON = text(
    "UPDATE customer_versions SET pruned_through = GREATEST(pruned_through, :upto) "
    "WHERE customer_id = :c"
)
_PRUNE_JOURNAL = text("DELETE FROM sync_journal WHERE state = 'applied' AND created_at < :before")
# Each workstation keeps its newest outcome: it is what "strictly increasing"
# mutation ids are checked against.
_PRUNE_OUTCOMES = text(
    "DELETE FROM sync_mutations m WHERE m.created_at < :before AND m.mutation_id < ("
    "SELECT max(k.mutation_id) FROM sync_mutations k WHERE k.workstation_id = m.workstation_id)"
)


@dataclass
class SyncPruned:
    tombstones: int
    journal_rows: int
    outcomes: int
    tenants: int


def _rowcount(result: Any) -> int:
    """Rows a DELETE removed (CursorResult.rowcount)."""
    return int(getattr(result, "rowcount", 0) or 0)


async def prune_sync(resources: Resources, before: datetime) -> SyncPruned:
    """Remove sync history older than `before` and move the 410 horizon up."""
    async with unit_of_work(resources.sessions) as session:
        rows = (await session.execute(_PRUNE_TOMBSTONES, {"before": before})).all()
        for row in rows:
            await session.execute(_RAISE_HORIZON, {"upto": row.upto, "c": row.customer_id})
        journal = _rowcount(await session.execute(_PRUNE_JOURNAL, {"before": before}))
        outcomes = _rowcount(await session.execute(_PRUNE_OUTCOMES, {"before": before}))
    return SyncPruned(
        tombstones=sum(int(r.n) for r in rows),
        journal_rows=journal or 0,
        outcomes=outcomes or 0,
        tenants=len(rows),
    )
