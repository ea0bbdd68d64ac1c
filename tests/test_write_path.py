"""The overlapped write path (api/journal/ `TenantTransaction`).

Neo4j runs a write's statements while Postgres commits the journal rows; these
tests pin down that Neo4j still only ever commits what the journal committed,
that older pending rows are applied before newer ones, and that the tenant's
apply lock never outlives the request that took it.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from api.journal.apply import prepare_ahead
from api.journal.changes import ChangeSet
from api.journal.entities import EntityType
from api.journal.reconcile import verify
from api.journal.record import Change, Origin, record
from api.journal.status import frontier
from api.journal.transaction import tenant_transaction
from tests.test_graph import V1, journal_count, make_venue

VENUE_BY_NAME = "MATCH (v:Venue {name: $name}) WHERE v.customer_id = $c RETURN v.id AS id"


async def advisory_locks(pg) -> int:
    """Advisory locks held by any session of the test database (the apply locks)."""
    return int(
        await pg.fetchval(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
            "WHERE l.locktype = 'advisory' AND d.datname = current_database()"
        )
    )


async def test_neo4j_rolls_back_when_the_journal_does_not_commit(app, tenant, graph, pg):
    """The statements have run in Neo4j (not yet visible), then the body fails."""
    resources = app.state.resources
    customer = uuid.UUID(tenant.id)
    venue_id = uuid.uuid4()
    name = f"Never committed {venue_id}"
    before = await journal_count(pg, tenant.id)
    change = Change(EntityType.venue, venue_id, "upsert", {"name": name, "tags": []})
    with pytest.raises(RuntimeError, match="the journal transaction fails here"):
        async with tenant_transaction(resources, customer) as tx:
            await tx.record([change], Origin(updated_by="test"))
            assert tx._running is not None, "nothing pending, so the overlap must be used"
            await tx._running  # Neo4j has run the MERGE inside its open transaction
            seen = await graph.read("test.v", VENUE_BY_NAME, {"name": name, "c": tenant.id})
            assert seen == []  # uncommitted: invisible to everyone else
            raise RuntimeError("the journal transaction fails here")
    assert await graph.read("test.v", VENUE_BY_NAME, {"name": name, "c": tenant.id}) == []
    assert await journal_count(pg, tenant.id) == before
    assert await advisory_locks(pg) == 0
    assert (await verify(resources, customer)).clean


async def test_journal_commit_failing_over_http_writes_neither_store(client, tenant, graph, pg):
    """A deferred trigger makes the journal's COMMIT itself fail, after a pause
    long enough for Neo4j to have run the statements."""
    name = f"Doomed at commit {uuid.uuid4()}"
    await pg.execute(
        f"""
        CREATE FUNCTION refuse_doomed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.payload->>'name' = '{name}' THEN
            PERFORM pg_sleep(0.3);
            RAISE EXCEPTION 'refused at commit';
          END IF;
          RETURN NULL;
        END $$;
        CREATE CONSTRAINT TRIGGER refuse_doomed AFTER INSERT ON sync_journal
          DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_doomed();
        """
    )
    try:
        before = await journal_count(pg, tenant.id)
        response = await client.post(f"{V1}/venues", json={"name": name}, headers=tenant.headers)
        assert response.status_code == 500, response.text
    finally:
        await pg.execute(
            "DROP TRIGGER refuse_doomed ON sync_journal; DROP FUNCTION refuse_doomed();"
        )
    assert await graph.read("test.v", VENUE_BY_NAME, {"name": name, "c": tenant.id}) == []
    assert await journal_count(pg, tenant.id) == before
    assert await advisory_locks(pg) == 0
    after = await client.post(f"{V1}/venues", json={"name": "Next"}, headers=tenant.headers)
    assert after.status_code == 201 and after.json()["applied"] is True


async def test_older_pending_rows_are_applied_before_a_new_write(
    settings, app, client, tenant, graph, pg
):
    """A venue journaled while Neo4j was down, then a node in it: the node's
    write must apply the venue first (in version order), not skip it."""
    import httpx

    from main import create_app

    down = create_app(
        settings.model_copy(update={"neo4j_uri": "bolt://127.0.0.1:1"}), background=False
    )
    async with down.router.lifespan_context(down):
        transport = httpx.ASGITransport(app=down)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            r = await c.post(f"{V1}/venues", headers=tenant.headers, json={"name": "Pending"})
            assert r.status_code == 201 and r.json()["applied"] is False
    venue = r.json()
    node = await client.post(
        f"{V1}/world-model/nodes",
        headers=tenant.headers,
        json={"venue_id": venue["id"], "kind": "Zone", "name": "Hall"},
    )
    assert node.status_code == 201 and node.json()["applied"] is True
    rows = await graph.read(
        "test.n",
        "MATCH (n:WorldNode {id: $id})-[:IN_VENUE]->(v:Venue) RETURN v.name AS venue",
        {"id": node.json()["id"]},
    )
    assert rows == [{"venue": "Pending"}]
    customer = uuid.UUID(tenant.id)
    drift = await verify(app.state.resources, customer)
    assert drift.clean and drift.pending == 0
    async with app.state.resources.sessions() as session:
        assert await frontier(session, customer) == node.json()["version"]
    assert await advisory_locks(pg) == 0


async def test_a_writer_that_waited_for_the_counter_applies_what_its_predecessor_left(
    app, tenant, graph, pg
):
    """The lock statement's own pending check reads a snapshot taken before it
    waited for the counter row. A predecessor that committed a pending venue
    meanwhile (its Neo4j apply never ran) must still be seen: the node written
    next lands in Neo4j inside that venue, and nothing is marked applied that
    Neo4j does not hold."""
    resources = app.state.resources
    customer = uuid.UUID(tenant.id)
    venue_id = uuid.uuid4()
    async with resources.sessions() as first:
        await record(
            first,
            customer,
            [Change(EntityType.venue, venue_id, "upsert", {"name": "Late", "tags": []})],
            Origin(updated_by="test"),
        )  # the counter row is locked until `first` commits

        async def second() -> bool:
            node = {"venue_id": str(venue_id), "kind": "Zone", "name": "Hall"}
            async with tenant_transaction(resources, customer) as tx:
                await tx.record(
                    [Change(EntityType.world_node, uuid.uuid4(), "upsert", node)],
                    Origin(updated_by="test"),
                )
            return tx.applied

        waiting = asyncio.create_task(second())
        for _ in range(200):  # until its lock statement waits for the row
            if await pg.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted"):
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("the second writer never waited for the counter row")
        await first.commit()
    assert await waiting
    rows = await graph.read(
        "test.n",
        "MATCH (n:WorldNode)-[:IN_VENUE]->(v:Venue {id: $v}) RETURN n.name AS name",
        {"v": str(venue_id)},
    )
    assert rows == [{"name": "Hall"}]
    drift = await verify(resources, customer)
    assert drift.clean and drift.pending == 0
    assert await advisory_locks(pg) == 0


async def test_concurrent_batches_of_two_tenants_converge(
    client, tenant, other_tenant, app, graph, pg
):
    """Writers of one tenant queue on its locks; two tenants overlap freely."""
    venues = {t.id: await make_venue(client, t) for t in (tenant, other_tenant)}

    async def batch(t, i):
        nodes = [
            {"venue_id": venues[t.id]["id"], "kind": "PerchPoint", "name": f"P{i}-{j}"}
            for j in range(50)
        ]
        return await client.post(
            f"{V1}/world-model/nodes/batch", json={"nodes": nodes}, headers=t.headers
        )

    results = await asyncio.gather(*(batch(t, i) for i in range(6) for t in (tenant, other_tenant)))
    assert all(r.status_code == 200 and r.json()["applied"] for r in results)
    for t in (tenant, other_tenant):
        drift = await verify(app.state.resources, uuid.UUID(t.id))
        assert drift.clean and drift.pending == 0
        count = await graph.read(
            "test.count",
            "MATCH (n:WorldNode) WHERE n.customer_id = $c RETURN count(n) AS n",
            {"c": t.id},
        )
        assert count == [{"n": 300}]
    assert await advisory_locks(pg) == 0


async def test_an_overlapped_write_behind_the_fence_leaves_neo4j_alone(app, tenant, graph, pg):
    """The overlapped path raises the tenant's apply fence first thing in its
    Neo4j transaction, in its first statement's round trip
    (`graph.projection.FENCE`). A later applier holding a higher epoch (here:
    the fence set far ahead) makes it roll back: the journal keeps the change
    pending, Neo4j never sees it."""
    resources = app.state.resources
    customer = uuid.UUID(tenant.id)
    venue_id = uuid.uuid4()
    name = f"Behind the fence {venue_id}"
    fence = "MERGE (f:ApplyFence {tenant: $customer_id}) SET f.epoch = $epoch"
    await graph.write("test.fence_ahead", fence, {"customer_id": tenant.id, "epoch": 10**15})
    try:
        change = Change(EntityType.venue, venue_id, "upsert", {"name": name, "tags": []})
        async with tenant_transaction(resources, customer) as tx:
            await tx.record([change], Origin(updated_by="test"))
            assert tx._running is not None, "nothing pending, so the overlap must be used"
        assert not tx.applied  # the retry (`try_apply`) is behind the fence too
        assert await graph.read("test.v", VENUE_BY_NAME, {"name": name, "c": tenant.id}) == []
        state = await pg.fetchval(
            "SELECT state FROM sync_journal WHERE customer_id = $1 AND entity_id = $2",
            customer,
            venue_id,
        )
        assert state == "pending"
    finally:
        await graph.write("test.fence_back", fence, {"customer_id": tenant.id, "epoch": 0})
    assert await advisory_locks(pg) == 0


async def test_changes_sent_ahead_then_changed_by_validation_never_reach_neo4j(
    app, tenant, graph, pg
):
    """`send_ahead` starts Neo4j on what a batch expects to journal; if what is
    recorded differs, what was sent ahead is rolled back and the recorded
    changes are applied after the commit instead."""
    resources = app.state.resources
    customer = uuid.UUID(tenant.id)
    expected, actual = uuid.uuid4(), uuid.uuid4()

    def venue(venue_id: uuid.UUID) -> Change:
        return Change(EntityType.venue, venue_id, "upsert", {"name": f"V {venue_id}", "tags": []})

    async with tenant_transaction(resources, customer) as tx:
        tx.send_ahead(prepare_ahead(customer, [venue(expected)]))
        assert tx._running is not None
        await tx._running  # Neo4j has run the statement, uncommitted
        await tx.record([venue(actual)], Origin(updated_by="test"))
    assert tx.applied

    async def in_neo4j(venue_id: uuid.UUID) -> bool:
        found = await graph.read(
            "test.ahead",
            "MATCH (v:Venue {id: $id}) WHERE v.customer_id = $c RETURN v.id AS id",
            {"id": str(venue_id), "c": tenant.id},
        )
        return bool(found)

    assert not await in_neo4j(expected)
    assert await in_neo4j(actual)
    assert await advisory_locks(pg) == 0
    assert (await verify(resources, customer)).clean


async def test_rows_sent_ahead_again_by_a_retried_write_keep_their_versions(app, tenant, graph, pg):
    """A write retried after an id race (api/journal/writes.py) sends the same
    prepared rows ahead again, in a new transaction: they are renumbered from
    its versions, not from the first attempt's."""
    resources = app.state.resources
    customer = uuid.UUID(tenant.id)
    venue_id = uuid.uuid4()
    change = Change(EntityType.venue, venue_id, "upsert", {"name": f"V {venue_id}", "tags": []})
    ahead = prepare_ahead(customer, [change])
    with pytest.raises(RuntimeError, match="the first attempt fails"):
        async with tenant_transaction(resources, customer) as tx:
            tx.send_ahead(ahead)
            raise RuntimeError("the first attempt fails")
    async with tenant_transaction(resources, customer) as tx:
        tx.send_ahead(ahead)
        [version] = await tx.record([change], Origin(updated_by="test"))
    assert tx.applied
    found = await graph.read(
        "test.ahead_retry",
        "MATCH (v:Venue {id: $id}) WHERE v.customer_id = $c RETURN v.version AS version",
        {"id": str(venue_id), "c": tenant.id},
    )
    assert found == [{"version": version}]
    assert (await verify(resources, customer)).clean


async def test_a_batch_outside_the_ontology_is_not_sent_ahead(app, tenant):
    """Node kinds and edge types become Neo4j labels and relationship types,
    tokens Neo4j keeps even when the transaction naming them rolls back: a
    batch is sent ahead of validation only if all of them are the ontology's."""
    resources = app.state.resources
    customer = uuid.UUID(tenant.id)
    kind = resources.settings.ontology_node_kinds[0]

    def node(kind: str) -> Change:
        data = {"venue_id": str(uuid.uuid4()), "kind": kind, "name": "n"}
        return Change(EntityType.world_node, uuid.uuid4(), "upsert", data)

    with pytest.raises(RuntimeError, match="roll back"):
        async with tenant_transaction(resources, customer) as tx:
            changes = ChangeSet(tx.session, resources.settings, customer, tx.next_version)
            changes.ahead, changes.ahead_dispatched = tx.send_ahead, tx.ahead_dispatched
            expected = prepare_ahead(customer, [node(kind), node("NotAKind")])
            await changes.prefetch([c.entity_id for c in expected.changes])
            changes.send_ahead(expected)
            assert tx._running is None
            edge = {
                "venue_id": str(uuid.uuid4()),
                "from_id": str(uuid.uuid4()),
                "to_id": str(uuid.uuid4()),
                "type": "NOT_AN_EDGE_TYPE",
            }
            expected = prepare_ahead(
                customer, [Change(EntityType.world_edge, uuid.uuid4(), "upsert", edge)]
            )
            await changes.prefetch([c.entity_id for c in expected.changes])
            changes.send_ahead(expected)
            assert tx._running is None
            expected = prepare_ahead(customer, [node(kind)])
            await changes.prefetch([c.entity_id for c in expected.changes])
            changes.send_ahead(expected)
            assert tx._running is not None
            raise RuntimeError("roll back")


async def test_a_batch_naming_another_tenants_node_is_refused_before_neo4j_sees_it(
    client, tenant, other_tenant, app, graph
):
    """A node id of another tenant: the batch is refused (409), and its
    statement never reaches Neo4j, where the MERGE would hold that node's lock
    until the write rolled back (the other tenant's writes waiting on it)."""
    theirs = await make_venue(client, other_tenant)
    node = await client.post(
        f"{V1}/world-model/nodes",
        headers=other_tenant.headers,
        json={"venue_id": theirs["id"], "kind": "Zone", "name": "Theirs"},
    )
    assert node.status_code == 201
    resources = app.state.resources
    customer = uuid.UUID(tenant.id)
    mine = await make_venue(client, tenant)
    data = {"venue_id": mine["id"], "kind": "Zone", "name": "Mine"}
    expected = prepare_ahead(
        customer,
        [
            Change(EntityType.world_node, uuid.uuid4(), "upsert", data),
            Change(EntityType.world_node, uuid.UUID(node.json()["id"]), "upsert", data),
        ],
    )
    with pytest.raises(RuntimeError, match="roll back"):
        async with tenant_transaction(resources, customer) as tx:
            changes = ChangeSet(tx.session, resources.settings, customer, tx.next_version)
            changes.ahead, changes.ahead_dispatched = tx.send_ahead, tx.ahead_dispatched
            await changes.prefetch([c.entity_id for c in expected.changes])
            changes.send_ahead(expected)
            assert tx._running is None
            raise RuntimeError("roll back")
    nodes = [{"id": node.json()["id"], "venue_id": mine["id"], "kind": "Zone", "name": "Mine"}]
    refused = await client.post(
        f"{V1}/world-model/nodes/batch", json={"nodes": nodes}, headers=tenant.headers
    )
    assert refused.status_code == 409, refused.text
    kept = await graph.read(
        "test.n", "MATCH (n:WorldNode {id: $id}) RETURN n.name AS name", {"id": node.json()["id"]}
    )
    assert kept == [{"name": "Theirs"}]


async def test_states_loaded_with_the_lock_are_dropped_when_a_writer_committed_first(
    app, tenant, pg
):
    """The lock statement loads the states a write names (`preload`) as of its
    snapshot, taken before it waits for the counter row. A writer that commits
    while it waits changes the tenant's state: those states are dropped and
    loaded again, never used stale."""
    resources = app.state.resources
    customer = uuid.UUID(tenant.id)
    entity_id = uuid.uuid4()
    writer = pg.transaction()
    await writer.start()
    await pg.execute(
        "UPDATE customer_versions SET version = version + 1 WHERE customer_id = $1", customer
    )
    loaded: dict[str, object] = {}

    async def waiting_writer() -> None:
        async with tenant_transaction(resources, customer, preload=[entity_id]) as tx:
            loaded["preloaded"] = dict(tx.preloaded)
            changes = ChangeSet(tx.session, resources.settings, customer, tx.next_version)
            changes.load(tx.preloaded)
            await changes.prefetch([entity_id])
            loaded["state"] = await changes.state(entity_id)
            loaded["absent"] = entity_id in changes.absent

    task = asyncio.create_task(waiting_writer())
    await asyncio.sleep(0.3)  # its lock statement has its snapshot and waits for the row
    assert not task.done()
    await pg.execute(
        "INSERT INTO sync_entities (customer_id, entity_type, entity_id, version, deleted, "
        "payload) SELECT $1, 'venue', $2, version, false, '{\"name\": \"first\"}' "
        "FROM customer_versions WHERE customer_id = $1",
        customer,
        entity_id,
    )
    await writer.commit()
    await task
    assert loaded["preloaded"] == {}
    state = loaded["state"]
    assert state is not None and state.data == {"name": "first"}  # type: ignore[attr-defined]
    assert loaded["absent"] is False
