"""Applying journal changes to Neo4j, and reading back what Neo4j holds.

Each statement is a named constant run with `UNWIND $rows` (one round trip per
run of same-typed changes, all in one write transaction). Every write is
version-guarded: properties change only where the stored version is lower, so
applying a change twice is a no-op. A world node keeps what is not journaled
across upserts: its embedding (api/search) and a zone's live `occupancy_*`
counts (api/streams/occupancy.py). Kinds and relationship types arrive as
parameters and are used through Cypher's dynamic `$(...)` labels; they were
checked against the ontology allowlist before they were journaled.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from typing import Any, LiteralString

from neo4j import AsyncManagedTransaction, AsyncTransaction

from graph.driver import GraphClient, Rows

USER_PROPERTY_PREFIX = "p_"

# Every upsert runs each row whole inside `CALL (row) { ... }`: a batch can
# hold several changes of one entity (a node upserted twice, its kind or
# venue changed in between), and each must see what the previous one wrote,
# exactly as if they had been applied one per transaction. Without the
# subquery Cypher evaluates each clause for all rows before the next clause
# (with Eager barriers), so the second upsert read the labels and
# relationships from before the first: a node kept both kinds' labels, an
# operation both venues' AT relationships.
VENUE_UPSERT: LiteralString = """
UNWIND $rows AS row
CALL (row) {
  MERGE (v:Venue {id: row.id})
    ON CREATE SET v.customer_id = row.customer_id, v.version = -1
  WITH v, row WHERE v.customer_id = row.customer_id AND v.version < row.version
  WITH v, row, v.embedding AS embedding, v.embedding_hash AS embedding_hash
  SET v = row.props
  SET v.embedding = embedding, v.embedding_hash = embedding_hash,
      v.location = CASE WHEN row.lat IS NULL THEN null
                        ELSE point({latitude: row.lat, longitude: row.lon}) END
}
"""

WORLD_NODE_UPSERT: LiteralString = """
UNWIND $rows AS row
CALL (row) {
  MATCH (venue:Venue {id: row.venue_id}) USING INDEX venue:Venue(id)
  WHERE venue.customer_id = row.customer_id
  MERGE (n:WorldNode {id: row.id})
    ON CREATE SET n.customer_id = row.customer_id, n.version = -1
  WITH n, row, venue WHERE n.customer_id = row.customer_id AND n.version < row.version
  WITH n, row, venue, n.embedding AS embedding, n.embedding_hash AS embedding_hash,
       n {.occupancy_people, .occupancy_free, .occupancy_occupied, .occupancy_at} AS occupancy,
       [label IN labels(n) WHERE label <> 'WorldNode'] AS old_labels
  REMOVE n:$(old_labels)
  SET n = row.props
  SET n:$(row.kind)
  SET n.embedding = embedding, n.embedding_hash = embedding_hash
  SET n += occupancy
  WITH n, venue
  CALL (n, venue) {
    MATCH (n)-[old:IN_VENUE]->(other) WHERE other <> venue DELETE old
  }
  MERGE (n)-[:IN_VENUE]->(venue)
}
"""

WORLD_EDGE_UPSERT: LiteralString = """
UNWIND $rows AS row
CALL (row) {
  MATCH (a:WorldNode {id: row.from_id}) USING INDEX a:WorldNode(id)
  WHERE a.customer_id = row.customer_id
  MATCH (b:WorldNode {id: row.to_id}) USING INDEX b:WorldNode(id)
  WHERE b.customer_id = row.customer_id
  MERGE (a)-[r:$(row.type) {id: row.id}]->(b)
    ON CREATE SET r.customer_id = row.customer_id, r.version = -1
  WITH r, row WHERE r.customer_id = row.customer_id AND r.version < row.version
  SET r = row.props
}
"""

OPERATION_UPSERT: LiteralString = """
UNWIND $rows AS row
CALL (row) {
  MERGE (o:Operation {id: row.id})
    ON CREATE SET o.customer_id = row.customer_id, o.version = -1
  WITH o, row WHERE o.customer_id = row.customer_id AND o.version < row.version
  SET o = row.props
  WITH o, row
  CALL (o) { MATCH (o)-[old:AT|USED|WITH_KIT]->() DELETE old }
  CALL (o, row) {
    MATCH (v:Venue {id: row.venue_id}) USING INDEX v:Venue(id)
      WHERE v.customer_id = row.customer_id
    MERGE (o)-[:AT]->(v)
  }
  CALL (o, row) {
    MATCH (k:Kit {id: row.kit_id}) USING INDEX k:Kit(id)
      WHERE k.customer_id = row.customer_id
    MERGE (o)-[:WITH_KIT]->(k)
  }
  CALL (o, row) {
    UNWIND row.drone_ids AS drone_id
    MATCH (d:Drone {id: drone_id}) USING INDEX d:Drone(id)
      WHERE d.customer_id = row.customer_id
    MERGE (o)-[:USED]->(d)
  }
}
"""

KIT_UPSERT: LiteralString = """
UNWIND $rows AS row
CALL (row) {
  MERGE (k:Kit {id: row.id})
    ON CREATE SET k.customer_id = row.customer_id, k.version = -1
  WITH k, row WHERE k.customer_id = row.customer_id AND k.version < row.version
  SET k = row.props
}
"""

DRONE_UPSERT: LiteralString = """
UNWIND $rows AS row
CALL (row) {
  MERGE (d:Drone {id: row.id})
    ON CREATE SET d.customer_id = row.customer_id, d.version = -1
  WITH d, row WHERE d.customer_id = row.customer_id AND d.version < row.version
  SET d = row.props
  WITH d, row
  CALL (d) { MATCH (d)-[old:IN_KIT]->() DELETE old }
  CALL (d, row) {
    MATCH (k:Kit {id: row.kit_id}) USING INDEX k:Kit(id)
      WHERE k.customer_id = row.customer_id
    MERGE (d)-[:IN_KIT]->(k)
  }
}
"""

# Deletes: a node goes with its relationships; edges by their id, found from
# their start node (edge endpoints never change, see api/journal/entities.py).
#
# Each node delete finds its node through the unique `id` index (`USING INDEX`).
# Left to itself the planner seeks the (customer_id, version) range index with
# `version < row.version` and filters on id afterwards: a scan of the tenant's
# older nodes for every deleted row, and wrong inside a transaction that has
# already updated and then deleted another node of the label (an upsert and a
# delete of A, then a delete of X in a later statement): the range index's
# transaction state still yields the deleted A, and reading its id fails with
# `EntityNotFound: Node ... has been deleted in this transaction`. Several
# pending writes applied in one transaction (`apply_pending`) hit exactly that
# and froze the tenant's projection for good.
VENUE_DELETE: LiteralString = """
UNWIND $rows AS row
MATCH (n:Venue {id: row.id})
USING INDEX n:Venue(id) WHERE n.customer_id = row.customer_id AND n.version < row.version
DETACH DELETE n
"""
WORLD_NODE_DELETE: LiteralString = """
UNWIND $rows AS row
MATCH (n:WorldNode {id: row.id})
USING INDEX n:WorldNode(id)
WHERE n.customer_id = row.customer_id AND n.version < row.version
DETACH DELETE n
"""
OPERATION_DELETE: LiteralString = """
UNWIND $rows AS row
MATCH (n:Operation {id: row.id})
USING INDEX n:Operation(id)
WHERE n.customer_id = row.customer_id AND n.version < row.version
DETACH DELETE n
"""
KIT_DELETE: LiteralString = """
UNWIND $rows AS row
MATCH (n:Kit {id: row.id})
USING INDEX n:Kit(id) WHERE n.customer_id = row.customer_id AND n.version < row.version
DETACH DELETE n
"""
DRONE_DELETE: LiteralString = """
UNWIND $rows AS row
MATCH (n:Drone {id: row.id})
USING INDEX n:Drone(id) WHERE n.customer_id = row.customer_id AND n.version < row.version
DETACH DELETE n
"""
WORLD_EDGE_DELETE: LiteralString = """
UNWIND $rows AS row
MATCH (a:WorldNode {id: row.from_id})-[r {id: row.id}]->()
USING INDEX a:WorldNode(id)
WHERE r.customer_id = row.customer_id AND r.version < row.version
DELETE r
"""

STATEMENTS: dict[tuple[str, str], LiteralString] = {
    ("venue", "upsert"): VENUE_UPSERT,
    ("world_node", "upsert"): WORLD_NODE_UPSERT,
    ("world_edge", "upsert"): WORLD_EDGE_UPSERT,
    ("operation", "upsert"): OPERATION_UPSERT,
    ("kit", "upsert"): KIT_UPSERT,
    ("drone", "upsert"): DRONE_UPSERT,
    ("venue", "delete"): VENUE_DELETE,
    ("world_node", "delete"): WORLD_NODE_DELETE,
    ("world_edge", "delete"): WORLD_EDGE_DELETE,
    ("operation", "delete"): OPERATION_DELETE,
    ("kit", "delete"): KIT_DELETE,
    ("drone", "delete"): DRONE_DELETE,
}


@dataclass(slots=True)
class GraphChange:
    """One journal row, in the neutral form this module needs. Not frozen: a
    batch makes hundreds before its statement can leave, and a frozen
    dataclass's `__init__` costs twice as much. Nothing changes one."""

    entity_type: str
    entity_id: str
    op: str
    version: int
    customer_id: str
    data: dict[str, Any] | None  # complete state for upserts; key fields for deletes


def _datetime(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _user_properties(data: dict[str, Any]) -> dict[str, Any]:
    return {USER_PROPERTY_PREFIX + k: v for k, v in (data.get("properties") or {}).items()}


def _base(change: GraphChange) -> dict[str, Any]:
    return {"id": change.entity_id, "customer_id": change.customer_id, "version": change.version}


def _world_node_row(change: GraphChange, data: dict[str, Any]) -> dict[str, Any]:
    """`to_row` of a world node upsert (the bulk of graph writes), built in one
    pass: the same row and props as the general path (no null property: Neo4j
    stores none), fewer dict copies."""
    venue_id = data["venue_id"]
    kind = data["kind"]
    props = {
        "id": change.entity_id,
        "customer_id": change.customer_id,
        "version": change.version,
        "venue_id": venue_id,
        "kind": kind,
    }
    for key in ("name", "description"):
        if (value := data.get(key)) is not None:
            props[key] = value
    if position := data.get("position"):
        for key in ("x", "y", "z"):
            if (value := position.get(key)) is not None:
                props[key] = value
    if user := data.get("properties"):
        for key, value in user.items():
            if value is not None:
                props[USER_PROPERTY_PREFIX + key] = value
    return {
        "id": change.entity_id,
        "customer_id": change.customer_id,
        "version": change.version,
        "venue_id": venue_id,
        "kind": kind,
        "props": props,
    }


def to_row(change: GraphChange) -> dict[str, Any]:
    """The `row` a statement above expects for this change."""
    data = change.data or {}
    if change.entity_type == "world_node" and change.op == "upsert":
        return _world_node_row(change, data)
    row = _base(change)
    if change.op == "delete":
        if change.entity_type == "world_edge":
            row["from_id"] = data.get("from_id")
        return row
    props = _base(change) | _user_properties(data)
    kind = change.entity_type
    if kind == "venue":
        location = data.get("location") or {}
        props |= {k: data.get(k) for k in ("name", "address", "description")}
        props["tags"] = list(data.get("tags") or [])
        row |= {"lat": location.get("latitude"), "lon": location.get("longitude")}
    elif kind == "world_node":
        position = data.get("position") or {}
        props |= {k: data.get(k) for k in ("venue_id", "kind", "name", "description")}
        props |= {"x": position.get("x"), "y": position.get("y"), "z": position.get("z")}
        row |= {"venue_id": data["venue_id"], "kind": data["kind"]}
    elif kind == "world_edge":
        provenance = data.get("provenance") or {}
        props |= {
            k: data.get(k)
            for k in ("venue_id", "type", "from_id", "to_id", "confidence", "supersedes")
        }
        props |= {
            "valid_from": _datetime(data.get("valid_from")),
            "valid_to": _datetime(data.get("valid_to")),
        }
        props |= {
            f"provenance_{k}": provenance.get(k)
            for k in ("workstation_id", "drone_id", "operation_id")
        }
        row |= {"from_id": data["from_id"], "to_id": data["to_id"], "type": data["type"]}
    elif kind == "operation":
        props |= {
            k: data.get(k) for k in ("venue_id", "status", "name", "kind", "kit_id", "summary")
        }
        props |= {
            "started_at": _datetime(data.get("started_at")),
            "ended_at": _datetime(data.get("ended_at")),
            "drone_ids": list(data.get("drone_ids") or []),
        }
        row |= {
            "venue_id": data["venue_id"],
            "kit_id": data.get("kit_id"),
            "drone_ids": list(data.get("drone_ids") or []),
        }
    elif kind == "kit":
        props |= {"serial": data.get("serial"), "name": data.get("name")}
    elif kind == "drone":
        props |= {
            "serial": data.get("serial"),
            "kit_id": data.get("kit_id"),
            "model": data.get("model"),
        }
        row["kit_id"] = data.get("kit_id")
    else:
        raise ValueError(f"unknown entity type {kind!r}")
    row["props"] = {k: v for k, v in props.items() if v is not None}
    return row


def statement_runs(changes: Sequence[GraphChange]) -> list[tuple[LiteralString, list[dict]]]:
    """The statements that apply `changes` in order: one per run of same-typed changes."""
    return [
        (STATEMENTS[key], [to_row(c) for c in group])
        for key, group in groupby(changes, key=lambda c: (c.entity_type, c.op))
    ]


def rebase_versions(runs: Sequence[tuple[LiteralString, list[dict]]], offset: int) -> None:
    """Add `offset` to every row's version, in place: rows `statement_runs`
    built before the versions were known (numbered from 0)."""
    for _, rows in runs:
        for row in rows:
            row["version"] += offset
            props = row.get("props")
            if props is not None and "version" in props:
                props["version"] += offset


class StaleApplier(Exception):
    """A later applier already wrote this tenant's graph: this one's lock is gone."""


# The tenant's apply fence (cypher/migrations/0002_apply_fence.cypher), in
# the same round trip as a transaction's first statement (`fenced`): raised to
# the applier's epoch first thing, which also write-locks the fence node until
# the transaction ends, so appliers of one tenant serialise here too. `seen`
# above the epoch means a later lock holder has already applied: no row passes
# the WHERE, the statement (a unit subquery, run once per row) does nothing,
# and nothing comes back. Otherwise one row comes back, whatever the
# statement matched. A round trip of its own cost 2-4 ms of every write.
FENCE: LiteralString = """
CALL () {
  MERGE (f:ApplyFence {tenant: $customer_id})
  WITH f, coalesce(f.epoch, 0) AS seen
  SET f.epoch = CASE WHEN seen > $epoch THEN seen ELSE $epoch END
  RETURN seen
}
WITH seen WHERE seen <= $epoch
CALL () {
"""
_FENCE_END: LiteralString = "}\nRETURN seen\n"

# Every projection statement behind the fence (constants joined, never input).
_FENCED: dict[str, LiteralString] = {
    statement: "".join((FENCE, statement, _FENCE_END)) for statement in STATEMENTS.values()
}


def fenced(statement: LiteralString) -> LiteralString:
    """`statement` (one of STATEMENTS) run behind the tenant's fence: see FENCE."""
    return _FENCED[statement]


async def run_statements(
    tx: AsyncManagedTransaction | AsyncTransaction,
    runs: Sequence[tuple[LiteralString, list[dict]]],
    fence: tuple[str, int] | None = None,
) -> None:
    """Run `statement_runs(...)` in order inside the caller's transaction.

    With `fence` (customer id, epoch) the first statement first raises the
    tenant's fence to the epoch, or raises StaleApplier (roll back) when a
    later applier passed it.
    """
    for index, (statement, rows) in enumerate(runs):
        if index == 0 and fence is not None:
            customer_id, epoch = fence
            result = await tx.run(
                fenced(statement), {"rows": Rows(rows), "customer_id": customer_id, "epoch": epoch}
            )
            if await result.single() is None:
                raise StaleApplier(f"apply epoch {epoch} is behind the tenant's fence")
            continue
        result = await tx.run(statement, {"rows": Rows(rows)})
        await result.consume()


async def apply_changes(
    graph: GraphClient, changes: Sequence[GraphChange], epoch: int | None = None
) -> None:
    """Apply changes, in the order given (version order), in one write transaction.

    With `epoch` (the applier's fencing token, api/journal/apply.py) the
    transaction first raises the tenant's fence, and is refused with
    StaleApplier if a later applier got there first.
    """
    if not changes:
        return
    runs = statement_runs(changes)

    fence = None if epoch is None else (changes[0].customer_id, epoch)

    async def work(tx: AsyncManagedTransaction) -> None:
        await run_statements(tx, runs, fence)

    await graph.write_tx("journal.apply", work)


NODE_VERSIONS: dict[str, LiteralString] = {
    "venue": "MATCH (n:Venue) WHERE n.customer_id = $customer_id AND n.version >= 0 "
    "RETURN n.id AS id, n.version AS version",
    "world_node": "MATCH (n:WorldNode) WHERE n.customer_id = $customer_id AND n.version >= 0 "
    "RETURN n.id AS id, n.version AS version",
    "operation": "MATCH (n:Operation) WHERE n.customer_id = $customer_id AND n.version >= 0 "
    "RETURN n.id AS id, n.version AS version",
    "kit": "MATCH (n:Kit) WHERE n.customer_id = $customer_id AND n.version >= 0 "
    "RETURN n.id AS id, n.version AS version",
    "drone": "MATCH (n:Drone) WHERE n.customer_id = $customer_id AND n.version >= 0 "
    "RETURN n.id AS id, n.version AS version",
}
EDGE_VERSIONS: LiteralString = """
MATCH (a:WorldNode)-[r]->(:WorldNode)
WHERE a.customer_id = $customer_id AND a.version >= 0 AND r.id IS NOT NULL
RETURN r.id AS id, r.version AS version
"""


async def stored_versions(
    graph: GraphClient, customer_id: str, types: Iterable[str]
) -> dict[tuple[str, str], int]:
    """`(entity type, id) -> version` of everything Neo4j holds for one tenant."""
    found: dict[tuple[str, str], int] = {}
    for entity_type in types:
        query = EDGE_VERSIONS if entity_type == "world_edge" else NODE_VERSIONS[entity_type]
        for row in await graph.read(f"verify.{entity_type}", query, {"customer_id": customer_id}):
            found[(entity_type, row["id"])] = int(row["version"])
    return found
