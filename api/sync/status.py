"""`GET /sync/status`: a workstation's last mutation and sync health, the head, counts, projection.

Reads Postgres only: status answers while Neo4j is down.
"""

from __future__ import annotations

import uuid
from datetime import UTC

from sqlalchemy import text

from api.auth.principal import Principal
from api.core.errors import NotFound
from api.core.resources import Resources
from api.journal.status import projection_status
from api.sync.health import workstation_health
from api.sync.schemas import SYNC_TYPES, ProjectionStatus, SyncStatus, WorkstationHealth
from api.sync.workstations import last_mutation_id, write_checkpoint

_LIVE_COUNTS = text(
    "SELECT entity_type, count(*) AS n FROM sync_entities WHERE customer_id = :c AND NOT deleted "
    "GROUP BY entity_type"
)


async def status(
    resources: Resources, principal: Principal, workstation_id: uuid.UUID | None
) -> SyncStatus:
    customer_id = principal.customer_id
    workstation_id = principal.workstation_id or workstation_id
    async with resources.sessions() as session:
        # Head, lag and counts from Postgres alone: status answers while Neo4j is down.
        projection = await projection_status(session, customer_id)  # type: ignore[arg-type]
        counts = {
            r.entity_type: int(r.n)
            for r in (await session.execute(_LIVE_COUNTS, {"c": customer_id})).all()
        }
        last_pull_at = last_cursor = None
        health: WorkstationHealth | None = None
        checkpoint = 0
        if workstation_id is not None:
            ws = (
                await session.execute(
                    text(
                        "SELECT last_pull_at, last_pull_cursor FROM workstations "
                        "WHERE id = :w AND customer_id = :c"
                    ),
                    {"w": workstation_id, "c": customer_id},
                )
            ).first()
            if ws is None:
                raise NotFound("workstation not found")
            last_pull_at = ws.last_pull_at.astimezone(UTC).isoformat() if ws.last_pull_at else None
            last_cursor = ws.last_pull_cursor
            checkpoint = await write_checkpoint(session, workstation_id)
            health = await workstation_health(
                session,
                resources.settings,
                customer_id,  # type: ignore[arg-type]
                workstation_id,
            )
        last_mutation = await last_mutation_id(session, workstation_id)
    return SyncStatus(
        workstation_id=workstation_id,
        last_mutation_id=last_mutation,
        write_checkpoint=checkpoint,
        frontier=projection.head,
        version=projection.head,
        pending=projection.pending,
        last_pull_at=last_pull_at,
        last_pull_cursor=last_cursor,
        counts={t: counts.get(t, 0) for t in SYNC_TYPES},
        projection=ProjectionStatus(
            applied_through=projection.applied_through,
            lag_versions=projection.lag_versions,
            lag_seconds=projection.lag_seconds,
            failed=projection.failed,
        ),
        workstation=health,
    )
