"""`/api/v1/operations`: drone operations at venues, linked to kits and drones."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from pydantic import Field

from api.auth.deps import Reader, Writer, tenant_of
from api.core.errors import NotFound
from api.core.pagination import Cursor, Page, after_id, page
from api.journal.entities import EntityData, EntityType, OperationData, OperationStatus, Properties
from api.journal.route import V1Route
from api.journal.schemas import Written
from api.journal.storable import FilterDatetime, StorableDatetime
from api.journal.writes import create_entity, patch_entity
from graph import reads

router = APIRouter(prefix="/operations", tags=["operations"], route_class=V1Route)


class OperationCreate(OperationData):
    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "venue_id": "0b6f2c1e-4c8e-4a43-9a55-4f1f1f3b2a10",
                    "status": "active",
                    "name": "Night patrol",
                    "kind": "patrol",
                    "started_at": "2026-11-21T22:00:00Z",
                }
            ]
        }
    }
    id: uuid.UUID | None = None


class OperationPatch(EntityData):
    status: OperationStatus | None = None
    name: str | None = Field(None, max_length=200)
    kind: str | None = Field(None, max_length=50)
    started_at: StorableDatetime | None = None
    ended_at: StorableDatetime | None = None
    kit_id: uuid.UUID | None = None
    drone_ids: list[uuid.UUID] | None = Field(None, max_length=100)
    summary: str | None = Field(None, max_length=5000)
    properties: Properties | None = None


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=Written,
    summary="Create an operation at a venue",
)
async def create_operation(
    body: OperationCreate, request: Request, principal: Writer
) -> dict[str, Any]:
    return await create_entity(
        request.app.state.resources,
        principal,
        EntityType.operation,
        body.id,
        body.model_dump(mode="json", exclude={"id"}),
    )


@router.get(
    "", response_model=Page, summary="List operations by venue, kit, drone, status or start time"
)
async def list_operations(
    request: Request,
    principal: Reader,
    venue_id: uuid.UUID | None = None,
    kit_id: uuid.UUID | None = None,
    drone_id: uuid.UUID | None = None,
    status: OperationStatus | None = None,
    started_after: Annotated[FilterDatetime | None, Query()] = None,
    started_before: Annotated[FilterDatetime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Cursor = None,
) -> Page:
    items = await reads.list_operations(
        request.app.state.resources.graph,
        str(tenant_of(principal)),
        limit=limit,
        after=after_id(cursor),
        venue_id=str(venue_id) if venue_id else None,
        kit_id=str(kit_id) if kit_id else None,
        drone_id=str(drone_id) if drone_id else None,
        status=status.value if status else None,
        started_after=started_after,
        started_before=started_before,
    )
    return page(items, limit)


@router.get("/{operation_id}", summary="Get an operation")
async def get_operation(
    operation_id: uuid.UUID, request: Request, principal: Reader
) -> dict[str, Any]:
    found = await reads.get_operation(
        request.app.state.resources.graph, str(tenant_of(principal)), str(operation_id)
    )
    if found is None:
        raise NotFound("operation not found")
    return found


@router.patch("/{operation_id}", response_model=Written, summary="Change an operation")
async def patch_operation(
    operation_id: uuid.UUID,
    body: OperationPatch,
    request: Request,
    principal: Writer,
    base_version: Annotated[int | None, Query(ge=0)] = None,
) -> dict[str, Any]:
    return await patch_entity(
        request.app.state.resources,
        principal,
        EntityType.operation,
        operation_id,
        body.model_dump(mode="json", exclude_unset=True),
        base_version,
    )
