"""Scopes (protocol version 2): a workstation syncs a few venues, not the whole tenant.

A scope is a set of venues; the tenant-wide kits and drones are always in it
(the pseudo-venue `TENANT_WIDE`). Per venue of a scope the server keeps:

- `floor`: the workstation holds the current state of every entity of the
  venue at or below this version, so pull never sends those again;
- `added`: the head when the venue joined the scope. Tombstones and exits at
  or below it concern entities the workstation never held, so they are not sent.

`PUT /sync/scope` turns a new venue set into floors and answers a rewound
cursor: a venue added has floor 0, so the pull from the rewound cursor
delivers its whole current state (its backfill) while kept venues, floored
at the client's cursor, send nothing twice. A venue dropped turns into one
pending removal per live entity (`sync_scope_removals`, at the entity's
version), handed out by pull in version order. An entity that moves out of a
scope's venue is journaled as an exit by the `sync_entities` trigger
(migration 0013) and handed out as a removal too. Pull is therefore still
stateless and retry-safe: it reads only what PUT stored.

Floors are raised only on a cursor the server can trust: the request names
the `scope_version` of the last answer the client holds. If that is not the
current one (the previous answer was lost), the client's cursor may belong to
an older scope, so floors stay where they are: the pull re-sends more, never
less. An identical retry gets the stored answer.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.core.errors import Forbidden, Invalid
from api.core.resources import Resources
from api.journal.status import committed_head
from api.sync.scope_schemas import ScopeAnswer, ScopeRequest
from relational.database import unit_of_work
from relational.models.scopes import TENANT_WIDE

_STORED = text(
    "SELECT scope_version, last_request, last_answer FROM sync_scopes "
    "WHERE workstation_id = :w AND customer_id = :c FOR UPDATE"
)
_VENUES = text(
    "SELECT venue_id, floor, added FROM sync_scope_venues WHERE workstation_id = :w "
    "AND customer_id = :c"
)
# A venue deleted or merged away since the client last heard is still known
# (its tombstone): a client resending its scope is not refused for it.
_KNOWN = text(
    "SELECT entity_id FROM sync_entities WHERE customer_id = :c AND entity_type = 'venue' "
    "AND entity_id = ANY(:ids)"
)
_CLEAR_VENUES = text("DELETE FROM sync_scope_venues WHERE workstation_id = :w AND customer_id = :c")
_SET_VENUES = text(
    "INSERT INTO sync_scope_venues (workstation_id, venue_id, customer_id, floor, added) "
    "SELECT :w, v, :c, f, a FROM unnest(CAST(:venues AS uuid[]), CAST(:floors AS bigint[]), "
    "CAST(:added AS bigint[])) AS t(v, f, a)"
)
# Removals the client has pulled past (only on a trusted cursor).
_FORGET_REMOVALS = text(
    "DELETE FROM sync_scope_removals WHERE workstation_id = :w AND customer_id = :c "
    "AND version <= :upto"
)
_CLEAR_REMOVALS = text(
    "DELETE FROM sync_scope_removals WHERE workstation_id = :w AND customer_id = :c"
)
# One removal per entity of the dropped venues the client may hold, at its
# current version: every live one, and those deleted after the cursor it
# presented (it may not have pulled their tombstone yet).
_REMOVE_DROPPED = text(
    "INSERT INTO sync_scope_removals (workstation_id, version, entity_id, customer_id, "
    "entity_type) SELECT :w, e.version, e.entity_id, :c, e.entity_type FROM sync_entities e "
    "WHERE e.customer_id = :c AND (NOT e.deleted OR e.version > :held) "
    "AND e.venue_id = ANY(:venues) "
    "ON CONFLICT DO NOTHING"
)
# And those that left the dropped venues after that cursor: their exits were
# still to be pulled, and pull no longer walks a dropped venue's exits.
_REMOVE_EXITED = text(
    "INSERT INTO sync_scope_removals (workstation_id, version, entity_id, customer_id, "
    "entity_type) SELECT :w, x.version, x.entity_id, :c, x.entity_type FROM sync_scope_exits x "
    "WHERE x.customer_id = :c AND x.venue_id = ANY(:venues) AND x.version > :held "
    "ON CONFLICT DO NOTHING"
)
# Leaving the whole tenant for a scope: everything outside the kept venues.
_REMOVE_OUTSIDE = text(
    "INSERT INTO sync_scope_removals (workstation_id, version, entity_id, customer_id, "
    "entity_type) SELECT :w, e.version, e.entity_id, :c, e.entity_type FROM sync_entities e "
    "WHERE e.customer_id = :c AND (NOT e.deleted OR e.version > :held) "
    "AND e.venue_id <> ALL(:venues) "
    "ON CONFLICT DO NOTHING"
)
_PENDING = text(
    "SELECT count(*) AS n, min(version) AS first FROM sync_scope_removals "
    "WHERE workstation_id = :w AND customer_id = :c"
)
_SAVE = text(
    "INSERT INTO sync_scopes (workstation_id, customer_id, scope_version, last_request, "
    "last_answer, updated_at) VALUES (:w, :c, :version, CAST(:request AS jsonb), "
    "CAST(:answer AS jsonb), now()) ON CONFLICT (workstation_id) DO UPDATE SET "
    "scope_version = excluded.scope_version, last_request = excluded.last_request, "
    "last_answer = excluded.last_answer, updated_at = now()"
)


def _workstation(principal: Principal) -> tuple[uuid.UUID, uuid.UUID]:
    """The workstation and its tenant."""
    if principal.workstation_id is None or principal.customer_id is None:
        raise Forbidden("a scope belongs to a workstation: use the workstation's key")
    return principal.workstation_id, principal.customer_id


async def _lock_workstation(session: AsyncSession, w: uuid.UUID, c: uuid.UUID) -> Any:
    """The stored scope row, locked; the first scope change inserts it first so
    two concurrent first PUTs of one workstation still serialise."""
    await session.execute(
        text(
            "INSERT INTO sync_scopes (workstation_id, customer_id, scope_version, last_request, "
            "last_answer) VALUES (:w, :c, 0, '{}'::jsonb, '{}'::jsonb) ON CONFLICT DO NOTHING"
        ),
        {"w": w, "c": c},
    )
    return (await session.execute(_STORED, {"w": w, "c": c})).one()


async def put_scope(
    resources: Resources, principal: Principal, request: ScopeRequest
) -> ScopeAnswer:
    """Store the scope `request` asks for and answer the cursor to pull from."""
    w, c = _workstation(principal)
    venues = sorted(set(request.venues))
    wire = {
        "venues": [str(v) for v in venues],
        "cursor": request.cursor,
        "scope_version": request.scope_version,
    }
    async with unit_of_work(resources.sessions) as session:
        stored = await _lock_workstation(session, w, c)
        if stored.last_request == wire:  # a retry whose answer was lost
            return ScopeAnswer.model_validate(stored.last_answer)
        known = {r.entity_id for r in (await session.execute(_KNOWN, {"c": c, "ids": venues}))}
        unknown = [str(v) for v in venues if v not in known]
        if unknown:
            raise Invalid(
                "the scope names venues this tenant does not have",
                code="unknown_venue",
                details=[{"loc": ["body", "venues"], "msg": f"unknown: {unknown[:20]}"}],
            )
        head = await committed_head(session, c)
        cursor = request.cursor
        if cursor > head:
            raise Invalid(
                "cursor is ahead of every version this tenant has",
                code="bad_cursor",
                details=[{"loc": ["body", "cursor"], "msg": f"at most {head}"}],
            )
        trusted = request.scope_version == stored.scope_version
        held = cursor if trusted else 0  # the client holds every change up to it
        old = {
            r.venue_id: (int(r.floor), int(r.added))
            for r in (await session.execute(_VENUES, {"w": w, "c": c})).all()
        }
        floors: dict[uuid.UUID, tuple[int, int]] = {}
        if not old:
            # From the whole tenant: the client holds everything up to its cursor.
            for venue in [TENANT_WIDE, *venues]:
                floors[venue] = (held, held)
        else:
            for venue in [TENANT_WIDE, *venues]:
                if venue in old:
                    floor, added = old[venue]
                    floors[venue] = (max(floor, cursor) if trusted else floor, added)
                else:
                    floors[venue] = (0, head)
        if trusted:
            await session.execute(_FORGET_REMOVALS, {"w": w, "c": c, "upto": cursor})
        dropped = [v for v in old if v not in floors]
        # Leaving the whole tenant: everything outside the scope goes, unless the
        # client holds nothing (cursor 0 of a workstation never scoped before;
        # after `DELETE /sync/scope` a client still holds what it had).
        if not old and (cursor > 0 or not trusted or stored.scope_version > 0):
            outside = {"w": w, "c": c, "venues": list(floors), "held": held}
            await session.execute(_REMOVE_OUTSIDE, outside)
        elif dropped:
            removed = {"w": w, "c": c, "venues": dropped, "held": held}
            await session.execute(_REMOVE_DROPPED, removed)
            await session.execute(_REMOVE_EXITED, removed)
        await session.execute(_CLEAR_VENUES, {"w": w, "c": c})
        await session.execute(
            _SET_VENUES,
            {
                "w": w,
                "c": c,
                "venues": list(floors),
                "floors": [f for f, _ in floors.values()],
                "added": [a for _, a in floors.values()],
            },
        )
        pending = (await session.execute(_PENDING, {"w": w, "c": c})).one()
        rewound = min([cursor, *(f for f, _ in floors.values())])
        if pending.first is not None:
            rewound = min(rewound, int(pending.first) - 1)
        answer = ScopeAnswer(
            venues=venues,
            scope_version=int(stored.scope_version) + 1,
            cursor=max(rewound, 0),
            added=[v for v in venues if v not in old] if old else [],
            dropped=[v for v in dropped if v != TENANT_WIDE],
            removals=int(pending.n),
        )
        await _save(session, w, c, answer, wire)
    return answer


async def clear_scope(resources: Resources, principal: Principal) -> ScopeAnswer:
    """Back to the whole tenant: the client pulls again from 0 (kept entities
    arrive again unchanged, the rest arrives whole)."""
    w, c = _workstation(principal)
    async with unit_of_work(resources.sessions) as session:
        stored = await _lock_workstation(session, w, c)
        await session.execute(_CLEAR_VENUES, {"w": w, "c": c})
        await session.execute(_CLEAR_REMOVALS, {"w": w, "c": c})
        answer = ScopeAnswer(venues=None, scope_version=int(stored.scope_version) + 1, cursor=0)
        await _save(session, w, c, answer, {"venues": None})
    return answer


async def get_scope(resources: Resources, principal: Principal) -> ScopeAnswer:
    w, c = _workstation(principal)
    async with resources.sessions() as session:
        stored = (
            await session.execute(
                text(
                    "SELECT scope_version, last_answer FROM sync_scopes "
                    "WHERE workstation_id = :w AND customer_id = :c"
                ),
                {"w": w, "c": c},
            )
        ).first()
        venues = [
            r.venue_id
            for r in (await session.execute(_VENUES, {"w": w, "c": c})).all()
            if r.venue_id != TENANT_WIDE
        ]
        pending = (await session.execute(_PENDING, {"w": w, "c": c})).one()
    if stored is None or not stored.last_answer:
        return ScopeAnswer(venues=None, scope_version=0, cursor=0)
    scoped = stored.last_answer.get("venues") is not None
    return ScopeAnswer(
        venues=sorted(venues) if scoped else None,
        scope_version=int(stored.scope_version),
        cursor=int(stored.last_answer.get("cursor", 0)),
        removals=int(pending.n),
    )


async def _save(
    session: AsyncSession,
    w: uuid.UUID,
    c: uuid.UUID | None,
    answer: ScopeAnswer,
    wire: dict[str, Any],
) -> None:
    await session.execute(
        _SAVE,
        {
            "w": w,
            "c": c,
            "version": answer.scope_version,
            "request": json.dumps(wire),
            "answer": answer.model_dump_json(),
        },
    )
