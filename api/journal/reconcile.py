"""Reconcile (apply what is pending, every tenant) and verify (compare Postgres and Neo4j)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog
from sqlalchemy import text

from api.core.observability import error_text
from api.core.resources import Resources
from api.journal.apply import apply_pending
from api.journal.status import (
    _FAILED_TENANTS,
    FailedRow,
    Projection,
    failed_rows,
    pending_count,
    projection_overview,
    retry_failed,
)
from graph.projection import (
    stored_versions,
)

log = structlog.get_logger("api.journal")


@dataclass
class Reconciled:
    """What one reconcile pass did, per tenant (customer id as text)."""

    applied: dict[str, int] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)  # tenant -> the outage's error
    retried: int = 0
    superseded: int = 0
    projection: list[Projection] = field(default_factory=list)  # lagging or failed, after

    @property
    def failed_rows(self) -> int:
        return sum(p.failed for p in self.projection)

    @property
    def ok(self) -> bool:
        """Nothing is pending and nothing failed."""
        return not self.unavailable and not self.projection


# Each tenant's first pending row, from its watermark up (the primary key).
_PENDING_TENANTS = text(
    "SELECT customer_id FROM (SELECT cv.customer_id, (SELECT j.created_at FROM sync_journal j "
    "WHERE j.customer_id = cv.customer_id AND j.version > COALESCE(a.through, 0) "
    "AND j.state = 'pending' ORDER BY j.version LIMIT 1) AS since "
    "FROM customer_versions cv LEFT JOIN journal_applied a USING (customer_id) "
    "WHERE CAST(:customer_id AS uuid) IS NULL OR cv.customer_id = :customer_id) t "
    "WHERE since IS NOT NULL ORDER BY since"
)


async def reconcile(
    resources: Resources,
    *,
    retry: bool = False,
    customers: Sequence[uuid.UUID] | None = None,
) -> Reconciled:
    """Apply the pending rows of every tenant (or of `customers`), oldest first.

    With `retry`, failed rows are first put back (`retry_failed`). A tenant
    whose apply fails for an outage is reported in `unavailable`; the others
    carry on. Afterwards `projection` lists every tenant still lagging or
    holding failed rows.
    """
    report = Reconciled()
    scope: Sequence[uuid.UUID | None] = customers or [None]
    if retry:
        for one in scope:
            async with resources.sessions() as session:
                ids = list((await session.execute(_FAILED_TENANTS, {"customer_id": one})).scalars())
            for customer_id in ids:
                pending, superseded = await retry_failed(resources, customer_id)
                report.retried += pending
                report.superseded += superseded
    pending_tenants: list[uuid.UUID] = []
    async with resources.sessions() as session:
        for one in scope:
            pending_tenants += (
                await session.execute(_PENDING_TENANTS, {"customer_id": one})
            ).scalars()
    for customer_id in pending_tenants:
        try:
            report.applied[str(customer_id)] = await apply_pending(resources, customer_id)
        except Exception as exc:
            report.unavailable[str(customer_id)] = error_text(exc)
            log.warning(
                "journal.reconcile_failed", customer_id=str(customer_id), error=error_text(exc)
            )
    async with resources.sessions() as session:
        overview = await projection_overview(session)
    wanted = {str(c) for c in customers} if customers else None
    report.projection = [p for p in overview if wanted is None or p.customer_id in wanted]
    if report.applied:
        log.info(
            "journal.reconciled", tenants=len(report.applied), rows=sum(report.applied.values())
        )
    return report


async def reconcile_all(resources: Resources) -> dict[str, int]:
    """Re-apply pending rows of every tenant, oldest tenants first (the timer
    loop and startup); returns rows applied per tenant. See `reconcile`."""
    return (await reconcile(resources)).applied


@dataclass
class Drift:
    customer_id: str
    pending: int
    missing: list[tuple[str, str]] = field(default_factory=list)  # journal has, graph lacks
    # graph has, but the journal deleted or never had:
    unexpected: list[tuple[str, str]] = field(default_factory=list)
    stale: list[tuple[str, str, int, int]] = field(default_factory=list)  # type, id, graph, journal
    # Rows Neo4j refused; their entities are left out of the three lists above.
    failed: list[FailedRow] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.stale)


VERIFIED_TYPES = ("venue", "world_node", "world_edge", "operation", "kit", "drone")


async def verify(resources: Resources, customer_id: uuid.UUID) -> Drift:
    """Compare what Neo4j holds with the latest state the journal implies.

    An entity whose latest change failed is reported under `failed`, not as
    drift: its state in Neo4j is known to differ, and why.
    """
    async with resources.sessions() as session:
        expected_rows = (
            await session.execute(
                text(
                    "SELECT entity_type, entity_id, version FROM sync_entities "
                    "WHERE customer_id = :customer_id AND NOT deleted"
                ),
                {"customer_id": customer_id},
            )
        ).all()
        pending = await pending_count(session, customer_id)
        failed = await failed_rows(session, customer_id)
    expected = {(r.entity_type, str(r.entity_id)): int(r.version) for r in expected_rows}
    stored = await stored_versions(resources.graph, str(customer_id), VERIFIED_TYPES)
    # The latest failed version per entity: it excuses the entity while it is
    # still the entity's latest change (a later change that applied does not).
    excused = {(f.entity_type, f.entity_id): f.version for f in failed}
    drift = Drift(customer_id=str(customer_id), pending=pending, failed=failed)
    for key, version in expected.items():
        if excused.get(key, -1) >= version:
            continue
        if key not in stored:
            drift.missing.append(key)
        elif stored[key] != version:
            drift.stale.append((key[0], key[1], stored[key], version))
    drift.unexpected = [key for key in stored if key not in expected and key not in excused]
    return drift


async def tenants(resources: Resources) -> list[uuid.UUID]:
    async with resources.sessions() as session:
        return list((await session.execute(text("SELECT id FROM customers ORDER BY id"))).scalars())
