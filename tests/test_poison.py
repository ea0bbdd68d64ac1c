"""Values a store cannot hold are refused at the door (api/journal/storable.py).

Each poison value gets a clear 4xx (REST) or a per-mutation `rejected`
(push), never a 500 and never an `applied` that would later wedge the
tenant's projection; nothing is written, and the tenant's next ordinary write
still reaches Neo4j. A hypothesis test throws generated hostile JSON at every
entity type's text fields and properties with the same expectations.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.conftest import Tenant, make_key
from tests.journal_state import pending_rows

V1 = "/api/v1"
SYNC = f"{V1}/sync"


def uid() -> str:
    return str(uuid.uuid4())


def raw(body: dict[str, Any]) -> bytes:
    """JSON as a hostile client may send it: NaN, Infinity and lone surrogates allowed."""
    return json.dumps(body).encode()


async def journal_count(pg, tenant: Tenant) -> int:
    return await pg.fetchval(
        "SELECT count(*) FROM sync_journal WHERE customer_id = $1", uuid.UUID(tenant.id)
    )


async def graph_node(graph, label: str, node_id: str) -> dict[str, Any] | None:
    queries = {
        "Venue": "MATCH (n:Venue {id: $id}) RETURN n {.*} AS n",
        "WorldNode": "MATCH (n:WorldNode {id: $id}) RETURN n {.*} AS n",
        "Operation": "MATCH (n:Operation {id: $id}) RETURN n {.*} AS n",
    }
    rows = await graph.read("test.poison_node", queries[label], {"id": node_id})
    return rows[0]["n"] if rows else None


async def graph_edge(graph, edge_id: str) -> dict[str, Any] | None:
    rows = await graph.read(
        "test.poison_edge",
        "MATCH (:WorldNode)-[r {id: $id}]->(:WorldNode) RETURN r {.*} AS r",
        {"id": edge_id},
    )
    return rows[0]["r"] if rows else None


async def still_flows(client, graph, pg, tenant: Tenant) -> None:
    """An ordinary write of the tenant is applied to Neo4j and nothing is left pending."""
    response = await client.post(
        f"{V1}/venues", json={"name": "After the poison"}, headers=tenant.headers
    )
    assert response.status_code == 201, response.text
    assert response.json()["applied"] is True
    assert (await graph_node(graph, "Venue", response.json()["id"]))["name"] == "After the poison"
    pending = await pending_rows(pg, tenant.id)
    assert pending == 0


async def new_venue(client, tenant: Tenant) -> str:
    response = await client.post(f"{V1}/venues", json={"name": "V"}, headers=tenant.headers)
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def new_node(client, tenant: Tenant, venue_id: str) -> str:
    response = await client.post(
        f"{V1}/world-model/nodes",
        json={"venue_id": venue_id, "kind": "Zone", "name": "Z"},
        headers=tenant.headers,
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def register(client, tenant: Tenant, name: str = "ws") -> tuple[str, dict[str, str]]:
    response = await client.post(
        f"{V1}/auth/workstations/register", json={"name": name}, headers=tenant.headers
    )
    assert response.status_code == 201, response.text
    return response.json()["id"], {"X-API-Key": response.json()["api_key"]}


async def push(client, ws: str, headers: dict[str, str], mutations: list[dict]) -> Any:
    body = {"workstation_id": ws, "protocol_version": 1, "mutations": mutations}
    return await client.post(
        f"{SYNC}/push", content=raw(body), headers=headers | {"content-type": "application/json"}
    )


def assert_refused(response: Any) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    error = response.json()["error"]
    assert {"code", "message", "details"} <= set(error)
    return error


# ------------------------------------------------------------------ properties
POISON_PROPERTIES = {
    "mixed string and number": [1, "a"],
    "mixed boolean and number": [True, 1],
    "mixed boolean and string": ["a", False],
    "null in a list": [1, None],
    "list in a list": [[1], [2]],
    "map in a list": [{"a": 1}],
    "map": {"a": 1},
    "integer above 64 bits": 2**63,
    "integer below 64 bits": -(2**63) - 1,
    "integer above 64 bits in a list": [1, 2**64],
    "NaN": float("nan"),
    "infinity": float("inf"),
    "NUL": "a\x00b",
    "NUL in a list": ["a", "\x00"],
    "lone surrogate": "\ud800",
}


@pytest.mark.parametrize("value", POISON_PROPERTIES.values(), ids=POISON_PROPERTIES.keys())
async def test_unstorable_property_values_are_refused_over_rest(client, graph, pg, tenant, value):
    before = await journal_count(pg, tenant)
    response = await client.post(
        f"{V1}/venues",
        content=raw({"name": "Poisoned", "properties": {"x": value}}),
        headers=tenant.headers | {"content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert_refused(response)
    assert await journal_count(pg, tenant) == before
    await still_flows(client, graph, pg, tenant)


async def test_unstorable_property_keys_are_refused(client, pg, tenant):
    for key in ("a\x00", "\udfff"):
        response = await client.post(
            f"{V1}/venues",
            content=raw({"name": "Poisoned", "properties": {key: 1}}),
            headers=tenant.headers | {"content-type": "application/json"},
        )
        assert response.status_code == 422, response.text
    assert await journal_count(pg, tenant) == 0


async def test_integers_among_floats_are_stored_as_floats_in_both_stores(client, graph, tenant):
    """Neo4j coerces [1, 2.5] to [1.0, 2.5]; the journal keeps the same value."""
    response = await client.post(
        f"{V1}/venues",
        json={"name": "Numbers", "properties": {"x": [1, 2.5], "n": [1, 2], "e": []}},
        headers=tenant.headers,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["properties"] == {"x": [1.0, 2.5], "n": [1, 2], "e": []}
    assert isinstance(body["properties"]["x"][0], float)
    stored = await graph_node(graph, "Venue", body["id"])
    assert stored["p_x"] == [1.0, 2.5] and stored["p_n"] == [1, 2]


# ------------------------------------------------------------------ datetimes
BAD_DATETIMES = {
    "offset +18:01": "2026-01-01T10:00:00+18:01",
    "offset +19:00": "2026-01-01T10:00:00+19:00",
    "offset -23:59": "2026-01-01T10:00:00-23:59",
    "after 9999 in UTC": "9999-12-31T23:59:59-14:00",
    "before year 1 in UTC": "0001-01-01T00:00:00+14:00",
    "zone-less": "2026-01-01T10:00:00",
}


@pytest.mark.parametrize("value", BAD_DATETIMES.values(), ids=BAD_DATETIMES.keys())
async def test_datetimes_neo4j_cannot_store_are_refused(client, graph, pg, tenant, value):
    venue = await new_venue(client, tenant)
    a, b = await new_node(client, tenant, venue), await new_node(client, tenant, venue)
    before = await journal_count(pg, tenant)
    attempts = [
        (f"{V1}/operations", {"venue_id": venue, "status": "active", "started_at": value}),
        (f"{V1}/operations", {"venue_id": venue, "status": "active", "ended_at": value}),
        (
            f"{V1}/world-model/edges",
            {"venue_id": venue, "type": "CONNECTS_TO", "from_id": a, "to_id": b, "valid_to": value},
        ),
        (
            f"{V1}/world-model/edges",
            {
                "venue_id": venue,
                "type": "ADJACENT_TO",
                "from_id": a,
                "to_id": b,
                "valid_from": value,
            },
        ),
    ]
    for path, body in attempts:
        assert_refused(await client.post(path, json=body, headers=tenant.headers))
    key = await client.post(
        f"{V1}/auth/keys",
        json={"name": "k", "scope": "analyst", "expires_at": value},
        headers=tenant.headers,
    )
    assert key.status_code == 422, key.text
    assert await journal_count(pg, tenant) == before
    await still_flows(client, graph, pg, tenant)


async def test_mixing_zoned_and_zone_less_datetimes_is_refused(client, pg, tenant):
    venue = await new_venue(client, tenant)
    before = await journal_count(pg, tenant)
    response = await client.post(
        f"{V1}/operations",
        json={
            "venue_id": venue,
            "status": "completed",
            "started_at": "2026-01-01T10:00:00Z",
            "ended_at": "2026-01-01T12:00:00",
        },
        headers=tenant.headers,
    )
    assert response.status_code == 422, response.text
    a, b = await new_node(client, tenant, venue), await new_node(client, tenant, venue)
    before = await journal_count(pg, tenant)
    response = await client.post(
        f"{V1}/world-model/edges",
        json={
            "venue_id": venue,
            "type": "CONNECTS_TO",
            "from_id": a,
            "to_id": b,
            "valid_from": "2026-01-01T10:00:00",
            "valid_to": "2026-01-01T12:00:00+01:00",
        },
        headers=tenant.headers,
    )
    assert response.status_code == 422, response.text
    assert await journal_count(pg, tenant) == before


async def test_offsets_at_the_limit_are_stored(client, graph, tenant):
    venue = await new_venue(client, tenant)
    response = await client.post(
        f"{V1}/operations",
        json={
            "venue_id": venue,
            "status": "completed",
            "started_at": "2026-01-01T10:00:00-18:00",
            "ended_at": "9999-12-31T23:59:59+14:00",
        },
        headers=tenant.headers,
    )
    assert response.status_code == 201, response.text
    assert response.json()["applied"] is True
    stored = await graph_node(graph, "Operation", response.json()["id"])
    assert stored["started_at"].utcoffset().total_seconds() == -18 * 3600


@pytest.mark.parametrize(
    "query",
    [
        "/operations?started_after=2026-01-01T00:00:00%2B20:00",
        "/operations?started_before=9999-12-31T23:59:59-14:00",
        "/world-model/edges?venue_id={venue}&as_of=9999-12-31T23:59:59-14:00",
        "/world-model/edges?venue_id={venue}&as_of=2026-01-01T00:00:00%2B18:30",
        "/drones?last_seen_before=0001-01-01T00:00:00%2B14:00",
        "/drones?last_seen_after=2026-01-01T00:00:00%2B19:00",
    ],
)
async def test_datetime_filters_out_of_range_are_422(client, tenant, query):
    venue = await new_venue(client, tenant)
    response = await client.get(V1 + query.format(venue=venue), headers=tenant.headers)
    assert response.status_code == 422, response.text
    assert_refused(response)


async def test_zone_less_filters_are_read_as_utc(client, tenant):
    venue = await new_venue(client, tenant)
    await client.post(
        f"{V1}/operations",
        json={"venue_id": venue, "status": "active", "started_at": "2026-06-01T10:00:00Z"},
        headers=tenant.headers,
    )
    found = await client.get(
        f"{V1}/operations?started_after=2026-06-01T09:59:00&venue_id={venue}",
        headers=tenant.headers,
    )
    assert found.status_code == 200, found.text
    assert len(found.json()["items"]) == 1


# ------------------------------------------------------------------ NUL in text fields
async def test_nul_in_every_entity_text_field_is_refused(client, graph, pg, tenant):
    venue = await new_venue(client, tenant)
    node = await new_node(client, tenant, venue)
    before = await journal_count(pg, tenant)
    nul = "bad\x00text"
    attempts = [
        ("post", f"{V1}/venues", {"name": nul}),
        ("post", f"{V1}/venues", {"name": "v", "description": nul}),
        ("post", f"{V1}/venues", {"name": "v", "address": nul}),
        ("post", f"{V1}/venues", {"name": "v", "tags": [nul]}),
        ("post", f"{V1}/venues", {"name": "v", "properties": {"note": nul}}),
        ("patch", f"{V1}/venues/{venue}", {"description": nul}),
        ("post", f"{V1}/world-model/nodes", {"venue_id": venue, "kind": "Zone", "name": nul}),
        (
            "post",
            f"{V1}/world-model/nodes",
            {"venue_id": venue, "kind": "Zone", "name": "n", "description": nul},
        ),
        ("post", f"{V1}/world-model/nodes", {"venue_id": venue, "kind": nul, "name": "n"}),
        ("patch", f"{V1}/world-model/nodes/{node}", {"name": nul}),
        ("post", f"{V1}/operations", {"venue_id": venue, "status": "active", "name": nul}),
        ("post", f"{V1}/operations", {"venue_id": venue, "status": "active", "summary": nul}),
        ("post", f"{V1}/operations", {"venue_id": venue, "status": "active", "kind": nul}),
        ("post", f"{V1}/venues", {"name": "v", "n\x00ame": "x"}),
    ]
    for method, path, body in attempts:
        response = await client.request(method, path, json=body, headers=tenant.headers)
        assert response.status_code == 422, (path, body, response.text)
        assert_refused(response)
    assert await journal_count(pg, tenant) == before
    await still_flows(client, graph, pg, tenant)


async def test_nul_in_registry_text_fields_is_refused(client, admin_headers, pg, tenant):
    nul = "bad\x00text"
    kit_serial = "KIT-NUL-" + secrets.token_hex(4)
    drone_serial = "DRN-NUL-" + secrets.token_hex(4)
    made = await client.post(
        f"{V1}/admin/kits",
        json={"serial": kit_serial, "drones": [{"serial": drone_serial}]},
        headers=admin_headers,
    )
    assert made.status_code == 201, made.text
    assert (
        await client.post(f"{V1}/kits/{kit_serial}/claim", headers=tenant.headers)
    ).status_code == 200
    attempts = [
        ("post", f"{V1}/auth/customers", {"name": nul}, admin_headers),
        ("post", f"{V1}/auth/workstations/register", {"name": nul}, tenant.headers),
        ("post", f"{V1}/auth/keys", {"name": nul, "scope": "analyst"}, tenant.headers),
        (
            "post",
            f"{V1}/admin/kits",
            {"serial": "K-" + secrets.token_hex(4), "name": nul},
            admin_headers,
        ),
        (
            "post",
            f"{V1}/admin/drones",
            {"serial": "D-" + secrets.token_hex(4), "model": nul},
            admin_headers,
        ),
        ("patch", f"{V1}/kits/{kit_serial}", {"name": nul}, tenant.headers),
        ("patch", f"{V1}/drones/{drone_serial}", {"model": nul}, tenant.headers),
        (
            "patch",
            f"{V1}/drones/{drone_serial}/status",
            {"status": "maintenance", "reason": nul},
            tenant.headers,
        ),
    ]
    for method, path, body, headers in attempts:
        response = await client.request(method, path, json=body, headers=headers)
        assert response.status_code == 422, (path, response.text)
        assert_refused(response)
    drone = (await client.get(f"{V1}/drones/{drone_serial}", headers=tenant.headers)).json()
    assert drone["status"] == "active" and drone["model"] is None


async def test_nul_in_query_strings_is_never_a_server_error(client, tenant):
    for query in (
        "/venues?q=a%00b",
        "/venues?tag=%00",
        "/drones?model=a%00",
        "/kits?cursor=%00",
        "/auth/keys?cursor=%00",
    ):
        response = await client.get(V1 + query, headers=tenant.headers)
        assert response.status_code < 500, (query, response.status_code, response.text)


# ------------------------------------------------------------------ sync push
async def test_a_poisoned_mutation_is_rejected_and_the_others_apply(client, graph, pg, tenant):
    ws, h = await register(client, tenant)
    good_before, good_after = uid(), uid()
    poisons = [
        {"name": "bad\x00name"},
        {"name": "v", "tags": ["a\x00"]},
        {"name": "v", "properties": {"x": [1, "a"]}},
        {"name": "v", "properties": {"x": [True, 1]}},
        {"name": "v", "properties": {"x": 2**63}},
        {"name": "v", "properties": {"x": float("nan")}},
        {"name": "v", "properties": {"x": {"nested": 1}}},
        {"name": "v", "properties": {"k\x00": 1}},
        {"name": "v", "na\x00me": 1},
        {"name": "\ud800"},
    ]
    mutations = [
        {
            "mutation_id": 1,
            "type": "venue",
            "id": good_before,
            "op": "upsert",
            "base_version": 0,
            "data": {"name": "Good"},
        },
    ]
    for index, data in enumerate(poisons):
        mutations.append(
            {
                "mutation_id": 2 + index,
                "type": "venue",
                "id": uid(),
                "op": "upsert",
                "base_version": 0,
                "data": data,
            }
        )
    mutations.append(
        {
            "mutation_id": 100,
            "type": "venue",
            "id": good_after,
            "op": "upsert",
            "base_version": 0,
            "data": {"name": "Also good"},
        }
    )
    response = await push(client, ws, h, mutations)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["applied"] + ["rejected"] * len(poisons) + ["applied"]
    for result in results[1:-1]:
        assert result["error"]["code"] == "invalid_data"
        assert "\x00" not in json.dumps(result, ensure_ascii=False)
    assert await journal_count(pg, tenant) == 2
    for venue_id in (good_before, good_after):
        assert await graph_node(graph, "Venue", venue_id) is not None
    # The stored outcomes answer a retry the same way.
    again = await push(client, ws, h, mutations)
    assert [r["status"] for r in again.json()["results"]] == ["duplicate"] * len(mutations)
    await still_flows(client, graph, pg, tenant)


async def test_poisoned_node_edge_and_operation_mutations_are_rejected(client, graph, pg, tenant):
    ws, h = await register(client, tenant)
    venue = await new_venue(client, tenant)
    a, b = await new_node(client, tenant, venue), await new_node(client, tenant, venue)
    edge = {"venue_id": venue, "type": "CONNECTS_TO", "from_id": a, "to_id": b}
    bad = [
        ("world_node", {"venue_id": venue, "kind": "Zone", "name": "n", "description": "\x00"}),
        (
            "world_node",
            {"venue_id": venue, "kind": "Zone", "name": "n", "properties": {"l": [1, None]}},
        ),
        ("world_edge", edge | {"valid_from": "2026-01-01T10:00:00+18:01"}),
        ("world_edge", edge | {"valid_to": "9999-12-31T23:59:59-14:00"}),
        ("world_edge", edge | {"properties": {"x": ["a", 1]}}),
        (
            "operation",
            {"venue_id": venue, "status": "active", "started_at": "2026-01-01T00:00:00+19:00"},
        ),
        ("operation", {"venue_id": venue, "status": "active", "summary": "a\x00"}),
        (
            "operation",
            {
                "venue_id": venue,
                "status": "active",
                "started_at": "2026-01-01T10:00:00Z",
                "ended_at": "2026-01-01T11:00:00",
            },
        ),
    ]
    before = await journal_count(pg, tenant)
    mutations = [
        {"mutation_id": i + 1, "type": t, "id": uid(), "op": "upsert", "base_version": 0, "data": d}
        for i, (t, d) in enumerate(bad)
    ]
    response = await push(client, ws, h, mutations)
    assert response.status_code == 200, response.text
    assert [r["status"] for r in response.json()["results"]] == ["rejected"] * len(bad)
    assert await journal_count(pg, tenant) == before
    await still_flows(client, graph, pg, tenant)


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


async def test_deeply_nested_push_data_is_refused_not_a_recursion_error(client, graph, pg, tenant):
    ws, h = await register(client, tenant)
    # Deeper than JSON parsing allows: the whole push is malformed, nothing recorded.
    response = await client.post(
        f"{SYNC}/push",
        content=json.dumps(
            {
                "workstation_id": ws,
                "protocol_version": 1,
                "mutations": [
                    {
                        "mutation_id": 1,
                        "type": "venue",
                        "id": uid(),
                        "op": "upsert",
                        "base_version": 0,
                        "data": {"name": "v", "properties": "@"},
                    }
                ],
            }
        ).replace('"@"', '{"a": [' * 1000 + "1" + "]}" * 1000),
        headers=h | {"content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "malformed_request"
    # Parseable but deep: that mutation is rejected, the next one applies.
    response = await push(
        client,
        ws,
        h,
        [
            {
                "mutation_id": 1,
                "type": "venue",
                "id": uid(),
                "op": "upsert",
                "base_version": 0,
                "data": {"name": "v", "properties": {"x": nested(400)}},
            },
            {
                "mutation_id": 2,
                "type": "venue",
                "id": uid(),
                "op": "upsert",
                "base_version": 0,
                "data": {"name": "v", "extra": nested(400)},
            },
            {
                "mutation_id": 3,
                "type": "venue",
                "id": uid(),
                "op": "upsert",
                "base_version": 0,
                "data": {"name": "fine"},
            },
        ],
    )
    assert response.status_code == 200, response.text
    assert [r["status"] for r in response.json()["results"]] == ["rejected", "rejected", "applied"]
    assert await journal_count(pg, tenant) == 1
    # Over REST, too.
    response = await client.post(
        f"{V1}/venues",
        content='{"name": "v", "properties": ' + '{"a": ' * 1000 + "1" + "}" * 1001,
        headers=tenant.headers | {"content-type": "application/json"},
    )
    assert 400 <= response.status_code < 500, response.text
    await still_flows(client, graph, pg, tenant)


# ------------------------------------------------------------------ other edges
async def test_workstation_names_up_to_the_schema_limit_register(client, tenant):
    for length in (188, 189, 200):
        response = await client.post(
            f"{V1}/auth/workstations/register", json={"name": "w" * length}, headers=tenant.headers
        )
        assert response.status_code == 201, (length, response.text)
        assert response.json()["name"] == "w" * length
    too_long = await client.post(
        f"{V1}/auth/workstations/register", json={"name": "w" * 201}, headers=tenant.headers
    )
    assert too_long.status_code == 422


async def test_key_expiry_without_a_zone_is_422(client, tenant):
    response = await client.post(
        f"{V1}/auth/keys",
        json={"name": "k", "scope": "analyst", "expires_at": "2099-01-01T00:00:00"},
        headers=tenant.headers,
    )
    assert response.status_code == 422, response.text
    await make_key(client, tenant, "analyst", expires_at="2099-01-01T00:00:00Z")


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, [1, 2**64], {"deep": nested(100)}])
async def test_admin_cypher_parameters_the_driver_cannot_send_are_422(client, admin_headers, value):
    response = await client.post(
        f"{V1}/graph/cypher",
        json={"query": "RETURN $x AS x", "params": {"x": value}},
        headers=admin_headers,
    )
    assert response.status_code == 422, response.text
    assert_refused(response)
    fits = await client.post(
        f"{V1}/graph/cypher",
        json={"query": "RETURN $x AS x", "params": {"x": 2**63 - 1}},
        headers=admin_headers,
    )
    assert fits.status_code == 200, fits.text
    assert fits.json()["rows"][0]["x"] == 2**63 - 1


# ------------------------------------------------------------------ the id race
async def _hold_id(pg, tenant: Tenant, entity_id: str) -> Any:
    """Another tenant's transaction that has written the id and not committed yet."""
    transaction = pg.transaction()
    await transaction.start()
    await pg.execute(
        "INSERT INTO sync_entities (customer_id, entity_type, entity_id, version, deleted, "
        "payload, updated_by, updated_at) VALUES ($1, 'venue', $2, 1, false, "
        "'{\"name\": \"first\"}', 'test', now())",
        uuid.UUID(tenant.id),
        uuid.UUID(entity_id),
    )
    return transaction


async def _wait_until_blocked(pg_other, task: Any) -> None:
    """Until some backend waits for a lock (the second writer on the id)."""
    for _ in range(600):
        if task.done():
            raise AssertionError(f"the second writer did not wait: {task.result().text}")
        waiting = await pg_other.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND wait_event = 'transactionid' AND datname = current_database()"
        )
        if waiting:
            return
        await asyncio.sleep(0.05)
    rows = await pg_other.fetch(
        "SELECT state, wait_event_type, wait_event, left(query, 120) AS q FROM pg_stat_activity "
        "WHERE datname = current_database()"
    )
    raise AssertionError(f"the second writer never waited for the id: {rows}")


@pytest.fixture
async def pg2(test_database_url):
    import asyncpg

    conn = await asyncpg.connect(
        test_database_url.replace("postgresql+asyncpg://", "postgresql://")
    )
    yield conn
    await conn.close()


async def test_two_tenants_creating_one_id_at_once_get_201_and_409(
    client, pg, pg2, tenant, other_tenant
):
    entity_id = uid()
    held = await _hold_id(pg, other_tenant, entity_id)
    second = asyncio.create_task(
        client.post(
            f"{V1}/venues", json={"id": entity_id, "name": "second"}, headers=tenant.headers
        )
    )
    try:
        await _wait_until_blocked(pg2, second)
    finally:
        await held.commit()
    response = await second
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "id_in_use"
    assert await journal_count(pg, tenant) == 0


async def test_a_push_losing_the_id_race_rejects_that_mutation_only(
    client, graph, pg, pg2, tenant, other_tenant
):
    ws, h = await register(client, tenant)
    entity_id, other_id = uid(), uid()
    held = await _hold_id(pg, other_tenant, entity_id)
    second = asyncio.create_task(
        push(
            client,
            ws,
            h,
            [
                {
                    "mutation_id": 1,
                    "type": "venue",
                    "id": entity_id,
                    "op": "upsert",
                    "base_version": 0,
                    "data": {"name": "second"},
                },
                {
                    "mutation_id": 2,
                    "type": "venue",
                    "id": other_id,
                    "op": "upsert",
                    "base_version": 0,
                    "data": {"name": "mine"},
                },
            ],
        )
    )
    try:
        await _wait_until_blocked(pg2, second)
    finally:
        await held.commit()
    response = await second
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["rejected", "applied"]
    assert results[0]["error"]["code"] == "id_in_use"
    assert await graph_node(graph, "Venue", other_id) is not None
    await still_flows(client, graph, pg, tenant)


# ------------------------------------------------------------------ property test
def _offset(minutes: int | None) -> str:
    if minutes is None:
        return ""
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


# Built from characters, not st.text(), which never yields lone surrogates.
HOSTILE_TEXT = st.lists(
    st.one_of(
        st.sampled_from(["\x00", "\ud800", "\udfff"]),
        st.sampled_from(["a", " ", "é", "\u2028"]),
        st.characters(exclude_categories=()),
    ),
    max_size=12,
).map("".join)
HOSTILE_SCALARS = st.one_of(
    HOSTILE_TEXT,
    st.integers(min_value=-(2**65), max_value=2**65),
    st.sampled_from([2**63 - 1, -(2**63), 2**63, -(2**63) - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
)
# Mostly values that are almost right, so mixtures of storable scalars (the
# subtle poison) come up as often as the blatant kind.
PLAIN_SCALARS = st.one_of(
    st.text(alphabet="abc xyz-é", max_size=8),
    st.integers(min_value=-1000, max_value=1000),
    st.floats(min_value=-1e6, max_value=1e6),
    st.booleans(),
)
LEAVES = st.one_of(PLAIN_SCALARS, PLAIN_SCALARS, HOSTILE_SCALARS)
PROPERTY_KEYS = st.one_of(st.sampled_from(["x", "note", "n_1"]), HOSTILE_TEXT)
HOSTILE_JSON = st.recursive(
    LEAVES,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(PROPERTY_KEYS, children, max_size=3)
    ),
    max_leaves=8,
)
PROPERTY_VALUES = st.one_of(LEAVES, st.lists(LEAVES, max_size=5), HOSTILE_JSON)
ODD_DATETIMES = st.builds(
    lambda moment, minutes: moment.isoformat() + _offset(minutes),
    st.one_of(
        st.datetimes(),
        st.sampled_from(
            [datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59), datetime(2026, 1, 1, 10)]
        ),
    ),
    st.one_of(
        st.none(),
        st.integers(min_value=-1439, max_value=1439),
        st.sampled_from([0, 1080, -1080, 1081]),
    ),
)

TEXT_FIELDS = {
    "venue": ["name", "description", "address"],
    "world_node": ["name", "description"],
    "world_edge": [],
    "operation": ["name", "summary", "kind"],
}
DATETIME_FIELDS = {
    "venue": [],
    "world_node": [],
    "world_edge": ["valid_from", "valid_to"],
    "operation": ["started_at", "ended_at"],
}
READ_PATHS = {
    "venue": "/venues",
    "world_node": "/world-model/nodes",
    "world_edge": "/world-model/edges",
    "operation": "/operations",
}
CREATE_PATHS = {
    "venue": "/venues",
    "world_node": "/world-model/nodes",
    "world_edge": "/world-model/edges",
    "operation": "/operations",
}


@pytest.fixture
async def poison_site(client, make_tenant):
    """A tenant with a venue and two nodes the generated entities refer to."""
    tenant = await make_tenant("poison")
    venue = await new_venue(client, tenant)
    nodes = [await new_node(client, tenant, venue) for _ in range(2)]
    ws, ws_headers = await register(client, tenant)
    return {
        "tenant": tenant,
        "venue": venue,
        "nodes": nodes,
        "ws": ws,
        "ws_headers": ws_headers,
        "mutation_id": [0],
    }


def _base_data(entity_type: str, site: dict[str, Any]) -> dict[str, Any]:
    venue, (a, b) = site["venue"], site["nodes"]
    return {
        "venue": {"name": "Generated"},
        "world_node": {"venue_id": venue, "kind": "Zone", "name": "Generated"},
        "world_edge": {"venue_id": venue, "type": "NEAR", "from_id": a, "to_id": b},
        "operation": {"venue_id": venue, "status": "active"},
    }[entity_type]


MIXED_LISTS = st.lists(PLAIN_SCALARS, min_size=2, max_size=5)


@st.composite
def poisoned_entities(draw: Any) -> tuple[str, str, Any, Any, str]:
    """(entity type, field, value, a second datetime or None, "rest" or "push").

    The kind of poison is drawn first, so each kind is tried about equally often.
    """
    kind = draw(st.sampled_from(["datetime", "mixed list", "text", "property"]))
    dated = [t for t in CREATE_PATHS if DATETIME_FIELDS[t]]
    entity_type = draw(st.sampled_from(dated if kind == "datetime" else list(CREATE_PATHS)))
    if kind == "mixed list":
        target, value = "properties", {draw(st.sampled_from(["x", "note"])): draw(MIXED_LISTS)}
    elif kind == "property":
        key = draw(st.one_of(st.sampled_from(["x", "note"]), PROPERTY_KEYS))
        target, value = "properties", {key: draw(PROPERTY_VALUES)}
    elif kind == "text":
        target = draw(st.sampled_from(TEXT_FIELDS[entity_type] or ["properties"]))
        text = draw(HOSTILE_TEXT)
        value = text if target != "properties" else {"note": text}
    else:
        target, value = draw(st.sampled_from(DATETIME_FIELDS[entity_type])), draw(ODD_DATETIMES)
    extra = draw(st.one_of(st.none(), ODD_DATETIMES)) if DATETIME_FIELDS[entity_type] else None
    return entity_type, target, value, extra, draw(st.sampled_from(["rest", "push"]))


async def _entity_in_neo4j(graph, entity_type: str, entity_id: str) -> dict[str, Any] | None:
    if entity_type == "world_edge":
        return await graph_edge(graph, entity_id)
    label = {"venue": "Venue", "world_node": "WorldNode", "operation": "Operation"}[entity_type]
    return await graph_node(graph, label, entity_id)


def _same(graph_value: Any, journal_value: Any) -> bool:
    if hasattr(graph_value, "to_native"):
        return graph_value.to_native() == datetime.fromisoformat(journal_value)
    return graph_value == journal_value


@hypothesis_settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=poisoned_entities())
async def test_hostile_values_are_stored_whole_or_refused_whole(
    client, graph, pg, poison_site, case
):
    """2xx/applied: the value reads back and Neo4j holds it; else 4xx/rejected and
    nothing was journaled. Never a 5xx."""
    entity_type, target, value, extra, venue_of_write = case
    site = poison_site
    tenant: Tenant = site["tenant"]
    data = _base_data(entity_type, site) | {target: value}
    if extra is not None:
        other = [f for f in DATETIME_FIELDS[entity_type] if f != target]
        data[other[0] if other else target] = extra
    entity_id = uid()
    before = await journal_count(pg, tenant)
    if venue_of_write == "rest":
        response = await client.post(
            V1 + CREATE_PATHS[entity_type],
            content=raw(data | {"id": entity_id}),
            headers=tenant.headers | {"content-type": "application/json"},
        )
        assert response.status_code < 500, response.text
        accepted = response.status_code < 300
        if not accepted:
            assert_refused(response)
    else:
        site["mutation_id"][0] += 1
        response = await push(
            client,
            site["ws"],
            site["ws_headers"],
            [
                {
                    "mutation_id": site["mutation_id"][0],
                    "type": entity_type,
                    "id": entity_id,
                    "op": "upsert",
                    "base_version": 0,
                    "data": data,
                }
            ],
        )
        assert response.status_code == 200, response.text
        outcome = response.json()["results"][0]
        assert outcome["status"] in ("applied", "rejected"), outcome
        accepted = outcome["status"] == "applied"
    if not accepted:
        assert await journal_count(pg, tenant) == before
        return
    stored = await pg.fetchrow(
        "SELECT payload::text AS payload, version FROM sync_entities WHERE entity_id = $1",
        uuid.UUID(entity_id),
    )
    payload = json.loads(stored["payload"])
    in_graph = await _entity_in_neo4j(graph, entity_type, entity_id)
    assert in_graph is not None and in_graph["version"] == stored["version"], "not projected"
    read = await client.get(f"{V1}{READ_PATHS[entity_type]}/{entity_id}", headers=tenant.headers)
    assert read.status_code == 200, read.text
    if target == "properties":
        assert read.json()["properties"] == payload["properties"]
        for key, journal_value in payload["properties"].items():
            assert _same(in_graph["p_" + key], journal_value), (key, in_graph, payload)
    elif payload.get(target) is not None:
        assert _same(in_graph[target], payload[target]), (target, in_graph, payload)
