"""Entity envelopes: how every synced entity travels in push, pull and bootstrap."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from api.blobs.service import blob_ids_by_owner

# Bootstrap and pull hand out parents before children where versions allow;
# bootstrap orders by this rank so references resolve on the client.
TYPE_RANK = {"venue": 0, "kit": 1, "drone": 2, "world_node": 3, "world_edge": 4, "operation": 5}
BLOB_OWNER_TYPES = frozenset({"venue", "world_node", "operation"})

ENTITY_COLUMNS = ("entity_type, entity_id, version, deleted, payload, merged_into, updated_by, "
                  "updated_at")


def envelope(row: Any, blob_ids: Sequence[uuid.UUID] | None = None) -> dict[str, Any]:
    """A `sync_entities` row as the protocol's envelope."""
    body: dict[str, Any] = {
        "type": row.entity_type, "id": str(row.entity_id),
        "op": "delete" if row.deleted else "upsert", "version": int(row.version),
        "updated_at": row.updated_at.isoformat().replace("+00:00", "Z"),
        "updated_by": row.updated_by,
    }
    if row.deleted:
        if row.merged_into is not None:
            body["merged_into"] = str(row.merged_into)
    else:
        body["data"] = row.payload
        if row.entity_type in BLOB_OWNER_TYPES:
            body["blob_ids"] = [str(b) for b in blob_ids or ()]
    return body


async def envelopes(session: AsyncSession, customer_id: uuid.UUID,
                    rows: Iterable[Any]) -> list[dict[str, Any]]:
    """Envelopes for many rows, with the blob ids of live blob owners in one query."""
    rows = list(rows)
    owners = [r.entity_id for r in rows if not r.deleted and r.entity_type in BLOB_OWNER_TYPES]
    blobs = await blob_ids_by_owner(session, customer_id, owners) if owners else {}
    return [envelope(r, blobs.get(r.entity_id)) for r in rows]


async def current_envelope(session: AsyncSession, customer_id: uuid.UUID,
                           entity_id: uuid.UUID) -> dict[str, Any] | None:
    row = (await session.execute(text(
        f"SELECT {ENTITY_COLUMNS} FROM sync_entities "  # noqa: S608 (fixed column list)
        "WHERE customer_id = :c AND entity_id = :i"), {"c": customer_id, "i": entity_id})).first()
    if row is None:
        return None
    return (await envelopes(session, customer_id, [row]))[0]
