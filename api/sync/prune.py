"""Retention for sync history: journal rows, tombstones, retry outcomes, scope exits, conflicts.

Tombstones older than the window are removed and the tenant's
`pruned_through` is raised to the newest version removed: a pull from a cursor
below it could have missed a delete, so it answers 410 `cursor_expired` and
the client bootstraps again. Pending journal rows are never pruned.

Before anything is removed, the workstations this would expire are listed:
active ones that pulled within the window (so they are in use) but whose
cursor would fall below the new horizon. Unless forced, the prune is then
refused and nothing is removed (the same transaction is rolled back), so
the operator can let them catch up first, or run it with `--force`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from api.core.resources import Resources
from api.sync.conflicts import prune_conflicts
from api.sync.health import EXPIRY_CURSOR_SQL

_PRUNE_TOMBSTONES = text(
    "WITH gone AS (DELETE FROM sync_entities WHERE deleted AND updated_at < :before "
    "RETURNING customer_id, version) "
    "SELECT customer_id, max(version) AS upto, count(*) AS n FROM gone GROUP BY customer_id"
)
# Workstations the new horizons would expire: active, pulled since `before`,
# expiry cursor (api/sync/health.py: the cursor, or for a scoped workstation
# the lowest position one of its venues reads from) not expired yet, a cursor
# of 0 never expires, but below the new horizon.
_AT_RISK = text(
    "SELECT w.customer_id, w.id, w.name, w.last_pull_at, w.last_pull_cursor AS cursor, "  # noqa: S608
    "e.at AS expiry_cursor, h.upto AS horizon "
    "FROM unnest(CAST(:customers AS uuid[]), CAST(:horizons AS bigint[])) "
    "AS h(customer_id, upto) JOIN customer_versions cv ON cv.customer_id = h.customer_id "
    f"JOIN workstations w ON w.customer_id = h.customer_id {EXPIRY_CURSOR_SQL} "
    "WHERE w.deactivated_at IS NULL AND w.last_pull_at >= :before "
    "AND e.at > 0 AND e.at >= cv.pruned_through "
    "AND e.at < h.upto ORDER BY w.customer_id, w.last_pull_at DESC"
)
_RAISE_HORIZON = text(
    "UPDATE customer_versions SET pruned_through = GREATEST(pruned_through, :upto) "
    "WHERE customer_id = :c"
)
# Applied rows only (at or below the tenant's watermark, not failed).
_PRUNE_JOURNAL = text(
    "DELETE FROM sync_journal j USING journal_applied a WHERE j.customer_id = a.customer_id "
    "AND j.version <= a.through AND j.state <> 'failed' AND j.created_at < :before"
)
# Each workstation keeps its newest outcome: it is what "strictly increasing"
# mutation ids are checked against.
_PRUNE_OUTCOMES = text(
    "DELETE FROM sync_mutations m WHERE m.created_at < :before AND m.mutation_id < ("
    "SELECT max(k.mutation_id) FROM sync_mutations k WHERE k.workstation_id = m.workstation_id)"
)
# Scope exits (an entity left a venue at `version`) are history like tombstones:
# a pull that would need one at or below the horizon answers 410 anyway.
_PRUNE_EXITS = text(
    "DELETE FROM sync_scope_exits x USING customer_versions cv "
    "WHERE x.customer_id = cv.customer_id AND x.version <= cv.pruned_through"
)
# A pending removal is not history: its version is the entity's (often old)
# version when its venue left the workstation's scope, and a pull from a
# rewound cursor of 0 (never answered 410) still needs it. So only removals the
# workstation has pulled past, in a pull after the scope change that wrote
# them and itself older than the window, are removed; the rest stay until the
# next scope change forgets them (api/sync/scope.py).
_PRUNE_REMOVALS = text(
    "DELETE FROM sync_scope_removals r USING customer_versions cv, workstations w, sync_scopes s "
    "WHERE r.customer_id = cv.customer_id AND r.version <= cv.pruned_through "
    "AND w.id = r.workstation_id AND w.customer_id = r.customer_id "
    "AND s.workstation_id = r.workstation_id AND s.customer_id = r.customer_id "
    "AND r.version <= w.last_pull_cursor AND w.last_pull_at > s.updated_at "
    "AND w.last_pull_at < :before"
)


@dataclass(frozen=True)
class AtRisk:
    """An active workstation whose cursor the prune would expire (its next pull: 410)."""

    customer_id: uuid.UUID
    workstation_id: uuid.UUID
    name: str
    last_pull_at: datetime
    cursor: int
    # What its next pull is judged by: `cursor`, or more for a scoped workstation.
    expiry_cursor: int
    horizon: int


@dataclass
class SyncPruned:
    tombstones: int
    journal_rows: int
    outcomes: int
    tenants: int
    scope_exits: int = 0
    scope_removals: int = 0
    conflicts: int = 0
    at_risk: list[AtRisk] = field(default_factory=list)
    refused: bool = False


def _rowcount(result: Any) -> int:
    """Rows a DELETE removed (CursorResult.rowcount)."""
    return int(getattr(result, "rowcount", 0) or 0)


async def _at_risk(
    session: AsyncSession, horizons: Sequence[Any], before: datetime
) -> list[AtRisk]:
    if not horizons:
        return []
    rows = await session.execute(
        _AT_RISK,
        {
            "customers": [r.customer_id for r in horizons],
            "horizons": [int(r.upto) for r in horizons],
            "before": before,
        },
    )
    return [
        AtRisk(
            r.customer_id,
            r.id,
            r.name,
            r.last_pull_at,
            int(r.cursor),
            int(r.expiry_cursor),
            int(r.horizon),
        )
        for r in rows
    ]


async def prune_sync(resources: Resources, before: datetime, *, force: bool = True) -> SyncPruned:
    """Remove sync history older than `before` and move the 410 horizon up.

    The workstations this expires are listed in `at_risk`; with `force=False`
    and any listed, nothing is removed and `refused` is set.
    """
    async with resources.sessions() as session:
        rows = (await session.execute(_PRUNE_TOMBSTONES, {"before": before})).all()
        at_risk = await _at_risk(session, rows, before)
        if at_risk and not force:
            await session.rollback()
            return SyncPruned(0, 0, 0, 0, at_risk=at_risk, refused=True)
        for row in rows:
            await session.execute(_RAISE_HORIZON, {"upto": row.upto, "c": row.customer_id})
        journal = _rowcount(await session.execute(_PRUNE_JOURNAL, {"before": before}))
        outcomes = _rowcount(await session.execute(_PRUNE_OUTCOMES, {"before": before}))
        exits = _rowcount(await session.execute(_PRUNE_EXITS))
        removals = _rowcount(await session.execute(_PRUNE_REMOVALS, {"before": before}))
        # The conflict inbox ages out with the journal (api/sync/conflicts.py).
        conflicts = await prune_conflicts(session, before)
        await session.commit()
    return SyncPruned(
        tombstones=sum(int(r.n) for r in rows),
        journal_rows=journal,
        outcomes=outcomes,
        tenants=len(rows),
        scope_exits=exits,
        scope_removals=removals,
        conflicts=conflicts,
        at_risk=at_risk,
    )
