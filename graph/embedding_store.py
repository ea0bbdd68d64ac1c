"""Embedding sources and writes for the embedding worker (api/search/embedding_worker.py):
which venues and world nodes need an embedding, and writing the vectors back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, LiteralString

from graph.driver import GraphClient, Rows
from graph.search import Target

EMBEDDING_SOURCES: dict[Target, LiteralString] = {
    "venue": """
UNWIND $rows AS row
MATCH (n:Venue {id: row.id}) WHERE n.customer_id = row.customer_id
RETURN n.id AS id, n.customer_id AS customer_id, n.version AS version,
       n {.name, .description, .tags} AS props, n.embedding_hash AS embedding_hash
""",
    "world_node": """
UNWIND $rows AS row
MATCH (n:WorldNode {id: row.id}) WHERE n.customer_id = row.customer_id
RETURN n.id AS id, n.customer_id AS customer_id, n.version AS version,
       n {.name, .description, .kind} AS props, n.embedding_hash AS embedding_hash
""",
}

# Written only if the node is still at the version its text was read from; a
# newer version has its own queue row and will be embedded from its own text.
WRITE_EMBEDDINGS: dict[Target, LiteralString] = {
    "venue": """
UNWIND $rows AS row
MATCH (n:Venue {id: row.id}) WHERE n.customer_id = row.customer_id AND n.version = row.version
CALL db.create.setNodeVectorProperty(n, 'embedding', row.vector)
SET n.embedding_hash = row.hash
RETURN count(n) AS written
""",
    "world_node": """
UNWIND $rows AS row
MATCH (n:WorldNode {id: row.id})
WHERE n.customer_id = row.customer_id AND n.version = row.version
CALL db.create.setNodeVectorProperty(n, 'embedding', row.vector)
SET n.embedding_hash = row.hash
RETURN count(n) AS written
""",
}

# For `overwatch reembed`: every node of a type (optionally one tenant), by id.
ALL_SOURCES: dict[Target, LiteralString] = {
    "venue": """
MATCH (n:Venue) WHERE ($customer_id IS NULL OR n.customer_id = $customer_id)
  AND n.version >= 0 AND ($after IS NULL OR n.id > $after)
RETURN n.id AS id, n.customer_id AS customer_id, n.version AS version,
       n {.name, .description, .tags} AS props, n.embedding_hash AS embedding_hash
ORDER BY n.id LIMIT $limit
""",
    "world_node": """
MATCH (n:WorldNode) WHERE ($customer_id IS NULL OR n.customer_id = $customer_id)
  AND n.version >= 0 AND ($after IS NULL OR n.id > $after)
RETURN n.id AS id, n.customer_id AS customer_id, n.version AS version,
       n {.name, .description, .kind} AS props, n.embedding_hash AS embedding_hash
ORDER BY n.id LIMIT $limit
""",
}
COUNT_ALL: dict[Target, LiteralString] = {
    "venue": "MATCH (n:Venue) WHERE ($customer_id IS NULL OR n.customer_id = $customer_id) "
    "AND n.version >= 0 RETURN count(n) AS n",
    "world_node": "MATCH (n:WorldNode) WHERE ($customer_id IS NULL OR "
    "n.customer_id = $customer_id) AND n.version >= 0 RETURN count(n) AS n",
}


async def embedding_sources(
    graph: GraphClient, target: Target, rows: Sequence[Mapping[str, str]]
) -> list[dict[str, Any]]:
    """Current text fields and stored hash of nodes given as `{id, customer_id}` rows."""
    if not rows:
        return []
    return await graph.read(
        f"embeddings.{target}.sources", EMBEDDING_SOURCES[target], {"rows": Rows(rows)}
    )


async def write_embeddings(
    graph: GraphClient, target: Target, rows: Sequence[Mapping[str, Any]]
) -> int:
    """Store `{id, customer_id, version, vector, hash}` rows; returns how many were written."""
    if not rows:
        return 0
    result = await graph.write(
        f"embeddings.{target}.write", WRITE_EMBEDDINGS[target], {"rows": Rows(rows)}
    )
    return int(result[0]["written"]) if result else 0


async def all_sources(
    graph: GraphClient, target: Target, customer_id: str | None, after: str | None, limit: int
) -> list[dict[str, Any]]:
    return await graph.read(
        f"embeddings.{target}.all_sources",
        ALL_SOURCES[target],
        {"customer_id": customer_id, "after": after, "limit": limit},
    )


async def count_all(graph: GraphClient, target: Target, customer_id: str | None) -> int:
    rows = await graph.read(
        f"embeddings.{target}.count", COUNT_ALL[target], {"customer_id": customer_id}
    )
    return int(rows[0]["n"])
