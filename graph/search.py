"""Tenant-filtered vector and fulltext search, and the embedding worker's reads and writes.

Neo4j Community has one vector index per label, shared by every tenant, and
`db.index.vector.queryNodes` filters *after* its top-k: asking for 10 and
filtering to one tenant can return 1 of 10. The rule here (docs/search.md):

1. Count the tenant's candidates (its embedded nodes under the filters). A
   large tenant's count (over `EXACT_MAX_CANDIDATES`) and the index size are
   kept for `SIZE_TTL_SECONDS`: counting 100k nodes costs more than the search
   itself, they only choose the strategy and the first k, and a stale value
   still gives complete answers (the loop below widens k; exact search is
   exact).
2. Few candidates (<= `EXACT_MAX_CANDIDATES`): exact search, a brute-force
   `vector.similarity.cosine` over exactly those nodes. Always right, and
   cheaper than a large k at that size.
3. Otherwise ask the index for k = OVERFETCH x limit / (tenant's share of the
   index) and filter (OVERFETCH 2: the index's cost grows with k, ~90 ms at
   k=200 and ~140 ms at k=400 over 1M nodes, and twice the expected hits
   leaves ~1 % of searches short for a 10 % tenant, which retry). Enough
   tenant hits among the global top-k means they *are* the tenant's top hits
   (every tenant node outside the top-k scores lower); too few and not
   exhausted: retry with 4k. Past `ANN_MAX_K`, fall
   back to exact search rather than answer short.

Fulltext follows the same over-fetch loop, and its last resort is the
unlimited index query (Lucene returns every match; Cypher stops at the limit).
Index names, labels and query text are constants; the user's words arrive as
an escaped Lucene string parameter.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, LiteralString

from cachetools import TTLCache

from graph.driver import GraphClient

Target = Literal["venue", "world_node"]

EXACT_MAX_CANDIDATES = 5000
OVERFETCH = 2.0
GROWTH = 4
ANN_MAX_K = 10_000
RERANK = 3
FULLTEXT_MIN_K = 100
FULLTEXT_MAX_K = 10_000
SIZE_TTL_SECONDS = 60.0

# (graph, target, tenant, venue, kind) -> (candidates, index size), large tenants only.
_SIZES: TTLCache[tuple[int, str, str, str | None, str | None], tuple[int, int]] = TTLCache(
    maxsize=10_000, ttl=SIZE_TTL_SECONDS
)

# ------------------------------------------------------------------ Cypher
_WORLD_FILTER = """node.customer_id = $customer_id
  AND ($venue_id IS NULL OR node.venue_id = $venue_id)
  AND ($kind IS NULL OR node.kind = $kind)
  AND NOT node.id IN $exclude"""

# The filtered hits as rows of {props, location, score}, in one row even when there
# are none, so the caller always learns how much the index returned.
_TOP_TEXT_HITS = """WITH fetched_count, size(hits) AS hit_count, hits[0..$limit] AS top
CALL (top) {
  UNWIND top AS h
  WITH h.node AS node, h.score AS score
  RETURN collect({props: node {.*, embedding: null}, location: node.location,
                  score: score}) AS hits
}
RETURN fetched_count, hit_count, hits"""
# Vector hits are re-scored exactly: the index ranks by quantized vectors, so its
# order among near-equal scores can differ from the exact one. The first
# RERANK x $limit tenant hits are re-scored, which covers those swaps.
_TOP_VECTOR_HITS = """WITH fetched_count, size(hits) AS hit_count, hits[0..$rerank] AS top
CALL (top) {
  UNWIND top AS h
  WITH h.node AS node, vector.similarity.cosine(h.node.embedding, $vector) AS score
  ORDER BY score DESC, node.id LIMIT $limit
  RETURN collect({props: node {.*, embedding: null}, location: node.location,
                  score: score}) AS hits
}
RETURN fetched_count, hit_count, hits"""

# Tenant scans say `version >= 0` so the planner seeks the (customer_id, version)
# index instead of scanning every node of the label (there is no index on
# customer_id alone). Placeholder nodes (version -1) are not real entities anyway.
COUNT_CANDIDATES: dict[Target, LiteralString] = {
    "venue": """
MATCH (node:Venue) WHERE node.customer_id = $customer_id AND node.version >= 0
  AND node.embedding IS NOT NULL
RETURN count(node) AS n
""",
    "world_node": """
MATCH (node:WorldNode)
WHERE node.customer_id = $customer_id AND node.version >= 0
  AND ($venue_id IS NULL OR node.venue_id = $venue_id)
  AND ($kind IS NULL OR node.kind = $kind)
  AND node.embedding IS NOT NULL
RETURN count(node) AS n
""",
}

# Label counts come from Neo4j's count store: constant time, all tenants.
INDEX_SIZE: dict[Target, LiteralString] = {
    "venue": "MATCH (n:Venue) RETURN count(n) AS n",
    "world_node": "MATCH (n:WorldNode) RETURN count(n) AS n",
}

VECTOR_ANN: dict[Target, LiteralString] = {
    "venue": """
CALL db.index.vector.queryNodes('venue_embedding', $k, $vector) YIELD node, score
WITH collect({node: node, score: score}) AS fetched
WITH size(fetched) AS fetched_count,
     [f IN fetched WHERE f.node.customer_id = $customer_id AND NOT f.node.id IN $exclude] AS hits
"""
    + _TOP_VECTOR_HITS
    + """
""",
    "world_node": """
CALL db.index.vector.queryNodes('world_node_embedding', $k, $vector) YIELD node, score
WITH collect({node: node, score: score}) AS fetched
WITH size(fetched) AS fetched_count,
     [f IN fetched WHERE f.node.customer_id = $customer_id
        AND ($venue_id IS NULL OR f.node.venue_id = $venue_id)
        AND ($kind IS NULL OR f.node.kind = $kind)
        AND NOT f.node.id IN $exclude] AS hits
"""
    + _TOP_VECTOR_HITS
    + """
""",
}

# Same score as the index (cosine mapped to [0, 1]), so both paths rank alike.
VECTOR_EXACT: dict[Target, LiteralString] = {
    "venue": """
MATCH (node:Venue) WHERE node.customer_id = $customer_id AND node.version >= 0
  AND node.embedding IS NOT NULL AND NOT node.id IN $exclude
WITH node, vector.similarity.cosine(node.embedding, $vector) AS score
ORDER BY score DESC, node.id LIMIT $limit
RETURN node {.*, embedding: null} AS props, node.location AS location, score
""",
    "world_node": """
MATCH (node:WorldNode)
WHERE node.customer_id = $customer_id AND node.version >= 0
  AND ($venue_id IS NULL OR node.venue_id = $venue_id)
  AND ($kind IS NULL OR node.kind = $kind)
  AND NOT node.id IN $exclude
  AND node.embedding IS NOT NULL
WITH node, vector.similarity.cosine(node.embedding, $vector) AS score
ORDER BY score DESC, node.id LIMIT $limit
RETURN node {.*, embedding: null} AS props, null AS location, score
""",
}

FULLTEXT: dict[Target, LiteralString] = {
    "venue": """
CALL db.index.fulltext.queryNodes('venue_text', $query, {limit: $k}) YIELD node, score
WITH collect({node: node, score: score}) AS fetched
WITH size(fetched) AS fetched_count,
     [f IN fetched WHERE f.node.customer_id = $customer_id AND f.node.version >= 0
        AND NOT f.node.id IN $exclude] AS hits
"""
    + _TOP_TEXT_HITS
    + """
""",
    "world_node": """
CALL db.index.fulltext.queryNodes('world_node_text', $query, {limit: $k}) YIELD node, score
WITH collect({node: node, score: score}) AS fetched
WITH size(fetched) AS fetched_count,
     [f IN fetched WHERE f.node.customer_id = $customer_id AND f.node.version >= 0
        AND ($venue_id IS NULL OR f.node.venue_id = $venue_id)
        AND ($kind IS NULL OR f.node.kind = $kind)
        AND NOT f.node.id IN $exclude] AS hits
"""
    + _TOP_TEXT_HITS
    + """
""",
}

# The last resort: every match, filtered as it streams, stopped at the limit.
FULLTEXT_ALL: dict[Target, LiteralString] = {
    "venue": """
CALL db.index.fulltext.queryNodes('venue_text', $query) YIELD node, score
WITH node, score WHERE node.customer_id = $customer_id AND node.version >= 0
  AND NOT node.id IN $exclude
RETURN node {.*, embedding: null} AS props, node.location AS location, score
LIMIT $limit
""",
    "world_node": """
CALL db.index.fulltext.queryNodes('world_node_text', $query) YIELD node, score
WITH node, score WHERE """
    + _WORLD_FILTER
    + """ AND node.version >= 0
RETURN node {.*, embedding: null} AS props, null AS location, score
LIMIT $limit
""",
}

NODE_EMBEDDING: dict[Target, LiteralString] = {
    "venue": "MATCH (n:Venue {id: $id}) WHERE n.customer_id = $customer_id "
    "RETURN n.embedding AS embedding",
    "world_node": "MATCH (n:WorldNode {id: $id}) WHERE n.customer_id = $customer_id "
    "RETURN n.embedding AS embedding, n.venue_id AS venue_id",
}

# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class Hit:
    props: dict[str, Any]
    score: float
    location: Any = None

    @property
    def id(self) -> str:
        return str(self.props["id"])


# What a caller may see of each strategy. The k tried, and whether the over-fetch
# had to grow or fall back, depend on the index that every tenant shares: from
# them a tenant could estimate the platform's size. `exact` vs `ann` and the
# candidate count depend on the tenant's own nodes only.
_PUBLIC_STRATEGY = {
    "exact": "exact",
    "ann": "ann",
    "ann_then_exact": "ann",
    "index": "index",
    "index_all": "index",
}


@dataclass
class Plan:
    """How a tenant-filtered search was answered (in full for benchmarks and logs)."""

    strategy: str  # exact | ann | ann_then_exact | index | index_all
    candidates: int | None = None  # the tenant's own matching nodes (vector search)
    k: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The plan as an API answer shows it: only what the tenant's own data decides."""
        shown: dict[str, Any] = {"strategy": _PUBLIC_STRATEGY.get(self.strategy, self.strategy)}
        if self.candidates is not None:
            shown["candidates"] = self.candidates
        return shown


def _hits(rows: Sequence[Mapping[str, Any]]) -> list[Hit]:
    return [
        Hit(props=dict(r["props"]), score=float(r["score"]), location=r.get("location"))
        for r in rows
    ]


def _params(
    customer_id: str, venue_id: str | None, kind: str | None, exclude: Sequence[str]
) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "venue_id": venue_id,
        "kind": kind,
        "exclude": list(exclude),
    }


def initial_k(limit: int, candidates: int, index_size: int) -> int:
    """Enough of the shared index to expect `OVERFETCH x limit` of the tenant's nodes."""
    share = candidates / max(index_size, candidates, 1)
    return max(limit * GROWTH, math.ceil(OVERFETCH * limit / max(share, 1e-9)))


# ------------------------------------------------------------------ vector


async def vector_search(
    graph: GraphClient,
    target: Target,
    customer_id: str,
    vector: Sequence[float],
    limit: int,
    *,
    venue_id: str | None = None,
    kind: str | None = None,
    exclude: Sequence[str] = (),
    exact_max: int = EXACT_MAX_CANDIDATES,
    max_k: int = ANN_MAX_K,
) -> tuple[list[Hit], Plan]:
    """The tenant's `limit` nearest nodes to `vector`, best first (see module doc)."""
    params = _params(customer_id, venue_id, kind, exclude) | {
        "vector": list(vector),
        "limit": limit,
    }
    key = (id(graph), target, customer_id, venue_id, kind)
    known = _SIZES.get(key)
    if known is not None:
        candidates, size = known
    else:
        rows = await graph.read(f"search.{target}.count", COUNT_CANDIDATES[target], params)
        candidates, size = int(rows[0]["n"]), 0
    plan = Plan(strategy="exact", candidates=candidates)
    if candidates == 0:
        return [], plan
    if candidates > exact_max:
        if not size:
            rows = await graph.read(f"search.{target}.index_size", INDEX_SIZE[target])
            size = int(rows[0]["n"])
            if candidates > EXACT_MAX_CANDIDATES:
                _SIZES[key] = (candidates, size)
        k = initial_k(limit, candidates, size)
        plan.strategy = "ann"
        while k <= max_k:
            plan.k.append(k)
            row = (
                await graph.read(
                    f"search.{target}.ann",
                    VECTOR_ANN[target],
                    params | {"k": k, "rerank": limit * RERANK},
                )
            )[0]
            if row["hit_count"] >= limit or row["fetched_count"] < k:
                return _hits(row["hits"]), plan
            k *= GROWTH
        plan.strategy = "ann_then_exact"
    rows = await graph.read(f"search.{target}.exact", VECTOR_EXACT[target], params)
    return _hits(rows), plan


async def exact_vector_search(
    graph: GraphClient,
    target: Target,
    customer_id: str,
    vector: Sequence[float],
    limit: int,
    *,
    venue_id: str | None = None,
    kind: str | None = None,
    exclude: Sequence[str] = (),
) -> list[Hit]:
    """Brute force over the tenant's nodes: the ground truth recall is measured against."""
    params = _params(customer_id, venue_id, kind, exclude) | {
        "vector": list(vector),
        "limit": limit,
    }
    return _hits(await graph.read(f"search.{target}.exact", VECTOR_EXACT[target], params))


async def node_embedding(
    graph: GraphClient, target: Target, customer_id: str, node_id: str
) -> tuple[bool, list[float] | None]:
    """`(exists, embedding)` of one of the tenant's nodes."""
    rows = await graph.read(
        f"search.{target}.embedding",
        NODE_EMBEDDING[target],
        {"customer_id": customer_id, "id": node_id},
    )
    if not rows:
        return False, None
    return True, rows[0]["embedding"]


# ------------------------------------------------------------------ fulltext

_LUCENE_SPECIAL = re.compile(r'([+\-!(){}\[\]^"~*?:\\/&|])')
_LUCENE_OPERATORS = frozenset({"AND", "OR", "NOT", "TO"})


def lucene_query(text: str) -> str | None:
    """The user's words as a Lucene query that means only those words.

    Every special character is escaped and the operator words are lower-cased,
    so `name:x OR *` searches for the words "name", "x", "or" and nothing else.
    None when no searchable word is left.
    """
    terms = []
    for word in text.split():
        if word in _LUCENE_OPERATORS:
            word = word.lower()
        escaped = _LUCENE_SPECIAL.sub(r"\\\1", word)
        if any(ch.isalnum() for ch in word):
            terms.append(escaped)
    return " ".join(terms) if terms else None


async def fulltext_search(
    graph: GraphClient,
    target: Target,
    customer_id: str,
    query: str,
    limit: int,
    *,
    venue_id: str | None = None,
    kind: str | None = None,
    exclude: Sequence[str] = (),
) -> tuple[list[Hit], Plan]:
    """The tenant's best `limit` fulltext matches of an escaped Lucene `query`."""
    params = _params(customer_id, venue_id, kind, exclude) | {"query": query, "limit": limit}
    plan = Plan(strategy="index")
    k = max(FULLTEXT_MIN_K, limit * 10)
    while k <= FULLTEXT_MAX_K:
        plan.k.append(k)
        row = (await graph.read(f"search.{target}.fulltext", FULLTEXT[target], params | {"k": k}))[
            0
        ]
        if row["hit_count"] >= limit or row["fetched_count"] < k:
            return _hits(row["hits"]), plan
        k *= GROWTH
    plan.strategy = "index_all"
    return _hits(
        await graph.read(f"search.{target}.fulltext_all", FULLTEXT_ALL[target], params)
    ), plan
