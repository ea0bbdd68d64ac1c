"""The conflict inbox: keep every `conflict` a push answers, list them, resolve them.

- Recording (`record_conflicts`): called by push (api/sync/push.py) in the
  push's own transaction, after the conflicts' `server` envelopes are filled
  in: one INSERT for all of a push's conflicts, none when it has none. Each
  result gets its `conflict_id` before the outcomes are stored, so a retried
  push (answered `duplicate` from `sync_mutations`) names the same row and
  adds none.
- Reading: a customer key sees the tenant's conflicts, a workstation key its
  own workstation's; anything else is 404 (another tenant's id included).
- Resolving: `accept_server` marks the conflict resolved and writes nothing.
  `reapply` writes the losing mutation again through the write path REST
  writes use (`api/journal/writes.py` `write`): journaled, attributed to the
  resolving principal, compared with the entity's current version under the
  tenant's lock; the conflict row is locked and marked in the same
  transaction, so it is resolved exactly when the write commits.
- Retention: `prune_conflicts`, by age, with the journal's (`overwatch prune`).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Select, delete, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.core.errors import Conflict, Forbidden, NotFound
from api.core.pagination import decode_cursor, encode_cursor
from api.core.resources import Resources
from api.journal.changes import ChangeSet
from api.journal.entities import EntityType
from api.journal.envelopes import current_envelopes
from api.journal.storable import printable, unstorable
from api.journal.writes import write
from api.sync.conflicts_schemas import ConflictOut, ConflictPage, ResolveRequest
from api.sync.schemas import Mutation
from relational.database import unit_of_work
from relational.models import SyncConflict

# All of a push's conflicts in one statement: the columns arrive as arrays.
_RECORD = text(
    "INSERT INTO sync_conflicts (id, customer_id, workstation_id, mutation_id, entity_type, "
    "entity_id, op, base_version, data, force, server, server_version, head_version) "
    "SELECT r.id, :c, :w, r.mutation_id, r.entity_type, r.entity_id, r.op, r.base_version, "
    "r.data::jsonb, r.force, r.server::jsonb, r.server_version, :head FROM unnest("
    "CAST(:ids AS uuid[]), CAST(:mutation_ids AS bigint[]), CAST(:entity_types AS text[]), "
    "CAST(:entity_ids AS uuid[]), CAST(:ops AS text[]), CAST(:base_versions AS bigint[]), "
    "CAST(:data AS text[]), CAST(:forces AS boolean[]), CAST(:servers AS text[]), "
    "CAST(:server_versions AS bigint[])) AS r(id, mutation_id, entity_type, entity_id, op, "
    "base_version, data, force, server, server_version)"
)


def _json(value: Any) -> str | None:
    """jsonb text of a mutation's data or an envelope; None stays SQL NULL."""
    if value is None:
        return None
    if unstorable(value) is not None:
        # jsonb holds no NUL; such data would be refused by any write anyway,
        # but the conflict is kept (escaped) rather than failing the push.
        value = printable(value)
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # an integer beyond 64 bits, say
        return json.dumps(value, default=str)


async def record_conflicts(
    session: AsyncSession,
    customer_id: uuid.UUID,
    workstation_id: uuid.UUID,
    conflicts: list[tuple[dict[str, Any], Mutation]],
    head_version: int,
) -> None:
    """Keep the conflicts of one push (results with their `server` filled in),
    in the push's transaction, and give each result its `conflict_id`."""
    if not conflicts:
        return
    ids = [uuid.uuid4() for _ in conflicts]
    for (result, _), conflict_id in zip(conflicts, ids, strict=True):
        result["conflict_id"] = str(conflict_id)
    servers = [result.get("server") for result, _ in conflicts]
    await session.execute(
        _RECORD,
        {
            "c": customer_id,
            "w": workstation_id,
            "head": head_version,
            "ids": ids,
            "mutation_ids": [m.mutation_id for _, m in conflicts],
            "entity_types": [m.type for _, m in conflicts],
            "entity_ids": [m.id for _, m in conflicts],
            "ops": [m.op for _, m in conflicts],
            "base_versions": [m.base_version for _, m in conflicts],
            "data": [_json(m.data) for _, m in conflicts],
            "forces": [m.force for _, m in conflicts],
            "servers": [_json(s) for s in servers],
            "server_versions": [(s or {}).get("version") for s in servers],
        },
    )


# ------------------------------------------------------------------ reading
def conflict_out(row: SyncConflict) -> ConflictOut:
    return ConflictOut(
        id=row.id,
        workstation_id=row.workstation_id,
        entity_type=row.entity_type,
        entity_id=row.entity_id,
        mutation={
            "mutation_id": row.mutation_id,
            "type": row.entity_type,
            "id": row.entity_id,
            "op": row.op,
            "base_version": row.base_version,
            "data": row.data,
            "force": row.force,
        },
        server=row.server,
        server_version=row.server_version,
        head_version=row.head_version,
        created_at=row.created_at,
        state="open" if row.resolved_at is None else "resolved",
        resolution=row.resolution,
        resolved_at=row.resolved_at,
        resolved_by=row.resolved_by,
        resolved_version=row.resolved_version,
    )


def _visible(principal: Principal) -> Select[SyncConflict]:
    """The principal's conflicts: the tenant's, or one workstation's own."""
    query = select(SyncConflict).where(SyncConflict.customer_id == principal.customer_id)
    if principal.workstation_id is not None:
        query = query.where(SyncConflict.workstation_id == principal.workstation_id)
    return query


async def list_conflicts(
    session: AsyncSession,
    principal: Principal,
    *,
    workstation_id: uuid.UUID | None,
    entity_id: uuid.UUID | None,
    entity_type: str | None,
    since: datetime | None,
    state: str,
    limit: int,
    cursor: str | None,
) -> ConflictPage:
    """A page of conflicts, newest first (keyset on created_at, id)."""
    after = decode_cursor(cursor, datetime, uuid.UUID) if cursor is not None else None
    if (
        principal.workstation_id is not None
        and workstation_id is not None
        and workstation_id != principal.workstation_id
    ):
        raise Forbidden(
            "a workstation key lists its own workstation's conflicts only",
            code="own_conflicts_only",
        )
    query = _visible(principal)
    if workstation_id is not None:
        query = query.where(SyncConflict.workstation_id == workstation_id)
    if entity_id is not None:
        query = query.where(SyncConflict.entity_id == entity_id)
    if entity_type is not None:
        query = query.where(SyncConflict.entity_type == entity_type)
    if since is not None:
        query = query.where(SyncConflict.created_at >= since)
    if state == "open":
        query = query.where(SyncConflict.resolved_at.is_(None))
    elif state == "resolved":
        query = query.where(SyncConflict.resolved_at.is_not(None))
    if after is not None:
        query = query.where(tuple_(SyncConflict.created_at, SyncConflict.id) < tuple_(*after))
    query = query.order_by(SyncConflict.created_at.desc(), SyncConflict.id.desc()).limit(limit + 1)
    rows = list((await session.execute(query)).scalars())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id)
    return ConflictPage(items=[conflict_out(r) for r in rows], next_cursor=next_cursor)


async def _find(
    session: AsyncSession, principal: Principal, conflict_id: uuid.UUID, *, lock: bool = False
) -> SyncConflict:
    query = _visible(principal).where(SyncConflict.id == conflict_id)
    if lock:
        query = query.with_for_update()
    row = (await session.execute(query)).scalar_one_or_none()
    if row is None:
        raise NotFound("conflict not found")
    return row


async def get_conflict(
    resources: Resources, principal: Principal, conflict_id: uuid.UUID
) -> ConflictOut:
    async with resources.sessions() as session:
        return conflict_out(await _find(session, principal, conflict_id))


# ------------------------------------------------------------------ resolving
def _refuse_resolved(row: SyncConflict) -> None:
    if row.resolved_at is not None:
        raise Conflict(
            "the conflict is already resolved",
            code="already_resolved",
            details={
                "resolution": row.resolution,
                "resolved_at": row.resolved_at.isoformat(),
                "resolved_by": row.resolved_by,
                "resolved_version": row.resolved_version,
            },
        )


async def _mark(
    session: AsyncSession,
    row: SyncConflict,
    principal: Principal,
    resolution: str,
    version: int | None,
) -> None:
    await session.execute(
        update(SyncConflict)
        .where(SyncConflict.id == row.id, SyncConflict.customer_id == row.customer_id)
        .values(
            resolved_at=text("now()"),
            resolved_by=principal.origin().updated_by,
            resolution=resolution,
            resolved_version=version,
        )
    )


async def _reapply(
    changes: ChangeSet, row: SyncConflict, principal: Principal, base_version: int | None
) -> None:
    """Inside the tenant's write transaction: check, write, mark resolved."""
    entity_type = EntityType(row.entity_type)
    found = await changes.own(row.entity_id, entity_type)
    current = found.version if found is not None else 0
    if row.op == "delete" and (found is None or found.deleted):
        # Already gone: the losing intent holds, as push treats it. No new version.
        await _mark(changes.session, row, principal, "reapplied", current or None)
        return
    base = base_version if base_version is not None else (row.server_version or 0)
    if base != current:
        envelopes = await current_envelopes(changes.session, changes.customer_id, [row.entity_id])
        raise Conflict(
            f"the {entity_type.value} changed since base_version {base}; "
            "nothing was written and the conflict stays open",
            code="version_conflict",
            details={"current_version": current, "server": envelopes.get(row.entity_id)},
        )
    if row.op == "delete":
        await changes.delete(entity_type, row.entity_id)
    else:
        await changes.upsert(entity_type, row.entity_id, dict(row.data or {}))
    # The versions `record` allocates next (the counter row is locked).
    version = changes.first_version + len(changes.changes) - 1
    await _mark(changes.session, row, principal, "reapplied", version)


async def resolve_conflict(
    resources: Resources, principal: Principal, conflict_id: uuid.UUID, request: ResolveRequest
) -> ConflictOut:
    """Resolve one open conflict; 409 `already_resolved` if it is not open."""
    if request.resolution == "accept_server":
        async with unit_of_work(resources.sessions) as session:
            row = await _find(session, principal, conflict_id, lock=True)
            _refuse_resolved(row)
            await _mark(session, row, principal, "accepted_server", None)
    else:

        async def build(changes: ChangeSet) -> None:
            row = await _find(changes.session, principal, conflict_id, lock=True)
            _refuse_resolved(row)
            await _reapply(changes, row, principal, request.base_version)

        await write(resources, principal, build)
    return await get_conflict(resources, principal, conflict_id)


# ------------------------------------------------------------------ retention
async def prune_conflicts(session: AsyncSession, before: datetime) -> int:
    """Remove every tenant's conflicts recorded before `before`, open or
    resolved (the journal rows they point at age out alike); the caller's
    transaction commits. Returns how many went."""
    result = await session.execute(delete(SyncConflict).where(SyncConflict.created_at < before))
    return int(getattr(result, "rowcount", 0) or 0)
