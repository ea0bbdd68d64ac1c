"""The conflict inbox (issue 17 part 3), end to end on real Postgres and Neo4j:
a push's conflict is kept, listed, and resolved either way, attributed to
whoever resolved it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import event

from api.sync.conflicts import prune_conflicts
from relational.database import unit_of_work
from tests.conftest import Tenant, schema_drift
from tests.test_sync import SYNC, V1, do_push, mutation, register, uid

CONFLICTS = f"{SYNC}/conflicts"


@dataclass
class Station:
    id: str
    headers: dict[str, str]
    last: int = 0

    def mid(self) -> int:
        self.last += 1
        return self.last


@dataclass
class Scene:
    """A tenant with two workstations and a venue: `a` writes, `b` loses."""

    client: httpx.AsyncClient
    tenant: Tenant
    a: Station
    b: Station
    venue: str
    venue_version: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)  # the losing mutations

    async def push(self, station: Station, *mutations: dict[str, Any]) -> list[dict[str, Any]]:
        r = await do_push(self.client, station.id, station.headers, list(mutations))
        assert r.status_code == 200, r.text
        return r.json()["results"]

    async def conflict(self, status: str = "aborted", loser: Station | None = None) -> dict:
        """`a` creates an operation and edits it; `loser` (b) edits the first
        version: a conflict. Returns the push result."""
        loser = loser or self.b
        op = uid()
        data = {"venue_id": self.venue, "status": "planned"}
        (made,) = await self.push(self.a, mutation(self.a.mid(), "operation", op, data=data))
        base = made["version"]
        await self.push(
            self.a,
            mutation(self.a.mid(), "operation", op, base=base, data=data | {"status": "active"}),
        )
        sent = mutation(loser.mid(), "operation", op, base=base, data=data | {"status": status})
        self.sent.append(sent)
        (lost,) = await self.push(loser, sent)
        assert lost["status"] == "conflict", lost
        return lost


async def scene(client: httpx.AsyncClient, tenant: Tenant) -> Scene:
    a_id, a_headers = await register(client, tenant, "ws-a")
    b_id, b_headers = await register(client, tenant, "ws-b")
    s = Scene(client, tenant, Station(a_id, a_headers), Station(b_id, b_headers), uid())
    (made,) = await s.push(
        s.a, mutation(s.a.mid(), "venue", s.venue, data={"name": "Harbour Mall"})
    )
    s.venue_version = made["version"]
    return s


async def customer_key_uuid(client: httpx.AsyncClient, tenant: Tenant) -> str:
    keys = (await client.get(f"{V1}/auth/keys", headers=tenant.headers)).json()
    (key,) = [k for k in keys if k["scopes"] == ["customer"]]
    return str(key["id"])


async def listed(client: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> list[str]:
    r = await client.get(CONFLICTS, headers=headers, params=params)
    assert r.status_code == 200, r.text
    return [c["id"] for c in r.json()["items"]]


async def counts(pg: Any, tenant: Tenant) -> tuple[int, int]:
    """(journal rows, conflict rows) of the tenant."""
    journal = await pg.fetchval(
        "SELECT count(*) FROM sync_journal WHERE customer_id = $1::uuid", tenant.id
    )
    conflicts = await pg.fetchval(
        "SELECT count(*) FROM sync_conflicts WHERE customer_id = $1::uuid", tenant.id
    )
    return journal, conflicts


# ------------------------------------------------------------------ recording
async def test_a_conflict_is_kept_with_the_losing_data_and_a_retry_adds_no_row(
    client, tenant, pg, test_database_url
):
    assert await schema_drift(test_database_url, {"sync_conflicts"}) == []
    s = await scene(client, tenant)
    lost = await s.conflict()
    conflict_id = lost["conflict_id"]
    row = await pg.fetchrow("SELECT * FROM sync_conflicts WHERE id = $1::uuid", conflict_id)
    assert str(row["customer_id"]) == tenant.id and str(row["workstation_id"]) == s.b.id
    assert row["mutation_id"] == s.b.last and row["op"] == "upsert" and row["force"] is False
    assert json.loads(row["data"])["status"] == "aborted"  # the losing data, as sent
    assert json.loads(row["server"]) == lost["server"]  # what the push answered
    assert row["server_version"] == lost["server"]["version"] == row["head_version"]
    assert row["resolved_at"] is None

    got = (await client.get(f"{CONFLICTS}/{conflict_id}", headers=s.tenant.headers)).json()
    assert got["state"] == "open" and got["mutation"]["data"]["status"] == "aborted"
    assert got["server"]["data"]["status"] == "active"
    assert got["workstation_id"] == s.b.id and got["entity_type"] == "operation"

    # The same push again (its answer was lost): `duplicate`, the same id, no new row.
    before = await counts(pg, tenant)
    r = await do_push(client, s.b.id, s.b.headers, s.sent)
    (again,) = r.json()["results"]
    assert again["status"] == "duplicate" and again["original_status"] == "conflict"
    assert again["conflict_id"] == conflict_id
    assert await counts(pg, tenant) == before


async def test_unstorable_losing_data_is_kept_escaped_and_the_push_answers(client, tenant, pg):
    s = await scene(client, tenant)
    op = uid()
    data = {"venue_id": s.venue, "status": "planned"}
    (made,) = await s.push(s.a, mutation(s.a.mid(), "operation", op, data=data))
    await s.push(s.a, mutation(s.a.mid(), "operation", op, base=made["version"], data=data))
    bad = data | {"notes": "nul\u0000here"}
    (lost,) = await s.push(
        s.b, mutation(s.b.mid(), "operation", op, base=made["version"], data=bad)
    )
    assert lost["status"] == "conflict"
    stored = await pg.fetchval(
        "SELECT data FROM sync_conflicts WHERE id = $1::uuid", lost["conflict_id"]
    )
    assert json.loads(stored)["notes"] == "nul\\u0000here"


@contextmanager
def statements_on_conflicts(app: FastAPI) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "sync_conflicts" in statement:
            seen.append(statement)

    engine = app.state.resources.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def test_a_push_keeps_its_conflicts_in_one_statement_and_none_without(
    app, client, tenant, pg
):
    s = await scene(client, tenant)
    ops = [uid(), uid()]
    data = {"venue_id": s.venue, "status": "planned"}
    with statements_on_conflicts(app) as seen:
        made = await s.push(s.a, *[mutation(s.a.mid(), "operation", o, data=data) for o in ops])
        assert seen == []  # no conflict, no statement
        await s.push(
            s.a,
            *[
                mutation(s.a.mid(), "operation", o, base=m["version"], data=data)
                for o, m in zip(ops, made, strict=True)
            ],
        )
        lost = await s.push(
            s.b,
            *[
                mutation(s.b.mid(), "operation", o, base=m["version"], data=data)
                for o, m in zip(ops, made, strict=True)
            ],
        )
    assert [r["status"] for r in lost] == ["conflict", "conflict"]
    assert len(seen) == 1, seen
    assert await counts(pg, tenant) == (5, 2)


# ------------------------------------------------------------------ listing
async def test_listing_filters_pages_and_each_key_sees_its_own(client, tenant, other_tenant, pg):
    s = await scene(client, tenant)
    first = await s.conflict()
    second = await s.conflict()
    by_a = await s.conflict(loser=s.a)  # a's own stale edit of its own op: a's conflict
    ids = [first["conflict_id"], second["conflict_id"], by_a["conflict_id"]]
    # A venue conflict: both edit its name.
    base = s.venue_version
    (v,) = await s.push(s.a, mutation(s.a.mid(), "venue", s.venue, base=base, data={"name": "X"}))
    venue_lost = (
        await s.push(s.b, mutation(s.b.mid(), "venue", s.venue, base=base, data={"name": "Y"}))
    )[0]
    assert v["status"] == "applied" and venue_lost["status"] == "conflict"
    venue_conflict = venue_lost["conflict_id"]
    newest_first = [venue_conflict, *reversed(ids)]
    h = s.tenant.headers

    assert await listed(client, h) == newest_first
    assert await listed(client, h, workstation_id=s.a.id) == [ids[2]]
    assert await listed(client, h, type="venue") == [venue_conflict]
    assert await listed(client, h, entity_id=s.venue) == [venue_conflict]
    assert await listed(client, h, type="operation", workstation_id=s.b.id) == ids[1::-1]
    # `since`: recorded at or after; the first conflict's time backdated by an hour.
    await pg.execute(
        "UPDATE sync_conflicts SET created_at = created_at - interval '1 hour' WHERE id = $1::uuid",
        ids[0],
    )
    cut = (datetime.now(UTC) - timedelta(minutes=30)).isoformat()
    assert ids[0] not in await listed(client, h, since=cut)
    assert len(await listed(client, h, since=cut)) == 3
    zoned = await pg.fetchval("SELECT created_at FROM sync_conflicts WHERE id = $1::uuid", ids[0])
    assert ids[0] in await listed(client, h, since=zoned.isoformat())  # at: included

    # Pages of 1, 2 and 3 walk the same list, each conflict once.
    for size in (1, 2, 3):
        seen: list[str] = []
        cursor = None
        for _ in range(5):  # at most 4 pages of 1, and an empty one
            params: dict[str, Any] = {"limit": size, "state": "all"}
            if cursor:
                params["cursor"] = cursor
            page = (await client.get(CONFLICTS, headers=h, params=params)).json()
            seen += [c["id"] for c in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == newest_first, size

    # A workstation key sees its own conflicts only; another's id is 404.
    assert await listed(client, s.b.headers) == [venue_conflict, ids[1], ids[0]]
    assert await listed(client, s.a.headers) == [ids[2]]
    assert (await client.get(f"{CONFLICTS}/{ids[0]}", headers=s.a.headers)).status_code == 404
    r = await client.get(CONFLICTS, headers=s.a.headers, params={"workstation_id": s.b.id})
    assert r.status_code == 403 and r.json()["error"]["code"] == "own_conflicts_only"
    # Another tenant sees none of them, and cannot resolve them.
    assert await listed(client, other_tenant.headers, state="all") == []
    r = await client.get(f"{CONFLICTS}/{ids[0]}", headers=other_tenant.headers)
    assert r.status_code == 404
    r = await client.post(
        f"{CONFLICTS}/{ids[0]}/resolve",
        headers=other_tenant.headers,
        json={"resolution": "accept_server"},
    )
    assert r.status_code == 404
    assert (await client.get(f"{CONFLICTS}/{ids[0]}", headers=h)).json()["state"] == "open"


# ------------------------------------------------------------------ resolving
async def test_accept_server_resolves_without_writing_and_only_once(client, tenant, pg):
    s = await scene(client, tenant)
    lost = await s.conflict()
    conflict_id = lost["conflict_id"]
    before = await counts(pg, tenant)
    r = await client.post(
        f"{CONFLICTS}/{conflict_id}/resolve",
        headers=s.tenant.headers,
        json={"resolution": "accept_server"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["state"] == "resolved" and body["resolution"] == "accepted_server"
    assert body["resolved_by"] == f"key:{await customer_key_uuid(client, tenant)}"
    assert body["resolved_at"] and body["resolved_version"] is None
    assert await counts(pg, tenant) == before  # no entity changed
    op = lost["server"]["id"]
    assert (await client.get(f"{V1}/operations/{op}", headers=s.tenant.headers)).json()[
        "status"
    ] == "active"
    assert await listed(client, s.tenant.headers) == []
    assert await listed(client, s.tenant.headers, state="resolved") == [conflict_id]
    for resolution in ({"resolution": "accept_server"}, {"resolution": "reapply"}):
        again = await client.post(
            f"{CONFLICTS}/{conflict_id}/resolve", headers=s.tenant.headers, json=resolution
        )
        assert again.status_code == 409, again.text
        assert again.json()["error"]["code"] == "already_resolved"
    assert await counts(pg, tenant) == before


async def test_reapply_writes_the_losing_data_attributed_to_the_resolver(client, tenant, pg):
    s = await scene(client, tenant)
    lost = await s.conflict(status="aborted")
    op = lost["server"]["id"]
    r = await client.post(
        f"{CONFLICTS}/{lost['conflict_id']}/resolve",
        headers=s.tenant.headers,
        json={"resolution": "reapply"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    key = f"key:{await customer_key_uuid(client, tenant)}"
    assert body["resolution"] == "reapplied" and body["resolved_by"] == key
    version = body["resolved_version"]
    assert version > lost["server"]["version"]
    entity = await pg.fetchrow(
        "SELECT version, updated_by, payload FROM sync_entities WHERE entity_id = $1::uuid", op
    )
    assert entity["version"] == version and entity["updated_by"] == key
    assert json.loads(entity["payload"])["status"] == "aborted"
    journal = await pg.fetchrow(
        "SELECT entity_id, op, workstation_id, payload FROM sync_journal "
        "WHERE customer_id = $1::uuid AND version = $2",
        tenant.id,
        version,
    )
    assert str(journal["entity_id"]) == op and journal["op"] == "upsert"
    assert journal["workstation_id"] is None  # by a key, not a workstation
    got = (await client.get(f"{V1}/operations/{op}", headers=s.tenant.headers)).json()
    assert got["status"] == "aborted"

    # A workstation resolving its own delete conflict: the journal names it.
    data = {"venue_id": s.venue, "status": "planned"}
    other = uid()
    (made,) = await s.push(s.a, mutation(s.a.mid(), "operation", other, data=data))
    await s.push(s.a, mutation(s.a.mid(), "operation", other, base=made["version"], data=data))
    (gone,) = await s.push(
        s.b, mutation(s.b.mid(), "operation", other, op="delete", base=made["version"])
    )
    assert gone["status"] == "conflict"
    r = await client.post(
        f"{CONFLICTS}/{gone['conflict_id']}/resolve",
        headers=s.b.headers,
        json={"resolution": "reapply"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["resolved_by"] == f"workstation:{s.b.id}"
    row = await pg.fetchrow(
        "SELECT op, workstation_id FROM sync_journal WHERE customer_id = $1::uuid AND version = $2",
        tenant.id,
        r.json()["resolved_version"],
    )
    assert row["op"] == "delete" and str(row["workstation_id"]) == s.b.id
    assert (
        await client.get(f"{V1}/operations/{other}", headers=s.tenant.headers)
    ).status_code == 404


async def test_reapply_over_a_changed_entity_is_refused_and_stays_open(client, tenant, pg):
    s = await scene(client, tenant)
    lost = await s.conflict()
    op, conflict_id = lost["server"]["id"], lost["conflict_id"]
    # The entity moves on after the conflict.
    data = {"venue_id": s.venue, "status": "completed"}
    (moved,) = await s.push(
        s.a, mutation(s.a.mid(), "operation", op, base=lost["server"]["version"], data=data)
    )
    before = await counts(pg, tenant)
    r = await client.post(
        f"{CONFLICTS}/{conflict_id}/resolve",
        headers=s.tenant.headers,
        json={"resolution": "reapply"},
    )
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "version_conflict"
    assert error["details"]["current_version"] == moved["version"]
    assert error["details"]["server"]["data"]["status"] == "completed"
    assert await counts(pg, tenant) == before
    got = (await client.get(f"{CONFLICTS}/{conflict_id}", headers=s.tenant.headers)).json()
    assert got["state"] == "open"
    # An explicit stale base is refused the same way; the current one is accepted.
    r = await client.post(
        f"{CONFLICTS}/{conflict_id}/resolve",
        headers=s.tenant.headers,
        json={"resolution": "reapply", "base_version": lost["server"]["version"]},
    )
    assert r.status_code == 409
    r = await client.post(
        f"{CONFLICTS}/{conflict_id}/resolve",
        headers=s.tenant.headers,
        json={"resolution": "reapply", "base_version": moved["version"]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["resolved_version"] > moved["version"]


async def test_bad_input_is_a_clear_4xx_and_changes_nothing(client, tenant, pg):
    s = await scene(client, tenant)
    lost = await s.conflict()
    conflict_id = lost["conflict_id"]
    h = s.tenant.headers
    url = f"{CONFLICTS}/{conflict_id}/resolve"
    before = await counts(pg, tenant)
    for body in (
        {"resolution": "nope"},
        {},
        {"resolution": "accept_server", "base_version": 3},
        {"resolution": "reapply", "base_version": -1},
        {"resolution": "reapply", "extra": 1},
    ):
        r = await client.post(url, headers=h, json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["error"]["code"] == "validation_error"
    r = await client.post(f"{CONFLICTS}/{uid()}/resolve", headers=h, json={"resolution": "reapply"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert (await client.get(f"{CONFLICTS}/not-a-uuid", headers=h)).status_code == 422
    for params in (
        {"state": "closed"},
        {"type": "spaceship"},
        {"cursor": "garbage"},
        {"since": "yesterday"},
        {"limit": 0},
    ):
        r = await client.get(CONFLICTS, headers=h, params=params)
        assert r.status_code == 422, (params, r.text)
    assert await counts(pg, tenant) == before
    assert (await client.get(f"{CONFLICTS}/{conflict_id}", headers=h)).json()["state"] == "open"


async def test_reapply_the_entity_rules_refuse_is_a_4xx_and_stays_open(client, tenant, pg):
    """A world node's losing edit, after its venue was deleted (the node with
    it): re-applied over the tombstone it names a dead venue."""
    s = await scene(client, tenant)
    node = uid()
    data = {"venue_id": s.venue, "kind": "Zone", "name": "Atrium"}
    (made,) = await s.push(s.a, mutation(s.a.mid(), "world_node", node, data=data))
    await s.push(
        s.a,
        mutation(s.a.mid(), "world_node", node, base=made["version"], data=data | {"name": "A"}),
    )
    (lost,) = await s.push(
        s.b,
        mutation(s.b.mid(), "world_node", node, base=made["version"], data=data | {"name": "B"}),
    )
    assert lost["status"] == "conflict"
    await s.push(s.a, mutation(s.a.mid(), "venue", s.venue, op="delete", base=s.venue_version))
    tombstone = await pg.fetchval(
        "SELECT version FROM sync_entities WHERE entity_id = $1::uuid AND deleted", node
    )
    assert tombstone is not None
    url = f"{CONFLICTS}/{lost['conflict_id']}/resolve"
    h = s.tenant.headers
    before = await counts(pg, tenant)
    r = await client.post(url, headers=h, json={"resolution": "reapply"})
    assert r.status_code == 409, r.text  # the tombstone is newer than the conflict saw
    assert r.json()["error"]["details"]["server"]["op"] == "delete"
    r = await client.post(url, headers=h, json={"resolution": "reapply", "base_version": tombstone})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "unknown_reference"
    assert await counts(pg, tenant) == before
    got = (await client.get(f"{CONFLICTS}/{lost['conflict_id']}", headers=h)).json()
    assert got["state"] == "open"


# ------------------------------------------------------------------ retention
async def test_prune_removes_conflicts_older_than_the_cutoff(app, client, tenant, pg):
    s = await scene(client, tenant)
    old = (await s.conflict())["conflict_id"]
    new = (await s.conflict())["conflict_id"]
    await pg.execute(
        "UPDATE sync_conflicts SET created_at = now() - interval '40 days' WHERE id = $1::uuid",
        old,
    )
    async with unit_of_work(app.state.resources.sessions) as session:
        removed = await prune_conflicts(session, datetime.now(UTC) - timedelta(days=30))
    assert removed >= 1
    left = await pg.fetch("SELECT id FROM sync_conflicts WHERE customer_id = $1::uuid", tenant.id)
    assert [str(r["id"]) for r in left] == [new]
