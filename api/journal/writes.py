"""Writing graph entities through the one write path, for REST callers."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from api.core.errors import Conflict, NotFound, OverwatchError
from api.core.resources import Resources
from api.journal.changes import ChangeRejected, ChangeSet
from api.journal.entities import ID_RACE_ATTEMPTS, EntityType, id_taken_concurrently
from api.journal.record import Author, Change, Recorded
from api.journal.schemas import Deleted
from api.journal.transaction import tenant_transaction

T = TypeVar("T")


def as_error(exc: ChangeRejected) -> OverwatchError:
    if exc.status_code == 404:
        return NotFound(exc.message, code=exc.code, details=exc.details)
    return OverwatchError(
        exc.message, code=exc.code, status_code=exc.status_code, details=exc.details
    )


async def write(
    resources: Resources,
    principal: Author,
    build: Callable[[ChangeSet], Awaitable[T]],
    preload: Sequence[uuid.UUID] = (),
) -> tuple[T, Recorded]:
    """Validate with `build`, journal its changes, commit, and apply them to Neo4j.

    Any `ChangeRejected` becomes a 4xx and nothing is written to either store.
    `preload`: ids `build` will read, loaded with the tenant's lock (one round
    trip fewer than its own `prefetch`, which then finds them loaded).
    """
    assert principal.customer_id is not None
    customer_id = principal.customer_id
    for attempt in range(1, ID_RACE_ATTEMPTS + 1):
        try:
            async with tenant_transaction(resources, customer_id, preload) as tx:
                changes = ChangeSet(tx.session, resources.settings, customer_id, tx.next_version)
                changes.load(tx.preloaded)
                changes.ahead, changes.ahead_dispatched = tx.send_ahead, tx.ahead_dispatched
                outcome = await build(changes)
                versions = await tx.record(changes.changes, principal.origin(), changes.absent)
        except ChangeRejected as exc:
            raise as_error(exc) from exc
        except IntegrityError as exc:
            # Another tenant took a new id meanwhile: build again, it now sees that.
            if not id_taken_concurrently(exc):
                raise
            if attempt == ID_RACE_ATTEMPTS:
                raise Conflict("the id is already in use", code="id_in_use") from exc
            continue
        return outcome, Recorded(versions=versions, applied=tx.applied)
    raise AssertionError("unreachable")


async def current_data(
    resources: Resources, customer_id: uuid.UUID, entity_type: str, entity_id: uuid.UUID
) -> tuple[dict[str, Any], int]:
    """The latest journaled state of a live entity (for PATCH), or 404."""
    async with resources.sessions() as session:
        row = (
            await session.execute(
                text(
                    "SELECT payload, version FROM sync_entities WHERE customer_id = :c "
                    "AND entity_type = :t AND entity_id = :i AND NOT deleted"
                ),
                {"c": customer_id, "t": entity_type, "i": entity_id},
            )
        ).first()
    if row is None:
        raise NotFound(f"{entity_type.replace('_', ' ')} not found")
    return dict(row.payload or {}), int(row.version)


async def create_entity(
    resources: Resources,
    principal: Author,
    entity_type: EntityType,
    entity_id: uuid.UUID | None,
    data: dict[str, Any],
) -> dict[str, Any]:
    """Create one entity (409 if the id exists); returns the `Written` body."""
    new_id = entity_id or uuid.uuid4()

    async def build(changes: ChangeSet) -> dict[str, Any]:
        if await changes.own(new_id, entity_type) is not None:
            raise ChangeRejected(
                "already_exists", f"a {entity_type.value} with this id exists", status_code=409
            )
        return await changes.upsert(entity_type, new_id, data)

    payload, recorded = await write(resources, principal, build)
    return {"id": new_id, "version": recorded.last_version, "applied": recorded.applied, **payload}


async def patch_entity(
    resources: Resources,
    principal: Author,
    entity_type: EntityType,
    entity_id: uuid.UUID,
    patch: dict[str, Any],
    base_version: int | None,
) -> dict[str, Any]:
    """Merge `patch` into the latest state and write it as a complete new state.

    The state is read and `base_version` compared inside the tenant's write
    transaction, under its lock: a concurrent writer's change is either already
    in the state this patch merges into, or waits until this one committed, so
    no PATCH ever writes back a stale copy of fields it did not touch.
    """
    noun = entity_type.value.replace("_", " ")

    async def build(changes: ChangeSet) -> dict[str, Any]:
        found = await changes.mine(entity_id, entity_type)
        if found is None or found.deleted:
            raise NotFound(f"{noun} not found")
        if base_version is not None and base_version != found.version:
            raise Conflict(
                f"the {entity_type.value} changed since base_version",
                code="version_conflict",
                details={"current_version": found.version},
            )
        return await changes.upsert(entity_type, entity_id, dict(found.data or {}) | patch)

    payload, recorded = await write(resources, principal, build)
    return {
        "id": entity_id,
        "version": recorded.last_version,
        "applied": recorded.applied,
        **payload,
    }


async def delete_entity(
    resources: Resources, principal: Author, entity_type: EntityType, entity_id: uuid.UUID
) -> Deleted:
    async def build(changes: ChangeSet) -> list[Change]:
        return await changes.delete(entity_type, entity_id)

    removed, recorded = await write(resources, principal, build)
    counts = Counter(change.entity_type.value for change in removed)
    return Deleted(
        id=entity_id, version=recorded.last_version, deleted=dict(counts), applied=recorded.applied
    )
