"""`/api/v1/venues`: venues in the knowledge graph."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from pydantic import Field

from api.auth.deps import Reader, Writer, tenant_of
from api.entities import EntityData, EntityType, Location, Properties, Tag, Text200, VenueData
from api.errors import Invalid, NotFound
from api.pagination import Cursor, after_id
from api.world.schemas import Deleted, Page, Written, page
from api.world.service import create_entity, delete_entity, patch_entity
from graph import reads

router = APIRouter(prefix="/venues", tags=["venues"])

VENUE_EXAMPLE: dict[str, Any] = {
    "name": "Harbour Mall",
    "address": "1 Quay Street, Auckland",
    "description": "Three-level shopping centre with a rooftop car park.",
    "tags": ["mall", "retail"],
    "location": {"latitude": -36.8435, "longitude": 174.7669},
    "properties": {"levels": 3, "operator": "Harbour Estates"},
}


class VenueCreate(VenueData):
    model_config = {"json_schema_extra": {"examples": [VENUE_EXAMPLE]}}
    id: uuid.UUID | None = Field(None, description="Client-generated id (optional).")


class VenuePatch(EntityData):
    """Fields to change; omitted fields keep their value, null clears optional ones."""

    name: Text200 | None = None
    address: str | None = Field(None, max_length=500)
    description: str | None = Field(None, max_length=5000)
    tags: list[Tag] | None = Field(None, max_length=50)
    location: Location | None = None
    properties: Properties | None = None


def _resources(request: Request) -> Any:
    return request.app.state.resources


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=Written, summary="Create a venue"
)
async def create_venue(body: VenueCreate, request: Request, principal: Writer) -> dict[str, Any]:
    return await create_entity(
        _resources(request),
        principal,
        EntityType.venue,
        body.id,
        body.model_dump(mode="json", exclude={"id"}),
    )


@router.get("", response_model=Page, summary="List venues (filters: tag, text, near a point)")
async def list_venues(
    request: Request,
    principal: Reader,
    tag: Annotated[str | None, Query(max_length=50)] = None,
    q: Annotated[
        str | None, Query(max_length=200, description="Text in name, description or address")
    ] = None,
    lat: Annotated[float | None, Query(ge=-90, le=90)] = None,
    lon: Annotated[float | None, Query(ge=-180, le=180)] = None,
    radius_m: Annotated[float | None, Query(gt=0, le=20_000_000)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Cursor = None,
) -> Page:
    given = [v is not None for v in (lat, lon, radius_m)]
    if any(given) and not all(given):
        raise Invalid(
            "lat, lon and radius_m go together",
            details=[{"loc": ["query", "radius_m"], "msg": "give all three"}],
        )
    near = None
    if lat is not None and lon is not None and radius_m is not None:
        near = {"lat": lat, "lon": lon, "radius_m": radius_m}
    items = await reads.list_venues(
        _resources(request).graph,
        str(tenant_of(principal)),
        limit=limit,
        after=after_id(cursor),
        tag=tag,
        text=q,
        near=near,
    )
    return page(items, limit)


@router.get("/{venue_id}", summary="Get a venue")
async def get_venue(venue_id: uuid.UUID, request: Request, principal: Reader) -> dict[str, Any]:
    found = await reads.get_venue(
        _resources(request).graph, str(tenant_of(principal)), str(venue_id)
    )
    if found is None:
        raise NotFound("venue not found")
    return found


@router.patch("/{venue_id}", response_model=Written, summary="Change some fields of a venue")
async def patch_venue(
    venue_id: uuid.UUID,
    body: VenuePatch,
    request: Request,
    principal: Writer,
    base_version: Annotated[
        int | None,
        Query(ge=0, description="If given, refuse with 409 when the venue changed since"),
    ] = None,
) -> dict[str, Any]:
    return await patch_entity(
        _resources(request),
        principal,
        EntityType.venue,
        venue_id,
        body.model_dump(mode="json", exclude_unset=True),
        base_version,
    )


@router.delete(
    "/{venue_id}",
    response_model=Deleted,
    summary="Delete a venue with its world model (operations are kept as history)",
)
async def delete_venue(venue_id: uuid.UUID, request: Request, principal: Writer) -> Deleted:
    return await delete_entity(_resources(request), principal, EntityType.venue, venue_id)


@router.get("/{venue_id}/graph", summary="The venue's subgraph for a viewer (capped)")
async def get_venue_graph(
    venue_id: uuid.UUID,
    request: Request,
    principal: Reader,
    limit: Annotated[int, Query(ge=1, le=2000, description="At most this many nodes")] = 500,
) -> dict[str, Any]:
    graph = _resources(request).graph
    customer = str(tenant_of(principal))
    venue = await reads.get_venue(graph, customer, str(venue_id))
    if venue is None:
        raise NotFound("venue not found")
    sub = await reads.venue_graph(graph, customer, str(venue_id), limit)
    return {
        "venue": venue,
        **(sub or {"nodes": [], "edges": [], "total_nodes": 0, "truncated": False}),
    }
