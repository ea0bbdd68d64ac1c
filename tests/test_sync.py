"""The sync protocol end to end, on real Postgres and Neo4j."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from api.client import SyncClient
from tests.conftest import Tenant

V1 = "/api/v1"
SYNC = f"{V1}/sync"


def uid() -> str:
    return str(uuid.uuid4())


async def register(client, tenant: Tenant, name: str = "ws") -> tuple[str, dict[str, str]]:
    r = await client.post(
        f"{V1}/auth/workstations/register", json={"name": name}, headers=tenant.headers
    )
    assert r.status_code == 201, r.text
    return r.json()["id"], {"X-API-Key": r.json()["api_key"]}


def mutation(mid: int, type_: str, id_: str, op="upsert", base=0, data=None, **kw) -> dict:
    body = {"mutation_id": mid, "type": type_, "id": id_, "op": op, "base_version": base}
    if data is not None:
        body["data"] = data
    return body | kw


async def do_push(client, ws_id, headers, mutations, protocol_version=1):
    return await client.post(
        f"{SYNC}/push",
        headers=headers,
        json={
            "workstation_id": ws_id,
            "protocol_version": protocol_version,
            "mutations": mutations,
        },
    )


async def journal_count(pg, tenant: Tenant) -> int:
    return await pg.fetchval(
        "SELECT count(*) FROM sync_journal WHERE customer_id = $1::uuid", tenant.id
    )


async def server_state(pg, tenant: Tenant) -> dict[str, tuple[str, int, dict]]:
    rows = await pg.fetch(
        "SELECT entity_type, entity_id, version, payload FROM sync_entities "
        "WHERE customer_id = $1::uuid AND NOT deleted",
        tenant.id,
    )
    return {
        str(r["entity_id"]): (r["entity_type"], r["version"], json.loads(r["payload"]))
        for r in rows
    }


def sync_client(client: httpx.AsyncClient, ws_id: str, headers: dict) -> SyncClient:
    http = httpx.AsyncClient(transport=client._transport, base_url="http://test", headers=headers)
    return SyncClient(http, ws_id)


# ------------------------------------------------------------------ push
async def test_push_outcomes_per_mutation(client, tenant, pg):
    ws, h = await register(client, tenant)
    venue, node, bad_node = uid(), uid(), uid()
    r = await do_push(
        client,
        ws,
        h,
        [
            mutation(1, "venue", venue, data={"name": "Harbour Mall"}),
            mutation(
                2,
                "world_node",
                bad_node,
                data={"venue_id": venue, "kind": "Spaceship", "name": "x"},
            ),
            mutation(
                3, "world_node", node, data={"venue_id": venue, "kind": "Zone", "name": "Atrium"}
            ),
            mutation(4, "kit", uid(), data={"serial": "K1"}),
        ],
    )
    assert r.status_code == 200, r.text
    body = r.json()
    statuses = [(x["mutation_id"], x["status"]) for x in body["results"]]
    assert statuses == [(1, "applied"), (2, "rejected"), (3, "applied"), (4, "rejected")]
    assert body["results"][1]["error"]["code"] == "unknown_kind"
    assert body["results"][3]["error"]["code"] == "read_only_type"
    assert body["last_mutation_id"] == 4
    assert body["write_checkpoint"] == body["results"][2]["version"]
    assert body["results"][0]["version"] < body["results"][2]["version"]
    assert r.headers["x-request-id"]


async def test_retry_returns_the_original_outcome_and_writes_nothing(client, tenant, pg):
    ws, h = await register(client, tenant)
    venue = uid()
    muts = [
        mutation(1, "venue", venue, data={"name": "A"}),
        mutation(2, "venue", uid(), data={"name": ""}),
    ]
    first = (await do_push(client, ws, h, muts)).json()
    before = await journal_count(pg, tenant)
    again = (await do_push(client, ws, h, muts)).json()
    assert [r["status"] for r in again["results"]] == ["duplicate", "duplicate"]
    assert [r["original_status"] for r in again["results"]] == ["applied", "rejected"]
    assert again["results"][0]["version"] == first["results"][0]["version"]
    assert again["results"][1]["error"] == first["results"][1]["error"]
    assert await journal_count(pg, tenant) == before
    # A retry mixed with new mutations: old ones answered, new ones applied.
    mixed = (
        await do_push(client, ws, h, [muts[0], mutation(3, "venue", uid(), data={"name": "B"})])
    ).json()
    assert [r["status"] for r in mixed["results"]] == ["duplicate", "applied"]


async def test_conflict_carries_the_server_envelope_and_force_wins(client, tenant):
    ws1, h1 = await register(client, tenant, "ws1")
    ws2, h2 = await register(client, tenant, "ws2")
    op = uid()
    venue = uid()
    created = (
        await do_push(
            client,
            ws1,
            h1,
            [
                mutation(1, "venue", venue, data={"name": "V"}),
                mutation(2, "operation", op, data={"venue_id": venue, "status": "planned"}),
            ],
        )
    ).json()
    v = created["results"][1]["version"]
    await do_push(
        client,
        ws1,
        h1,
        [mutation(3, "operation", op, base=v, data={"venue_id": venue, "status": "active"})],
    )
    stale = (
        await do_push(
            client,
            ws2,
            h2,
            [mutation(1, "operation", op, base=v, data={"venue_id": venue, "status": "aborted"})],
        )
    ).json()["results"][0]
    assert stale["status"] == "conflict"
    assert stale["server"]["data"]["status"] == "active" and stale["server"]["op"] == "upsert"
    forced = (
        await do_push(
            client,
            ws2,
            h2,
            [
                mutation(
                    2,
                    "operation",
                    op,
                    base=v,
                    force=True,
                    data={"venue_id": venue, "status": "aborted"},
                )
            ],
        )
    ).json()["results"][0]
    assert forced["status"] == "applied"
    got = (await client.get(f"{V1}/operations/{op}", headers=h1)).json()
    assert got["status"] == "aborted"


async def test_venue_edits_of_disjoint_fields_merge_without_loss(client, tenant):
    ws1, h1 = await register(client, tenant, "ws1")
    ws2, h2 = await register(client, tenant, "ws2")
    venue = uid()
    base = {"name": "Harbour Mall", "tags": ["mall"], "properties": {"levels": 3}}
    v0 = (await do_push(client, ws1, h1, [mutation(1, "venue", venue, data=base)])).json()
    v0 = v0["results"][0]["version"]
    one = (
        await do_push(
            client,
            ws1,
            h1,
            [
                mutation(
                    2,
                    "venue",
                    venue,
                    base=v0,
                    data=base
                    | {"description": "Three levels", "properties": {"levels": 3, "parking": True}},
                )
            ],
        )
    ).json()
    assert one["results"][0]["status"] == "applied"
    two = (
        await do_push(
            client,
            ws2,
            h2,
            [
                mutation(
                    1,
                    "venue",
                    venue,
                    base=v0,
                    data=base
                    | {"address": "1 Quay St", "properties": {"levels": 3, "operator": "HE"}},
                )
            ],
        )
    ).json()
    result = two["results"][0]
    assert result["status"] == "applied" and result["merged"] is True
    got = (await client.get(f"{V1}/venues/{venue}", headers=h1)).json()
    assert got["description"] == "Three levels" and got["address"] == "1 Quay St"
    assert got["properties"] == {"levels": 3, "parking": True, "operator": "HE"}
    clash = (
        await do_push(
            client,
            ws2,
            h2,
            [mutation(2, "venue", venue, base=v0, data=base | {"description": "Two levels"})],
        )
    ).json()["results"][0]
    assert clash["status"] == "conflict"
    assert clash["server"]["data"]["description"] == "Three levels"


async def test_mutations_after_a_cascade_in_the_same_push_see_its_tombstones(client, tenant, pg):
    """Deleting a venue cascades to its nodes within the push: a later mutation
    of one of those nodes is judged against the tombstone just written (its
    real version), not against the state before the push."""
    ws, h = await register(client, tenant)
    venue, kept, edited = uid(), uid(), uid()
    node = {"venue_id": venue, "kind": "Zone"}
    first = await do_push(
        client,
        ws,
        h,
        [
            mutation(1, "venue", venue, data={"name": "V"}),
            mutation(2, "world_node", kept, data=node | {"name": "A"}),
            mutation(3, "world_node", edited, data=node | {"name": "B"}),
        ],
    )
    versions = {r["mutation_id"]: r["version"] for r in first.json()["results"]}
    r = await do_push(
        client,
        ws,
        h,
        [
            mutation(4, "venue", venue, "delete", versions[1]),
            mutation(5, "world_node", kept, "delete", versions[2]),
            mutation(6, "world_node", edited, base=versions[3], data=node | {"name": "B2"}),
        ],
    )
    assert r.status_code == 200, r.text
    deleted, again, edit = r.json()["results"]
    tombstones = {
        str(row["entity_id"]): row["version"]
        for row in await pg.fetch(
            "SELECT entity_id, version FROM sync_entities WHERE customer_id = $1::uuid AND deleted",
            tenant.id,
        )
    }
    assert deleted["status"] == "applied"
    # Already gone by the cascade: applied, with the cascade's tombstone version.
    assert (again["status"], again["version"]) == ("applied", tombstones[kept])
    # Changed by this push since its base: a conflict showing the tombstone.
    assert edit["status"] == "conflict"
    assert edit["server"]["op"] == "delete"
    assert edit["server"]["version"] == tombstones[edited]
    assert "data" not in edit["server"]


async def test_deleting_twice_is_a_noop_and_delete_of_unknown_is_rejected(client, tenant, pg):
    ws, h = await register(client, tenant)
    venue = uid()
    v = (await do_push(client, ws, h, [mutation(1, "venue", venue, data={"name": "V"})])).json()
    v = v["results"][0]["version"]
    gone = (await do_push(client, ws, h, [mutation(2, "venue", venue, "delete", v)])).json()
    assert gone["results"][0]["status"] == "applied"
    before = await journal_count(pg, tenant)
    again = (
        await do_push(
            client,
            ws,
            h,
            [mutation(3, "venue", venue, "delete", 1), mutation(4, "venue", uid(), "delete", 0)],
        )
    ).json()
    assert [r["status"] for r in again["results"]] == ["applied", "rejected"]
    assert again["results"][0]["version"] == gone["results"][0]["version"]
    assert await journal_count(pg, tenant) == before


@pytest.mark.parametrize(
    "case",
    [
        "unknown_type",
        "bad_op",
        "missing_id",
        "not_uuid",
        "non_increasing",
        "negative_base",
        "extra_field",
        "not_json",
        "no_mutations_key",
    ],
)
async def test_malformed_pushes_get_422_and_record_nothing(client, tenant, pg, case):
    ws, h = await register(client, tenant)
    good = mutation(1, "venue", uid(), data={"name": "V"})
    bodies = {
        "unknown_type": [good | {"type": "spaceship"}],
        "bad_op": [good | {"op": "merge"}],
        "missing_id": [{k: v for k, v in good.items() if k != "id"}],
        "not_uuid": [good | {"id": "123"}],
        "non_increasing": [good, mutation(1, "venue", uid(), data={"name": "W"})],
        "negative_base": [good | {"base_version": -1}],
        "extra_field": [good | {"surprise": True}],
    }
    before = await journal_count(pg, tenant)
    if case == "not_json":
        r = await client.post(
            f"{SYNC}/push", headers=h | {"Content-Type": "application/json"}, content=b"{not json"
        )
    elif case == "no_mutations_key":
        r = await client.post(
            f"{SYNC}/push", headers=h, json={"workstation_id": ws, "protocol_version": 1}
        )
    else:
        r = await do_push(client, ws, h, bodies[case])
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] in ("malformed_request", "mutation_ids_not_increasing")
    assert await journal_count(pg, tenant) == before
    outcomes = await pg.fetchval(
        "SELECT count(*) FROM sync_mutations WHERE customer_id = $1::uuid", tenant.id
    )
    assert outcomes == 0


async def test_protocol_and_size_limits(client, tenant, pg, settings):
    ws, h = await register(client, tenant)
    r = await do_push(client, ws, h, [mutation(1, "venue", uid(), data={"name": "V"})], 3)
    assert r.status_code == 409 and r.json()["error"]["code"] == "unsupported_protocol"
    many = [
        mutation(i + 1, "venue", uid(), data={"name": "V"})
        for i in range(settings.sync_max_mutations + 1)
    ]
    r = await do_push(client, ws, h, many)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_mutations"
    # A valid push padded past the limit: refused for its size (413) before it
    # is even parsed (the padding field alone would be a 422).
    padded = json.dumps(
        {
            "workstation_id": ws,
            "protocol_version": 1,
            "mutations": [mutation(1, "venue", uid(), data={"name": "V"})],
            "pad": "z" * settings.sync_max_body_bytes,
        }
    ).encode()
    r = await client.post(
        f"{SYNC}/push", headers=h | {"Content-Type": "application/json"}, content=padded
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    assert await journal_count(pg, tenant) == 0


async def test_stale_mutation_id_is_rejected(client, tenant):
    ws, h = await register(client, tenant)
    await do_push(client, ws, h, [mutation(10, "venue", uid(), data={"name": "V"})])
    r = (await do_push(client, ws, h, [mutation(5, "venue", uid(), data={"name": "W"})])).json()
    assert r["results"][0]["status"] == "rejected"
    assert r["results"][0]["error"]["code"] == "mutation_id_not_increasing"
    assert r["last_mutation_id"] == 10


async def test_workstations_push_only_for_themselves(client, tenant, other_tenant):
    ws1, h1 = await register(client, tenant, "one")
    ws2, _ = await register(client, tenant, "two")
    theirs, _ = await register(client, other_tenant, "theirs")
    m = [mutation(1, "venue", uid(), data={"name": "V"})]
    assert (await do_push(client, ws2, h1, m)).status_code == 403
    assert (await do_push(client, theirs, h1, m)).status_code == 403
    # A customer key pushes as no workstation (docs/sync.md, "Who may push").
    for ws in (ws1, theirs):
        refused = await do_push(client, ws, tenant.headers, m)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "workstation_key_required"


# ------------------------------------------------------------------ pull
async def test_pull_each_entity_once_latest_state_with_tombstones_and_paging(client, tenant):
    ws, h = await register(client, tenant)
    venue, a, b = uid(), uid(), uid()
    r = (
        await do_push(
            client,
            ws,
            h,
            [
                mutation(1, "venue", venue, data={"name": "V1"}),
                mutation(2, "world_node", a, data={"venue_id": venue, "kind": "Zone", "name": "A"}),
                mutation(3, "world_node", b, data={"venue_id": venue, "kind": "Zone", "name": "B"}),
            ],
        )
    ).json()
    v = {res["mutation_id"]: res["version"] for res in r["results"]}
    await do_push(
        client,
        ws,
        h,
        [
            mutation(4, "venue", venue, base=v[1], data={"name": "V2"}),
            mutation(5, "world_node", a, "delete", v[2]),
        ],
    )
    page = (await client.get(f"{SYNC}/pull?since=0", headers=h)).json()
    assert page["has_more"] is False and page["cursor"] == page["frontier"]
    by_id = {c["id"]: c for c in page["changes"]}
    assert len(page["changes"]) == len(by_id) == 3
    assert by_id[venue]["data"]["name"] == "V2" and by_id[venue]["op"] == "upsert"
    assert by_id[a]["op"] == "delete" and "data" not in by_id[a]
    versions = [c["version"] for c in page["changes"]]
    assert versions == sorted(versions)
    assert page["last_mutation_id"] == 5
    first = (await client.get(f"{SYNC}/pull?since=0&limit=2", headers=h)).json()
    assert first["has_more"] and len(first["changes"]) == 2
    rest = (await client.get(f"{SYNC}/pull?since={first['cursor']}&limit=2", headers=h)).json()
    assert not rest["has_more"]
    assert {c["id"] for c in first["changes"] + rest["changes"]} == set(by_id)
    only_venues = (await client.get(f"{SYNC}/pull?since=0&types=venue", headers=h)).json()
    assert [c["type"] for c in only_venues["changes"]] == ["venue"]
    assert (await client.get(f"{SYNC}/pull?since=0&types=spaceship", headers=h)).status_code == 422
    assert (await client.get(f"{SYNC}/pull?since=0&limit=5001", headers=h)).status_code == 422
    assert (await client.get(f"{SYNC}/pull?since=-1", headers=h)).status_code == 422
    assert (await client.get(f"{SYNC}/pull?since=999999999", headers=h)).status_code == 422


async def test_stored_envelopes_follow_every_write_of_the_row(client, tenant, pg):
    """The envelope text is kept by a trigger, so a writer that knows nothing
    of it (here plain SQL, like a COPY or a migration) still yields envelopes
    that match the row, for upserts, tombstones and merged tombstones."""
    venue, gone, merged = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    version = await pg.fetchval(
        "UPDATE customer_versions SET version = version + 3 WHERE customer_id = $1::uuid "
        "RETURNING version",
        tenant.id,
    )
    await pg.executemany(
        "INSERT INTO sync_entities (customer_id, entity_type, entity_id, version, deleted, "
        "payload, merged_into, updated_by) VALUES ($1::uuid, $2, $3, $4, $5, $6::json, $7, $8)",
        [
            (
                tenant.id,
                "venue",
                venue,
                version - 2,
                False,
                '{"name": "Spaced \\"out\\""}',
                None,
                'key:"quoted"',
            ),
            (tenant.id, "venue", gone, version - 1, True, '{"name": "Old"}', None, None),
            (tenant.id, "venue", merged, version, True, None, venue, "ws"),
        ],
    )
    await pg.execute(
        'UPDATE sync_entities SET payload = \'{"name": "Renamed"}\' WHERE entity_id = $1', venue
    )
    page = (await client.get(f"{SYNC}/pull?since=0", headers=tenant.headers)).json()
    got = {c["id"]: c for c in page["changes"]}
    assert got[str(venue)]["data"] == {"name": "Renamed"}
    assert got[str(venue)]["updated_by"] == 'key:"quoted"'
    assert (got[str(venue)]["op"], got[str(venue)]["blob_ids"]) == ("upsert", [])
    assert got[str(gone)]["op"] == "delete" and "data" not in got[str(gone)]
    assert got[str(gone)]["updated_by"] is None
    assert got[str(merged)]["merged_into"] == str(venue)
    stamps = [datetime.fromisoformat(c["updated_at"]) for c in got.values()]
    assert all(s.tzinfo is not None for s in stamps)


async def test_every_kind_of_row_reads_as_whole_json_with_or_without_blobs(client, tenant, pg):
    """Stored envelopes are complete, and readers rebuild only flagged rows
    (migration 0017): for every type, live or deleted, flagged `has_blobs` or
    not, pull hands out whole JSON, with `blob_ids` exactly on live venues,
    world nodes and operations."""
    rows = [
        (entity_type, deleted, flagged)
        for entity_type in ("venue", "kit", "drone", "world_node", "world_edge", "operation")
        for deleted in (False, True)
        for flagged in (False, True)
    ]
    top = await pg.fetchval(
        "UPDATE customer_versions SET version = version + $2 WHERE customer_id = $1::uuid "
        "RETURNING version",
        tenant.id,
        len(rows),
    )
    ids = [uuid.uuid4() for _ in rows]
    await pg.executemany(
        "INSERT INTO sync_entities (customer_id, entity_type, entity_id, version, deleted, "
        "payload, has_blobs) VALUES ($1::uuid, $2, $3, $4, $5, $6::json, $7)",
        [
            (tenant.id, t, i, top - n, deleted, '{"name": "x"}', flagged)
            for n, (i, (t, deleted, flagged)) in enumerate(zip(ids, rows, strict=True))
        ],
    )
    body = (await client.get(f"{SYNC}/pull?since=0", headers=tenant.headers)).content
    got = {c["id"]: c for c in json.loads(body)["changes"]}
    for i, (entity_type, deleted, flagged) in zip(ids, rows, strict=True):
        envelope = got[str(i)]
        assert envelope["op"] == ("delete" if deleted else "upsert")
        carries = not deleted and entity_type in ("venue", "world_node", "operation")
        assert ("blob_ids" in envelope) == carries, (entity_type, deleted, flagged)
        if carries:
            assert envelope["blob_ids"] == []


async def test_pull_from_an_expired_cursor_answers_410(app, client, tenant):
    from api.sync.prune import prune_sync

    ws, h = await register(client, tenant)
    venue = uid()
    r = (await do_push(client, ws, h, [mutation(1, "venue", venue, data={"name": "V"})])).json()
    await do_push(
        client, ws, h, [mutation(2, "venue", venue, "delete", r["results"][0]["version"])]
    )
    await do_push(client, ws, h, [mutation(3, "venue", uid(), data={"name": "W"})])
    pruned = await prune_sync(app.state.resources, datetime.now(UTC) + timedelta(days=1))
    assert pruned.tombstones >= 1
    expired = await client.get(f"{SYNC}/pull?since=1", headers=h)
    assert expired.status_code == 410
    assert expired.json()["error"]["code"] == "cursor_expired"
    fresh = (await client.get(f"{SYNC}/pull?since=0", headers=h)).json()
    assert [c["data"]["name"] for c in fresh["changes"]] == ["W"]
    # Retries still answered after pruning: the newest outcome is kept.
    again = await do_push(client, ws, h, [mutation(3, "venue", uid(), data={"name": "W"})])
    assert again.json()["results"][0]["status"] == "duplicate"


# ------------------------------------------------------------- bootstrap
async def test_bootstrap_streams_a_checksummed_snapshot_and_resumes(client, tenant):
    ws, h = await register(client, tenant)
    venue = uid()
    muts = [mutation(1, "venue", venue, data={"name": "V"})]
    muts += [
        mutation(
            i + 2, "world_node", uid(), data={"venue_id": venue, "kind": "Zone", "name": f"Z{i}"}
        )
        for i in range(25)
    ]
    await do_push(client, ws, h, muts)
    r = await client.get(f"{SYNC}/bootstrap", headers=h)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(x) for x in r.text.splitlines()]
    head, body, end = lines[0], lines[1:-1], lines[-1]
    assert head["counts"] == {"venue": 1, "world_node": 25}
    assert end == {"end": True, "count": 26, "checksum": end["checksum"]}
    assert body[0]["type"] == "venue"  # parents first
    import hashlib

    digest = hashlib.sha256("".join(x + "\n" for x in r.text.splitlines()[1:-1]).encode())
    assert end["checksum"] == "sha256:" + digest.hexdigest()
    # Paged: 10 at a time, resumed with the same snapshot.
    seen, params = [], {"page_size": 10}
    while True:
        page = [
            json.loads(x)
            for x in (
                await client.get(f"{SYNC}/bootstrap", headers=h, params=params)
            ).text.splitlines()
        ]
        seen += page[1:-1]
        if page[-1]["end"]:
            break
        params = {
            "page_size": 10,
            "snapshot_version": page[0]["snapshot_version"],
            "after": page[-1]["next"],
        }
    assert [e["id"] for e in seen] == [e["id"] for e in body]
    bad = await client.get(f"{SYNC}/bootstrap", headers=h, params={"after": "venue:x"})
    assert bad.status_code == 422


async def test_bootstrap_then_pull_converges_with_concurrent_changes(client, tenant, pg):
    ws, h = await register(client, tenant, "writer")
    reader_ws, reader_h = await register(client, tenant, "reader")
    writer = sync_client(client, ws, h)
    venue = uid()
    writer.upsert("venue", venue, {"name": "V"})
    nodes = [uid() for _ in range(30)]
    for n in nodes:
        writer.upsert("world_node", n, {"venue_id": venue, "kind": "Zone", "name": n[:8]})
    await writer.push()
    await writer.pull()
    reader = sync_client(client, reader_ws, reader_h)
    await reader.bootstrap(page_size=7)
    for n in nodes[:10]:
        writer.delete("world_node", n)
    writer.upsert("venue", venue, {"name": "V renamed"})
    await writer.push()
    await reader.pull()
    server = await server_state(pg, tenant)
    assert reader.state() == server
    assert {k: v[2] for k, v in reader.state().items()}[venue]["name"] == "V renamed"


async def test_reference_client_resumes_mutation_ids_after_a_reinstall(client, tenant, pg):
    """A reinstalled workstation starts counting at 1 again; the server would
    refuse those ids as not increasing. `resume_mutation_ids` continues after
    the last one the server holds."""
    ws, h = await register(client, tenant)
    first = sync_client(client, ws, h)
    for _ in range(3):
        first.upsert("venue", uid(), {"name": "Before"})
    await first.push()
    reinstalled = sync_client(client, ws, h)
    await reinstalled.resume_mutation_ids()
    assert reinstalled.next_mutation_id == 4
    venue = uid()
    reinstalled.upsert("venue", venue, {"name": "After"})
    outcome = await reinstalled.push()
    assert outcome is not None
    assert [r["status"] for r in outcome["results"]] == ["applied"]
    assert (await server_state(pg, tenant))[venue][2]["name"] == "After"


# ----------------------------------------------------------------- merge
async def test_merging_venues_created_offline_by_two_workstations(client, tenant, graph, pg):
    ws1, h1 = await register(client, tenant, "north")
    ws2, h2 = await register(client, tenant, "south")
    c1, c2 = sync_client(client, ws1, h1), sync_client(client, ws2, h2)
    v1, v2 = uid(), uid()
    loc = {"latitude": -36.8435, "longitude": 174.7669}
    c1.upsert("venue", v1, {"name": "Harbour Mall", "location": loc, "tags": ["mall"]})
    zone = uid()
    c1.upsert("world_node", zone, {"venue_id": v1, "kind": "Zone", "name": "Atrium"})
    c2.upsert(
        "venue",
        v2,
        {
            "name": "Harbor Mall",
            "tags": ["retail"],
            "description": "3 lv",
            "location": {"latitude": -36.8437, "longitude": 174.7671},
        },
    )
    dock, stairs, edge = uid(), uid(), uid()
    c2.upsert("world_node", dock, {"venue_id": v2, "kind": "Zone", "name": "Dock"})
    c2.upsert("world_node", stairs, {"venue_id": v2, "kind": "Stairwell", "name": "B"})
    c2.upsert(
        "world_edge",
        edge,
        {"venue_id": v2, "type": "CONNECTS_TO", "from_id": dock, "to_id": stairs},
    )
    await c1.push()
    await c2.push()
    dupes = (await client.get(f"{V1}/venues/{v1}/duplicates", headers=h1)).json()["candidates"]
    assert dupes and dupes[0]["id"] == v2 and dupes[0]["distance_m"] < 50
    # ws2 keeps working offline on the venue that is about to disappear.
    late = uid()
    await c2.pull()
    c2.upsert("world_node", late, {"venue_id": v2, "kind": "Hazard", "name": "Wet floor"})
    merged = await client.post(f"{V1}/venues/{v1}/merge", headers=h1, json={"merge_ids": [v2]})
    assert merged.status_code == 200, merged.text
    assert merged.json()["moved"] == {"world_node": 2, "world_edge": 1, "operation": 0}
    await c2.pull()  # delete envelope with merged_into remaps the pending node
    assert c2.pending[0].data["venue_id"] == v1
    await c2.push()
    assert c2.outcomes[c2.next_mutation_id - 1]["status"] == "applied"
    await c1.pull()
    await c2.pull()
    server = await server_state(pg, tenant)
    assert c1.state() == c2.state() == server
    venue = server[v1][2]
    assert venue["tags"] == ["mall", "retail"] and venue["description"] == "3 lv"
    assert v2 not in server
    tomb = await pg.fetchrow(
        "SELECT deleted, merged_into FROM sync_entities WHERE entity_id = $1::uuid", v2
    )
    assert tomb["deleted"] and str(tomb["merged_into"]) == v1
    rows = await graph.read(
        "t",
        "MATCH (n:WorldNode)-[:IN_VENUE]->(v:Venue) "
        "WHERE n.customer_id = $c RETURN v.id AS v, count(n) AS n",
        {"c": tenant.id},
    )
    assert rows == [{"v": v1, "n": 4}]
    assert (
        await client.post(f"{V1}/venues/{v1}/merge", headers=h1, json={"merge_ids": [v1]})
    ).status_code == 422


# ----------------------------------------------------------- invariants
async def test_random_offline_edits_converge(client, tenant, pg, app):
    """Several workstations edit offline at random, push and pull in random
    interleavings with retried requests; all end equal to the server."""
    import random

    from api.journal.reconcile import verify

    rng = random.Random(20261122)
    clients = []
    for i in range(4):
        ws, h = await register(client, tenant, f"ws{i}")
        clients.append(sync_client(client, ws, h))
    shared_venue = uid()
    clients[0].upsert("venue", shared_venue, {"name": "Shared"})
    await clients[0].push()
    for c in clients:
        await c.pull()

    def random_edit(c: SyncClient) -> None:
        view = c.view()
        venues = [k for k, v in view.items() if v["type"] == "venue"]
        nodes = [k for k, v in view.items() if v["type"] == "world_node"]
        roll = rng.random()
        if roll < 0.15 or not venues:
            c.upsert("venue", uid(), {"name": f"V{rng.randint(0, 999)}"})
        elif roll < 0.45:
            venue = rng.choice(venues)
            c.upsert(
                "world_node",
                uid(),
                {
                    "venue_id": venue,
                    "kind": rng.choice(["Zone", "PerchPoint", "Hazard"]),
                    "name": f"N{rng.randint(0, 999)}",
                },
            )
        elif roll < 0.65 and nodes:
            node = rng.choice(nodes)
            data = dict(view[node]["data"]) | {"name": f"renamed {rng.randint(0, 999)}"}
            c.upsert("world_node", node, data, force=rng.random() < 0.3)
        elif roll < 0.75:
            venue = rng.choice(venues)
            data = dict(view[venue]["data"]) | {"description": f"d{rng.randint(0, 99)}"}
            c.upsert("venue", venue, data)
        elif roll < 0.88 and len(nodes) >= 2:
            a, b = rng.sample(nodes, 2)
            if view[a]["data"]["venue_id"] == view[b]["data"]["venue_id"]:
                c.upsert(
                    "world_edge",
                    uid(),
                    {
                        "venue_id": view[a]["data"]["venue_id"],
                        "type": "NEAR",
                        "from_id": a,
                        "to_id": b,
                    },
                )
        elif roll < 0.97 and nodes:
            c.delete("world_node", rng.choice(nodes))
        else:  # a buggy client: an unknown kind, rejected by the server
            c.upsert(
                "world_node", uid(), {"venue_id": rng.choice(venues), "kind": "Ufo", "name": "?"}
            )

    for _ in range(80):
        c = rng.choice(clients)
        action = rng.random()
        if action < 0.55:
            for _ in range(rng.randint(1, 4)):
                random_edit(c)
        elif action < 0.8:
            pending = list(c.pending)
            await c.push()
            if pending and rng.random() < 0.3:  # the response was lost: resend the same batch
                saved = c.pending
                c.pending = pending
                await c.push()
                c.pending = saved
        else:
            await c.pull(limit=rng.choice([3, 50]))
    for c in clients:
        while c.pending:
            await c.push()
    for c in clients:
        await c.pull(limit=7)
    server = await server_state(pg, tenant)
    for c in clients:
        assert c.state() == server
    # The run exercised what it claims to: conflicts, retries, rejections.
    outcomes = [r["status"] for c in clients for r in c.history]
    assert {"applied", "duplicate", "conflict", "rejected"} <= set(outcomes), outcomes
    assert len(server) > 10
    # Nothing applied twice: one journal row per applied mutation, no more.
    applied = await pg.fetch(
        "SELECT workstation_id, mutation_id FROM sync_mutations "
        "WHERE customer_id = $1::uuid AND status = 'applied'",
        tenant.id,
    )
    journaled = await pg.fetch(
        "SELECT workstation_id, mutation_id FROM sync_journal "
        "WHERE customer_id = $1::uuid AND mutation_id IS NOT NULL",
        tenant.id,
    )
    changed = {(r["workstation_id"], r["mutation_id"]) for r in journaled}
    assert len(journaled) == len(changed)
    assert changed <= {(r["workstation_id"], r["mutation_id"]) for r in applied}
    # Nothing accepted is missing: every applied mutation's version is journaled.
    versions = await pg.fetch(
        "SELECT m.version FROM sync_mutations m LEFT JOIN sync_journal j "
        "ON j.customer_id = m.customer_id AND j.version = m.version "
        "WHERE m.customer_id = $1::uuid AND m.status = 'applied' "
        "AND j.version IS NULL",
        tenant.id,
    )
    assert versions == []
    drift = await verify(app.state.resources, uuid.UUID(tenant.id))
    assert drift.clean, drift


async def test_pull_never_skips_a_change_under_concurrent_pushes(client, tenant, pg):
    writers = []
    for i in range(3):
        ws, h = await register(client, tenant, f"w{i}")
        writers.append((ws, h))
    _, reader_h = await register(client, tenant, "reader")
    venue = uid()
    await do_push(
        client, writers[0][0], writers[0][1], [mutation(1, "venue", venue, data={"name": "V"})]
    )
    done = asyncio.Event()
    seen: dict[str, int] = {}
    frontiers: list[tuple[int, int]] = []

    async def write(ws, h, start):
        for i in range(12):
            await do_push(
                client,
                ws,
                h,
                [
                    mutation(
                        start + i * 3 + k,
                        "world_node",
                        uid(),
                        data={"venue_id": venue, "kind": "Zone", "name": f"{ws[:4]}{i}{k}"},
                    )
                    for k in range(3)
                ],
            )

    async def read():
        cursor = 0
        while True:
            finished = done.is_set()
            page = (
                await client.get(f"{SYNC}/pull?since={cursor}&limit=5", headers=reader_h)
            ).json()
            for change in page["changes"]:
                assert cursor < change["version"] <= page["frontier"]
                seen[change["id"]] = change["version"]
            frontiers.append((cursor, page["cursor"]))
            cursor = page["cursor"]
            if finished and not page["has_more"]:
                return
            await asyncio.sleep(0)

    reader_task = asyncio.create_task(read())
    await asyncio.gather(*(write(ws, h, 10) for ws, h in writers))
    done.set()
    await reader_task
    server = await server_state(pg, tenant)
    assert seen == {k: v[1] for k, v in server.items()}
    assert all(a <= b for a, b in frontiers)


async def test_pushes_accepted_while_neo4j_is_down_and_pull_keeps_working(
    settings, app, client, tenant, pg
):
    """Pull is bounded by the committed head, not by Neo4j: a change journaled
    while Neo4j is down is pulled at once; only the projection lags."""
    from api.journal.reconcile import reconcile_all, verify
    from main import create_app

    ws, h = await register(client, tenant)
    first = (
        await do_push(client, ws, h, [mutation(1, "venue", uid(), data={"name": "before"})])
    ).json()
    down = create_app(
        settings.model_copy(update={"neo4j_uri": "bolt://127.0.0.1:1"}), background=False
    )
    async with down.router.lifespan_context(down):
        transport = httpx.ASGITransport(app=down)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            r = await do_push(c, ws, h, [mutation(2, "venue", uid(), data={"name": "during"})])
            assert r.status_code == 200 and r.json()["results"][0]["status"] == "applied"
            during = r.json()["results"][0]["version"]
            assert r.json()["write_checkpoint"] == during
            page = (await c.get(f"{SYNC}/pull?since=0", headers=h)).json()
            assert page["frontier"] == during and page["cursor"] == during
            assert [x["data"]["name"] for x in page["changes"]] == ["before", "during"]
            status = (await c.get(f"{SYNC}/status", headers=h)).json()
            assert status["pending"] == 1 and status["last_mutation_id"] == 2
            assert status["frontier"] == during
            assert status["projection"]["applied_through"] == first["results"][0]["version"]
            assert status["projection"]["lag_versions"] == 1
    await reconcile_all(app.state.resources)
    status = (await client.get(f"{SYNC}/status", headers=h)).json()
    assert status["pending"] == 0 and status["projection"]["lag_versions"] == 0
    assert status["projection"]["applied_through"] == during
    assert (await verify(app.state.resources, uuid.UUID(tenant.id))).clean


async def test_postgres_down_refuses_the_push_with_503(settings, tenant):
    from main import create_app

    down = create_app(
        settings.model_copy(
            update={
                "database_url": "postgresql+asyncpg://overwatch:overwatch@127.0.0.1:1/overwatch"
            }
        ),
        background=False,
    )
    async with down.router.lifespan_context(down):
        transport = httpx.ASGITransport(app=down)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            r = await do_push(
                c, uid(), tenant.headers, [mutation(1, "venue", uid(), data={"name": "x"})]
            )
    assert r.status_code == 503
    assert r.json()["error"]["details"]["dependency"] == "postgres"


async def test_a_pull_page_is_an_ordered_index_scan_whatever_the_estimates(app, tenant, pg):
    """The page's range (since, head] has a bound Postgres learns only while
    the statement runs (the head), so it takes 0.5 % of a tenant's rows to
    match, and a custom plan for a pull had been a bitmap scan of every row
    past the cursor and a sort of them all (100-200 ms a page at 100,000
    entities, ~13 ms once the cached plan took over). On the direct pool (no
    bitmap or sequential scans, api/core/resources.py) the page is read along
    (customer_id, version) and cut at the limit, even when the planner is
    pushed hard towards the other plans (random reads priced at 40)."""
    from api.sync.pull import _PULL_DRIVER
    from api.sync.schemas import SYNC_TYPES

    rows = 20000
    top = await pg.fetchval(
        "UPDATE customer_versions SET version = version + $2 WHERE customer_id = $1::uuid "
        "RETURNING version",
        tenant.id,
        rows,
    )
    await pg.execute(
        "INSERT INTO sync_entities (customer_id, entity_type, entity_id, version, deleted, "
        "payload) SELECT $1::uuid, 'world_node', gen_random_uuid(), $2 + g, false, "
        """'{"name": "x"}'::json FROM generate_series(1, $3) g""",
        tenant.id,
        top - rows,
        rows,
    )
    await pg.execute("ANALYZE sync_entities")  # the statistics know the tenant's size
    params = {
        "customer_id": uuid.UUID(tenant.id),
        "w": None,
        "since": 0,
        "types": list(SYNC_TYPES),
        "limit": 5000,
    }
    pool = await app.state.resources.direct()
    async with pool.acquire() as driver, driver.transaction():
        await driver.execute("SET LOCAL random_page_cost = 40")
        explained = await driver.fetch("EXPLAIN " + _PULL_DRIVER.sql, *_PULL_DRIVER.args(params))
    plan = "\n".join(row[0] for row in explained)
    assert "Index Scan using ix_sync_entities_customer_version" in plan, plan
    assert "Sort" not in plan and "Bitmap" not in plan and "Seq Scan" not in plan, plan


async def test_a_pull_without_postgres_is_a_503_naming_it(settings):
    """Pull pages run on the direct driver pool (api/sync/pull.py): an outage
    there is still the 503 naming Postgres, not a 500."""
    from api.auth.principal import Principal, Scope
    from api.core.errors import DependencyUnavailable
    from api.core.resources import Resources
    from api.sync.pull import pull

    resources = Resources.open(
        settings.model_copy(
            update={"database_url": "postgresql+asyncpg://nobody:nothing@127.0.0.1:1/none"}
        )
    )
    principal = Principal(
        key_uuid=None, scopes=frozenset({Scope.customer}), customer_id=uuid.uuid4()
    )
    try:
        with pytest.raises(DependencyUnavailable) as refused:
            await pull(resources, principal, since=0, limit=10, types=["venue"])
    finally:
        await resources.close()
    assert refused.value.details == {"dependency": "postgres"}


# -------------------------------------------------------------- tenancy
async def test_sync_never_crosses_tenants(client, tenant, other_tenant):
    for t in (tenant, other_tenant):
        ws, h = await register(client, t)
        await do_push(client, ws, h, [mutation(1, "venue", uid(), data={"name": "Same"})])
    ws, h = await register(client, tenant, "second")
    pulled = (await client.get(f"{SYNC}/pull?since=0", headers=h)).json()["changes"]
    theirs = (await client.get(f"{SYNC}/pull?since=0", headers=other_tenant.headers)).json()[
        "changes"
    ]
    assert len(pulled) == 1 and len(theirs) == 1 and pulled[0]["id"] != theirs[0]["id"]
    boot = (await client.get(f"{SYNC}/bootstrap", headers=h)).text.splitlines()
    assert json.loads(boot[0])["counts"] == {"venue": 1}
    status = (await client.get(f"{SYNC}/status", headers=h)).json()
    assert status["counts"]["venue"] == 1
    their_ws, _ = await register(client, other_tenant, "x")
    assert (
        await client.get(f"{SYNC}/status?workstation_id={their_ws}", headers=tenant.headers)
    ).status_code == 404
    # Pushing onto another tenant's entity id is refused and changes nothing.
    r = (
        await do_push(
            client, ws, h, [mutation(1, "venue", theirs[0]["id"], base=1, data={"name": "pwned"})]
        )
    ).json()
    assert r["results"][0]["status"] == "rejected"
    again = (await client.get(f"{SYNC}/pull?since=0", headers=other_tenant.headers)).json()[
        "changes"
    ]
    assert again[0]["data"]["name"] == "Same"


async def test_analyst_and_device_keys_cannot_sync(client, tenant):
    for scope in ("analyst", "device"):
        key = (
            await client.post(
                f"{V1}/auth/keys", headers=tenant.headers, json={"name": scope, "scope": scope}
            )
        ).json()["api_key"]
        r = await client.get(f"{SYNC}/pull", headers={"X-API-Key": key})
        assert r.status_code == 403
