"""Analyst graph queries: neighbourhoods, paths, exports, named queries and admin Cypher.

Real Neo4j and Postgres; every tenant-facing endpoint is checked with two
tenants holding identical data.
"""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path
from typing import Any

import pytest
from neo4j.exceptions import ClientError

from graph.driver import GraphClient
from graph.named_queries import load_queries, parse_query_file, run_read_only, write_clauses
from tests.conftest import Tenant
from tests.test_graph import make_edge, make_node, make_venue

V1 = "/api/v1"
GRAPH = f"{V1}/graph"


# ------------------------------------------------------------------ a small venue
async def build_venue(client, tenant: Tenant) -> dict[str, Any]:
    """Level 1 contains zones A-B-C-D in a row (CONNECTS_TO), a camera on B,
    an entrance by A with a hazard 5 m away, perch points in B and C."""
    venue = await make_venue(client, tenant, name="Harbour Arena", tags=["stadium"])
    vid = venue["id"]
    ids: dict[str, str] = {"venue": vid}
    ids["level"] = (
        await make_node(client, tenant, vid, "Level", "Level 1", position={"x": 0, "y": 0, "z": 0})
    )["id"]
    for name, x in (("A", 0), ("B", 10), ("C", 20), ("D", 30)):
        ids[name] = (
            await make_node(
                client, tenant, vid, "Zone", f"Zone {name}", position={"x": x, "y": 0, "z": 0}
            )
        )["id"]
    ids["entrance"] = (
        await make_node(
            client, tenant, vid, "Entrance", "North gate", position={"x": 0, "y": 5, "z": 0}
        )
    )["id"]
    ids["hazard"] = (
        await make_node(
            client, tenant, vid, "Hazard", "Wet floor", position={"x": 3, "y": 9, "z": 0}
        )
    )["id"]
    ids["far_hazard"] = (
        await make_node(
            client, tenant, vid, "Hazard", "Roof edge", position={"x": 90, "y": 90, "z": 20}
        )
    )["id"]
    ids["camera"] = (await make_node(client, tenant, vid, "Camera", "Cam 7"))["id"]
    ids["perch_b"] = (await make_node(client, tenant, vid, "PerchPoint", "Ledge B"))["id"]
    ids["perch_c"] = (await make_node(client, tenant, vid, "PerchPoint", "Ledge C"))["id"]
    edges = [
        ("A", "B", "CONNECTS_TO"),
        ("B", "C", "CONNECTS_TO"),
        ("C", "D", "CONNECTS_TO"),
        ("level", "A", "CONTAINS"),
        ("level", "B", "CONTAINS"),
        ("level", "C", "CONTAINS"),
        ("level", "D", "CONTAINS"),
        ("B", "perch_b", "CONTAINS"),
        ("C", "perch_c", "CONTAINS"),
        ("camera", "B", "MONITORS"),
        ("entrance", "A", "LEADS_TO"),
    ]
    for a, b, kind in edges:
        ids[f"{a}-{b}"] = (await make_edge(client, tenant, vid, ids[a], ids[b], kind))["id"]
    return ids


async def analyst_key(client, tenant: Tenant) -> dict[str, str]:
    response = await client.post(
        f"{V1}/auth/keys", headers=tenant.headers, json={"name": "analyst", "scope": "analyst"}
    )
    assert response.status_code == 201, response.text
    return {"X-API-Key": response.json()["api_key"]}


async def named(client, headers, name: str, **params: Any):
    return await client.post(f"{GRAPH}/queries/{name}", headers=headers, json={"params": params})


def error_code(response) -> str:
    return response.json()["error"]["code"]


# ------------------------------------------------------------------ neighbourhood
async def test_neighbourhood_grows_with_hops_and_respects_caps_and_types(client, tenant):
    ids = await build_venue(client, tenant)
    h = tenant.headers

    async def names(**params: Any) -> tuple[set[str], dict[str, Any]]:
        response = await client.get(
            f"{GRAPH}/nodes/{ids['A']}/neighbourhood", headers=h, params=params
        )
        assert response.status_code == 200, response.text
        body = response.json()
        return {n["name"] for n in body["nodes"]}, body

    one, body = await names(hops=1, types="CONNECTS_TO")
    assert one == {"Zone A", "Zone B"}
    assert [(e["from_id"], e["to_id"]) for e in body["edges"]] == [(ids["A"], ids["B"])]
    assert {n["name"]: n["hops"] for n in body["nodes"]} == {"Zone A": 0, "Zone B": 1}
    two, _ = await names(hops=2, types="CONNECTS_TO")
    assert two == {"Zone A", "Zone B", "Zone C"}
    three, _ = await names(hops=3, types="CONNECTS_TO")
    assert three == {"Zone A", "Zone B", "Zone C", "Zone D"}
    everything, _ = await names(hops=1)
    assert everything == {"Zone A", "Zone B", "Level 1", "North gate"}
    capped, body = await names(hops=3, limit=2)
    assert len(capped) == 2 and body["truncated"] is True
    assert "embedding" not in body["nodes"][0]


async def test_neighbourhood_skips_superseded_facts_unless_asked(client, tenant):
    ids = await build_venue(client, tenant)
    sup = await client.post(
        f"{V1}/world-model/edges/{ids['A-B']}/supersede",
        headers=tenant.headers,
        json={"to_id": ids["C"], "at": "2026-01-01T00:00:00Z"},
    )
    assert sup.status_code == 201, sup.text
    url = f"{GRAPH}/nodes/{ids['A']}/neighbourhood?hops=1&types=CONNECTS_TO"
    now = (await client.get(url, headers=tenant.headers)).json()
    assert {n["name"] for n in now["nodes"]} == {"Zone A", "Zone C"}
    history = (await client.get(url + "&current_only=false", headers=tenant.headers)).json()
    assert {n["name"] for n in history["nodes"]} == {"Zone A", "Zone B", "Zone C"}


@pytest.mark.parametrize(
    "query",
    [
        "hops=0",
        "hops=4",
        "hops=x",
        "limit=0",
        "limit=501",
        "types=CONNECTS_TO,EATS",
        "types=IN_VENUE",
        "types=CONNECTS_TO%27%20DELETE",
    ],
)
async def test_neighbourhood_bad_input_is_a_422(client, tenant, query):
    ids = await build_venue(client, tenant)
    response = await client.get(
        f"{GRAPH}/nodes/{ids['A']}/neighbourhood?{query}", headers=tenant.headers
    )
    assert response.status_code == 422, response.text


# ------------------------------------------------------------------ paths
async def test_shortest_path_with_type_restrictions(client, tenant):
    ids = await build_venue(client, tenant)
    h = tenant.headers
    direct = await client.get(
        f"{GRAPH}/path",
        headers=h,
        params={"from_id": ids["A"], "to_id": ids["D"], "types": "CONNECTS_TO"},
    )
    assert direct.status_code == 200, direct.text
    body = direct.json()
    assert body["found"] is True and body["length"] == 3
    assert [n["name"] for n in body["nodes"]] == ["Zone A", "Zone B", "Zone C", "Zone D"]
    via_level = (
        await client.get(
            f"{GRAPH}/path", headers=h, params={"from_id": ids["A"], "to_id": ids["D"]}
        )
    ).json()
    assert via_level["length"] == 2  # A <- Level 1 -> D
    nothing = (
        await client.get(
            f"{GRAPH}/path",
            headers=h,
            params={"from_id": ids["A"], "to_id": ids["D"], "types": "MONITORS"},
        )
    ).json()
    assert nothing == {"found": False, "length": None, "nodes": [], "edges": []}
    same = (
        await client.get(
            f"{GRAPH}/path", headers=h, params={"from_id": ids["A"], "to_id": ids["A"]}
        )
    ).json()
    assert same["length"] == 0 and same["nodes"][0]["id"] == ids["A"]
    unknown = await client.get(
        f"{GRAPH}/path",
        headers=h,
        params={"from_id": ids["A"], "to_id": ids["D"], "types": "CONNECTS_TO,TELEPORTS_TO"},
    )
    assert unknown.status_code == 422 and error_code(unknown) == "unknown_relationship_type"
    missing = await client.get(
        f"{GRAPH}/path", headers=h, params={"from_id": ids["A"], "to_id": str(uuid.uuid4())}
    )
    assert missing.status_code == 404
    assert (await client.get(f"{GRAPH}/path?from_id=x&to_id=y", headers=h)).status_code == 422


# ------------------------------------------------------------------ export
async def test_venue_export_is_complete_and_reimportable_data(client, tenant):
    ids = await build_venue(client, tenant)
    op = await client.post(
        f"{V1}/operations",
        headers=tenant.headers,
        json={"venue_id": ids["venue"], "status": "completed", "name": "Survey"},
    )
    assert op.status_code == 201, op.text
    response = await client.get(f"{GRAPH}/venues/{ids['venue']}/export", headers=tenant.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["format"] == "overwatch.venue-export/1"
    assert body["venue"]["name"] == "Harbour Arena"
    assert len(body["nodes"]) == body["total_nodes"] == 11 and body["truncated"] is False
    assert len(body["edges"]) == 11
    assert [o["name"] for o in body["operations"]] == ["Survey"]
    assert all("embedding" not in n and "customer_id" not in n for n in body["nodes"])
    partial = (
        await client.get(f"{GRAPH}/venues/{ids['venue']}/export?limit=3", headers=tenant.headers)
    ).json()
    assert len(partial["nodes"]) == 3 and partial["truncated"] is True
    node_ids = {n["id"] for n in partial["nodes"]}
    assert all(e["from_id"] in node_ids and e["to_id"] in node_ids for e in partial["edges"])


# ------------------------------------------------------------------ named queries
async def test_named_queries_are_listed_with_typed_parameters(client, tenant):
    response = await client.get(f"{GRAPH}/queries", headers=await analyst_key(client, tenant))
    assert response.status_code == 200
    catalogue = {q["name"]: q for q in response.json()}
    assert len(catalogue) >= 5
    limit = next(p for p in catalogue["drones_at_tagged_venues"]["params"] if p["name"] == "limit")
    assert limit == {
        "name": "limit",
        "type": "int",
        "required": False,
        "default": 100,
        "min": 1,
        "max": 500,
        "description": None,
    }
    assert all("customer_id" not in [p["name"] for p in q["params"]] for q in catalogue.values())


async def test_named_queries_answer_venue_questions(client, admin_headers, tenant):
    ids = await build_venue(client, tenant)
    h = await analyst_key(client, tenant)
    route = await named(
        client, h, "zones_connecting", venue_id=ids["venue"], from_zone="zone a", to_zone="Zone D"
    )
    assert route.status_code == 200, route.text
    assert route.json()["rows"][0]["zones_between"] == ["Zone B", "Zone C"]
    assert route.json()["rows"][0]["hops"] == 3

    perches = (await named(client, h, "perch_points_per_level", venue_id=ids["venue"])).json()
    assert perches["rows"][0]["level"] == "Level 1" and perches["rows"][0]["perch_points"] == 2

    hazards = (
        await named(client, h, "hazards_near_entrances", venue_id=ids["venue"], max_distance_m=6.0)
    ).json()
    assert [(r["entrance"], r["hazard"], r["distance_m"]) for r in hazards["rows"]] == [
        ("North gate", "Wet floor", 5.0)
    ]

    cameras = (
        await named(client, h, "cameras_observing_zone", venue_id=ids["venue"], zone="Zone B")
    ).json()
    assert [(r["camera"], r["link"]) for r in cameras["rows"]] == [("Cam 7", "MONITORS")]

    gaps = (await named(client, h, "zones_without_camera", venue_id=ids["venue"])).json()
    assert [r["zone"] for r in gaps["rows"]] == ["Zone A", "Zone C", "Zone D"]

    # Operations with drones: preregistered by the admin, claimed by the tenant.
    kit = f"K-{secrets.token_hex(4)}"
    drone = f"D-{secrets.token_hex(4)}"
    pre = await client.post(
        f"{V1}/admin/kits",
        headers=admin_headers,
        json={"serial": kit, "name": "Kit", "drones": [{"serial": drone, "model": "Perch Mk II"}]},
    )
    assert pre.status_code == 201, pre.text
    assert (await client.post(f"{V1}/kits/{kit}/claim", headers=tenant.headers)).status_code == 200
    drone_id = (await client.get(f"{V1}/drones/{drone}", headers=tenant.headers)).json()["id"]
    for status in ("completed", "completed", "aborted"):
        op = await client.post(
            f"{V1}/operations",
            headers=tenant.headers,
            json={
                "venue_id": ids["venue"],
                "status": status,
                "drone_ids": [drone_id],
                "started_at": "2026-11-01T10:00:00Z",
            },
        )
        assert op.status_code == 201, op.text
    flown = (await named(client, h, "drones_at_tagged_venues", tag="stadium")).json()
    assert [(r["serial"], r["operations"], r["venues"]) for r in flown["rows"]] == [
        (drone, 3, ["Harbour Arena"])
    ]
    assert (await named(client, h, "drones_at_tagged_venues", tag="mall")).json()["rows"] == []
    completed = (
        await named(client, h, "drones_at_tagged_venues", tag="stadium", status="completed")
    ).json()
    assert completed["rows"][0]["operations"] == 2
    counts = (await named(client, h, "operations_per_venue_status", days=3650)).json()
    assert {(r["status"], r["operations"]) for r in counts["rows"]} == {
        ("aborted", 1),
        ("completed", 2),
    }


@pytest.mark.parametrize(
    ("name", "params", "status", "code"),
    [
        ("no_such_query", {}, 404, "unknown_query"),
        ("zones_without_camera", {}, 422, "invalid_parameters"),  # missing
        ("zones_without_camera", {"venue_id": "not-a-uuid"}, 422, "invalid_parameters"),
        ("zones_without_camera", {"venue_id": 12}, 422, "invalid_parameters"),
        ("zones_without_camera", {"venue_id": None}, 422, "invalid_parameters"),
        ("drones_at_tagged_venues", {"tag": "x", "limit": "10"}, 422, "invalid_parameters"),
        ("drones_at_tagged_venues", {"tag": "x", "limit": 501}, 422, "invalid_parameters"),
        ("drones_at_tagged_venues", {"tag": "x", "limit": 0}, 422, "invalid_parameters"),
        ("drones_at_tagged_venues", {"tag": "x", "limit": True}, 422, "invalid_parameters"),
        ("drones_at_tagged_venues", {"tag": ["x"]}, 422, "invalid_parameters"),
        ("drones_at_tagged_venues", {"tag": "x", "extra": 1}, 422, "invalid_parameters"),
        (
            "hazards_near_entrances",
            {"venue_id": str(uuid.uuid4()), "max_distance_m": "far"},
            422,
            "invalid_parameters",
        ),
        ("drones_at_tagged_venues", {"tag": "x" * 1001}, 422, "invalid_parameters"),
    ],
)
async def test_named_query_bad_input_is_a_4xx(client, tenant, name, params, status, code):
    response = await named(client, tenant.headers, name, **params)
    assert response.status_code == status, response.text
    assert error_code(response) == code


async def test_named_queries_cannot_cross_tenants(client, make_tenant):
    alpha, beta = await make_tenant("alpha"), await make_tenant("beta")
    mine, theirs = await build_venue(client, alpha), await build_venue(client, beta)
    h = alpha.headers
    own = (await named(client, h, "zones_without_camera", venue_id=mine["venue"])).json()
    assert {r["zone_id"] for r in own["rows"]} == {mine["A"], mine["C"], mine["D"]}
    other = (await named(client, h, "zones_without_camera", venue_id=theirs["venue"])).json()
    assert other["rows"] == []
    for name, params in (
        ("perch_points_per_level", {"venue_id": theirs["venue"]}),
        ("cameras_observing_zone", {"venue_id": theirs["venue"], "zone": "Zone B"}),
        (
            "zones_connecting",
            {"venue_id": theirs["venue"], "from_zone": "Zone A", "to_zone": "Zone D"},
        ),
    ):
        response = await named(client, h, name, **params)
        assert response.status_code == 200 and response.json()["rows"] == [], name
    smuggled = await named(
        client, h, "zones_without_camera", venue_id=mine["venue"], customer_id=beta.id
    )
    assert smuggled.status_code == 422
    assert smuggled.json()["error"]["details"][0]["param"] == "customer_id"
    # Only the caller's data, by tenant, in every aggregate: the other tenant
    # has an operation, the caller has none.
    flown = await client.post(
        f"{V1}/operations",
        headers=beta.headers,
        json={"venue_id": theirs["venue"], "status": "completed"},
    )
    assert flown.status_code == 201, flown.text
    theirs_counted = (await named(client, beta.headers, "operations_per_venue_status")).json()
    assert [r["operations"] for r in theirs_counted["rows"]] == [1]
    counts = (await named(client, h, "operations_per_venue_status")).json()
    assert counts["rows"] == []


# ------------------------------------------------------------------ graph endpoints: isolation
async def test_graph_endpoints_only_see_the_callers_tenant(client, make_tenant):
    alpha, beta = await make_tenant("alpha"), await make_tenant("beta")
    mine, theirs = await build_venue(client, alpha), await build_venue(client, beta)
    h = alpha.headers
    own = (await client.get(f"{GRAPH}/nodes/{mine['A']}/neighbourhood?hops=3", headers=h)).json()
    own_ids = {n["id"] for n in own["nodes"]}
    assert mine["D"] in own_ids and not own_ids & set(theirs.values())
    for url in (
        f"{GRAPH}/nodes/{theirs['A']}/neighbourhood",
        f"{GRAPH}/path?from_id={theirs['A']}&to_id={theirs['D']}",
        f"{GRAPH}/path?from_id={mine['A']}&to_id={theirs['D']}",
        f"{GRAPH}/venues/{theirs['venue']}/export",
    ):
        response = await client.get(url, headers=h)
        assert response.status_code == 404, url
    export = (await client.get(f"{GRAPH}/venues/{mine['venue']}/export", headers=h)).json()
    exported = {n["id"] for n in export["nodes"]} | {e["id"] for e in export["edges"]}
    assert not exported & set(theirs.values())


async def test_graph_endpoints_need_the_graph_query_permission(client, tenant):
    device = await client.post(
        f"{V1}/auth/keys",
        headers=tenant.headers,
        json={"name": "cam", "scope": "device", "device_serial": f"D-{secrets.token_hex(3)}"},
    )
    assert device.status_code == 201, device.text
    headers = {"X-API-Key": device.json()["api_key"]}
    assert (await client.get(f"{GRAPH}/queries", headers=headers)).status_code == 403
    assert (await client.get(f"{GRAPH}/queries")).status_code == 401


# ------------------------------------------------------------------ admin Cypher
async def test_admin_cypher_reads_across_tenants_with_a_row_cap(client, admin_headers, make_tenant):
    alpha, beta = await make_tenant("alpha"), await make_tenant("beta")
    await make_venue(client, alpha)
    await make_venue(client, beta)
    response = await client.post(
        f"{GRAPH}/cypher",
        headers=admin_headers,
        json={
            "query": "MATCH (v:Venue) WHERE v.customer_id IN $ids "
            "RETURN v.customer_id AS tenant, v ORDER BY tenant",
            "params": {"ids": [alpha.id, beta.id]},
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["columns"] == ["tenant", "v"]
    assert sorted(r["tenant"] for r in body["rows"]) == sorted([alpha.id, beta.id])
    assert body["rows"][0]["v"]["_labels"] == ["Venue"]
    capped = (
        await client.post(
            f"{GRAPH}/cypher",
            headers=admin_headers,
            json={"query": "UNWIND range(1, 50) AS x RETURN x", "limit": 10},
        )
    ).json()
    assert [r["x"] for r in capped["rows"]] == list(range(1, 11)) and capped["truncated"]


async def test_admin_cypher_refuses_writes_and_nothing_changes(
    client, admin_headers, tenant, graph: GraphClient
):
    venue = await make_venue(client, tenant, name="Untouched")
    writes = [
        "CREATE (:Venue {id: 'x', customer_id: 'evil'})",
        f"MATCH (v:Venue {{id: '{venue['id']}'}}) SET v.name = 'hacked'",
        f"MATCH (v:Venue {{id: '{venue['id']}'}}) DETACH DELETE v",
        "MATCH (v:Venue) WITH v LIMIT 1 MERGE (v)-[:OWNS]->(:Venue {id: 'y'})",
        "CALL db.createLabel('Evil')",
        "LOAD CSV FROM 'file:///etc/passwd' AS line RETURN line",
        "DROP INDEX venue_text",
        "match (v:Venue) remove v.name",
    ]
    for query in writes:
        response = await client.post(
            f"{GRAPH}/cypher", headers=admin_headers, json={"query": query}
        )
        assert response.status_code == 400, (query, response.text)
        assert error_code(response) == "write_refused", query
    # The server refuses writes in the read transaction even past the text check.
    with pytest.raises(ClientError) as refused:
        await run_read_only(
            graph,
            "test.write",
            "CREATE (:Venue {id: 'z', customer_id: 'evil'})",
            {},
            timeout_seconds=5,
            max_rows=10,
        )
    assert refused.value.code == "Neo.ClientError.Statement.AccessMode"
    got = (await client.get(f"{V1}/venues/{venue['id']}", headers=tenant.headers)).json()
    assert got["name"] == "Untouched"
    evil = await graph.read(
        "test.evil",
        "MATCH (n) WHERE n.customer_id = 'evil' OR n.id IN ['x', 'y', 'z'] RETURN count(n) AS n",
    )
    assert evil[0]["n"] == 0
    labels = await graph.read(
        "test.labels", "CALL db.labels() YIELD label RETURN collect(label) AS labels"
    )
    assert "Evil" not in labels[0]["labels"]


async def test_admin_cypher_errors_are_4xx(client, admin_headers):
    bad = await client.post(
        f"{GRAPH}/cypher", headers=admin_headers, json={"query": "MATCH (n RETURN n"}
    )
    assert bad.status_code == 400 and error_code(bad) == "cypher_error"
    slow = await client.post(
        f"{GRAPH}/cypher",
        headers=admin_headers,
        json={
            "query": "UNWIND range(1, 100000000) AS x WITH x WHERE x % 7 = 99 RETURN count(x) AS n",
            "timeout_seconds": 0.2,
        },
    )
    assert slow.status_code == 400 and error_code(slow) == "query_timeout", slow.text
    for body in (
        {"query": ""},
        {"query": "RETURN 1", "limit": 0},
        {"query": "RETURN 1", "timeout_seconds": 600},
        {"query": "x" * 20_001},
    ):
        assert (
            await client.post(f"{GRAPH}/cypher", headers=admin_headers, json=body)
        ).status_code == 422


async def test_admin_cypher_is_admin_only(client, tenant):
    body = {"query": "RETURN 1 AS one"}
    assert (
        await client.post(f"{GRAPH}/cypher", headers=tenant.headers, json=body)
    ).status_code == 403
    analyst = await analyst_key(client, tenant)
    assert (await client.post(f"{GRAPH}/cypher", headers=analyst, json=body)).status_code == 403
    assert (await client.post(f"{GRAPH}/cypher", json=body)).status_code == 401


# ------------------------------------------------------------------ the loader's rules
def write_query(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.cypher"
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """// name: ok
// description: fine
// param: venue_id uuid
MATCH (n:WorldNode) WHERE n.customer_id = $customer_id AND n.venue_id = $venue_id
RETURN n.name AS name
"""


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        (GOOD.replace("n.customer_id = $customer_id AND ", ""), "customer_id"),
        (
            GOOD.replace(
                "// param: venue_id uuid", "// param: venue_id uuid\n// param: customer_id uuid"
            ),
            "bound by the server",
        ),
        (GOOD.replace("// param: venue_id uuid\n", ""), "undeclared"),
        (
            GOOD.replace("// param: venue_id uuid", "// param: venue_id uuid\n// param: spare int"),
            "unused",
        ),
        (GOOD.replace("RETURN n.name AS name", "SET n.name = 'x' RETURN n"), "read-only"),
        (GOOD.replace("// name: ok", "// name: other"), "file name"),
        (GOOD.replace("// description: fine\n", ""), "description"),
        (GOOD.replace("venue_id uuid", "venue_id decimal"), "bad param"),
        (GOOD.replace("venue_id uuid", "venue_id string 1..5"), "range"),
    ],
)
def test_loader_refuses_unsafe_or_sloppy_query_files(tmp_path, text, complaint):
    path = write_query(tmp_path, "ok", text)
    with pytest.raises(ValueError, match=complaint):
        parse_query_file(path)


def test_loader_accepts_a_good_file_and_every_shipped_query(tmp_path):
    query = parse_query_file(write_query(tmp_path, "ok", GOOD))
    assert [p.name for p in query.params] == ["venue_id"]
    shipped = load_queries()
    assert len(shipped) >= 5
    for q in shipped.values():
        assert "$customer_id" in q.cypher and not write_clauses(q.cypher)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("MATCH (n) RETURN n", []),
        ("MATCH (n) WHERE n.name = 'CREATE (x)' RETURN n", []),
        ("MATCH (n) RETURN n.set, n.created, $delete", []),
        ("MATCH (start)-[r]->(stop) RETURN start, stop", []),
        ("MATCH (n) // SET n.x = 1\nRETURN n", []),
        ("MATCH (n) DETACH DELETE n", ["DELETE"]),
        ("match (n) set n.x = 1", ["SET"]),
        ("CALL dbms.security.createUser('a', 'b')", ["procedure that writes or administers"]),
        ("CALL db.createLabel('Evil')", ["procedure that writes or administers"]),
        ("CALL db.clearQueryCaches()", ["procedure that writes or administers"]),
        ("CALL db.labels() YIELD label RETURN label", []),
        (
            "MATCH (n) CALL { WITH n SET n.x = 1 } IN TRANSACTIONS",
            ["CALL { } IN TRANSACTIONS", "SET"],
        ),
    ],
)
def test_write_clause_check(text, found):
    assert write_clauses(text) == found
