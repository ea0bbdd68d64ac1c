"""Semantic, fulltext and hybrid search over one tenant's venues and world nodes.

Hybrid search runs the tenant-filtered vector search (the query embedded
inline) and the tenant-filtered fulltext search, then fuses the two rankings
with reciprocal rank fusion: score = sum of 1 / (RRF_K + rank) over the lists
a node appears in. Each hit says which ranks it had, so a caller can see why
it matched. See docs/search.md for the recall rule behind both lists.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from api.core.errors import Conflict, Invalid, NotFound
from api.core.resources import Resources
from api.search.embedder import embedder_of, encode
from graph import search as graph_search
from graph.reads import entity
from graph.search import Hit, Target

Mode = Literal["hybrid", "vector", "fulltext"]

RRF_K = 60
MAX_QUERY_CHARS = 500
MAX_LIMIT = 50
# Each list contributes this many candidates to the fusion (per requested hit).
CANDIDATES_PER_HIT = 3
MIN_CANDIDATES = 20


@dataclass
class Ranked:
    """One fused hit: where it ranked in each list (1-based) and with what score."""

    hit: Hit
    vector: tuple[int, float] | None = None
    fulltext: tuple[int, float] | None = None
    score: float = 0.0


@dataclass
class SearchResult:
    items: list[dict[str, Any]] = field(default_factory=list)
    plan: dict[str, Any] = field(default_factory=dict)


def clean_query(q: str) -> str:
    """The query as searched; empty or oversized queries are a 422, never a 500."""
    text = " ".join(q.split())
    if not text:
        raise Invalid(
            "the query is empty",
            details=[{"loc": ["query", "q"], "msg": "give some words to search for"}],
        )
    if len(text) > MAX_QUERY_CHARS:
        raise Invalid(
            f"the query is longer than {MAX_QUERY_CHARS} characters",
            details=[{"loc": ["query", "q"], "msg": "shorten the query"}],
        )
    return text


def fuse(vector: list[Hit], fulltext: list[Hit]) -> list[Ranked]:
    """Reciprocal rank fusion of two best-first lists."""
    fused: dict[str, Ranked] = {}
    for rank, hit in enumerate(vector, start=1):
        entry = fused.setdefault(hit.id, Ranked(hit=hit))
        entry.vector = (rank, hit.score)
        entry.score += 1.0 / (RRF_K + rank)
    for rank, hit in enumerate(fulltext, start=1):
        entry = fused.setdefault(hit.id, Ranked(hit=hit))
        entry.fulltext = (rank, hit.score)
        entry.score += 1.0 / (RRF_K + rank)
    # Ties (same fused score) go to the better vector rank, then to the id.
    return sorted(
        fused.values(), key=lambda r: (-r.score, r.vector[0] if r.vector else 10**9, r.hit.id)
    )


def _item(target: Target, hit: Hit) -> dict[str, Any]:
    return entity(target, hit.props, hit.location)


def _rank(value: tuple[int, float] | None) -> dict[str, Any] | None:
    return None if value is None else {"rank": value[0], "score": round(value[1], 6)}


async def search(
    resources: Resources,
    customer_id: uuid.UUID,
    target: Target,
    q: str,
    *,
    limit: int,
    mode: Mode = "hybrid",
    venue_id: uuid.UUID | None = None,
    kind: str | None = None,
) -> SearchResult:
    """The tenant's best `limit` matches of `q` by `mode` (hybrid: vector + fulltext, fused)."""
    text = clean_query(q)
    graph = resources.graph
    tenant = str(customer_id)
    filters: dict[str, Any] = {"venue_id": str(venue_id) if venue_id else None, "kind": kind}
    pool = limit if mode != "hybrid" else max(MIN_CANDIDATES, limit * CANDIDATES_PER_HIT)
    vector_hits: list[Hit] = []
    fulltext_hits: list[Hit] = []
    result = SearchResult()
    if mode in ("hybrid", "vector"):
        embedding = (await encode(embedder_of(resources), [text]))[0].tolist()
        vector_hits, plan = await graph_search.vector_search(
            graph, target, tenant, embedding, pool, **filters
        )
        result.plan["vector"] = plan.as_dict()
    if mode in ("hybrid", "fulltext"):
        lucene = graph_search.lucene_query(text)
        if lucene is not None:
            fulltext_hits, plan = await graph_search.fulltext_search(
                graph, target, tenant, lucene, pool, **filters
            )
            result.plan["fulltext"] = plan.as_dict()
        else:
            result.plan["fulltext"] = {"strategy": "skipped", "reason": "no searchable words"}
    for ranked in fuse(vector_hits, fulltext_hits)[:limit]:
        score = ranked.score
        if mode == "vector" and ranked.vector:
            score = ranked.vector[1]
        elif mode == "fulltext" and ranked.fulltext:
            score = ranked.fulltext[1]
        result.items.append(
            {
                "id": ranked.hit.id,
                "score": round(score, 6),
                "matched_by": {"vector": _rank(ranked.vector), "fulltext": _rank(ranked.fulltext)},
                "item": _item(target, ranked.hit),
            }
        )
    return result


async def similar(
    resources: Resources,
    customer_id: uuid.UUID,
    target: Target,
    node_id: uuid.UUID,
    *,
    limit: int,
    venue_id: uuid.UUID | None = None,
    kind: str | None = None,
) -> SearchResult:
    """The tenant's nodes nearest to one of its own nodes (the node itself excluded)."""
    graph = resources.graph
    tenant = str(customer_id)
    exists, embedding = await graph_search.node_embedding(graph, target, tenant, str(node_id))
    label = "venue" if target == "venue" else "world node"
    if not exists:
        raise NotFound(f"{label} not found")
    if embedding is None:
        raise Conflict(
            f"this {label} has no embedding yet; the embedding worker computes it "
            "shortly after a change",
            code="not_embedded",
        )
    filters: dict[str, Any] = {"venue_id": str(venue_id) if venue_id else None, "kind": kind}
    hits, plan = await graph_search.vector_search(
        graph, target, tenant, embedding, limit, exclude=[str(node_id)], **filters
    )
    return SearchResult(
        items=[
            {
                "id": h.id,
                "score": round(h.score, 6),
                "matched_by": {
                    "vector": {"rank": rank, "score": round(h.score, 6)},
                    "fulltext": None,
                },
                "item": _item(target, h),
            }
            for rank, h in enumerate(hits, start=1)
        ],
        plan={"vector": plan.as_dict()},
    )
