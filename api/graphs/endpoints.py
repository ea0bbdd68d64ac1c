"""`/api/v1/graph`: neighbourhoods, paths, venue exports, named queries, admin Cypher."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from pydantic import AfterValidator, BaseModel, Field

from api.auth.deps import AdminPrincipal, Analyst, tenant_of
from api.core.deps import ResourcesDep
from api.graphs import service
from api.journal.route import V1Route
from api.journal.storable import check_cypher_params

# Values the Neo4j driver can send: 64-bit integers, bounded nesting (api/journal/storable.py).
CypherParams = Annotated[dict[str, Any], AfterValidator(check_cypher_params)]

router = APIRouter(prefix="/graph", tags=["graph"], route_class=V1Route)

MAX_NEIGHBOURHOOD_NODES = 500
MAX_EXPORT_NODES = 50_000

Types = Annotated[
    str | None,
    Query(
        max_length=1000,
        description="Comma-separated relationship types from the ontology (default: all).",
    ),
]
CurrentOnly = Annotated[bool, Query(description="Walk only facts valid now (not superseded).")]


class NamedQueryRun(BaseModel):
    params: CypherParams = Field(
        default_factory=dict,
        description="The query's declared parameters; the tenant is bound by the server.",
    )


class CypherRun(BaseModel):
    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "query": "MATCH (v:Venue) RETURN v.customer_id AS tenant, count(*) AS venues",
                    "params": {},
                    "limit": 100,
                    "timeout_seconds": 10,
                }
            ]
        }
    }
    query: str = Field(min_length=1, max_length=20_000)
    params: CypherParams = Field(default_factory=dict)
    limit: int = Field(1000, ge=1, le=10_000, description="Rows returned at most.")
    timeout_seconds: float = Field(10.0, gt=0, le=60)


def _edge_types(request: Request) -> list[str]:
    return list(request.app.state.settings.ontology_edge_types)


@router.get(
    "/nodes/{node_id}/neighbourhood",
    summary="World nodes within 1 to 3 edges of a node (capped), nearest first",
)
async def neighbourhood(
    node_id: uuid.UUID,
    request: Request,
    resources: ResourcesDep,
    principal: Analyst,
    hops: Annotated[int, Query(ge=1, le=3)] = 1,
    limit: Annotated[
        int,
        Query(
            ge=1, le=MAX_NEIGHBOURHOOD_NODES, description="Nodes returned at most (start included)"
        ),
    ] = 100,
    types: Types = None,
    current_only: CurrentOnly = True,
) -> dict[str, Any]:
    return await service.neighbourhood(
        resources,
        tenant_of(principal),
        node_id,
        hops=hops,
        types=service.checked_types(types, _edge_types(request)),
        max_nodes=limit,
        current_only=current_only,
    )


@router.get("/path", summary="Shortest path between two world nodes (at most 15 edges)")
async def shortest_path(
    request: Request,
    resources: ResourcesDep,
    principal: Analyst,
    from_id: uuid.UUID,
    to_id: uuid.UUID,
    types: Types = None,
    current_only: CurrentOnly = True,
) -> dict[str, Any]:
    return await service.path(
        resources,
        tenant_of(principal),
        from_id,
        to_id,
        types=service.checked_types(types, _edge_types(request)),
        current_only=current_only,
    )


@router.get(
    "/venues/{venue_id}/export",
    summary="A venue's subgraph as JSON: venue, world nodes, edges, operations",
)
async def export_venue(
    venue_id: uuid.UUID,
    resources: ResourcesDep,
    principal: Analyst,
    limit: Annotated[
        int, Query(ge=1, le=MAX_EXPORT_NODES, description="World nodes exported at most")
    ] = MAX_EXPORT_NODES,
) -> dict[str, Any]:
    return await service.export(resources, tenant_of(principal), venue_id, max_nodes=limit)


@router.get("/queries", summary="Named analyst queries and their parameters")
async def list_queries(principal: Analyst) -> list[dict[str, Any]]:
    return [q.describe() for q in sorted(service.query_catalogue().values(), key=lambda q: q.name)]


@router.post("/queries/{name}", summary="Run a named query for your tenant (read-only, capped)")
async def run_query(
    name: Annotated[str, PathParam(max_length=64)],
    body: NamedQueryRun,
    resources: ResourcesDep,
    principal: Analyst,
) -> dict[str, Any]:
    return await service.run_named(resources, tenant_of(principal), name, body.params)


@router.post("/cypher", summary="Admin only: run read-only Cypher across tenants (capped)")
async def run_cypher(
    body: CypherRun,
    resources: ResourcesDep,
    principal: AdminPrincipal,
) -> dict[str, Any]:
    return await service.run_admin_cypher(
        resources,
        body.query,
        body.params,
        timeout_seconds=body.timeout_seconds,
        max_rows=body.limit,
    )
