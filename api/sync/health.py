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
cursor of 0 never expires (a pull from 0 is always answered).

A scoped workstation's pull is judged per venue of its scope (api/sync/pull.py):
it reads each venue from GREATEST(cursor, floor) and counts its tombstones only
above `added`, so `c` above is the lowest GREATEST(cursor, floor, added) over
its venues read from above 0 (`EXPIRY_CURSOR_SQL`). Versions are
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

# `e.at`: the version a workstation's next pull is judged by for 410 (as
# api/sync/pull.py judges it): its cursor when unscoped; when scoped, the
# lowest over its venues of GREATEST(cursor, floor, added), among venues with
# GREATEST(cursor, floor) > 0 (none: NULL, it cannot expire). A scoped pull
# expires only when one of its venues reads from below the horizon.
EXPIRY_CURSOR_SQL = """
LEFT JOIN LATERAL (
  SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM sync_scope_venues v
                               WHERE v.workstation_id = w.id AND v.customer_id = w.customer_id)
         THEN w.last_pull_cursor
         ELSE (SELECT min(GREATEST(w.last_pull_cursor, v.floor, v.added)) FROM sync_scope_venues v
               WHERE v.workstation_id = w.id AND v.customer_id = w.customer_id
               AND GREATEST(w.last_pull_cursor, v.floor) > 0) END AS at
) e ON true
"""
# LIMIT 1 keeps the planner from flattening the probe into a hash join over
# the whole journal (it did: 1M journal rows read per call at 10k workstations).
_NEXT_CHANGE = """
LEFT JOIN LATERAL (SELECT j.created_at FROM sync_journal j
                   WHERE j.customer_id = w.customer_id AND j.version = e.at + 1 LIMIT 1) n ON true
"""
_EXPIRY_CURSOR = EXPIRY_CURSOR_SQL + _NEXT_CHANGE
# Per workstation, one statement: the head and horizon of its tenant, its
# newest mutation outcome (the primary key (workstation_id, mutation_id) read
# backwards: one index probe; prune keeps each workstation's newest), the
# journal time of the first change past its expiry cursor (the journal's
# primary key (customer_id, version): one probe), and its scope.
_HEALTH_SELECT = """
SELECT w.id, w.name, w.deactivated_at IS NOT NULL AS deactivated, w.last_pull_at,
       w.last_pull_cursor, COALESCE(cv.version, 0) AS head,
       COALESCE(cv.pruned_through, 0) AS pruned_through, e.at AS expiry_cursor,
       n.created_at AS next_change_at,
       (SELECT m.created_at FROM sync_mutations m WHERE m.workstation_id = w.id
        ORDER BY m.mutation_id DESC LIMIT 1) AS last_push_at,
       s.scope_version,
       (SELECT array_agg(v.venue_id ORDER BY v.venue_id) FROM sync_scope_venues v
        WHERE v.workstation_id = w.id AND v.customer_id = w.customer_id) AS venues
FROM workstations w
LEFT JOIN customer_versions cv ON cv.customer_id = w.customer_id
LEFT JOIN sync_scopes s ON s.workstation_id = w.id AND s.customer_id = w.customer_id
"""
_HEALTH_WHERE = """
WHERE w.customer_id = :c {where}
ORDER BY w.id
{limit}
"""
_HEALTH = _HEALTH_SELECT + _EXPIRY_CURSOR + _HEALTH_WHERE
_PAGE = text(
    _HEALTH.format(
        where="AND (CAST(:after AS uuid) IS NULL OR w.id > :after)", limit="LIMIT :limit"
    )
)
_ONE = text(_HEALTH.format(where="AND w.id = :w", limit=""))

# The gauges over every tenant, in one row: active workstations that pulled at
# least once; expiry as in `_HEALTH` (an expiry cursor of 0 or NULL never
# expires; a first unpulled change whose journal row is gone is overdue).
_FLEET_HEAD = """
WITH ws AS (
  SELECT cv.version - w.last_pull_cursor AS behind,
         COALESCE(e.at > 0 AND e.at < cv.pruned_through, false) AS expired,
         COALESCE(e.at > 0 AND CASE
           WHEN n.created_at IS NULL AND e.at < cv.version THEN true
           ELSE LEAST(w.last_pull_at, n.created_at) + make_interval(days => :retention_days)
                <= now() + make_interval(days => :warning_days) END, false) AS near
  FROM workstations w JOIN customer_versions cv ON cv.customer_id = w.customer_id
"""
_FLEET_TAIL = """
  WHERE w.deactivated_at IS NULL AND w.last_pull_cursor IS NOT NULL
)
SELECT COALESCE(max(behind) FILTER (WHERE NOT expired), 0) AS max_lag,
       count(*) FILTER (WHERE near AND NOT expired) AS near_expiry,
       count(*) FILTER (WHERE expired) AS expired
FROM ws
"""
_FLEET = text(_FLEET_HEAD + _EXPIRY_CURSOR + _FLEET_TAIL)

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
        row.expiry_cursor,
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
        expired=bool(row.expiry_cursor) and row.expiry_cursor < int(row.pruned_through),
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
