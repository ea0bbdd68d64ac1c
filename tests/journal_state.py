"""A tenant's journal rows as the service sees them (migration 0019).

A stored `pending` row is applied once the tenant's watermark
(`journal_applied.through`) reaches its version; these helpers read the
effective state, as `api/journal/status.py` does.
"""

from __future__ import annotations

import uuid

_THROUGH = "COALESCE((SELECT through FROM journal_applied WHERE customer_id = $1::uuid), 0)"


async def pending_rows(pg, customer_id: str | uuid.UUID) -> int:
    """How many of the tenant's journal rows are not applied to Neo4j yet."""
    return int(
        await pg.fetchval(
            "SELECT count(*) FROM sync_journal WHERE customer_id = $1::uuid "
            f"AND state = 'pending' AND version > {_THROUGH}",
            str(customer_id),
        )
    )


async def row_states(pg, customer_id: str | uuid.UUID) -> dict[int, tuple[str, str | None]]:
    """version -> (pending | applied | failed, error) for each journal row of the tenant."""
    rows = await pg.fetch(
        "SELECT version, CASE WHEN state = 'pending' AND version <= "
        f"{_THROUGH} THEN 'applied' ELSE state END AS state, error "
        "FROM sync_journal WHERE customer_id = $1::uuid",
        str(customer_id),
    )
    return {r["version"]: (r["state"], r["error"]) for r in rows}
