"""Venues, world model and operations through the API, on real Neo4j and Postgres."""

from __future__ import annotations

import asyncio
import itertools
import uuid

import pytest

from graph.driver import GraphClient
from tests.conftest import Tenant

V1 = "/api/v1"


async def make_venue(client, tenant: Tenant, **fields) -> dict:
    body = {
        "name": "Harbour Mall",
        "tags": ["mall"],
        "location": {"latitude": -36.84, "longitude": 174.76},
    } | fields
    response = await client.post(f"{V1}/venues", json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    return response.json()


async def make_node(client, tenant: Tenant, venue_id: str, kind="Zone", name="Atrium", **kw):
    response = await client.post(
        f"{V1}/world-model/nodes",
        headers=tenant.headers,
        json={"venue_id": venue_id, "kind": kind, "name": name} | kw,
    )
    assert response.status_code == 201, response.text
    return response.json()


async def make_edge(client, tenant: Tenant, venue_id, a, b, type_="CONNECTS_TO", **kw):
    response = await client.post(
        f"{V1}/world-model/edges",
        headers=tenant.headers,
        json={"venue_id": venue_id, "type": type_, "from_id": a, "to_id": b} | kw,
    )
    assert response.status_code == 201, response.text
    return response.json()


async def graph_count(graph: GraphClient, customer_id: str) -> int:
    rows = await graph.read(
        "test.count", "MATCH (n) WHERE n.customer_id = $c RETURN count(n) AS n", {"c": customer_id}
    )
    return rows[0]["n"]


async def journal_count(pg, customer_id: str) -> int:
    return await pg.fetchval(
        "SELECT count(*) FROM sync_journal WHERE customer_id = $1::uuid", customer_id
    )


# ----------------------------------------------------------------- venues
async def test_venue_round_trip_through_neo4j(client, tenant, graph):
    created = await make_venue(
        client, tenant, description="Three levels", properties={"levels": 3, "indoor": True}
    )
    assert created["applied"] is True and created["version"] >= 1
    got = (await client.get(f"{V1}/venues/{created['id']}", headers=tenant.headers)).json()
    assert got["name"] == "Harbour Mall" and got["properties"] == {"levels": 3, "indoor": True}
    assert got["location"] == {"latitude": -36.84, "longitude": 174.76}
    assert got["version"] == created["version"]
    patched = await client.patch(
        f"{V1}/venues/{created['id']}",
        headers=tenant.headers,
        json={"description": "Four levels", "tags": ["mall", "rooftop"]},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["version"] > created["version"]
    got = (await client.get(f"{V1}/venues/{created['id']}", headers=tenant.headers)).json()
    assert got["description"] == "Four levels" and got["tags"] == ["mall", "rooftop"]
    assert got["name"] == "Harbour Mall"  # untouched field kept
    stale = await client.patch(
        f"{V1}/venues/{created['id']}?base_version={created['version']}",
        headers=tenant.headers,
        json={"name": "Other"},
    )
    assert stale.status_code == 409


async def test_venue_list_filters_and_pagination(client, tenant):
    await make_venue(
        client,
        tenant,
        name="Eden Park Stadium",
        tags=["stadium"],
        location={"latitude": -36.875, "longitude": 174.745},
    )
    await make_venue(
        client,
        tenant,
        name="Harbour Mall",
        tags=["mall"],
        location={"latitude": -36.8435, "longitude": 174.7669},
    )
    await make_venue(
        client,
        tenant,
        name="Wellington Airport",
        tags=["airport"],
        location={"latitude": -41.327, "longitude": 174.805},
    )
    h = tenant.headers
    by_tag = (await client.get(f"{V1}/venues?tag=stadium", headers=h)).json()["items"]
    assert [v["name"] for v in by_tag] == ["Eden Park Stadium"]
    by_text = (await client.get(f"{V1}/venues?q=airport", headers=h)).json()["items"]
    assert [v["name"] for v in by_text] == ["Wellington Airport"]
    near = (
        await client.get(f"{V1}/venues?lat=-36.85&lon=174.76&radius_m=10000", headers=h)
    ).json()["items"]
    assert sorted(v["name"] for v in near) == ["Eden Park Stadium", "Harbour Mall"]
    assert all(0 < v["distance_m"] <= 10000 for v in near)
    first = (await client.get(f"{V1}/venues?limit=2", headers=h)).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = (
        await client.get(f"{V1}/venues?limit=2&cursor={first['next_cursor']}", headers=h)
    ).json()
    names = [v["name"] for v in first["items"] + rest["items"]]
    assert sorted(names) == ["Eden Park Stadium", "Harbour Mall", "Wellington Airport"]
    partial = await client.get(f"{V1}/venues?lat=1", headers=h)
    assert partial.status_code == 422


async def test_world_model_edges_supersede_and_as_of(client, tenant):
    venue = await make_venue(client, tenant)
    dock = await make_node(client, tenant, venue["id"], "Zone", "Loading dock")
    stair = await make_node(client, tenant, venue["id"], "Stairwell", "Stairwell B")
    edge = await make_edge(
        client,
        tenant,
        venue["id"],
        dock["id"],
        stair["id"],
        valid_from="2026-01-01T00:00:00Z",
        confidence=0.8,
        properties={"door": "fire door"},
    )
    got = (await client.get(f"{V1}/world-model/edges/{edge['id']}", headers=tenant.headers)).json()
    assert got["type"] == "CONNECTS_TO" and got["properties"] == {"door": "fire door"}
    sup = await client.post(
        f"{V1}/world-model/edges/{edge['id']}/supersede",
        headers=tenant.headers,
        json={"at": "2026-06-01T00:00:00Z", "confidence": 0.95},
    )
    assert sup.status_code == 201, sup.text
    new_id = sup.json()["id"]
    assert sup.json()["supersedes"] == edge["id"]
    url = f"{V1}/world-model/edges?venue_id={venue['id']}"
    march = (await client.get(url + "&as_of=2026-03-01T00:00:00Z", headers=tenant.headers)).json()
    assert [e["id"] for e in march["items"]] == [edge["id"]]
    july = (await client.get(url + "&as_of=2026-07-01T00:00:00Z", headers=tenant.headers)).json()
    assert [e["id"] for e in july["items"]] == [new_id]
    everything = (await client.get(url, headers=tenant.headers)).json()["items"]
    assert {e["id"] for e in everything} == {edge["id"], new_id}
    again = await client.post(
        f"{V1}/world-model/edges/{edge['id']}/supersede", headers=tenant.headers, json={}
    )
    assert again.status_code == 409


async def test_deleting_a_node_deletes_its_edges_with_tombstones(client, tenant, graph, pg):
    venue = await make_venue(client, tenant)
    a = await make_node(client, tenant, venue["id"], name="A")
    b = await make_node(client, tenant, venue["id"], name="B")
    edge = await make_edge(client, tenant, venue["id"], a["id"], b["id"])
    deleted = await client.delete(f"{V1}/world-model/nodes/{a['id']}", headers=tenant.headers)
    assert deleted.status_code == 200
    assert deleted.json()["deleted"] == {"world_node": 1, "world_edge": 1}
    assert (
        await client.get(f"{V1}/world-model/nodes/{a['id']}", headers=tenant.headers)
    ).status_code == 404
    tomb = await pg.fetch(
        "SELECT entity_type, op FROM sync_journal WHERE customer_id = $1::uuid "
        "AND op = 'delete' ORDER BY version",
        tenant.id,
    )
    assert [(r["entity_type"], r["op"]) for r in tomb] == [
        ("world_edge", "delete"),
        ("world_node", "delete"),
    ]
    assert (
        await client.get(f"{V1}/world-model/edges/{edge['id']}", headers=tenant.headers)
    ).status_code == 404


async def test_deleting_a_venue_removes_structure_and_keeps_operations(client, tenant, graph):
    venue = await make_venue(client, tenant)
    a = await make_node(client, tenant, venue["id"], name="A")
    b = await make_node(client, tenant, venue["id"], name="B")
    await make_edge(client, tenant, venue["id"], a["id"], b["id"])
    op = (
        await client.post(
            f"{V1}/operations",
            headers=tenant.headers,
            json={"venue_id": venue["id"], "status": "completed"},
        )
    ).json()
    deleted = (await client.delete(f"{V1}/venues/{venue['id']}", headers=tenant.headers)).json()
    assert deleted["deleted"] == {"venue": 1, "world_node": 2, "world_edge": 1}
    rows = await graph.read(
        "test.left",
        "MATCH (n) WHERE n.customer_id = $c RETURN labels(n) AS labels",
        {"c": tenant.id},
    )
    assert [r["labels"] for r in rows] == [["Operation"]]
    kept = (await client.get(f"{V1}/operations/{op['id']}", headers=tenant.headers)).json()
    assert kept["venue_id"] == venue["id"]


async def test_operations_link_to_venue_in_the_graph_and_filter(client, tenant, graph):
    venue = await make_venue(client, tenant)
    other = await make_venue(client, tenant, name="Other")
    op = await client.post(
        f"{V1}/operations",
        headers=tenant.headers,
        json={
            "venue_id": venue["id"],
            "status": "active",
            "name": "Night patrol",
            "started_at": "2026-11-21T22:00:00Z",
        },
    )
    assert op.status_code == 201, op.text
    await client.post(
        f"{V1}/operations",
        headers=tenant.headers,
        json={"venue_id": other["id"], "status": "planned"},
    )
    rows = await graph.read(
        "test.at",
        "MATCH (o:Operation {id: $id})-[:AT]->(v:Venue) RETURN v.id AS venue",
        {"id": op.json()["id"]},
    )
    assert rows == [{"venue": venue["id"]}]
    listed = (
        await client.get(f"{V1}/operations?venue_id={venue['id']}", headers=tenant.headers)
    ).json()["items"]
    assert [o["name"] for o in listed] == ["Night patrol"]
    active = (
        await client.get(
            f"{V1}/operations?status=active&started_after=2026-11-21T00:00:00Z",
            headers=tenant.headers,
        )
    ).json()["items"]
    assert [o["id"] for o in active] == [op.json()["id"]]
    done = await client.patch(
        f"{V1}/operations/{op.json()['id']}",
        headers=tenant.headers,
        json={"status": "completed", "ended_at": "2026-11-22T02:00:00Z"},
    )
    assert done.status_code == 200 and done.json()["status"] == "completed"


async def test_venue_graph_is_capped(client, tenant):
    venue = await make_venue(client, tenant)
    nodes = [await make_node(client, tenant, venue["id"], name=f"N{i}") for i in range(4)]
    for x, y in itertools.pairwise(nodes):
        await make_edge(client, tenant, venue["id"], x["id"], y["id"])
    full = (await client.get(f"{V1}/venues/{venue['id']}/graph", headers=tenant.headers)).json()
    assert len(full["nodes"]) == 4 and len(full["edges"]) == 3 and not full["truncated"]
    capped = (
        await client.get(f"{V1}/venues/{venue['id']}/graph?limit=2", headers=tenant.headers)
    ).json()
    assert len(capped["nodes"]) == 2 and capped["truncated"] and capped["total_nodes"] == 4


# --------------------------------------------------------------- tenancy
async def test_two_tenants_with_identical_data_never_see_each_other(
    client, tenant, other_tenant, graph
):
    mine, theirs = {}, {}
    for t, store in ((tenant, mine), (other_tenant, theirs)):
        store["venue"] = await make_venue(client, t)
        store["a"] = await make_node(client, t, store["venue"]["id"], name="Atrium")
        store["b"] = await make_node(client, t, store["venue"]["id"], name="Dock")
        store["edge"] = await make_edge(
            client, t, store["venue"]["id"], store["a"]["id"], store["b"]["id"]
        )
        store["op"] = (
            await client.post(
                f"{V1}/operations",
                headers=t.headers,
                json={"venue_id": store["venue"]["id"], "status": "active"},
            )
        ).json()
    h = tenant.headers
    listed = (await client.get(f"{V1}/venues", headers=h)).json()["items"]
    assert [v["id"] for v in listed] == [mine["venue"]["id"]]
    ops = (await client.get(f"{V1}/operations", headers=h)).json()["items"]
    assert [o["id"] for o in ops] == [mine["op"]["id"]]
    their_venue = theirs["venue"]["id"]
    for path in (
        f"/venues/{their_venue}",
        f"/venues/{their_venue}/graph",
        f"/world-model/nodes/{theirs['a']['id']}",
        f"/world-model/edges/{theirs['edge']['id']}",
        f"/operations/{theirs['op']['id']}",
    ):
        assert (await client.get(V1 + path, headers=h)).status_code == 404, path
    nodes = (await client.get(f"{V1}/world-model/nodes?venue_id={their_venue}", headers=h)).json()[
        "items"
    ]
    assert nodes == []
    edges = (await client.get(f"{V1}/world-model/edges?venue_id={their_venue}", headers=h)).json()[
        "items"
    ]
    assert edges == []
    assert (
        await client.patch(f"{V1}/venues/{their_venue}", headers=h, json={"name": "pwned"})
    ).status_code == 404
    assert (await client.delete(f"{V1}/venues/{their_venue}", headers=h)).status_code == 404
    assert (
        await client.delete(f"{V1}/world-model/edges/{theirs['edge']['id']}", headers=h)
    ).status_code == 404
    # Linking my node to theirs, or my node into their venue, is refused.
    cross = await client.post(
        f"{V1}/world-model/edges",
        headers=h,
        json={
            "venue_id": mine["venue"]["id"],
            "type": "NEAR",
            "from_id": mine["a"]["id"],
            "to_id": theirs["a"]["id"],
        },
    )
    assert cross.status_code == 422
    into = await client.post(
        f"{V1}/world-model/nodes",
        headers=h,
        json={"venue_id": their_venue, "kind": "Zone", "name": "x"},
    )
    assert into.status_code == 422
    reuse = await client.post(f"{V1}/venues", headers=h, json={"id": their_venue, "name": "x"})
    assert reuse.status_code == 409
    got = (await client.get(f"{V1}/venues/{their_venue}", headers=other_tenant.headers)).json()
    assert got["name"] == "Harbour Mall"
    assert (
        await client.post(
            f"{V1}/world-model/edges/{theirs['edge']['id']}/supersede", headers=h, json={}
        )
    ).status_code == 404
    assert await graph_count(graph, other_tenant.id) == 4  # venue, two nodes, operation


# -------------------------------------------------------------- injection
INJECTIONS = [
    "Zone) DETACH DELETE n //",
    "Zone`) MATCH (m) DETACH DELETE m //",
    "Zone:Venue",
    "WorldNode",
    "Venue",
    "zone",
    "$(x)",
]


@pytest.mark.parametrize("kind", INJECTIONS)
async def test_kind_injection_is_refused(client, tenant, other_tenant, graph, pg, kind):
    venue = await make_venue(client, tenant)
    await make_venue(client, other_tenant)
    before = (await graph_count(graph, tenant.id), await journal_count(pg, tenant.id))
    response = await client.post(
        f"{V1}/world-model/nodes",
        headers=tenant.headers,
        json={"venue_id": venue["id"], "kind": kind, "name": "x"},
    )
    assert response.status_code == 422
    assert (await graph_count(graph, tenant.id), await journal_count(pg, tenant.id)) == before
    assert await graph_count(graph, other_tenant.id) == 1


@pytest.mark.parametrize(
    "edge_type",
    ["CONNECTS_TO]->() DETACH DELETE a //", "AT", "IN_VENUE", "connects_to", "CONNECTS TO"],
)
async def test_edge_type_injection_is_refused(client, tenant, graph, pg, edge_type):
    venue = await make_venue(client, tenant)
    a = await make_node(client, tenant, venue["id"], name="A")
    b = await make_node(client, tenant, venue["id"], name="B")
    before = await journal_count(pg, tenant.id)
    response = await client.post(
        f"{V1}/world-model/edges",
        headers=tenant.headers,
        json={"venue_id": venue["id"], "type": edge_type, "from_id": a["id"], "to_id": b["id"]},
    )
    assert response.status_code == 422
    assert await journal_count(pg, tenant.id) == before
    assert await graph_count(graph, tenant.id) == 3


@pytest.mark.parametrize(
    "key", ["a`b", "x) DETACH DELETE n //", "id", "Name", "1abc", "a-b", "", "customer_id"]
)
async def test_property_key_injection_is_refused(client, tenant, pg, key):
    before = await journal_count(pg, tenant.id)
    response = await client.post(
        f"{V1}/venues", headers=tenant.headers, json={"name": "v", "properties": {key: 1}}
    )
    if key in ("id", "customer_id"):
        # Lower-case identifiers are valid keys; they are stored as p_<key>,
        # so they can never overwrite the node's own id or tenant.
        assert response.status_code == 201
        assert response.json()["properties"] == {key: 1}
        return
    assert response.status_code == 422
    assert await journal_count(pg, tenant.id) == before


async def test_cypher_in_values_is_stored_as_plain_text(client, tenant, other_tenant, graph):
    await make_venue(client, other_tenant)
    evil = "x' }) MATCH (n) DETACH DELETE n //"
    venue = await make_venue(
        client,
        tenant,
        name=evil,
        description="$(n) `x`",
        properties={"note": "MATCH (n) DETACH DELETE n"},
    )
    got = (await client.get(f"{V1}/venues/{venue['id']}", headers=tenant.headers)).json()
    assert got["name"] == evil and got["properties"]["note"] == "MATCH (n) DETACH DELETE n"
    assert await graph_count(graph, other_tenant.id) == 1


# -------------------------------------------------------------- bad input
BAD_VENUES = [
    {"name": ""},
    {"name": "x" * 201},
    {"name": "v", "location": {"latitude": 91, "longitude": 0}},
    {"name": "v", "location": {"latitude": 0, "longitude": -181}},
    {"name": "v", "location": {"latitude": "NaN", "longitude": 0}},
    {"name": "v", "properties": {f"k{i}": i for i in range(65)}},
    {"name": "v", "properties": {"big": "x" * 2001}},
    {"name": "v", "properties": {"nested": {"a": 1}}},
    {"name": "v", "tags": [""]},
    {"name": "v", "unknown_field": 1},
    {"name": 5},
]


@pytest.mark.parametrize("body", BAD_VENUES)
async def test_bad_venues_get_4xx_and_write_nothing(client, tenant, graph, pg, body):
    before = (await graph_count(graph, tenant.id), await journal_count(pg, tenant.id))
    response = await client.post(f"{V1}/venues", headers=tenant.headers, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"]
    assert (await graph_count(graph, tenant.id), await journal_count(pg, tenant.id)) == before


async def test_nan_in_raw_json_is_refused(client, tenant):
    response = await client.post(
        f"{V1}/venues",
        headers={**tenant.headers, "Content-Type": "application/json"},
        content=b'{"name": "v", "location": {"latitude": NaN, "longitude": 1}}',
    )
    assert response.status_code == 422


async def test_bad_world_model_input_writes_nothing(client, tenant, graph, pg):
    v1 = await make_venue(client, tenant)
    v2 = await make_venue(client, tenant, name="Second")
    a = await make_node(client, tenant, v1["id"], name="A")
    c = await make_node(client, tenant, v2["id"], name="C")
    before = (await graph_count(graph, tenant.id), await journal_count(pg, tenant.id))
    h = tenant.headers
    cases = [
        ("/world-model/nodes", {"venue_id": v1["id"], "kind": "Spaceship", "name": "x"}),
        ("/world-model/nodes", {"venue_id": str(uuid.uuid4()), "kind": "Zone", "name": "x"}),
        (
            "/world-model/edges",
            {"venue_id": v1["id"], "type": "NEAR", "from_id": a["id"], "to_id": c["id"]},
        ),  # node of another venue
        (
            "/world-model/edges",
            {"venue_id": v1["id"], "type": "NEAR", "from_id": a["id"], "to_id": str(uuid.uuid4())},
        ),  # dangling
        (
            "/world-model/edges",
            {"venue_id": v1["id"], "type": "NEAR", "from_id": a["id"], "to_id": a["id"]},
        ),  # self loop
        (
            "/world-model/edges",
            {
                "venue_id": v1["id"],
                "type": "NEAR",
                "from_id": a["id"],
                "to_id": c["id"],
                "confidence": 1.5,
            },
        ),
        ("/operations", {"venue_id": str(uuid.uuid4()), "status": "active"}),
        ("/operations", {"venue_id": v1["id"], "status": "exploded"}),
        (
            "/operations",
            {"venue_id": v1["id"], "status": "active", "drone_ids": [str(uuid.uuid4())]},
        ),
    ]
    for path, body in cases:
        response = await client.post(V1 + path, headers=h, json=body)
        assert 400 <= response.status_code < 500, (path, body, response.text)
        assert "error" in response.json()
    batch = await client.post(
        f"{V1}/world-model/nodes/batch",
        headers=h,
        json={
            "nodes": [
                {"venue_id": v1["id"], "kind": "Zone", "name": "ok"},
                {"venue_id": v1["id"], "kind": "Nope", "name": "bad"},
            ]
        },
    )
    assert batch.status_code == 422 and batch.json()["error"]["details"]["index"] == 1
    # None of the refused requests wrote anything to either store.
    assert (await graph_count(graph, tenant.id), await journal_count(pg, tenant.id)) == before
    # A kind change, by contrast, is a valid update: one journal row, labels swapped.
    moved = await client.patch(
        f"{V1}/world-model/nodes/{a['id']}", headers=h, json={"kind": "Hazard"}
    )
    assert moved.status_code == 200
    assert await journal_count(pg, tenant.id) == before[1] + 1
    rows = await graph.read(
        "test.labels", "MATCH (n:WorldNode {id: $id}) RETURN labels(n) AS l", {"id": a["id"]}
    )
    assert sorted(rows[0]["l"]) == ["Hazard", "WorldNode"]


async def test_batch_writes_many_nodes_in_one_call(client, tenant, graph):
    venue = await make_venue(client, tenant)
    nodes = [
        {
            "venue_id": venue["id"],
            "kind": "PerchPoint",
            "name": f"P{i}",
            "position": {"x": i, "y": 0},
        }
        for i in range(300)
    ]
    response = await client.post(
        f"{V1}/world-model/nodes/batch", headers=tenant.headers, json={"nodes": nodes}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == 300 and body["last_version"] - body["first_version"] == 299
    assert await graph_count(graph, tenant.id) == 301
    # Neo4j holds each node at its journaled version (the batch's rows are
    # built before the tenant's lock and numbered once it is taken).
    versions = (
        "MATCH (n:WorldNode) WHERE n.customer_id = $c RETURN n.version AS v, n.name AS name "
        "ORDER BY v"
    )
    rows = await graph.read("test.batch_versions", versions, {"c": tenant.id})
    assert [r["v"] for r in rows] == list(range(body["first_version"], body["last_version"] + 1))
    # And again as an update of the same nodes (Neo4j applies a row only above
    # the version it holds).
    ids = [
        r["id"]
        for r in (
            await client.get(
                f"{V1}/world-model/nodes",
                headers=tenant.headers,
                params={"venue_id": venue["id"], "limit": 500},
            )
        ).json()["items"]
    ]
    assert len(ids) == 300
    renamed = [
        node | {"id": i, "name": f"Q{n}"}
        for n, (i, node) in enumerate(zip(ids, nodes, strict=True))
    ]
    again = await client.post(
        f"{V1}/world-model/nodes/batch", headers=tenant.headers, json={"nodes": renamed}
    )
    assert again.status_code == 200, again.text
    rows = await graph.read("test.batch_versions", versions, {"c": tenant.id})
    first, last = again.json()["first_version"], again.json()["last_version"]
    assert [r["v"] for r in rows] == list(range(first, last + 1))
    assert all(r["name"].startswith("Q") for r in rows)


# ------------------------------------------------- consistency and crashes
async def test_concurrent_writers_on_one_entity_end_at_the_highest_version(
    client, tenant, graph, pg
):
    venue = await make_venue(client, tenant)

    async def rename(i: int):
        return await client.patch(
            f"{V1}/venues/{venue['id']}",
            headers=tenant.headers,
            json={"description": f"writer {i}"},
        )

    results = await asyncio.gather(*(rename(i) for i in range(12)))
    assert all(r.status_code == 200 for r in results)
    winner = max(results, key=lambda r: r.json()["version"]).json()
    rows = await graph.read(
        "test.v",
        "MATCH (v:Venue {id: $id}) RETURN v.version AS version, v.description AS d",
        {"id": venue["id"]},
    )
    assert rows == [{"version": winner["version"], "d": winner["description"]}]
    versions = sorted(r.json()["version"] for r in results)
    assert len(set(versions)) == 12


async def test_journal_committed_but_not_applied_is_reconciled(app, client, tenant, graph, pg):
    """A process killed between the journal commit and the Neo4j apply."""
    from api.journal.entities import EntityType
    from api.journal.reconcile import reconcile_all, verify
    from api.journal.record import Change, Origin, record
    from api.journal.status import frontier
    from relational.database import unit_of_work

    resources = app.state.resources
    customer = uuid.UUID(tenant.id)
    applied = await make_venue(client, tenant, name="Before the crash")
    venue_id = uuid.uuid4()
    async with unit_of_work(resources.sessions) as session:  # step 1 only, then "killed"
        versions = await record(
            session,
            customer,
            [
                Change(
                    EntityType.venue,
                    venue_id,
                    "upsert",
                    {"name": "Lost?", "tags": [], "properties": {}},
                )
            ],
            Origin(updated_by="test"),
        )
    async with resources.sessions() as session:
        assert await frontier(session, customer) == applied["version"]
    drift = await verify(resources, customer)
    assert drift.missing == [("venue", str(venue_id))] and drift.pending == 1
    assert (await client.get(f"{V1}/venues/{venue_id}", headers=tenant.headers)).status_code == 404
    result = await reconcile_all(resources)
    assert result.get(tenant.id) == 1
    drift = await verify(resources, customer)
    assert drift.clean and drift.pending == 0
    async with resources.sessions() as session:
        assert await frontier(session, customer) == versions[-1]
    got = await client.get(f"{V1}/venues/{venue_id}", headers=tenant.headers)
    assert got.status_code == 200 and got.json()["name"] == "Lost?"
    assert await reconcile_all(resources) == {}  # applying twice is a no-op


async def test_writes_are_accepted_while_neo4j_is_down(settings, app, client, tenant, graph, pg):
    import httpx

    from api.journal.reconcile import reconcile_all, verify
    from api.journal.status import frontier
    from main import create_app

    down = create_app(
        settings.model_copy(update={"neo4j_uri": "bolt://127.0.0.1:1"}), background=False
    )
    async with down.router.lifespan_context(down):
        transport = httpx.ASGITransport(app=down)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            before = await make_venue(client, tenant, name="Applied")  # via the healthy app
            r = await c.post(f"{V1}/venues", headers=tenant.headers, json={"name": "Pending"})
            assert r.status_code == 201 and r.json()["applied"] is False
            pending_id = r.json()["id"]
            async with down.state.resources.sessions() as session:
                assert await frontier(session, uuid.UUID(tenant.id)) == before["version"]
    resources = app.state.resources
    await reconcile_all(resources)
    assert (await verify(resources, uuid.UUID(tenant.id))).clean
    got = await client.get(f"{V1}/venues/{pending_id}", headers=tenant.headers)
    assert got.status_code == 200 and got.json()["name"] == "Pending"


async def test_ontology_is_listed(client, tenant):
    body = (await client.get(f"{V1}/world-model/ontology", headers=tenant.headers)).json()
    assert "PerchPoint" in body["node_kinds"] and "CONNECTS_TO" in body["edge_types"]


async def test_analyst_and_device_keys_cannot_write(client, tenant):
    keys = {}
    for scope in ("analyst", "device"):
        r = await client.post(
            f"{V1}/auth/keys", headers=tenant.headers, json={"name": scope, "scope": scope}
        )
        keys[scope] = {"X-API-Key": r.json()["api_key"]}
    venue = await make_venue(client, tenant)
    assert (
        await client.post(f"{V1}/venues", headers=keys["analyst"], json={"name": "x"})
    ).status_code == 403
    assert (
        await client.get(f"{V1}/venues/{venue['id']}", headers=keys["analyst"])
    ).status_code == 200
    assert (
        await client.get(f"{V1}/venues/{venue['id']}", headers=keys["device"])
    ).status_code == 403


async def test_postgres_dying_mid_write_answers_503_and_records_nothing(client, tenant, pg):
    """The write blocks inside its transaction on the tenant lock we hold, then
    its backend is killed: the request must say Postgres, not 500."""
    before = await journal_count(pg, tenant.id)
    async with pg.transaction():
        await pg.execute(
            "SELECT version FROM customer_versions WHERE customer_id = $1::uuid FOR UPDATE",
            tenant.id,
        )
        write = asyncio.create_task(
            client.post(f"{V1}/venues", json={"name": "Doomed"}, headers=tenant.headers)
        )
        for _ in range(200):  # until the request waits on our lock
            waiting = await pg.fetch(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database() AND pid <> pg_backend_pid()"
            )
            if waiting:
                break
            await asyncio.sleep(0.02)
        assert waiting, "the write never reached the tenant lock"
        for row in waiting:
            await pg.execute("SELECT pg_terminate_backend($1)", row["pid"])
        response = await write
    assert response.status_code == 503, response.text
    assert response.json()["error"]["details"] == {"dependency": "postgres"}
    assert await journal_count(pg, tenant.id) == before
    # The pool recovers: the next write goes through.
    again = await client.post(f"{V1}/venues", json={"name": "Fine"}, headers=tenant.headers)
    assert again.status_code == 201
