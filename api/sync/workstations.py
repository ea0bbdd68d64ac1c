"""What the server holds per workstation: its last mutation id and its write checkpoint."""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# Also spliced into pull's head statement (api/sync/pull.py).
LAST_MUTATION_SQL = "SELECT max(mutation_id) FROM sync_mutations WHERE workstation_id = :w"
_LAST_MUTATION = text(LAST_MUTATION_SQL)
CHECKPOINT_SQL = (
    "SELECT max(version) FROM sync_mutations WHERE workstation_id = :w AND status = 'applied'"
)
_CHECKPOINT = text(CHECKPOINT_SQL)


async def last_mutation_id(session: AsyncSession, workstation_id: uuid.UUID | None) -> int:
    """The highest mutation id the server holds for the workstation (0: none)."""
    if workstation_id is None:
        return 0
    return int((await session.execute(_LAST_MUTATION, {"w": workstation_id})).scalar() or 0)


async def write_checkpoint(session: AsyncSession, workstation_id: uuid.UUID) -> int:
    """The version a workstation must have pulled to see all its applied writes."""
    return int((await session.execute(_CHECKPOINT, {"w": workstation_id})).scalar() or 0)
