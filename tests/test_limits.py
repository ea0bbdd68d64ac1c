"""Bounded work: a hub node's edges, a venue export, and every Neo4j read are
capped or timed out by the server (docs/graph-model.md, "Limits").

Real Neo4j and Postgres. Work is measured by what Neo4j reports (rows
returned, database hits in a PROFILE), never by the clock.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from neo4j import AsyncManagedTransaction
from neo4j.exceptions import ClientError

from api.core.settings import Settings
from graph import traversal
from graph.driver import GraphClient
from tests.conftest import Tenant, _asyncpg_dsn

V1 = "/api/v1"
LEAVES = 400


async def hub_venue(client: httpx.AsyncClient, tenant: Tenant) -> dict[str, Any]:
    """A venue whose hub zone has an edge to each of LEAVES perch points."""
    h = tenant.headers
    venue = (await client.post(f"{V1}/venues", headers=h, json={"name": "Hub Hall"})).json()["id"]
    hub = str(uuid.uuid4())
    leaves = [str(uuid.uuid4()) for _ in range(LEAVES)]
    nodes = [{"id": hub, "venue_id": venue, "kind": "Zone", "name": "Atrium"}] + [
        {"id": leaf, "venue_id": venue, "kind": "PerchPoint", "name": f"Perch {n}"}
        for n, leaf in enumerate(leaves)
    ]
    r = await client.post(f"{V1}/world-model/nodes/batch", headers=h, json={"nodes": nodes})
    assert r.status_code == 200, r.text
    edges = [
        {"venue_id": venue, "type": "CONNECTS_TO", "from_id": hub, "to_id": leaf} for leaf in leaves
    ]
    r = await client.post(f"{V1}/world-model/edges/batch", headers=h, json={"edges": edges})
    assert r.status_code == 200, r.text
    return {"venue": venue, "hub": hub, "leaves": leaves}


async def test_a_neighbourhood_hop_reads_a_bounded_share_of_a_hubs_edges(
    client, tenant, graph: GraphClient
):
    world = await hub_venue(client, tenant)
    r = await client.get(
        f"{V1}/graph/nodes/{world['hub']}/neighbourhood",
        headers=tenant.headers,
        params={"hops": 2, "limit": 10},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["nodes"]) == 10 and body["truncated"] is True
    found = {n["id"] for n in body["nodes"]}
    assert all(e["from_id"] in found and e["to_id"] in found for e in body["edges"])

    sub = await traversal.neighbourhood(
        graph, tenant.id, world["hub"], hops=1, types=["CONNECTS_TO"], max_nodes=10
    )
    assert sub is not None and sub.truncated
    assert sub.rows_read <= traversal.edges_per_node(10) < LEAVES

    # Neo4j's own account of the work: it expanded only the edges it returned,
    # not the hub's LEAVES.
    async def profile(tx: AsyncManagedTransaction) -> int:
        result = await tx.run(
            "PROFILE " + traversal.NEIGHBOURS,
            {
                "customer_id": tenant.id,
                "frontier": [world["hub"]],
                "types": ["CONNECTS_TO"],
                "current_only": True,
                "per_node": traversal.edges_per_node(10),
                "row_limit": 1000,
            },
        )
        summary = await result.consume()
        return _expanded(summary.profile)

    expanded = await graph.read_tx("test.profile_neighbours", profile)
    # (a few more than it returned: structural edges such as IN_VENUE are expanded too)
    assert 0 < expanded <= 2 * traversal.edges_per_node(10) < LEAVES, expanded


def _expanded(plan: dict[str, Any] | None) -> int:
    """Relationships the plan's Expand operators produced."""
    if not plan:
        return 0
    own = int(plan.get("rows", 0)) if plan.get("operatorType", "").startswith("Expand") else 0
    return own + sum(_expanded(c) for c in plan.get("children", []))


async def test_a_venue_export_caps_its_edges_and_keeps_only_edges_between_exported_nodes(
    app, client, tenant, monkeypatch
):
    world = await hub_venue(client, tenant)
    url = f"{V1}/graph/venues/{world['venue']}/export"
    monkeypatch.setattr(app.state.settings, "graph_export_max_edges", 50)
    capped = (await client.get(url, headers=tenant.headers)).json()
    assert len(capped["nodes"]) == LEAVES + 1 and capped["truncated"] is False
    assert len(capped["edges"]) == 50 and capped["edges_truncated"] is True
    ids = [e["id"] for e in capped["edges"]]
    assert ids == sorted(ids)

    monkeypatch.setattr(app.state.settings, "graph_export_max_edges", 10_000)
    whole = (await client.get(url, headers=tenant.headers)).json()
    assert len(whole["edges"]) == LEAVES and whole["edges_truncated"] is False
    assert [e["id"] for e in whole["edges"]][:50] == ids

    few = (await client.get(url, headers=tenant.headers, params={"limit": 100})).json()
    kept = {n["id"] for n in few["nodes"]}
    assert len(kept) == 100 and few["truncated"] is True
    expected = sum(1 for leaf in world["leaves"] if {leaf, world["hub"]} <= kept)
    assert len(few["edges"]) == expected
    assert all(e["from_id"] in kept and e["to_id"] in kept for e in few["edges"])


async def _idle_reader(tx: AsyncManagedTransaction) -> str:
    """A read transaction that stays open (cheaply) until the server ends it."""
    for _ in range(300):
        await (await tx.run("RETURN 1 AS one")).consume()
        await asyncio.sleep(0.1)
    return "the server never ended the transaction"


async def test_every_read_transaction_carries_the_server_side_timeout(app, settings: Settings):
    assert app.state.resources.graph.read_timeout == settings.neo4j_read_timeout_seconds
    short = GraphClient.connect(
        settings.neo4j_uri,
        settings.neo4j_user,
        settings.neo4j_password.get_secret_value(),
        settings.neo4j_database,
        read_timeout=0.5,
    )
    try:
        with pytest.raises(ClientError) as refused:
            await short.read_tx("test.idle_reader", _idle_reader)
        assert "TransactionTimedOut" in (refused.value.code or "")
    finally:
        await short.close()


async def _waiting_for_locks(pg) -> int:
    return int(
        await pg.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
    )


async def _until_waiting(pg, count: int) -> None:
    for _ in range(1200):
        if await _waiting_for_locks(pg) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never {count} sessions waiting for a lock")


async def test_complete_hashes_the_object_without_holding_the_blob_row(
    client, tenant: Tenant, pg, test_database_url
):
    """A declared SHA-256 the store did not keep is checked by reading the object,
    up to 2 GiB: a delete or another complete must not queue behind that read."""
    # Large enough that reading and hashing it takes far longer than a woken
    # Postgres waiter needs to take the row: the lock is not handed over in
    # queue order, so with a tiny object `complete` could re-lock first.
    data = secrets.token_bytes(8 * 1024 * 1024)
    r = await client.post(
        f"{V1}/blobs/upload-url",
        headers=tenant.headers,
        json={
            "content_type": "application/octet-stream",
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        },
    )
    assert r.status_code == 201, r.text
    ticket = r.json()
    blob_id = uuid.UUID(ticket["blob_id"])
    upload = ticket["upload"]
    async with httpx.AsyncClient(timeout=30) as store:
        sent = await store.post(
            upload["url"],
            data=upload["fields"],
            files={upload["file_field"]: ("blob.bin", data, "application/octet-stream")},
        )
    assert sent.status_code == 204, sent.text

    # first holds the row; complete queues for it; second queues behind complete.
    first, second = (
        await asyncpg.connect(_asyncpg_dsn(test_database_url)),
        await asyncpg.connect(_asyncpg_dsn(test_database_url)),
    )
    lock_row = "SELECT state FROM blobs WHERE id = $1 FOR UPDATE"
    try:
        held = first.transaction()
        await held.start()
        await first.fetchval(lock_row, blob_id)
        complete = asyncio.create_task(
            client.post(f"{V1}/blobs/{blob_id}/complete", headers=tenant.headers, timeout=120)
        )
        await _until_waiting(pg, 1)
        queued = second.transaction()
        await queued.start()
        behind = asyncio.create_task(second.fetchval(lock_row, blob_id))
        await _until_waiting(pg, 2)
        await held.rollback()
        # complete takes the row, copies and checks the object, then lets the row go
        # while it hashes: the session queued behind it gets the row while the blob
        # is still pending (holding it through the hash, it would see `available`).
        state_seen_behind = await behind
        await queued.rollback()
        done = await complete
    finally:
        await first.close()
        await second.close()
    assert state_seen_behind == "pending"
    assert done.status_code == 200, done.text
    assert done.json()["state"] == "available"
    assert await pg.fetchval("SELECT state FROM blobs WHERE id = $1", blob_id) == "available"
