"""`/api/v1/sync/conflicts`: the conflict inbox (protocol version 2; api/sync/conflicts.py).

A customer key sees every conflict of its tenant; a workstation key its own
workstation's only. Another tenant's (or, for a workstation key, another
workstation's) conflict id answers 404.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query

from api.auth.deps import Syncer, Writer
from api.core.deps import ResourcesDep, SessionDep
from api.core.pagination import Cursor
from api.journal.route import V1Route
from api.journal.storable import FilterDatetime
from api.sync.conflicts import get_conflict, list_conflicts, resolve_conflict
from api.sync.conflicts_schemas import (
    RESOLVE_EXAMPLES,
    RESOLVED_EXAMPLE,
    ConflictOut,
    ConflictPage,
    ResolveRequest,
)

router = APIRouter(prefix="/sync", tags=["sync"], route_class=V1Route)

SyncType = Literal["venue", "world_node", "world_edge", "operation", "kit", "drone"]


@router.get(
    "/conflicts",
    response_model=ConflictPage,
    summary="The conflict inbox: conflicts answered to pushes, newest first",
    description=(
        "Every `conflict` a push answered is kept: the mutation as sent (the losing data), "
        "the server's envelope at that moment and its version, the tenant's head then, the "
        "workstation and the time. Open ones by default (`state=open`). A workstation key "
        "sees its own workstation's conflicts only. Conflicts age out with the journal's "
        "retention (`overwatch prune`)."
    ),
)
async def list_endpoint(
    session: SessionDep,
    principal: Syncer,
    workstation_id: uuid.UUID | None = None,
    entity_id: uuid.UUID | None = None,
    type: Annotated[SyncType | None, Query(description="The entity type")] = None,
    since: Annotated[
        FilterDatetime | None,
        Query(description="Recorded at or after this time (ISO 8601; no zone means UTC)"),
    ] = None,
    state: Annotated[Literal["open", "resolved", "all"], Query()] = "open",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Cursor = None,
) -> ConflictPage:
    return await list_conflicts(
        session,
        principal,
        workstation_id=workstation_id,
        entity_id=entity_id,
        entity_type=type,
        since=since,
        state=state,
        limit=limit,
        cursor=cursor,
    )


@router.get(
    "/conflicts/{conflict_id}",
    response_model=ConflictOut,
    summary="One conflict of the inbox",
)
async def get_endpoint(
    conflict_id: uuid.UUID, resources: ResourcesDep, principal: Syncer
) -> ConflictOut:
    return await get_conflict(resources, principal, conflict_id)


@router.post(
    "/conflicts/{conflict_id}/resolve",
    response_model=ConflictOut,
    summary="Resolve a conflict: accept the server's state, or re-apply the losing data",
    description=(
        '`{"resolution": "accept_server"}` marks the conflict resolved and changes no entity. '
        '`{"resolution": "reapply", "base_version": n}` writes the losing mutation (its '
        "`data`, or the delete) again through the normal write path: journaled, attributed to "
        "the resolving key (`updated_by`), and only if the entity is still at `base_version` "
        "(default: the conflict's `server_version`); otherwise 409 `version_conflict` with the "
        "current envelope in `details.server`, nothing written, the conflict still open. A "
        "write the entity rules refuse is a 4xx the same way. `resolved_version` is the "
        "version the write got. Resolving a resolved conflict: 409 `already_resolved`."
    ),
    responses={
        200: {"content": {"application/json": {"example": RESOLVED_EXAMPLE}}},
        404: {"description": "No such conflict in the caller's view (another tenant's id)"},
        409: {"description": "`already_resolved`, or `version_conflict` (reapply, stale base)"},
    },
)
async def resolve_endpoint(
    conflict_id: uuid.UUID,
    body: Annotated[ResolveRequest, Body(openapi_examples=RESOLVE_EXAMPLES)],
    resources: ResourcesDep,
    principal: Writer,
) -> ConflictOut:
    return await resolve_conflict(resources, principal, conflict_id, body)
