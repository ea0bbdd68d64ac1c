"""`/api/v1/venues`: every venue route — CRUD, the subgraph, search and similar venues,
duplicates and merges. Static paths (`/search`) come before `/{venue_id}` in this one
router, so no route-order arrangement between routers is needed."""

from __future__ import annotations

import uuid
from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, Field

from api.auth.deps import Reader, Writer, tenant_of
from api.core.deps import ResourcesDep
from api.core.errors import Invalid, NotFound
from api.core.pagination import Cursor, Page, after_id, page
from api.journal.entities import (
    EntityData,
    EntityType,
    Location,
    Properties,
    Tag,
    Text200,
    VenueData,
)
from api.journal.route import V1Route
from api.journal.schemas import Deleted, Written
from api.journal.writes import create_entity, delete_entity, patch_entity
from api.search import service as search_service
from api.search.endpoints import Limit, ModeParam, QueryText, search_response
from api.search.schemas import SearchResponse
from api.venues import merge as merging
from graph import reads

# Tags per route: the search routes are listed under "search" in the docs, the rest
# under "venues", each once.
router = APIRouter(prefix="/venues", route_class=V1Route)
VENUES: list[str | Enum] = ["venues"]

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


@router.get(
    "/search",
    response_model=SearchResponse,
    tags=["search"],
    summary="Search the tenant's venues by meaning and by words",
)
async def search_venues(
    resources: ResourcesDep,
    principal: Reader,
    q: QueryText,
    limit: Limit = 10,
    mode: ModeParam = "hybrid",
) -> SearchResponse:
    found = await search_service.search(
        resources, tenant_of(principal), "venue", q, limit=limit, mode=mode
    )
    return search_response(found, mode, q)


@router.get(
    "/{venue_id}/similar",
    response_model=SearchResponse,
    tags=["search"],
    summary="The tenant's venues most similar to this one",
)
async def similar_venues(
    venue_id: uuid.UUID, resources: ResourcesDep, principal: Reader, limit: Limit = 10
) -> SearchResponse:
    found = await search_service.similar(
        resources, tenant_of(principal), "venue", venue_id, limit=limit
    )
    return search_response(found, "vector")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=Written,
    summary="Create a venue",
    tags=VENUES,
)
async def create_venue(
    body: VenueCreate, resources: ResourcesDep, principal: Writer
) -> dict[str, Any]:
    return await create_entity(
        resources,
        principal,
        EntityType.venue,
        body.id,
        body.model_dump(mode="json", exclude={"id"}),
    )


@router.get(
    "", response_model=Page, summary="List venues (filters: tag, text, near a point)", tags=VENUES
)
async def list_venues(
    resources: ResourcesDep,
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
        resources.graph,
        str(tenant_of(principal)),
        limit=limit,
        after=after_id(cursor),
        tag=tag,
        text=q,
        near=near,
    )
    return page(items, limit)


@router.get("/{venue_id}", summary="Get a venue", tags=VENUES)
async def get_venue(
    venue_id: uuid.UUID, resources: ResourcesDep, principal: Reader
) -> dict[str, Any]:
    found = await reads.get_venue(resources.graph, str(tenant_of(principal)), str(venue_id))
    if found is None:
        raise NotFound("venue not found")
    return found


@router.patch(
    "/{venue_id}", response_model=Written, summary="Change some fields of a venue", tags=VENUES
)
async def patch_venue(
    venue_id: uuid.UUID,
    body: VenuePatch,
    resources: ResourcesDep,
    principal: Writer,
    base_version: Annotated[
        int | None,
        Query(ge=0, description="If given, refuse with 409 when the venue changed since"),
    ] = None,
) -> dict[str, Any]:
    return await patch_entity(
        resources,
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
    tags=VENUES,
)
async def delete_venue(venue_id: uuid.UUID, resources: ResourcesDep, principal: Writer) -> Deleted:
    return await delete_entity(resources, principal, EntityType.venue, venue_id)


@router.get("/{venue_id}/graph", summary="The venue's subgraph for a viewer (capped)", tags=VENUES)
async def get_venue_graph(
    venue_id: uuid.UUID,
    resources: ResourcesDep,
    principal: Reader,
    limit: Annotated[int, Query(ge=1, le=2000, description="At most this many nodes")] = 500,
) -> dict[str, Any]:
    graph = resources.graph
    customer = str(tenant_of(principal))
    venue = await reads.get_venue(graph, customer, str(venue_id))
    if venue is None:
        raise NotFound("venue not found")
    sub = await reads.venue_graph(graph, customer, str(venue_id), limit)
    return {
        "venue": venue,
        **(sub or {"nodes": [], "edges": [], "total_nodes": 0, "truncated": False}),
    }


class MergeRequest(BaseModel):
    merge_ids: list[uuid.UUID] = Field(
        min_length=1, max_length=20, description="Venues to fold into this one"
    )


@router.get(
    "/{venue_id}/duplicates",
    summary="Venues that look like the same place (name similarity, distance)",
    tags=VENUES,
)
async def venue_duplicates(
    venue_id: uuid.UUID,
    resources: ResourcesDep,
    principal: Reader,
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
) -> dict[str, Any]:
    found = await merging.duplicates(resources, principal, venue_id, limit)
    return {"venue_id": str(venue_id), "candidates": found}


@router.post(
    "/{venue_id}/merge",
    summary="Fold other venues into this one; they become deletes with merged_into",
    tags=VENUES,
)
async def merge_venues(
    venue_id: uuid.UUID, body: MergeRequest, resources: ResourcesDep, principal: Writer
) -> dict[str, Any]:
    return await merging.merge(resources, principal, venue_id, list(dict.fromkeys(body.merge_ids)))
