"""Which venues a workstation syncs (its scope, api/sync/scope.py): read by
pull, bootstrap and the subscribe feed (api/streams/feed.py)."""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_SCOPE = text(
    "SELECT venue_id FROM sync_scope_venues WHERE workstation_id = :w "
    "AND customer_id = :c ORDER BY venue_id"
)


async def scoped(
    session: AsyncSession, workstation_id: uuid.UUID | None, customer_id: uuid.UUID | None
) -> list[uuid.UUID] | None:
    """The venues of a workstation's scope, the tenant-wide pseudo-venue (the
    nil UUID) included; None when it syncs the whole tenant."""
    if workstation_id is None:
        return None
    rows = (await session.execute(_SCOPE, {"w": workstation_id, "c": customer_id})).all()
    return [r.venue_id for r in rows] or None
