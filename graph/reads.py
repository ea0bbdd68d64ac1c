"""Tenant-scoped reads of venues, world nodes, edges and operations.

Every query filters on `$customer_id`, which callers take from the
authenticated principal, never from request input. Results come back in the
entities' canonical `data` form (see api/journal/entities.py) plus id and version.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, LiteralString

from neo4j.time import DateTime as Neo4jDateTime

from graph.driver import GraphClient
from graph.projection import USER_PROPERTY_PREFIX
from graph.tenant import Tenant

SYSTEM_KEYS = frozenset(
    {"id", "customer_id", "version", "embedding", "embedding_hash", "location", "x", "y", "z"}
)


def _plain(value: Any) -> Any:
    if isinstance(value, Neo4jDateTime):
        return value.to_native().isoformat()
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def node_data(entity_type: str, props: dict[str, Any]) -> dict[str, Any]:
    """Canonical `data` of an entity from its stored properties."""
    props = {k: _plain(v) for k, v in props.items()}
    data: dict[str, Any] = {
        k: v
        for k, v in props.items()
        if k not in SYSTEM_KEYS
        and not k.startswith(USER_PROPERTY_PREFIX)
        and not k.startswith("provenance_")
    }
    data["properties"] = {
        k[len(USER_PROPERTY_PREFIX) :]: v
        for k, v in props.items()
        if k.startswith(USER_PROPERTY_PREFIX)
    }
    if entity_type == "venue":
        data.setdefault("tags", [])
    if entity_type == "world_node" and props.get("x") is not None:
        data["position"] = {"x": props["x"], "y": props["y"], "z": props.get("z", 0.0)}
    if entity_type == "world_edge":
        data["provenance"] = {
            k: props.get(f"provenance_{k}") for k in ("workstation_id", "drone_id", "operation_id")
        }
    return data


def entity(entity_type: str, props: dict[str, Any], location: Any = None) -> dict[str, Any]:
    data = node_data(entity_type, props)
    if entity_type == "venue":
        data["location"] = (
            {"latitude": location.y, "longitude": location.x} if location is not None else None
        )
    return {"id": props["id"], "version": props["version"], **data}


# Projections say `embedding: null`: the 384-float vector is search's business
# and would only weigh down every read.
GET_VENUE: LiteralString = """
MATCH (v:Venue {id: $id}) WHERE v.customer_id = $customer_id
RETURN v {.*, embedding: null} AS props, v.location AS location
"""

LIST_VENUES: LiteralString = """
MATCH (v:Venue) WHERE v.customer_id = $customer_id AND v.version >= 0
  AND ($after IS NULL OR v.id > $after)
  AND ($tag IS NULL OR $tag IN v.tags)
  AND ($text IS NULL OR toLower(v.name) CONTAINS $text
       OR toLower(coalesce(v.description, '')) CONTAINS $text
       OR toLower(coalesce(v.address, '')) CONTAINS $text)
  AND ($near IS NULL OR (v.location IS NOT NULL
       AND point.distance(v.location, point({latitude: $near.lat, longitude: $near.lon}))
           <= $near.radius_m))
RETURN v {.*, embedding: null} AS props, v.location AS location,
       CASE WHEN $near IS NULL THEN null
            ELSE point.distance(v.location, point({latitude: $near.lat, longitude: $near.lon}))
       END AS distance_m
ORDER BY v.id
LIMIT $limit
"""

# Merge candidates: the tenant's other live venues, with their great-circle
# distance (metres, WGS-84) from venue $id, null where either lacks a location.
# No row at all: $id is not a venue of the tenant; one row of nulls: it is the only one.
VENUE_NEIGHBOURS: LiteralString = """
MATCH (t:Venue {id: $id}) WHERE t.customer_id = $customer_id AND t.version >= 0
OPTIONAL MATCH (v:Venue) WHERE v.customer_id = $customer_id AND v.version >= 0 AND v.id <> t.id
RETURN t.name AS venue_name, v.id AS id, v.name AS name,
       point.distance(t.location, v.location) AS distance_m
ORDER BY v.id
"""

VENUE_GRAPH: LiteralString = """
MATCH (v:Venue {id: $id}) WHERE v.customer_id = $customer_id
CALL (v) {
  MATCH (n:WorldNode)-[:IN_VENUE]->(v) WHERE n.customer_id = $customer_id
  RETURN n ORDER BY n.id LIMIT $limit
}
WITH v, collect(n) AS nodes
CALL (nodes) {
  UNWIND nodes AS a
  MATCH (a)-[r]->(b:WorldNode) WHERE b IN nodes AND r.customer_id = $customer_id
  RETURN collect(r {.*, type: type(r), from_id: a.id, to_id: b.id}) AS edges
}
RETURN [n IN nodes | n {.*, embedding: null, labels: labels(n)}] AS nodes, edges,
       COUNT { MATCH (m:WorldNode)-[:IN_VENUE]->(v) WHERE m.customer_id = $customer_id }
         AS total_nodes
"""

GET_NODE: LiteralString = """
MATCH (n:WorldNode {id: $id}) WHERE n.customer_id = $customer_id
RETURN n {.*, embedding: null} AS props
"""

LIST_NODES: LiteralString = """
MATCH (n:WorldNode) WHERE n.customer_id = $customer_id AND n.venue_id = $venue_id
  AND ($kind IS NULL OR n.kind = $kind)
  AND ($after IS NULL OR n.id > $after)
RETURN n {.*, embedding: null} AS props
ORDER BY n.id LIMIT $limit
"""

GET_EDGE: LiteralString = """
MATCH (a:WorldNode)-[r]->(b:WorldNode)
WHERE a.customer_id = $customer_id AND r.id = $id AND r.customer_id = $customer_id
  AND a.id = $from_id
RETURN r {.*, type: type(r)} AS props
"""

LIST_EDGES: LiteralString = """
MATCH (a:WorldNode)-[r]->(b:WorldNode)
WHERE a.customer_id = $customer_id AND a.venue_id = $venue_id AND r.customer_id = $customer_id
  AND ($type IS NULL OR type(r) = $type)
  AND ($node_id IS NULL OR a.id = $node_id OR b.id = $node_id)
  AND ($as_of IS NULL OR ((r.valid_from IS NULL OR r.valid_from <= $as_of)
                          AND (r.valid_to IS NULL OR r.valid_to > $as_of)))
  AND ($after IS NULL OR r.id > $after)
RETURN r {.*, type: type(r)} AS props
ORDER BY r.id LIMIT $limit
"""

GET_OPERATION: LiteralString = """
MATCH (o:Operation {id: $id}) WHERE o.customer_id = $customer_id
RETURN o {.*} AS props
"""

LIST_OPERATIONS: LiteralString = """
MATCH (o:Operation) WHERE o.customer_id = $customer_id AND o.version >= 0
  AND ($venue_id IS NULL OR o.venue_id = $venue_id)
  AND ($kit_id IS NULL OR o.kit_id = $kit_id)
  AND ($drone_id IS NULL OR $drone_id IN o.drone_ids)
  AND ($status IS NULL OR o.status = $status)
  AND ($started_after IS NULL OR o.started_at >= $started_after)
  AND ($started_before IS NULL OR o.started_at < $started_before)
  AND ($after IS NULL OR o.id > $after)
RETURN o {.*} AS props
ORDER BY o.id LIMIT $limit
"""


async def get_venue(graph: GraphClient, customer_id: str, venue_id: str) -> dict[str, Any] | None:
    rows = await Tenant(graph, customer_id).read("venue.get", GET_VENUE, {"id": venue_id})
    return entity("venue", rows[0]["props"], rows[0]["location"]) if rows else None


async def list_venues(
    graph: GraphClient,
    customer_id: str,
    *,
    limit: int,
    after: str | None,
    tag: str | None,
    text: str | None,
    near: dict[str, float] | None,
) -> list[dict[str, Any]]:
    rows = await Tenant(graph, customer_id).read(
        "venue.list",
        LIST_VENUES,
        {
            "limit": limit,
            "after": after,
            "tag": tag,
            "text": text.lower() if text else None,
            "near": near,
        },
    )
    out = []
    for r in rows:
        item = entity("venue", r["props"], r["location"])
        if r["distance_m"] is not None:
            item["distance_m"] = round(float(r["distance_m"]), 1)
        out.append(item)
    return out


async def venue_neighbours(
    graph: GraphClient, customer_id: str, venue_id: str
) -> tuple[str, list[dict[str, Any]]] | None:
    """The venue's name and the tenant's other venues (id, name, distance_m), or None
    if `venue_id` is not one of its venues."""
    rows = await Tenant(graph, customer_id).read(
        "venue.neighbours", VENUE_NEIGHBOURS, {"id": venue_id}
    )
    if not rows:
        return None
    others = [
        {"id": r["id"], "name": r["name"], "distance_m": r["distance_m"]}
        for r in rows
        if r["id"] is not None
    ]
    return rows[0]["venue_name"], others


async def venue_graph(
    graph: GraphClient, customer_id: str, venue_id: str, limit: int
) -> dict[str, Any] | None:
    rows = await Tenant(graph, customer_id).read(
        "venue.graph", VENUE_GRAPH, {"id": venue_id, "limit": limit}
    )
    if not rows:
        return None
    row = rows[0]
    nodes = [
        entity("world_node", {k: v for k, v in n.items() if k != "labels"}) for n in row["nodes"]
    ]
    edges = [entity("world_edge", e) for e in row["edges"]]
    return {
        "nodes": nodes,
        "edges": edges,
        "total_nodes": row["total_nodes"],
        "truncated": row["total_nodes"] > len(nodes),
    }


async def get_node(graph: GraphClient, customer_id: str, node_id: str) -> dict[str, Any] | None:
    rows = await Tenant(graph, customer_id).read("node.get", GET_NODE, {"id": node_id})
    return entity("world_node", rows[0]["props"]) if rows else None


async def list_nodes(
    graph: GraphClient,
    customer_id: str,
    venue_id: str,
    *,
    kind: str | None,
    limit: int,
    after: str | None,
) -> list[dict[str, Any]]:
    rows = await Tenant(graph, customer_id).read(
        "node.list",
        LIST_NODES,
        {
            "venue_id": venue_id,
            "kind": kind,
            "limit": limit,
            "after": after,
        },
    )
    return [entity("world_node", r["props"]) for r in rows]


async def get_edge(
    graph: GraphClient, customer_id: str, edge_id: str, from_id: str
) -> dict[str, Any] | None:
    rows = await Tenant(graph, customer_id).read(
        "edge.get", GET_EDGE, {"id": edge_id, "from_id": from_id}
    )
    return entity("world_edge", rows[0]["props"]) if rows else None


async def list_edges(
    graph: GraphClient,
    customer_id: str,
    venue_id: str,
    *,
    edge_type: str | None,
    node_id: str | None,
    as_of: datetime | None,
    limit: int,
    after: str | None,
) -> list[dict[str, Any]]:
    rows = await Tenant(graph, customer_id).read(
        "edge.list",
        LIST_EDGES,
        {
            "venue_id": venue_id,
            "type": edge_type,
            "node_id": node_id,
            "as_of": as_of,
            "limit": limit,
            "after": after,
        },
    )
    return [entity("world_edge", r["props"]) for r in rows]


async def get_operation(
    graph: GraphClient, customer_id: str, operation_id: str
) -> dict[str, Any] | None:
    rows = await Tenant(graph, customer_id).read(
        "operation.get", GET_OPERATION, {"id": operation_id}
    )
    return entity("operation", rows[0]["props"]) if rows else None


async def list_operations(
    graph: GraphClient, customer_id: str, *, limit: int, after: str | None, **filters: Any
) -> list[dict[str, Any]]:
    params = {"limit": limit, "after": after} | filters
    rows = await Tenant(graph, customer_id).read("operation.list", LIST_OPERATIONS, params)
    return [entity("operation", r["props"]) for r in rows]
