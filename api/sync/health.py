"""Sync health per workstation: its last push and pull, cursor, lag, expiry and scope.

Read from Postgres alone (it answers while Neo4j is down), for
`GET /sync/workstations`, `GET /sync/status` and the Prometheus gauges.

When a cursor expires. `overwatch prune` removes tombstones older than
TOMBSTONE_RETENTION_DAYS and raises the tenant's `pruned_through` to the
newest one removed; a pull from a cursor below it answers 410. A workstation
at cursor `c` is hurt only by pruning a tombstone newer than `c`. Every such
tombstone was written at or after the first change past `c` was committed,
and that is no later than the workstation's last pull (the pull that answered
`c` either reached the head, so later changes came after it, or stopped at a
full page, so the next change was already there). Hence its cursor cannot
expire before

    expires_at = min(last_pull_at, journal time of version c + 1) + retention

and it is exactly then for a workstation that has every change up to the head
when a delete follows. If the journal row of `c + 1` was itself pruned (it is
older than the window), the answer is "now": the next prune may expire it. A
cursor of 0 never expires (a pull from 0 is always answered). Versions are
contiguous per tenant (the counter moves by the number of changes journaled in
the same transaction), so "the first change past `c`" is version `c + 1`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Gauge
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from api.core.resources import Resources
from api.core.settings import Settings
from api.sync.schemas import ScopeSummary, WorkstationHealth
from relational.models.scopes import TENANT_WIDE

# Per workstation, one statement: the head and horizon of its tenant, its
# newest mutation outcome (the primary key (workstation_id, mutation_id) read
# backwards: one index probe; prune keeps each workstation's newest), the
# journal time of the first change past its cursor (the journal's primary key
# (customer_id, version): one probe), and its scope.
_HEALTH = """
SELECT w.id, w.name, w.deactivated_at IS NOT NULL AS deactivated, w.last_pull_at,
       w.last_pull_cursor, COALESCE(cv.version, 0) AS head,
       COALESCE(cv.pruned_through, 0) AS pruned_through,
       (SELECT m.created_at FROM sync_mutations m WHERE m.workstation_id = w.id
        ORDER BY m.mutation_id DESC LIMIT 1) AS last_push_at,
       (SELECT j.created_at FROM sync_journal j WHERE j.customer_id = w.customer_id
        AND j.version = w.last_pull_cursor + 1) AS next_change_at,
       s.scope_version,
       (SELECT array_agg(v.venue_id ORDER BY v.venue_id) FROM sync_scope_venues v
        WHERE v.workstation_id = w.id AND v.customer_id = w.customer_id) AS venues
FROM workstations w
LEFT JOIN customer_versions cv ON cv.customer_id = w.customer_id
LEFT JOIN sync_scopes s ON s.workstation_id = w.id AND s.customer_id = w.customer_id
WHERE w.customer_id = :c {where}
ORDER BY w.id
{limit}
"""
_PAGE = text(
    _HEALTH.format(
        where="AND (CAST(:after AS uuid) IS NULL OR w.id > :after)", limit="LIMIT :limit"
    )
)
_ONE = text(_HEALTH.format(where="AND w.id = :w", limit=""))

# The gauges over every tenant, in one row: active workstations that pulled at
# least once; expiry as in `_HEALTH` (a cursor of 0 never expires; a first
# unpulled change whose journal row is gone is overdue).
_FLEET = text("""
WITH ws AS (
  SELECT cv.version - w.last_pull_cursor AS behind,
         w.last_pull_cursor > 0 AND w.last_pull_cursor < cv.pruned_through AS expired,
         w.last_pull_cursor > 0 AND CASE
           WHEN n.created_at IS NULL AND w.last_pull_cursor < cv.version THEN true
           ELSE LEAST(w.last_pull_at, n.created_at) + make_interval(days => :retention_days)
                <= now() + make_interval(days => :warning_days) END AS near
  FROM workstations w JOIN customer_versions cv ON cv.customer_id = w.customer_id
  LEFT JOIN LATERAL (SELECT j.created_at FROM sync_journal j
                     WHERE j.customer_id = w.customer_id AND j.version = w.last_pull_cursor + 1
                    ) n ON true
  WHERE w.deactivated_at IS NULL AND w.last_pull_cursor IS NOT NULL
)
SELECT COALESCE(max(behind) FILTER (WHERE NOT expired), 0) AS max_lag,
       count(*) FILTER (WHERE near AND NOT expired) AS near_expiry,
       count(*) FILTER (WHERE expired) AS expired
FROM ws
""")

# No tenant or workstation label: one series each would grow without bound
# (`GET /sync/workstations` names them). Set when /metrics is scraped.
SYNC_LAG_VERSIONS = Gauge(
    "overwatch_sync_lag_versions_max",
    "Largest number of versions any active workstation's pull cursor is behind its tenant's "
    "committed head (workstations whose cursor has not expired).",
)
SYNC_NEAR_EXPIRY = Gauge(
    "overwatch_sync_workstations_near_expiry",
    "Active workstations whose pull cursor expires (410 after the next prune) within "
    "SYNC_EXPIRY_WARNING_DAYS and has not expired yet.",
)
SYNC_EXPIRED = Gauge(
    "overwatch_sync_workstations_expired",
    "Active workstations whose pull cursor already expired: their next pull answers 410.",
)


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment is not None else None


def expires_at(
    last_pull_at: datetime | None,
    cursor: int | None,
    head: int,
    next_change_at: datetime | None,
    retention: timedelta,
    now: datetime,
) -> datetime | None:
    """When prune could first expire this cursor (module docstring); None: never."""
    if last_pull_at is None or not cursor:
        return None
    if cursor < head and next_change_at is None:  # its journal row was pruned: overdue
        return now
    start = min(last_pull_at, next_change_at) if next_change_at else last_pull_at
    return start + retention


def _health(row: Any, settings: Settings, now: datetime) -> WorkstationHealth:
    cursor = row.last_pull_cursor
    head = int(row.head)
    deadline = expires_at(
        row.last_pull_at,
        cursor,
        head,
        row.next_change_at,
        timedelta(days=settings.tombstone_retention_days),
        now,
    )
    days = None if deadline is None else max((deadline - now).total_seconds(), 0.0) / 86400
    venues = row.venues or []
    return WorkstationHealth(
        id=row.id,
        name=row.name,
        deactivated=bool(row.deactivated),
        last_push_at=_iso(row.last_push_at),
        last_pull_at=_iso(row.last_pull_at),
        cursor=cursor,
        head=head,
        versions_behind=None if cursor is None else max(head - cursor, 0),
        cursor_expires_at=_iso(deadline),
        days_until_expiry=None if days is None else round(days, 3),
        expired=bool(cursor) and cursor < int(row.pruned_through),
        # Unscoped: no venue rows (a scope always holds the tenant-wide pseudo-venue).
        scope=ScopeSummary(
            venues=[v for v in venues if v != TENANT_WIDE], scope_version=int(row.scope_version)
        )
        if venues
        else None,
    )


async def workstations_health(
    session: AsyncSession,
    settings: Settings,
    customer_id: uuid.UUID,
    *,
    limit: int,
    after: uuid.UUID | None,
) -> list[WorkstationHealth]:
    """A page of the tenant's workstations (by id, after `after`) with their sync health."""
    rows = (await session.execute(_PAGE, {"c": customer_id, "after": after, "limit": limit})).all()
    now = datetime.now(UTC)
    return [_health(r, settings, now) for r in rows]


async def workstation_health(
    session: AsyncSession, settings: Settings, customer_id: uuid.UUID, workstation_id: uuid.UUID
) -> WorkstationHealth | None:
    """One workstation's sync health (None if the tenant has no such workstation)."""
    row = (await session.execute(_ONE, {"c": customer_id, "w": workstation_id})).first()
    return None if row is None else _health(row, settings, datetime.now(UTC))


@dataclass(frozen=True)
class FleetHealth:
    """What the gauges show: worst lag, near-expiry and expired counts."""

    max_lag_versions: int
    near_expiry: int
    expired: int


async def fleet_health(resources: Resources) -> FleetHealth:
    """Compute the sync gauges over every tenant and set them (when /metrics is scraped)."""
    settings = resources.settings
    async with resources.sessions() as session:
        row = (
            await session.execute(
                _FLEET,
                {
                    "retention_days": settings.tombstone_retention_days,
                    "warning_days": settings.sync_expiry_warning_days,
                },
            )
        ).one()
    found = FleetHealth(
        max_lag_versions=int(row.max_lag),
        near_expiry=int(row.near_expiry),
        expired=int(row.expired),
    )
    SYNC_LAG_VERSIONS.set(found.max_lag_versions)
    SYNC_NEAR_EXPIRY.set(found.near_expiry)
    SYNC_EXPIRED.set(found.expired)
    return found
