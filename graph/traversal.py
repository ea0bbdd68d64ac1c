"""Tenant-scoped traversals: neighbourhoods, shortest paths, venue exports.

Only world-model edges are traversed: they carry `customer_id` (structural
relationships such as IN_VENUE do not, and would turn every venue into a hub
two hops from everything). Relationship types come from the ontology
allowlist, already validated, and reach Cypher as the `$types` parameter.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, LiteralString

from neo4j import AsyncManagedTransaction

from graph.driver import GraphClient
from graph.reads import entity
from graph.tenant import Tenant

_CURRENT = "($current_only = false OR r.valid_to IS NULL OR r.valid_to > datetime())"

NODE_EXISTS: LiteralString = """
UNWIND $ids AS id
MATCH (n:WorldNode {id: id}) WHERE n.customer_id = $customer_id
RETURN n {.*, embedding: null} AS props
"""

# One breadth-first step from a frontier: the edges and the nodes across them.
# Each frontier node contributes at most $per_node rows and the step at most
# $row_limit: without ORDER BY the LIMITs stop the expansion early, so a hub
# with a million edges costs what $per_node rows cost, not a million (the
# caller says `truncated` when a limit was reached).
NEIGHBOURS: LiteralString = (
    """
UNWIND $frontier AS id
MATCH (a:WorldNode {id: id}) WHERE a.customer_id = $customer_id
CALL (a) {
  MATCH (a)-[r]-(b:WorldNode)
  WHERE r.customer_id = $customer_id AND b.customer_id = $customer_id AND type(r) IN $types
    AND """
    + _CURRENT
    + """
  RETURN r, b LIMIT $per_node
}
RETURN a.id AS from_id, r {.*, type: type(r)} AS edge, b {.*, embedding: null} AS node
LIMIT $row_limit
"""
)

# `*..15` is the longest path considered; the predicate restricts the search
# itself (Neo4j evaluates it during the breadth-first search).
SHORTEST_PATH: LiteralString = (
    """
MATCH (a:WorldNode {id: $from_id}) WHERE a.customer_id = $customer_id
MATCH (b:WorldNode {id: $to_id}) WHERE b.customer_id = $customer_id
MATCH p = shortestPath((a)-[*..15]-(b))
WHERE all(r IN relationships(p) WHERE r.customer_id = $customer_id AND type(r) IN $types
          AND """
    + _CURRENT
    + """)
  AND all(n IN nodes(p) WHERE n.customer_id = $customer_id)
RETURN [n IN nodes(p) | n {.*, embedding: null}] AS nodes,
       [r IN relationships(p) | r {.*, type: type(r)}] AS edges
"""
)

EXPORT_VENUE: LiteralString = """
MATCH (v:Venue {id: $venue_id}) WHERE v.customer_id = $customer_id
RETURN v {.*, embedding: null} AS props, v.location AS location,
       COUNT { MATCH (n:WorldNode) WHERE n.customer_id = $customer_id
               AND n.venue_id = $venue_id } AS total_nodes
"""
EXPORT_NODES: LiteralString = """
MATCH (n:WorldNode) WHERE n.customer_id = $customer_id AND n.venue_id = $venue_id
RETURN n {.*, embedding: null} AS props, labels(n) AS labels
ORDER BY n.id LIMIT $limit
"""
# Edges whose both ends were exported: the nodes are the first $max_nodes by
# id, so both ids are at most the last exported one ($last_id). Capped at
# $limit (the caller asks for one more, to know whether it truncated).
EXPORT_EDGES: LiteralString = """
MATCH (a:WorldNode)-[r]->(b:WorldNode)
WHERE a.customer_id = $customer_id AND a.venue_id = $venue_id AND r.customer_id = $customer_id
  AND b.customer_id = $customer_id AND b.venue_id = $venue_id
  AND a.id <= $last_id AND b.id <= $last_id
RETURN r {.*, type: type(r)} AS props
ORDER BY r.id LIMIT $limit
"""
EXPORT_OPERATIONS: LiteralString = """
MATCH (o:Operation)-[:AT]->(v:Venue {id: $venue_id})
WHERE o.customer_id = $customer_id AND v.customer_id = $customer_id
RETURN o {.*} AS props
ORDER BY o.id LIMIT $limit
"""


# Limits of one neighbourhood hop: a node's edges are read up to twice the node
# cap (enough to fill the cap from one node even when half of its edges lead
# back to nodes already found), and one hop reads at most that many rows for
# this many frontier nodes.
HOP_ROWS_PER_NODE_LIMIT = 20


def edges_per_node(max_nodes: int) -> int:
    return 2 * max_nodes


@dataclass
class Subgraph:
    nodes: list[dict[str, Any]] = field(default_factory=list)
    edges: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False
    rows_read: int = 0  # edge rows Neo4j returned: the work done, bounded by the limits


async def existing_nodes(
    graph: GraphClient, customer_id: str, ids: Sequence[str]
) -> dict[str, dict[str, Any]]:
    rows = await Tenant(graph, customer_id).read(
        "graph.nodes_exist", NODE_EXISTS, {"ids": list(ids)}
    )
    return {r["props"]["id"]: r["props"] for r in rows}


async def neighbourhood(
    graph: GraphClient,
    customer_id: str,
    node_id: str,
    *,
    hops: int,
    types: Sequence[str],
    max_nodes: int,
    current_only: bool = True,
) -> Subgraph | None:
    """Nodes within `hops` edges of a node, nearest first, at most `max_nodes` of them.

    Breadth-first, one query per hop inside one read transaction: the cost is
    bounded by the nodes found, not by the number of paths to them, and each
    node's edges are read only up to `edges_per_node(max_nodes)` (a hub's other
    edges are never loaded; `truncated` says so).
    """
    per_node = edges_per_node(max_nodes)

    tenant = Tenant(graph, customer_id)

    async def work(tx: AsyncManagedTransaction) -> Subgraph | None:
        start = await (await tenant.run(tx, NODE_EXISTS, {"ids": [node_id]})).data()
        if not start:
            return None
        found: dict[str, dict[str, Any]] = {node_id: start[0]["props"] | {"_hop": 0}}
        edges: dict[str, dict[str, Any]] = {}
        sub = Subgraph()
        frontier = [node_id]
        for hop in range(1, hops + 1):
            if not frontier:
                break
            rows = await (
                await tenant.run(
                    tx,
                    NEIGHBOURS,
                    {
                        "frontier": frontier,
                        "types": list(types),
                        "current_only": current_only,
                        "per_node": per_node,
                        "row_limit": per_node * HOP_ROWS_PER_NODE_LIMIT,
                    },
                )
            ).data()
            sub.rows_read += len(rows)
            counted = Counter(row["from_id"] for row in rows)
            if len(rows) >= per_node * HOP_ROWS_PER_NODE_LIMIT or (
                counted and max(counted.values()) >= per_node
            ):
                sub.truncated = True  # some edges were left unread
            rows.sort(key=lambda row: (row["node"]["id"], row["edge"]["id"]))
            frontier = []
            for row in rows:
                other = row["node"]["id"]
                if other not in found:
                    if len(found) >= max_nodes:
                        sub.truncated = True
                        continue
                    found[other] = row["node"] | {"_hop": hop}
                    frontier.append(other)
                edges[row["edge"]["id"]] = row["edge"]
        for props in found.values():
            hop = props.pop("_hop")
            sub.nodes.append(entity("world_node", props) | {"hops": hop})
        sub.edges = [
            entity("world_edge", e)
            for e in edges.values()
            if e.get("from_id") in found and e.get("to_id") in found
        ]
        return sub

    return await graph.read_tx("graph.neighbourhood", work)


async def shortest_path(
    graph: GraphClient,
    customer_id: str,
    from_id: str,
    to_id: str,
    *,
    types: Sequence[str],
    current_only: bool = True,
) -> Subgraph | None:
    """The shortest path over allowed edge types, or None when there is none."""
    rows = await Tenant(graph, customer_id).read(
        "graph.shortest_path",
        SHORTEST_PATH,
        {
            "from_id": from_id,
            "to_id": to_id,
            "types": list(types),
            "current_only": current_only,
        },
    )
    if not rows:
        return None
    return Subgraph(
        nodes=[entity("world_node", n) for n in rows[0]["nodes"]],
        edges=[entity("world_edge", e) for e in rows[0]["edges"]],
    )


async def export_venue(
    graph: GraphClient, customer_id: str, venue_id: str, *, max_nodes: int, max_edges: int
) -> dict[str, Any] | None:
    """A venue with its world nodes, edges and operations, in the entities' `data` form.

    At most `max_nodes` nodes (the first by id) and `max_edges` edges between
    them (the first by id); `truncated` / `edges_truncated` say when more exist.
    """

    tenant = Tenant(graph, customer_id)

    async def work(tx: AsyncManagedTransaction) -> dict[str, Any] | None:
        params = {"venue_id": venue_id}
        venue = await (await tenant.run(tx, EXPORT_VENUE, params)).data()
        if not venue:
            return None
        nodes = await (await tenant.run(tx, EXPORT_NODES, params | {"limit": max_nodes})).data()
        edges: list[dict[str, Any]] = []
        if nodes:
            last_id = nodes[-1]["props"]["id"]
            edges = await (
                await tenant.run(
                    tx, EXPORT_EDGES, params | {"last_id": last_id, "limit": max_edges + 1}
                )
            ).data()
        operations = await (
            await tenant.run(tx, EXPORT_OPERATIONS, params | {"limit": 100_000})
        ).data()
        return {
            "venue": entity("venue", venue[0]["props"], venue[0]["location"]),
            "nodes": [entity("world_node", r["props"]) for r in nodes],
            "edges": [entity("world_edge", r["props"]) for r in edges[:max_edges]],
            "operations": [entity("operation", r["props"]) for r in operations],
            "total_nodes": venue[0]["total_nodes"],
            "truncated": venue[0]["total_nodes"] > len(nodes),
            "edges_truncated": len(edges) > max_edges,
        }

    return await graph.read_tx("graph.export_venue", work)
