"""Blob records in Postgres. Every query filters on the tenant; nothing here commits."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, exists, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from relational.models import Blob, SyncEntity


async def owner_exists(
    session: AsyncSession, customer_id: uuid.UUID, owner_type: str, owner_id: uuid.UUID
) -> bool:
    """Whether the tenant holds a live (not deleted) synced entity of that type and id."""
    query = select(
        exists().where(
            SyncEntity.customer_id == customer_id,
            SyncEntity.entity_type == owner_type,
            SyncEntity.entity_id == owner_id,
            SyncEntity.deleted.is_(False),
        )
    )
    return bool(await session.scalar(query))


async def add(session: AsyncSession, blob: Blob) -> Blob:
    session.add(blob)
    await session.flush()
    await session.refresh(blob)  # server-side timestamps
    return blob


async def get(
    session: AsyncSession, customer_id: uuid.UUID, blob_id: uuid.UUID, *, for_update: bool = False
) -> Blob | None:
    query = select(Blob).where(Blob.customer_id == customer_id, Blob.id == blob_id)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def page(
    session: AsyncSession,
    customer_id: uuid.UUID,
    *,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None = None,
    owner_type: str | None = None,
    owner_id: uuid.UUID | None = None,
    state: str | None = None,
) -> Sequence[Blob]:
    """Newest first, keyset-paginated on (created_at, id); returns up to `limit` rows."""
    query = select(Blob).where(Blob.customer_id == customer_id)
    if owner_type is not None:
        query = query.where(Blob.owner_type == owner_type)
    if owner_id is not None:
        query = query.where(Blob.owner_id == owner_id)
    if state is not None:
        query = query.where(Blob.state == state)
    if after is not None:
        query = query.where(tuple_(Blob.created_at, Blob.id) < tuple_(*after))
    query = query.order_by(Blob.created_at.desc(), Blob.id.desc()).limit(limit)
    return (await session.execute(query)).scalars().all()


async def remove(session: AsyncSession, blob: Blob) -> None:
    await session.execute(
        delete(Blob).where(Blob.customer_id == blob.customer_id, Blob.id == blob.id)
    )
