"""`POST /sync/push`: per-mutation outcomes through the one write path.

One Postgres transaction per push: lock the tenant's counter row, look up the
outcomes this workstation already holds (retries), then judge each mutation
in order — duplicate, conflict, rejected or applied — so one bad mutation
never aborts the others. Applied changes are journaled together and every
outcome is stored for retries. Neo4j runs the applied changes while the
transaction commits and commits only after it (api/journal/,
`TenantTransaction`; DESIGN.md §4).

Conflict rule: a mutation whose `base_version` differs from the entity's
current version is a conflict and carries the server's envelope, unless
- `force` is set (last writer wins), or
- an earlier mutation of the same push touched the entity (the workstation's
  own edit), or
- it is a venue upsert whose changed fields are disjoint from the fields
  changed on the server since `base_version` (each key of `properties`
  counts as its own field): the two edits are merged without loss.
A delete of an entity that is already deleted is applied as a no-op.
"""

from __future__ import annotations

import json
import uuid
from itertools import pairwise
from typing import Any

import orjson
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.core.errors import Conflict, Forbidden, Invalid, NotFound, PayloadTooLarge
from api.core.resources import Resources
from api.journal.changes import ChangeRejected, ChangeSet
from api.journal.entities import (
    ID_RACE_ATTEMPTS,
    PUSHABLE_TYPES,
    EntityType,
    canonical,
    id_taken_concurrently,
    parse_data,
)
from api.journal.envelopes import current_envelopes
from api.journal.record import Origin
from api.journal.storable import printable
from api.journal.transaction import tenant_transaction
from api.sync.conflicts import record_conflicts
from api.sync.schemas import SUPPORTED_PROTOCOLS, Mutation, PushRequest, PushResponse
from api.sync.workstations import CHECKPOINT_SQL, LAST_MUTATION_SQL

_HELD = text(
    "SELECT mutation_id, status, version, result FROM sync_mutations "
    "WHERE workstation_id = :w AND mutation_id = ANY(:ids)"
)
_STORE_OUTCOMES = text(
    "INSERT INTO sync_mutations (workstation_id, mutation_id, customer_id, status, version, "
    "result) SELECT :w, r.mutation_id, :c, r.status, r.version, r.result::jsonb FROM unnest("
    "CAST(:mutation_ids AS bigint[]), CAST(:statuses AS text[]), CAST(:versions AS bigint[]), "
    "CAST(:results AS text[])) AS r(mutation_id, status, version, result)"
)
_BASE_STATE = text(
    "SELECT payload FROM sync_journal WHERE customer_id = :c AND entity_id = :i "
    "AND version = :v AND op = 'upsert'"
)
# The workstation, its last mutation id and its write checkpoint in one round trip.
_WORKSTATION = text(
    "SELECT w.deactivated_at,"  # noqa: S608 (constant SQL)
    f" COALESCE(({LAST_MUTATION_SQL}), 0) AS last_mutation,"
    f" COALESCE(({CHECKPOINT_SQL}), 0) AS checkpoint"
    " FROM workstations w WHERE w.id = :w AND w.customer_id = :c"
)


def _rejected(mutation: Mutation, code: str, message: str, details: Any = None) -> dict[str, Any]:
    # Outcomes are stored as jsonb, which holds no NUL: never echo one back raw.
    error: dict[str, Any] = {"code": code, "message": printable(message)}
    if details is not None:
        error["details"] = printable(details)
    return {"mutation_id": mutation.mutation_id, "status": "rejected", "error": error}


def _fields(data: dict[str, Any]) -> dict[str, Any]:
    """A venue's comparable fields; each `properties` key is a field of its own."""
    flat = {k: v for k, v in data.items() if k != "properties"}
    flat |= {f"properties.{k}": v for k, v in (data.get("properties") or {}).items()}
    return flat


def merge_venue(
    base: dict[str, Any], server: dict[str, Any], client: dict[str, Any]
) -> dict[str, Any] | None:
    """The merged venue, or None when both sides changed a common field."""
    b, s, c = _fields(base), _fields(server), _fields(client)
    keys = set(b) | set(s) | set(c)
    client_changed = {k for k in keys if c.get(k) != b.get(k)}
    server_changed = {k for k in keys if s.get(k) != b.get(k)}
    if client_changed & server_changed:
        return None
    merged = {k: v for k, v in s.items() if k not in client_changed}
    merged |= {k: c[k] for k in client_changed if k in c}
    out = {k: v for k, v in merged.items() if not k.startswith("properties.")}
    out["properties"] = {
        k.split(".", 1)[1]: v for k, v in merged.items() if k.startswith("properties.")
    }
    return out


class PushJudge:
    """Judges the mutations of one push, in order, inside its transaction."""

    def __init__(
        self,
        session: AsyncSession,
        resources: Resources,
        customer_id: uuid.UUID,
        first_version: int,
    ) -> None:
        self.session = session
        self.customer_id = customer_id
        self.changes = ChangeSet(session, resources.settings, customer_id, first_version)
        self.touched: set[uuid.UUID] = set()
        # result dict -> index of its change in self.changes.changes (for the version)
        self.versioned: list[tuple[dict[str, Any], int]] = []
        # conflict results whose `server` envelope is filled in after journaling,
        # so it shows what earlier mutations of this push did to the entity;
        # with their mutations, kept in the conflict inbox (api/sync/conflicts.py)
        self.conflicts: list[tuple[dict[str, Any], Mutation]] = []

    async def judge(self, mutation: Mutation) -> dict[str, Any]:
        entity_type = EntityType(mutation.type)
        if entity_type not in PUSHABLE_TYPES:
            return _rejected(
                mutation, "read_only_type", f"{mutation.type} is read-only for workstations"
            )
        state = await self.changes.state(mutation.id)
        if state is not None and (
            state.customer_id != self.customer_id or state.entity_type != entity_type.value
        ):
            return _rejected(mutation, "id_in_use", f"id {mutation.id} is already in use")
        own_edit = mutation.id in self.touched
        stale = (
            state is not None
            and not own_edit
            and not mutation.force
            and mutation.base_version != state.version
        )
        try:
            if mutation.op == "delete":
                return await self._delete(mutation, entity_type, state, stale)
            return await self._upsert(mutation, entity_type, state, stale)
        except ChangeRejected as exc:
            return _rejected(mutation, exc.code, exc.message, exc.details)

    def _conflict(self, mutation: Mutation) -> dict[str, Any]:
        result = {"mutation_id": mutation.mutation_id, "status": "conflict", "server": None}
        self.conflicts.append((result, mutation))
        return result

    async def fill_conflicts(self) -> None:
        """After `record`: each conflict's `server` is the entity's state now."""
        ids = list({mutation.id for _, mutation in self.conflicts})
        envelopes = await current_envelopes(self.session, self.customer_id, ids)
        for result, mutation in self.conflicts:
            result["server"] = envelopes.get(mutation.id)

    def _applied(self, mutation: Mutation, **extra: Any) -> dict[str, Any]:
        result = {"mutation_id": mutation.mutation_id, "status": "applied", **extra}
        self.versioned.append((result, len(self.changes.changes) - 1))
        self.touched.add(mutation.id)
        return result

    async def _upsert(
        self, mutation: Mutation, entity_type: EntityType, state: Any, stale: bool
    ) -> dict[str, Any]:
        if mutation.data is None:
            return _rejected(mutation, "invalid_data", "an upsert needs `data`")
        data = mutation.data
        merged = False
        if stale:
            if state.deleted or entity_type is not EntityType.venue:
                return self._conflict(mutation)
            combined = await self._merge_venue(mutation, state.data or {})
            if combined is None:
                return self._conflict(mutation)
            data, merged = combined, True
        await self.changes.upsert(entity_type, mutation.id, data, mutation_id=mutation.mutation_id)
        return self._applied(mutation, merged=True) if merged else self._applied(mutation)

    async def _merge_venue(
        self, mutation: Mutation, server: dict[str, Any]
    ) -> dict[str, Any] | None:
        base = (
            await self.session.execute(
                _BASE_STATE, {"c": self.customer_id, "i": mutation.id, "v": mutation.base_version}
            )
        ).scalar()
        if base is None:
            return None  # the base state is unknown (pruned, or never an upsert)
        try:
            client = canonical(parse_data(EntityType.venue, mutation.data or {}))
        except ValidationError:
            return None  # let the conflict stand; the data would be rejected anyway
        return merge_venue(base, server, client)

    async def _delete(
        self, mutation: Mutation, entity_type: EntityType, state: Any, stale: bool
    ) -> dict[str, Any]:
        if state is None:
            return _rejected(mutation, "not_found", f"{mutation.type} {mutation.id} does not exist")
        if state.deleted:
            # Already gone: the workstation's intent holds. No new version.
            self.touched.add(mutation.id)
            return {
                "mutation_id": mutation.mutation_id,
                "status": "applied",
                "version": state.version,
            }
        if stale:
            return self._conflict(mutation)
        await self.changes.delete(entity_type, mutation.id, mutation_id=mutation.mutation_id)
        return self._applied(mutation)


def _check_request(resources: Resources, request: PushRequest) -> None:
    if request.protocol_version not in SUPPORTED_PROTOCOLS:
        raise Conflict(
            f"protocol_version {request.protocol_version} is not supported; "
            f"this server speaks {list(SUPPORTED_PROTOCOLS)}",
            code="unsupported_protocol",
            details={"supported": list(SUPPORTED_PROTOCOLS)},
        )
    limit = resources.settings.sync_max_mutations
    if len(request.mutations) > limit:
        raise PayloadTooLarge(
            f"a push carries at most {limit} mutations",
            code="too_many_mutations",
            details={"max": limit},
        )
    ids = [m.mutation_id for m in request.mutations]
    for index, (a, b) in enumerate(pairwise(ids)):
        if b <= a:
            raise Invalid(
                "mutation ids must be strictly increasing",
                code="mutation_ids_not_increasing",
                details=[
                    {
                        "loc": ["body", "mutations", index + 1, "mutation_id"],
                        "msg": f"{b} does not follow {a}",
                    }
                ],
            )


async def _check_workstation(
    session: AsyncSession, principal: Principal, workstation_id: uuid.UUID
) -> tuple[int, int]:
    """Refuse anyone but the workstation's own key; return its last mutation id
    and write checkpoint (read under the tenant's counter lock, which every
    push of the workstation takes)."""
    # Mutation ids are the workstation's own sequence (its idempotency keys): a
    # push by any other key could consume them and turn the workstation's own
    # later mutation into a silently dropped `duplicate`. Only the workstation's
    # key pushes as it (docs/sync.md, "Who may push").
    if principal.workstation_id is None:
        raise Forbidden(
            "only a workstation's own key pushes; register a workstation "
            "(POST /auth/workstations/register) and push with its key",
            code="workstation_key_required",
        )
    if principal.workstation_id != workstation_id:
        raise Forbidden("a workstation key pushes for its own workstation only")
    deactivated = (
        await session.execute(_WORKSTATION, {"w": workstation_id, "c": principal.customer_id})
    ).first()
    if deactivated is None:
        raise NotFound("workstation not found")
    if deactivated.deactivated_at is not None:
        raise Forbidden("the workstation is deactivated", code="workstation_deactivated")
    return int(deactivated.last_mutation), int(deactivated.checkpoint)


async def push(resources: Resources, principal: Principal, request: PushRequest) -> PushResponse:
    """Judge, journal and store the outcome of every mutation; then apply to Neo4j.

    A push that lost the race for a new id to another tenant (api/journal/entities.py,
    `id_taken_concurrently`) is judged again from the start: that mutation is
    then `rejected` as `id_in_use` and the others keep their outcomes.
    """
    _check_request(resources, request)
    for attempt in range(1, ID_RACE_ATTEMPTS + 1):
        try:
            return await _push_once(resources, principal, request)
        except IntegrityError as exc:
            if not id_taken_concurrently(exc):
                raise
            if attempt == ID_RACE_ATTEMPTS:
                raise Conflict(
                    "an id of this push was taken by another writer meanwhile; "
                    "nothing was recorded, push again",
                    code="id_in_use",
                ) from exc
    raise AssertionError("unreachable")


async def _push_once(
    resources: Resources, principal: Principal, request: PushRequest
) -> PushResponse:
    assert principal.customer_id is not None
    customer_id = principal.customer_id
    workstation_id = request.workstation_id
    ids = [m.mutation_id for m in request.mutations]
    async with tenant_transaction(resources, customer_id) as tx:
        session = tx.session
        last, checkpoint = await _check_workstation(session, principal, workstation_id)
        # Outcomes are held only for mutation ids up to `last`; the usual push
        # carries only newer ones and needs no lookup.
        held = (
            {
                r.mutation_id: r
                for r in (await session.execute(_HELD, {"w": workstation_id, "ids": ids})).all()
            }
            if ids and ids[0] <= last
            else {}
        )
        judge = PushJudge(session, resources, customer_id, tx.next_version)
        refs = [m.id for m in request.mutations]
        for m in request.mutations:
            refs += [
                uuid.UUID(str(v))
                for k, v in (m.data or {}).items()
                if k in ("venue_id", "from_id", "to_id") and isinstance(v, str) and _is_uuid(v)
            ]
        await judge.changes.prefetch(refs)
        results: list[dict[str, Any]] = []
        fresh: list[dict[str, Any]] = []
        for mutation in request.mutations:
            if mutation.mutation_id in held:
                row = held[mutation.mutation_id]
                results.append({**row.result, "status": "duplicate", "original_status": row.status})
                continue
            if mutation.mutation_id <= last:
                result = _rejected(
                    mutation,
                    "mutation_id_not_increasing",
                    f"mutation_id {mutation.mutation_id} is not above the last "
                    f"one this workstation sent ({last})",
                )
            else:
                result = await judge.judge(mutation)
            results.append(result)
            fresh.append(result)
        origin = Origin(updated_by=f"workstation:{workstation_id}", workstation_id=workstation_id)
        changes = judge.changes.changes
        versions = await tx.record(changes, origin, judge.changes.absent)
        for result, index in judge.versioned:
            result["version"] = versions[index]
        await judge.fill_conflicts()
        # Kept in the inbox before the outcomes are stored: a retry's
        # `duplicate` then carries the same `conflict_id`.
        head = versions[-1] if versions else tx.next_version - 1
        await record_conflicts(session, customer_id, workstation_id, judge.conflicts, head)
        if fresh:
            await session.execute(
                _STORE_OUTCOMES,
                {
                    "w": workstation_id,
                    "c": customer_id,
                    "mutation_ids": [r["mutation_id"] for r in fresh],
                    "statuses": [r["status"] for r in fresh],
                    "versions": [r.get("version") for r in fresh],
                    "results": [_outcome_json(r) for r in fresh],
                },
            )
        # The checkpoint is the highest version of an applied outcome: the one
        # read above, or one stored just now.
        checkpoint = max([checkpoint, *(r["version"] for r in fresh if r["status"] == "applied")])
    return PushResponse.model_validate(
        {
            "results": results,
            "last_mutation_id": max([last, *ids]) if ids else last,
            "write_checkpoint": checkpoint,
        }
    )


def _outcome_json(result: dict[str, Any]) -> str:
    """`json.dumps(result, default=str)`, through orjson when it can (stored as
    jsonb, so only the values matter; datetimes still go through `str`)."""
    try:
        return orjson.dumps(
            result,
            default=str,
            option=orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS,
        ).decode()
    except TypeError:  # an integer beyond 64 bits, say
        return json.dumps(result, default=str)


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True
