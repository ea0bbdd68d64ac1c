"""`/api/v1/world-model`: nodes and edges inside venues, and the ontology."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from pydantic import BaseModel, Field

from api.auth.deps import Reader, Writer, tenant_of
from api.core.deps import ResourcesDep
from api.core.errors import NotFound
from api.core.pagination import Cursor, Page, after_id, page
from api.core.resources import Resources
from api.journal.apply import prepare_ahead
from api.journal.changes import ChangeRejected, ChangeSet, references
from api.journal.entities import (
    EntityData,
    EntityType,
    Position,
    Properties,
    Provenance,
    Text200,
    WorldEdgeData,
    WorldNodeData,
    canonical,
)
from api.journal.record import Change
from api.journal.route import V1Route
from api.journal.schemas import BatchResult, Deleted, Written
from api.journal.storable import FilterDatetime, StorableDatetime
from api.journal.writes import create_entity, current_data, delete_entity, patch_entity, write
from graph import reads

# Batches of up to 1,000 entities: their bodies are parsed with orjson.
router = APIRouter(prefix="/world-model", tags=["world model"], route_class=V1Route)

MAX_BATCH = 1000


class NodeCreate(WorldNodeData):
    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "venue_id": "0b6f2c1e-4c8e-4a43-9a55-4f1f1f3b2a10",
                    "kind": "PerchPoint",
                    "name": "Atrium north ledge",
                    "description": "Ledge above the north escalators",
                    "position": {"x": 12.5, "y": 40.2, "z": 9.0},
                    "properties": {"max_payload_kg": 2.5},
                }
            ]
        }
    }
    id: uuid.UUID | None = None


class NodePatch(EntityData):
    kind: str | None = Field(None, max_length=40)
    name: Text200 | None = None
    description: str | None = Field(None, max_length=5000)
    position: Position | None = None
    properties: Properties | None = None


class EdgeCreate(WorldEdgeData):
    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "venue_id": "0b6f2c1e-4c8e-4a43-9a55-4f1f1f3b2a10",
                    "type": "CONNECTS_TO",
                    "from_id": "5b0c9a57-7d3e-4a8f-b1d2-3f7e9c1a2b44",
                    "to_id": "8e1d2c3b-4a5f-4b6c-9d7e-0f1a2b3c4d55",
                    "valid_from": "2026-11-21T10:00:00Z",
                    "confidence": 0.9,
                }
            ]
        }
    }
    id: uuid.UUID | None = None


class EdgePatch(EntityData):
    valid_from: StorableDatetime | None = None
    valid_to: StorableDatetime | None = None
    confidence: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    provenance: Provenance | None = None
    properties: Properties | None = None


class EdgeSupersede(EntityData):
    """The new fact; type and endpoints default to the old edge's."""

    type: str | None = Field(None, max_length=40)
    from_id: uuid.UUID | None = None
    to_id: uuid.UUID | None = None
    at: StorableDatetime | None = Field(
        None, description="When the old fact stopped being true (default: now)"
    )
    confidence: float = Field(1.0, ge=0, le=1, allow_inf_nan=False)
    provenance: Provenance = Field(default_factory=Provenance)
    properties: Properties = Field(default_factory=dict)


class NodeBatch(BaseModel):
    nodes: list[NodeCreate] = Field(min_length=1, max_length=MAX_BATCH)


class EdgeBatch(BaseModel):
    edges: list[EdgeCreate] = Field(min_length=1, max_length=MAX_BATCH)


@router.get("/ontology", summary="Allowed node kinds and edge types")
async def ontology(request: Request, principal: Reader) -> dict[str, list[str]]:
    settings = request.app.state.settings
    return {
        "node_kinds": list(settings.ontology_node_kinds),
        "edge_types": list(settings.ontology_edge_types),
    }


# ------------------------------------------------------------------ nodes
@router.post(
    "/nodes",
    status_code=status.HTTP_201_CREATED,
    response_model=Written,
    summary="Create a world node in a venue",
)
async def create_node(
    body: NodeCreate, resources: ResourcesDep, principal: Writer
) -> dict[str, Any]:
    return await create_entity(
        resources,
        principal,
        EntityType.world_node,
        body.id,
        body.model_dump(mode="json", exclude={"id"}),
    )


async def _batch(
    resources: Resources, principal: Writer, entity_type: EntityType, items: list[Any]
) -> BatchResult:
    ids = [item.id or uuid.uuid4() for item in items]
    refs: list[uuid.UUID] = list(ids)
    for item in items:
        refs += references(item)

    # The batch as it will be journaled if valid, its Neo4j rows built before
    # the tenant's lock; Neo4j starts on it once the current states are known
    # (loaded with the lock: `preload`), while they are checked (a refused
    # batch commits nothing in either store).
    payloads = [canonical(item) for item in items]
    ahead = prepare_ahead(
        tenant_of(principal),
        [
            Change(entity_type, entity_id, "upsert", payload)
            for entity_id, payload in zip(ids, payloads, strict=True)
        ],
    )

    async def build(changes: ChangeSet) -> int:
        # Another tenant's id is never sent ahead. The states came with the
        # lock; this loads them only if a writer committed in between.
        await changes.prefetch(refs)
        changes.send_ahead(ahead)
        await changes.let_ahead_go()
        upsert = changes.upsert_loaded
        prepared = ahead.changes
        for index, (entity_id, item) in enumerate(zip(ids, items, strict=True)):
            try:
                upsert(entity_type, entity_id, item, prepared=prepared[index])
            except ChangeRejected as exc:
                exc.details = {"index": index, "errors": exc.details}
                exc.message = f"item {index}: {exc.message}"
                raise
        return len(items)

    count, recorded = await write(resources, principal, build, preload=refs)
    return BatchResult(
        count=count,
        first_version=recorded.versions[0],
        last_version=recorded.last_version,
        applied=recorded.applied,
    )


@router.post(
    "/nodes/batch",
    response_model=BatchResult,
    summary="Create or replace up to 1,000 nodes atomically (all or nothing)",
)
async def batch_nodes(body: NodeBatch, resources: ResourcesDep, principal: Writer) -> BatchResult:
    return await _batch(resources, principal, EntityType.world_node, body.nodes)


@router.get("/nodes", response_model=Page, summary="List a venue's world nodes")
async def list_nodes(
    resources: ResourcesDep,
    principal: Reader,
    venue_id: uuid.UUID,
    kind: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    cursor: Cursor = None,
) -> Page:
    items = await reads.list_nodes(
        resources.graph,
        str(tenant_of(principal)),
        str(venue_id),
        kind=kind,
        limit=limit,
        after=after_id(cursor),
    )
    return page(items, limit)


@router.get("/nodes/{node_id}", summary="Get a world node")
async def get_node(
    node_id: uuid.UUID, resources: ResourcesDep, principal: Reader
) -> dict[str, Any]:
    found = await reads.get_node(resources.graph, str(tenant_of(principal)), str(node_id))
    if found is None:
        raise NotFound("world node not found")
    return found


@router.patch("/nodes/{node_id}", response_model=Written, summary="Change a world node")
async def patch_node(
    node_id: uuid.UUID,
    body: NodePatch,
    resources: ResourcesDep,
    principal: Writer,
    base_version: Annotated[int | None, Query(ge=0)] = None,
) -> dict[str, Any]:
    return await patch_entity(
        resources,
        principal,
        EntityType.world_node,
        node_id,
        body.model_dump(mode="json", exclude_unset=True),
        base_version,
    )


@router.delete(
    "/nodes/{node_id}", response_model=Deleted, summary="Delete a world node and its edges"
)
async def delete_node(node_id: uuid.UUID, resources: ResourcesDep, principal: Writer) -> Deleted:
    return await delete_entity(resources, principal, EntityType.world_node, node_id)


# ------------------------------------------------------------------ edges
@router.post(
    "/edges",
    status_code=status.HTTP_201_CREATED,
    response_model=Written,
    summary="Create an edge between two nodes of one venue",
)
async def create_edge(
    body: EdgeCreate, resources: ResourcesDep, principal: Writer
) -> dict[str, Any]:
    return await create_entity(
        resources,
        principal,
        EntityType.world_edge,
        body.id,
        body.model_dump(mode="json", exclude={"id"}),
    )


@router.post(
    "/edges/batch",
    response_model=BatchResult,
    summary="Create or replace up to 1,000 edges atomically (all or nothing)",
)
async def batch_edges(body: EdgeBatch, resources: ResourcesDep, principal: Writer) -> BatchResult:
    return await _batch(resources, principal, EntityType.world_edge, body.edges)


@router.get("/edges", response_model=Page, summary="List a venue's edges, optionally as of a time")
async def list_edges(
    resources: ResourcesDep,
    principal: Reader,
    venue_id: uuid.UUID,
    type: Annotated[str | None, Query(max_length=40)] = None,
    node_id: uuid.UUID | None = None,
    as_of: Annotated[
        FilterDatetime | None,
        Query(description="Only facts valid at this time (zone-less: UTC)"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    cursor: Cursor = None,
) -> Page:
    items = await reads.list_edges(
        resources.graph,
        str(tenant_of(principal)),
        str(venue_id),
        edge_type=type,
        node_id=str(node_id) if node_id else None,
        as_of=as_of,
        limit=limit,
        after=after_id(cursor),
    )
    return page(items, limit)


@router.get("/edges/{edge_id}", summary="Get an edge")
async def get_edge(
    edge_id: uuid.UUID, resources: ResourcesDep, principal: Reader
) -> dict[str, Any]:
    data, _ = await current_data(resources, tenant_of(principal), "world_edge", edge_id)
    found = await reads.get_edge(
        resources.graph, str(tenant_of(principal)), str(edge_id), data["from_id"]
    )
    if found is None:
        raise NotFound("world edge not found")
    return found


@router.patch(
    "/edges/{edge_id}",
    response_model=Written,
    summary="Change an edge's validity, confidence, provenance or properties",
)
async def patch_edge(
    edge_id: uuid.UUID,
    body: EdgePatch,
    resources: ResourcesDep,
    principal: Writer,
    base_version: Annotated[int | None, Query(ge=0)] = None,
) -> dict[str, Any]:
    return await patch_entity(
        resources,
        principal,
        EntityType.world_edge,
        edge_id,
        body.model_dump(mode="json", exclude_unset=True),
        base_version,
    )


@router.delete("/edges/{edge_id}", response_model=Deleted, summary="Delete an edge")
async def delete_edge(edge_id: uuid.UUID, resources: ResourcesDep, principal: Writer) -> Deleted:
    return await delete_entity(resources, principal, EntityType.world_edge, edge_id)


@router.post(
    "/edges/{edge_id}/supersede",
    status_code=status.HTTP_201_CREATED,
    summary="Replace a fact: the old edge is invalidated (valid_to), a new one starts",
)
async def supersede_edge(
    edge_id: uuid.UUID, body: EdgeSupersede, resources: ResourcesDep, principal: Writer
) -> dict[str, Any]:
    new_id = uuid.uuid4()
    at = (body.at or datetime.now(UTC)).astimezone(UTC)

    async def build(changes: ChangeSet) -> dict[str, Any]:
        old = await changes.mine(edge_id, EntityType.world_edge)
        if old is None or old.deleted:
            raise ChangeRejected("not_found", "world edge not found", status_code=404)
        previous = dict(old.data or {})
        if previous.get("valid_to") is not None:
            raise ChangeRejected(
                "already_superseded", "this edge is no longer valid", status_code=409
            )
        await changes.upsert(
            EntityType.world_edge, edge_id, previous | {"valid_to": at.isoformat()}
        )
        new = {
            "venue_id": previous["venue_id"],
            "type": body.type or previous["type"],
            "from_id": str(body.from_id or previous["from_id"]),
            "to_id": str(body.to_id or previous["to_id"]),
            "valid_from": at.isoformat(),
            "confidence": body.confidence,
            "supersedes": str(edge_id),
            "provenance": body.provenance.model_dump(mode="json"),
            "properties": body.properties,
        }
        return await changes.upsert(EntityType.world_edge, new_id, new)

    payload, recorded = await write(resources, principal, build)
    return {
        "id": new_id,
        "version": recorded.last_version,
        "applied": recorded.applied,
        "superseded": {"id": edge_id, "valid_to": at.isoformat(), "version": recorded.versions[0]},
        **payload,
    }
