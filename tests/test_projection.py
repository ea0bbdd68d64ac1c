"""Applying journal changes to Neo4j: batching never changes the outcome or fails.

`apply_pending` applies every pending row of a tenant in one transaction, in
runs of same-typed statements (graph/projection.py). A journal that several
writes left pending must give the same graph as the same changes applied one
by one; the property test below draws valid journals (the shapes the API
writes: cascades before a venue delete, moves between venues, edges between
live nodes, operations, kits and drones) and arbitrary splits into
transactions, and compares against a plain model and against one transaction
per change.
"""

from __future__ import annotations

import itertools
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

from graph.driver import GraphClient
from graph.projection import STATEMENTS, GraphChange, StaleApplier, apply_changes

EXAMPLES = int(os.environ.get("OVERWATCH_PROPERTY_EXAMPLES", "30"))
# Shrinking a failure can take minutes of Neo4j round trips; on demand only.
PHASES = (
    list(Phase)
    if os.environ.get("OVERWATCH_PROPERTY_SHRINK")
    else [Phase.explicit, Phase.reuse, Phase.generate]
)


def change(kind: str, entity_id: str, op: str, version: int, data: dict[str, Any] | None):
    return GraphChange(kind, entity_id, op, version, "", data)


async def _apply(graph: GraphClient, customer: str, changes: list[GraphChange], cuts: list[int]):
    """Apply `changes` for `customer` in transactions split at `cuts`."""
    rows = [
        GraphChange(c.entity_type, c.entity_id, c.op, c.version, customer, c.data) for c in changes
    ]
    bounds = [0, *sorted(set(cuts)), len(rows)]
    for start, end in itertools.pairwise(bounds):
        if end > start:
            await apply_changes(graph, rows[start:end])


async def _graph_state(graph: GraphClient, customer: str) -> dict[str, Any]:
    nodes = await graph.read(
        "test.projection_nodes",
        "MATCH (n) WHERE n.customer_id = $c "
        "OPTIONAL MATCH (n)-[:IN_VENUE|AT|IN_KIT|WITH_KIT]->(parent) "
        "RETURN n.id AS id, [l IN labels(n) | l] AS labels, n.version AS version, "
        "collect(parent.id) AS parents",
        {"c": customer},
    )
    edges = await graph.read(
        "test.projection_edges",
        "MATCH (a)-[r]->(b) WHERE r.customer_id = $c "
        "RETURN r.id AS id, type(r) AS type, r.version AS version, a.id AS a, b.id AS b",
        {"c": customer},
    )
    return {
        "nodes": {
            r["id"]: (sorted(r["labels"]), r["version"], sorted(r["parents"])) for r in nodes
        },
        "edges": {r["id"]: (r["type"], r["version"], r["a"], r["b"]) for r in edges},
    }


async def _clear(graph: GraphClient, customer: str) -> None:
    await graph.write(
        "test.projection_clear",
        "MATCH (n) WHERE n.customer_id = $c DETACH DELETE n",
        {"c": customer},
    )


def _fresh(changes: list[GraphChange]) -> list[GraphChange]:
    """The same journal under new entity ids (ids are unique across tenants)."""
    salt = uuid.uuid4()
    mapping: dict[str, str] = {}

    def new(value: Any) -> Any:
        if isinstance(value, str) and value.startswith("e-"):
            return mapping.setdefault(value, str(uuid.uuid5(salt, value)))
        if isinstance(value, list):
            return [new(v) for v in value]
        return value

    return [
        GraphChange(
            c.entity_type,
            new(c.entity_id),
            c.op,
            c.version,
            c.customer_id,
            None if c.data is None else {k: new(v) for k, v in c.data.items()},
        )
        for c in changes
    ]


def _unmap(state: dict[str, Any], original: list[GraphChange], fresh: list[GraphChange]):
    back: dict[str, str] = {}
    for a, b in zip(original, fresh, strict=True):
        back[b.entity_id] = a.entity_id
        for key in ("venue_id", "from_id", "to_id", "kit_id"):
            if a.data and a.data.get(key):
                back[b.data[key]] = a.data[key]  # type: ignore[index]
    nodes = {
        back.get(k, k): (labels, version, sorted(back.get(p, p) for p in parents))
        for k, (labels, version, parents) in state["nodes"].items()
    }
    edges = {
        back.get(k, k): (t, version, back.get(a, a), back.get(b, b))
        for k, (t, version, a, b) in state["edges"].items()
    }
    return {"nodes": nodes, "edges": edges}


def _difference(left: dict[str, Any], right: dict[str, Any]) -> list[Any]:
    return [
        (part, key, left[part].get(key), right[part].get(key))
        for part in ("nodes", "edges")
        for key in sorted(set(left[part]) | set(right[part]))
        if left[part].get(key) != right[part].get(key)
    ]


# ------------------------------------------------------------------ the model
@dataclass
class Journal:
    """Valid journals, built the way the API writes them, with the state they imply."""

    version: int = 0
    changes: list[GraphChange] = field(default_factory=list)
    venues: dict[str, int] = field(default_factory=dict)
    nodes: dict[str, tuple[int, str, str]] = field(default_factory=dict)  # version, venue, kind
    edges: dict[str, tuple[int, str, str, str]] = field(default_factory=dict)  # v, from, to, type
    kits: dict[str, int] = field(default_factory=dict)
    drones: dict[str, tuple[int, str | None]] = field(default_factory=dict)
    operations: dict[str, tuple[int, str, str | None]] = field(default_factory=dict)
    counter: int = 0

    def _next(self) -> int:
        self.version += 1
        return self.version

    def new_id(self) -> str:
        self.counter += 1
        return f"e-{self.counter}"

    def add(self, kind: str, entity_id: str, op: str, data: dict[str, Any] | None) -> int:
        version = self._next()
        self.changes.append(change(kind, entity_id, op, version, data))
        return version

    def delete_edge(self, edge_id: str) -> None:
        _, a, _, _ = self.edges.pop(edge_id)
        self.add("world_edge", edge_id, "delete", {"from_id": a})

    def delete_node(self, node_id: str) -> None:
        for edge_id, (_, a, b, _) in list(self.edges.items()):
            if node_id in (a, b):
                self.delete_edge(edge_id)
        _, venue, _ = self.nodes.pop(node_id)
        self.add("world_node", node_id, "delete", {"venue_id": venue})

    def expected(self) -> dict[str, Any]:
        nodes: dict[str, Any] = {}
        for vid, version in self.venues.items():
            nodes[vid] = (["Venue"], version, [])
        for nid, (version, venue, kind) in self.nodes.items():
            nodes[nid] = (sorted(["WorldNode", kind]), version, [venue])
        for kid, version in self.kits.items():
            nodes[kid] = (["Kit"], version, [])
        for did, (version, kit) in self.drones.items():
            nodes[did] = (["Drone"], version, [kit] if kit in self.kits else [])
        for oid, (version, venue, kit) in self.operations.items():
            parents = [p for p in (venue, kit) if p in self.venues or p in self.kits]
            nodes[oid] = (["Operation"], version, sorted(parents))
        edges = {eid: (t, version, a, b) for eid, (version, a, b, t) in self.edges.items()}
        return {"nodes": nodes, "edges": edges}


KINDS = ("Zone", "Room", "Door")
EDGE_TYPES = ("CONNECTS_TO", "NEAR", "CONTAINS")


@st.composite
def journals(draw: Any) -> Journal:
    journal = Journal()
    for _ in range(draw(st.integers(min_value=1, max_value=28))):
        step = draw(
            st.sampled_from(
                [
                    "venue",
                    "venue",
                    "node",
                    "node",
                    "node",
                    "move",
                    "edge",
                    "edge",
                    "delete_node",
                    "delete_edge",
                    "delete_venue",
                    "kit",
                    "drone",
                    "operation",
                    "delete_other",
                ]
            )
        )
        pick = lambda pool: draw(st.sampled_from(sorted(pool)))  # noqa: E731
        if step == "venue":
            vid = pick(journal.venues) if journal.venues and draw(st.booleans()) else None
            vid = vid or journal.new_id()
            journal.venues[vid] = journal.add("venue", vid, "upsert", {"name": f"venue {vid}"})
        elif step in ("node", "move") and journal.venues:
            existing = step == "move" and journal.nodes
            nid = pick(journal.nodes) if existing else journal.new_id()
            venue = pick(journal.venues)
            kind = draw(st.sampled_from(KINDS))
            data = {"venue_id": venue, "kind": kind, "name": f"node {nid}"}
            journal.nodes[nid] = (journal.add("world_node", nid, "upsert", data), venue, kind)
        elif step == "edge" and len(journal.nodes) >= 2:
            a, b = pick(journal.nodes), pick(journal.nodes)
            same = [e for e, (_, x, y, _) in journal.edges.items() if (x, y) == (a, b)]
            eid = same[0] if same and draw(st.booleans()) else journal.new_id()
            kind = (
                journal.edges[eid][3] if eid in journal.edges else draw(st.sampled_from(EDGE_TYPES))
            )
            data = {
                "venue_id": journal.nodes[a][1],
                "type": kind,
                "from_id": a,
                "to_id": b,
            }
            journal.edges[eid] = (journal.add("world_edge", eid, "upsert", data), a, b, kind)
        elif step == "delete_node" and journal.nodes:
            journal.delete_node(pick(journal.nodes))
        elif step == "delete_edge" and journal.edges:
            journal.delete_edge(pick(journal.edges))
        elif step == "delete_venue" and journal.venues:
            vid = pick(journal.venues)
            for nid in [n for n, (_, v, _) in journal.nodes.items() if v == vid]:
                journal.delete_node(nid)
            for oid in [o for o, (_, v, _) in journal.operations.items() if v == vid]:
                journal.operations.pop(oid)
                journal.add("operation", oid, "delete", {"venue_id": vid})
            journal.venues.pop(vid)
            journal.add("venue", vid, "delete", {})
        elif step == "kit":
            kid = pick(journal.kits) if journal.kits and draw(st.booleans()) else journal.new_id()
            journal.kits[kid] = journal.add("kit", kid, "upsert", {"serial": kid, "name": "kit"})
        elif step == "drone":
            update = journal.drones and draw(st.booleans())
            did = pick(journal.drones) if update else journal.new_id()
            kit = pick(journal.kits) if journal.kits and draw(st.booleans()) else None
            data = {"serial": did, "kit_id": kit, "model": "m"}
            journal.drones[did] = (journal.add("drone", did, "upsert", data), kit)
        elif step == "operation" and journal.venues:
            update = journal.operations and draw(st.booleans())
            oid = pick(journal.operations) if update else journal.new_id()
            venue = pick(journal.venues)
            kit = pick(journal.kits) if journal.kits and draw(st.booleans()) else None
            data = {
                "venue_id": venue,
                "kit_id": kit,
                "status": "planned",
                "name": "op",
                "drone_ids": [],
            }
            journal.operations[oid] = (journal.add("operation", oid, "upsert", data), venue, kit)
        elif step == "delete_other":
            pools = [p for p in ("drones", "operations") if getattr(journal, p)]
            if pools:
                pool_name = draw(st.sampled_from(pools))
                eid = pick(getattr(journal, pool_name))
                getattr(journal, pool_name).pop(eid)
                kind = {"drones": "drone", "operations": "operation"}[pool_name]
                journal.add(kind, eid, "delete", {})
    return journal


# ------------------------------------------------------------------ the tests
async def test_an_update_then_delete_then_another_delete_in_one_transaction(graph: GraphClient):
    """The sequence that froze tenants: A and X exist; then, in ONE transaction,
    upsert A, upsert X, upsert a venue, delete A, upsert a venue, delete X."""
    customer = str(uuid.uuid4())
    v1, v2, v3, a, x = (str(uuid.uuid4()) for _ in range(5))

    def node(i: str, venue: str, version: int) -> GraphChange:
        data = {"venue_id": venue, "kind": "Zone", "name": "n"}
        return GraphChange("world_node", i, "upsert", version, customer, data)

    def venue(i: str, version: int) -> GraphChange:
        return GraphChange("venue", i, "upsert", version, customer, {"name": "v"})

    def delete(i: str, version: int, venue_id: str) -> GraphChange:
        return GraphChange("world_node", i, "delete", version, customer, {"venue_id": venue_id})

    try:
        await apply_changes(graph, [venue(v1, 1), venue(v2, 2), node(a, v1, 3), node(x, v2, 4)])
        await apply_changes(
            graph,
            [
                node(a, v1, 5),
                node(x, v2, 6),
                venue(v3, 7),
                delete(a, 8, v1),
                venue(v3, 9),
                delete(x, 10, v2),
            ],
        )
        state = await _graph_state(graph, customer)
        assert set(state["nodes"]) == {v1, v2, v3}
        assert state["nodes"][v3][1] == 9
    finally:
        await _clear(graph, customer)


def _seeks(plan: dict[str, Any]) -> list[str]:
    """Every index seek or label scan in an EXPLAIN plan."""
    operator = plan["operatorType"].split("@")[0]
    found = []
    if "Seek" in operator or "NodeByLabelScan" in operator:
        found.append(f"{operator} {plan.get('args', {}).get('Details', '')}")
    for child in plan.get("children", []):
        found.extend(_seeks(child))
    return found


async def test_every_statement_finds_its_entities_by_id(graph: GraphClient):
    """No statement may seek a range index: besides scanning the tenant's older
    nodes per row, a range index's transaction state yields nodes deleted
    earlier in the same transaction (EntityNotFound). Deterministic, unlike
    the sequence above, whose plan depends on the index statistics."""
    async with graph.driver.session(database=graph.database) as session:
        for key, statement in STATEMENTS.items():
            result = await session.run("EXPLAIN " + statement, {"rows": []})  # type: ignore[arg-type]
            summary = await result.consume()
            for seek in _seeks(summary.plan):  # type: ignore[arg-type]
                assert seek.startswith("NodeUniqueIndexSeek") and "(id)" in seek, (key, seek)


@pytest.mark.slow
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    phases=PHASES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(journal=journals(), data=st.data())
async def test_batching_never_changes_the_outcome(graph: GraphClient, journal: Journal, data: Any):
    changes = journal.changes
    # Some of the journal applied earlier (committed before), the rest pending.
    settled = data.draw(st.integers(min_value=0, max_value=len(changes)), label="settled")
    cuts = data.draw(
        st.lists(st.integers(min_value=settled, max_value=len(changes)), max_size=6), label="cuts"
    )
    note("\n".join(f"{c.version} {c.entity_type} {c.op} {c.entity_id} {c.data}" for c in changes))
    batched, one_by_one = _fresh(changes), _fresh(changes)
    customer_a, customer_b = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        await _apply(graph, customer_a, batched, [settled, *cuts])
        await _apply(graph, customer_b, one_by_one, list(range(1, len(changes))))
        got = _unmap(await _graph_state(graph, customer_a), changes, batched)
        reference = _unmap(await _graph_state(graph, customer_b), changes, one_by_one)
        assert got == reference, _difference(got, reference)
        assert got == journal.expected(), _difference(got, journal.expected())
    finally:
        await _clear(graph, customer_a)
        await _clear(graph, customer_b)


async def test_a_fenced_statement_that_matches_nothing_is_not_refused(graph: GraphClient):
    """The fence rides in the first statement's round trip (`FENCE`): a
    refusal is "no row came back". A delete of what Neo4j no longer holds
    matches nothing, and must still come back as passed, not as refused."""
    customer = str(uuid.uuid4())
    gone = GraphChange("venue", str(uuid.uuid4()), "delete", 5, customer, {"name": "V"})
    try:
        await apply_changes(graph, [gone], epoch=3)
        await apply_changes(graph, [gone], epoch=4)  # and again, at a later epoch
    finally:
        await graph.write(
            "test.fence_clear",
            "MATCH (f:ApplyFence {tenant: $customer_id}) DELETE f",
            {"customer_id": customer},
        )


async def test_an_applier_behind_the_fence_cannot_bring_a_deleted_entity_back(
    graph: GraphClient,
):
    """The chaos harness's find: an applier's Postgres lock vanished with its
    connection while its Neo4j batch was in flight; a later lock holder applied
    the entity's delete, then the old batch landed and MERGE recreated it.
    With the fence, the old batch (a lower epoch) is refused and rolled back."""
    customer = str(uuid.uuid4())
    v, a = str(uuid.uuid4()), str(uuid.uuid4())

    def row(entity_id: str, op: str, version: int, data: Any) -> GraphChange:
        return GraphChange("venue", entity_id, op, version, customer, data)

    await apply_changes(graph, [row(v, "upsert", 1, {"name": "V"})], epoch=10)
    old_batch = [row(a, "upsert", 2, {"name": "A"})]
    # The later holder (epoch 12) applies A's upsert and delete.
    await apply_changes(graph, [*old_batch, row(a, "delete", 3, {"name": "A"})], epoch=12)
    with pytest.raises(StaleApplier):
        await apply_changes(graph, old_batch, epoch=11)
    found = await graph.read(
        "test.fence",
        "MATCH (n:Venue {id: $id}) WHERE n.customer_id = $customer_id RETURN n",
        {"id": a, "customer_id": customer},
    )
    assert found == []
    await graph.write(
        "test.fence_clear",
        "MATCH (n) WHERE n.customer_id = $customer_id OR n.tenant = $customer_id DETACH DELETE n",
        {"customer_id": customer},
    )
