"""Where a tenant's projection stands: committed head, applied-through, pending and failed rows."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from prometheus_client import Gauge
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from api.core.resources import Resources
from api.journal.apply import _LOCK, JOURNAL_PENDING, PENDING_SQL
from relational.database import unit_of_work

# Sampled from Postgres by the reconciler and by /readyz (every process sees
# every tenant: alert on the maximum across processes). No tenant label: one
# series per tenant would grow without bound; `overwatch projection` names them.
PROJECTION_LAG_VERSIONS = Gauge(
    "overwatch_projection_lag_versions",
    "Largest number of versions any tenant's Neo4j projection is behind its committed head.",
)


PROJECTION_LAG_SECONDS = Gauge(
    "overwatch_projection_lag_seconds",
    "Age of the oldest journal row not yet applied to Neo4j, over all tenants.",
)


PROJECTION_LAGGING_TENANTS = Gauge(
    "overwatch_projection_lagging_tenants", "Tenants with journal rows not yet applied to Neo4j."
)


PROJECTION_FAILED_ROWS = Gauge(
    "overwatch_projection_failed_rows", "Journal rows marked failed (Neo4j refused them)."
)


# The tenant's committed head, as an SQL expression of `:customer_id` for
# statements that read it together with the rows it bounds (api/sync/pull.py).
# Versions are allocated from this counter row in the transaction that writes
# their journal and entity rows, and the row lock passes to the next writer
# only once that transaction is committed (and visible). So a snapshot that
# sees the counter at V sees every change at or below V: read in the same
# statement (one snapshot) as a page, nothing at or below it can turn up later.
HEAD_SQL = "COALESCE((SELECT version FROM customer_versions WHERE customer_id = :customer_id), 0)"


_HEAD = text("SELECT " + HEAD_SQL)


# How far Neo4j has applied the tenant's journal: every version at or below it
# is applied or failed (none pending). Not a bound for sync any more.
APPLIED_THROUGH_SQL = (
    "COALESCE((SELECT min(version) - 1 FROM sync_journal "  # noqa: S608 (constant SQL)
    f"WHERE customer_id = :customer_id AND {PENDING_SQL}), {HEAD_SQL})"
)


_APPLIED_THROUGH = text("SELECT " + APPLIED_THROUGH_SQL)


async def committed_head(session: AsyncSession, customer_id: uuid.UUID) -> int:
    """The tenant's committed head: every change at or below it is committed."""
    return int((await session.execute(_HEAD, {"customer_id": customer_id})).scalar_one())


async def applied_through(session: AsyncSession, customer_id: uuid.UUID) -> int:
    """The highest version V such that every change of the tenant ≤ V reached
    Neo4j (applied) or was refused by it (failed).

    One statement, one snapshot: a committed counter value implies its journal
    rows are committed too (same transaction), so nothing unseen lies below V.
    """
    return int((await session.execute(_APPLIED_THROUGH, {"customer_id": customer_id})).scalar_one())


# The name sync used before it stopped waiting for Neo4j (tests and tools).
frontier = applied_through


_PENDING_COUNT = text(
    "SELECT count(*) FROM sync_journal WHERE customer_id = :customer_id "  # noqa: S608
    f"AND {PENDING_SQL}"
)


async def pending_count(session: AsyncSession, customer_id: uuid.UUID) -> int:
    """How many of the tenant's journal rows have not reached Neo4j yet."""
    return int((await session.execute(_PENDING_COUNT, {"customer_id": customer_id})).scalar_one())


@dataclass(frozen=True)
class Projection:
    """How far one tenant's Neo4j projection is behind its journal.

    `applied_through`: every version at or below it is applied (or failed);
    `lag_versions`: committed head minus applied_through; `lag_seconds`: age
    of the oldest pending row (0 when none); `pending` and `failed`: row counts.
    """

    customer_id: str
    head: int
    applied_through: int
    lag_versions: int
    lag_seconds: float
    pending: int
    failed: int

    @property
    def lagging(self) -> bool:
        return self.pending > 0


# Pending rows are found per tenant from its watermark up (the primary key,
# one range scan a tenant: LATERAL), failed ones through their partial index.
_PROJECTION = """
WITH t AS (
  SELECT cv.customer_id, cv.version AS head, COALESCE(a.through, 0) AS through
  FROM customer_versions cv LEFT JOIN journal_applied a USING (customer_id) {where}
), p AS (
  SELECT t.customer_id, x.* FROM t CROSS JOIN LATERAL (
    SELECT min(j.version) AS first_pending, count(*) AS pending,
           EXTRACT(EPOCH FROM now() - min(j.created_at)) AS lag_seconds
    FROM sync_journal j
    WHERE j.customer_id = t.customer_id AND j.version > t.through AND j.state = 'pending'
  ) x WHERE x.pending > 0
), f AS (
  SELECT customer_id, count(*) AS failed FROM sync_journal
  WHERE state = 'failed' {failed_where} GROUP BY customer_id
)
SELECT t.customer_id, t.head,
       COALESCE(p.first_pending - 1, t.head) AS applied_through,
       COALESCE(p.lag_seconds, 0) AS lag_seconds,
       COALESCE(p.pending, 0) AS pending, COALESCE(f.failed, 0) AS failed
FROM t LEFT JOIN p USING (customer_id) LEFT JOIN f USING (customer_id)
WHERE {tenants}
ORDER BY t.customer_id
"""


_PROJECTION_ALL = text(
    _PROJECTION.format(
        where="",
        failed_where="",
        tenants="p.customer_id IS NOT NULL OR f.customer_id IS NOT NULL",
    )
)


_PROJECTION_ONE = text(
    _PROJECTION.format(
        where="WHERE cv.customer_id = :customer_id",
        failed_where="AND customer_id = :customer_id",
        tenants="true",
    )
)


def _projection(row: Any) -> Projection:
    return Projection(
        customer_id=str(row.customer_id),
        head=int(row.head),
        applied_through=int(row.applied_through),
        lag_versions=int(row.head) - int(row.applied_through),
        lag_seconds=round(max(float(row.lag_seconds), 0.0), 3),
        pending=int(row.pending),
        failed=int(row.failed),
    )


async def projection_status(session: AsyncSession, customer_id: uuid.UUID) -> Projection:
    """One tenant's projection lag (read from Postgres only; Neo4j may be down)."""
    row = (await session.execute(_PROJECTION_ONE, {"customer_id": customer_id})).first()
    if row is None:
        return Projection(str(customer_id), 0, 0, 0, 0.0, 0, 0)
    return _projection(row)


async def projection_overview(session: AsyncSession) -> list[Projection]:
    """Every tenant whose projection lags or holds failed rows; also sets the gauges."""
    found = [_projection(r) for r in (await session.execute(_PROJECTION_ALL)).all()]
    PROJECTION_LAG_VERSIONS.set(max((p.lag_versions for p in found), default=0))
    PROJECTION_LAG_SECONDS.set(max((p.lag_seconds for p in found), default=0.0))
    PROJECTION_LAGGING_TENANTS.set(sum(1 for p in found if p.lagging))
    PROJECTION_FAILED_ROWS.set(sum(p.failed for p in found))
    JOURNAL_PENDING.set(sum(p.pending for p in found))
    return found


@dataclass(frozen=True)
class FailedRow:
    customer_id: str
    version: int
    entity_type: str
    entity_id: str
    op: str
    error: str
    failed_at: str


_FAILED_ROWS = text(
    "SELECT customer_id, version, entity_type, entity_id, op, error, failed_at FROM sync_journal "
    "WHERE state = 'failed' AND (CAST(:customer_id AS uuid) IS NULL OR customer_id = :customer_id) "
    "ORDER BY customer_id, version LIMIT :limit"
)


async def failed_rows(
    session: AsyncSession, customer_id: uuid.UUID | None = None, limit: int = 1000
) -> list[FailedRow]:
    """Journal rows Neo4j refused, oldest first (all tenants unless one is named)."""
    rows = (await session.execute(_FAILED_ROWS, {"customer_id": customer_id, "limit": limit})).all()
    return [
        FailedRow(
            customer_id=str(r.customer_id),
            version=int(r.version),
            entity_type=r.entity_type,
            entity_id=str(r.entity_id),
            op=r.op,
            error=r.error or "",
            failed_at=r.failed_at.isoformat() if r.failed_at else "",
        )
        for r in rows
    ]


# A failed row that is still its entity's latest change goes back to pending,
# and the tenant's watermark (journal_applied) below it: the rows from there
# up are applied again in version order, those already in Neo4j a no-op
# (version guards). One that a later change superseded is settled by that
# change: replaying it could bring back what the later change deleted, so it
# is marked applied (skipped) with a note, and is never sent.
_RETRY_FAILED = text("""
WITH latest AS (
  SELECT j.version, COALESCE(e.version, j.version) AS latest
  FROM sync_journal j LEFT JOIN sync_entities e
    ON e.customer_id = j.customer_id AND e.entity_type = j.entity_type
   AND e.entity_id = j.entity_id
  WHERE j.customer_id = :customer_id AND j.state = 'failed'
), retried AS (
  UPDATE sync_journal j SET
    state = CASE WHEN l.latest > j.version THEN 'applied' ELSE 'pending' END,
    applied_at = CASE WHEN l.latest > j.version THEN now() END,
    error = CASE WHEN l.latest > j.version
                 THEN 'superseded by version ' || l.latest || '; was: ' || j.error END,
    failed_at = NULL
  FROM latest l
  WHERE j.customer_id = :customer_id AND j.version = l.version
  RETURNING j.state, j.version
), lowered AS (
  UPDATE journal_applied SET through = r.first - 1
  FROM (SELECT min(version) AS first FROM retried WHERE state = 'pending') r
  WHERE customer_id = :customer_id AND through >= r.first
)
SELECT count(*) FILTER (WHERE state = 'pending') AS pending,
       count(*) FILTER (WHERE state = 'applied') AS superseded
FROM retried
""")


_FAILED_TENANTS = text(
    "SELECT DISTINCT customer_id FROM sync_journal WHERE state = 'failed' "
    "AND (CAST(:customer_id AS uuid) IS NULL OR customer_id = :customer_id)"
)


async def retry_failed(resources: Resources, customer_id: uuid.UUID) -> tuple[int, int]:
    """Put the tenant's failed rows back to pending (see `_RETRY_FAILED`);
    returns (rows to apply again, superseded rows settled).

    Under the tenant's apply lock, so no applier is between reading its batch
    and marking it while older rows turn pending again.
    """
    async with unit_of_work(resources.sessions) as session:
        await session.execute(_LOCK, {"customer_id": str(customer_id)})
        row = (await session.execute(_RETRY_FAILED, {"customer_id": customer_id})).one()
    return int(row.pending), int(row.superseded)
