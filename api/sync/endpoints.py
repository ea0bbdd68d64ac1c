"""`/api/v1/sync`: the workstation sync protocol (push, pull, bootstrap, status)."""

from __future__ import annotations

import json
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError

from api.auth.deps import Syncer
from api.core.errors import Invalid, PayloadTooLarge
from api.core.json_body import parse_json
from api.core.responses import SplicedResponse
from api.journal.route import V1Route
from api.journal.storable import MAX_DEPTH, printable
from api.sync.pull import (
    bootstrap_lines,
    bootstrap_snapshot,
    parse_after,
    parse_types,
    pull,
)
from api.sync.push import push
from api.sync.schemas import PullResponse, PushRequest, PushResponse, SyncStatus
from api.sync.status import status

router = APIRouter(prefix="/sync", tags=["sync"], route_class=V1Route)


@router.post(
    "/push",
    response_model=PushResponse,
    summary="Push a workstation's mutations; every mutation gets its own outcome",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": PushRequest.model_json_schema(
                        ref_template="#/components/schemas/{model}"
                    ),
                    "example": PushRequest.model_config["json_schema_extra"]["examples"][0],  # type: ignore[index]
                }
            },
        }
    },
    responses={
        409: {"description": "`unsupported_protocol`"},
        413: {"description": "too many mutations, or body too large"},
        422: {"description": "malformed request: nothing was recorded"},
        503: {"description": "Postgres is down: nothing was recorded"},
    },
)
async def push_endpoint(request: Request, principal: Syncer) -> PushResponse:
    settings = request.app.state.settings
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > settings.sync_max_body_bytes:
        raise PayloadTooLarge(
            "push body too large",
            code="body_too_large",
            details={"max_bytes": settings.sync_max_body_bytes},
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > settings.sync_max_body_bytes:
            raise PayloadTooLarge(
                "push body too large",
                code="body_too_large",
                details={"max_bytes": settings.sync_max_body_bytes},
            )
    try:
        parsed = PushRequest.model_validate(parse_json(body))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Invalid("the body is not JSON", code="malformed_request") from exc
    except RecursionError as exc:
        raise Invalid(
            f"the body nests deeper than JSON parsing allows; data nests at most {MAX_DEPTH}",
            code="malformed_request",
        ) from exc
    except ValidationError as exc:
        raise Invalid(
            "the push did not validate; nothing was recorded",
            code="malformed_request",
            details=printable(
                [
                    {"loc": ["body", *err["loc"]], "msg": err["msg"], "type": err["type"]}
                    for err in exc.errors()
                ]
            ),
        ) from exc
    return await push(request.app.state.resources, principal, parsed)


@router.get(
    "/pull",
    response_model=PullResponse,
    summary="Changes after `since`, up to the committed head, each entity once",
    description=(
        "Reads Postgres only and never waits for the graph projection: `frontier` is the "
        "tenant's committed head (every change up to it is handed out, even while Neo4j is "
        "down). The head, the retention bound and the page are read in one snapshot."
    ),
    responses={410: {"description": "`cursor_expired`: bootstrap again"}},
)
async def pull_endpoint(
    request: Request,
    principal: Syncer,
    since: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    types: Annotated[
        str | None, Query(max_length=200, description="Comma-separated entity types")
    ] = None,
) -> Response:
    parts = await pull(
        request.app.state.resources, principal, since=since, limit=limit, types=parse_types(types)
    )
    return SplicedResponse(parts)


@router.get(
    "/bootstrap",
    summary="A consistent starting point, streamed as NDJSON",
    description=(
        'First line `{"snapshot_version", "counts"}`, then one envelope per line '
        '(parents before children), last line `{"end": true, "count", "checksum"}` where '
        "checksum is `sha256:` over the envelope lines' bytes. With `page_size`, the stream stops "
        'after that many envelopes and the last line is `{"end": false, "next": "type:id", '
        "...}`: resume with the same `snapshot_version` and `after=<next>`. Afterwards pull "
        "with `since=snapshot_version`. `snapshot_version` is the committed head: bootstrap "
        "never waits for Neo4j."
    ),
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
async def bootstrap_endpoint(
    request: Request,
    principal: Syncer,
    snapshot_version: Annotated[int | None, Query(ge=0)] = None,
    after: Annotated[str | None, Query(max_length=100)] = None,
    page_size: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
) -> StreamingResponse:
    position = parse_after(after)
    if after is not None and snapshot_version is None:
        raise Invalid(
            "resuming needs the snapshot_version of the first page",
            code="bad_position",
            details=[{"loc": ["query", "snapshot_version"], "msg": "required"}],
        )
    resources = request.app.state.resources
    snapshot = await bootstrap_snapshot(resources, principal, snapshot_version)
    lines = await bootstrap_lines(resources, principal, snapshot, position, page_size)
    return StreamingResponse(lines, media_type="application/x-ndjson")


@router.get(
    "/status",
    response_model=SyncStatus,
    summary="A workstation's last mutation, the committed head, counts, the projection's lag",
    description=(
        "`frontier` (= `version`) is the tenant's committed head. `projection` says how far "
        "the Neo4j projection (graph reads, search) is behind it: `applied_through`, "
        "`lag_versions`, `lag_seconds` and `failed` (rows Neo4j refused, isolated so later "
        "changes keep flowing). Reads Postgres only."
    ),
)
async def status_endpoint(
    request: Request, principal: Syncer, workstation_id: uuid.UUID | None = None
) -> SyncStatus:
    return await status(request.app.state.resources, principal, workstation_id)
