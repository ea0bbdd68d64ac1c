"""`/api/v1/sync/scope`: which venues a workstation syncs (protocol version 2)."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth.deps import Syncer
from api.core.deps import ResourcesDep
from api.journal.route import V1Route
from api.sync.scope import clear_scope, get_scope, put_scope
from api.sync.scope_schemas import ScopeAnswer, ScopeRequest

router = APIRouter(prefix="/sync", tags=["sync"], route_class=V1Route)

_SCOPE_ERRORS: dict[int | str, dict[str, str]] = {
    403: {"description": "not a workstation key"},
    422: {"description": "`unknown_venue`, `bad_cursor` or a malformed body: nothing changed"},
}


@router.put(
    "/scope",
    response_model=ScopeAnswer,
    summary="Sync only some venues: pull, bootstrap and the feed carry just them",
    description=(
        "Sets the workstation's scope to `venues` (plus the tenant's kits and drones). The "
        "answer's `cursor` is where to pull from next: added venues arrive whole in that pull "
        "(backfill), entities of dropped venues arrive as removals (`op: delete`, "
        "`out_of_scope: true`), and nothing the client already holds is sent again. Later, an "
        "entity that moves out of the scope arrives as a removal, one that moves in arrives "
        "whole. Safe to retry: resending a request whose answer was lost gets the same answer. "
        "Send the `scope_version` of the last answer you hold."
    ),
    responses=_SCOPE_ERRORS,
)
async def put_scope_endpoint(
    body: ScopeRequest, principal: Syncer, resources: ResourcesDep
) -> ScopeAnswer:
    return await put_scope(resources, principal, body)


@router.get(
    "/scope",
    response_model=ScopeAnswer,
    summary="The workstation's scope (`venues` null: the whole tenant)",
    responses={403: _SCOPE_ERRORS[403]},
)
async def get_scope_endpoint(principal: Syncer, resources: ResourcesDep) -> ScopeAnswer:
    return await get_scope(resources, principal)


@router.delete(
    "/scope",
    response_model=ScopeAnswer,
    summary="Sync the whole tenant again; pull from the answered cursor (0)",
    responses={403: _SCOPE_ERRORS[403]},
)
async def delete_scope_endpoint(principal: Syncer, resources: ResourcesDep) -> ScopeAnswer:
    return await clear_scope(resources, principal)
