"""`/api/v1/sync` routes of the health feature (protocol version 2)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from api.auth.deps import KeyManager, tenant_of
from api.core.pagination import Cursor, after_uuid, id_cursor
from api.journal.route import V1Route
from api.sync.health import workstations_health
from api.sync.schemas import WorkstationHealthPage

router = APIRouter(prefix="/sync", tags=["sync"], route_class=V1Route)


@router.get(
    "/workstations",
    response_model=WorkstationHealthPage,
    summary="Sync health of the tenant's workstations: last push and pull, lag, expiry, scope",
    description=(
        "One item per workstation of the tenant (deactivated ones included), ordered by id, "
        "read from Postgres alone (answers while Neo4j is down).\n\n"
        "- `last_push_at`: when the server processed its newest mutation; `last_pull_at` and "
        "`cursor`: its last pull and the cursor that pull answered.\n"
        "- `versions_behind`: the tenant's committed head (`head`) minus `cursor`.\n"
        "- `cursor_expires_at`: the earliest moment `overwatch prune`, run with "
        "TOMBSTONE_RETENTION_DAYS, could prune a delete the workstation has not pulled, after "
        "which a pull from its cursor answers 410 and it must bootstrap again. Computed as "
        "(the earlier of `last_pull_at` and the journal time of version `cursor + 1`) + "
        "TOMBSTONE_RETENTION_DAYS; if that journal row was already pruned, now. For a "
        "scoped workstation `cursor` there is the lowest position one of its venues is read "
        "from, GREATEST(cursor, venue floor, version when the venue was added), as pull "
        "judges it. "
        "`days_until_expiry` is the days left (0 once passed). Both null for a workstation "
        "that never pulled or whose cursor is 0 (a pull from 0 never expires). A prune run "
        "with a shorter `--sync-days` expires cursors sooner.\n"
        "- `expired`: its cursor is already below the tenant's pruned horizon (next pull: 410).\n"
        "- `scope`: the venues it syncs and the `scope_version` (protocol version 2), null "
        "when it syncs the whole tenant.\n\n"
        "Customer keys only: a workstation key gets 403 (it reads its own health in "
        "`GET /sync/status`, field `workstation`)."
    ),
    responses={403: {"description": "not a customer key (workstation and analyst keys)"}},
)
async def list_workstation_health(
    request: Request,
    principal: KeyManager,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Cursor = None,
) -> WorkstationHealthPage:
    resources = request.app.state.resources
    async with resources.sessions() as session:
        items = await workstations_health(
            session, resources.settings, tenant_of(principal), limit=limit, after=after_uuid(cursor)
        )
    return WorkstationHealthPage(
        items=items, next_cursor=id_cursor(items[-1].id) if len(items) == limit else None
    )
