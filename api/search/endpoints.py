"""Search endpoints of the world model (`/world-model/search`, `…/similar`), and the
query parameters and answer shared with the venue search routes (api/venues/endpoints.py).
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request

from api.auth.deps import Reader, tenant_of
from api.core.deps import ResourcesDep
from api.core.errors import Invalid
from api.journal.route import V1Route
from api.search import service
from api.search.schemas import SearchResponse
from api.search.service import MAX_LIMIT, MAX_QUERY_CHARS, Mode

router = APIRouter(tags=["search"], route_class=V1Route)

QueryText = Annotated[
    str,
    Query(
        min_length=1, max_length=MAX_QUERY_CHARS, description="Words or a sentence to search for."
    ),
]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Hits to return.")]
ModeParam = Annotated[
    Mode,
    Query(
        description="hybrid (vector and fulltext fused), vector "
        "(semantic only) or fulltext (words only)."
    ),
]
Kind = Annotated[str | None, Query(max_length=40, description="Only nodes of this kind.")]


def _checked_kind(request: Request, kind: str | None) -> str | None:
    if kind is not None and kind not in request.app.state.settings.ontology_node_kinds:
        raise Invalid(
            f"unknown node kind {kind!r}",
            code="unknown_kind",
            details=[{"loc": ["query", "kind"], "msg": "see GET /api/v1/world-model/ontology"}],
        )
    return kind


def search_response(found: service.SearchResult, mode: str, q: str | None = None) -> SearchResponse:
    return SearchResponse.model_validate(
        {"query": q, "mode": mode, "items": found.items, "plan": found.plan}
    )


@router.get(
    "/world-model/search",
    response_model=SearchResponse,
    summary="Search the tenant's world nodes by meaning and by words",
)
async def search_world(
    request: Request,
    resources: ResourcesDep,
    principal: Reader,
    q: QueryText,
    venue_id: uuid.UUID | None = None,
    kind: Kind = None,
    limit: Limit = 10,
    mode: ModeParam = "hybrid",
) -> SearchResponse:
    found = await service.search(
        resources,
        tenant_of(principal),
        "world_node",
        q,
        limit=limit,
        mode=mode,
        venue_id=venue_id,
        kind=_checked_kind(request, kind),
    )
    return search_response(found, mode, q)


@router.get(
    "/world-model/nodes/{node_id}/similar",
    response_model=SearchResponse,
    summary="The tenant's world nodes most similar to this one",
)
async def similar_nodes(
    node_id: uuid.UUID,
    request: Request,
    resources: ResourcesDep,
    principal: Reader,
    venue_id: uuid.UUID | None = None,
    kind: Kind = None,
    limit: Limit = 10,
) -> SearchResponse:
    found = await service.similar(
        resources,
        tenant_of(principal),
        "world_node",
        node_id,
        limit=limit,
        venue_id=venue_id,
        kind=_checked_kind(request, kind),
    )
    return search_response(found, "vector")
