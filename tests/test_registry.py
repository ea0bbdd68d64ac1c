"""Kits, drones and fleet telemetry on the real registry (Postgres) and graph (Neo4j).

Serials are global (printed at manufacture) and the session database is
shared by every test, so each test makes its own serials with `serial()`.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from api.fleet.liveness import Liveness, assess, liveness_sweep
from api.journal.reconcile import verify
from graph.driver import GraphClient
from tests.conftest import Tenant, make_key, schema_drift
from tests.journal_state import row_states

V1 = "/api/v1"
AUTH = f"{V1}/auth"


def serial(prefix: str = "D") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12].upper()}"


def beat(**overrides: Any) -> dict[str, Any]:
    body = {
        "cpu_percent": 23.5,
        "memory_percent": 41.0,
        "disk_percent": 62.0,
        "temperature_c": 48.0,
        "battery_percent": 87.0,
        "firmware_version": "2.4.1",
        "status": "healthy",
        "uptime_seconds": 3600,
        "ip": "10.20.0.14",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not ...}


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    if code is not None:
        assert error["code"] == code, error
    return error


async def preregister(
    client,
    admin_headers,
    *,
    models: tuple[str | None, ...] = ("Perch Mk II",),
    name: str | None = "Kit A",
) -> tuple[str, list[str]]:
    kit_serial = serial("K")
    drones: list[dict[str, str | None]] = [{"serial": serial(), "model": m} for m in models]
    response = await client.post(
        f"{V1}/admin/kits",
        headers=admin_headers,
        json={"serial": kit_serial, "name": name, "drones": drones},
    )
    assert response.status_code == 201, response.text
    return kit_serial, [str(d["serial"]) for d in drones]


async def claimed_kit(client, admin_headers, tenant: Tenant, **kw: Any) -> tuple[str, list[str]]:
    kit_serial, drones = await preregister(client, admin_headers, **kw)
    response = await client.post(f"{V1}/kits/{kit_serial}/claim", headers=tenant.headers)
    assert response.status_code == 200, response.text
    return kit_serial, drones


def headers_of(key: dict[str, Any]) -> dict[str, str]:
    return {"X-API-Key": key["api_key"]}


async def send_beat(
    client, drone_serial: str, headers: dict[str, str], **overrides: Any
) -> httpx.Response:
    return await client.post(
        f"{V1}/drones/{drone_serial}/heartbeat", headers=headers, json=beat(**overrides)
    )


async def events(client, tenant: Tenant, drone_serial: str, kind: str | None = None) -> list:
    url = f"{V1}/drones/{drone_serial}/events" + (f"?kind={kind}" if kind else "")
    response = await client.get(url, headers=tenant.headers)
    assert response.status_code == 200, response.text
    return response.json()["items"]


# ------------------------------------------------------------------ kits: claiming
async def test_customer_confirms_and_claims_a_preregistered_kit(
    client, admin_headers, tenant: Tenant, other_tenant: Tenant
):
    kit_serial, drones = await preregister(client, admin_headers, models=("Perch Mk II", "Perch S"))
    looked = await client.get(f"{V1}/kits/{kit_serial}", headers=tenant.headers)
    assert looked.status_code == 200, looked.text
    assert looked.json()["claimed"] is False and looked.json()["version"] == 0
    assert sorted(d["serial"] for d in looked.json()["drones"]) == sorted(drones)
    assert (await client.get(f"{V1}/drones/{drones[0]}", headers=tenant.headers)).status_code == 404

    claimed = await client.post(f"{V1}/kits/{kit_serial}/claim", headers=tenant.headers)
    assert claimed.status_code == 200, claimed.text
    kit = claimed.json()
    assert kit["claimed"] is True and kit["version"] > 0 and kit["claimed_at"]
    assert sorted(d["serial"] for d in kit["drones"]) == sorted(drones)
    assert all(d["liveness"] == "unknown" and d["status"] == "active" for d in kit["drones"])

    listed = (await client.get(f"{V1}/kits", headers=tenant.headers)).json()["items"]
    assert [k["serial"] for k in listed] == [kit_serial]
    assert len(listed[0]["drones"]) == 2
    drone = (await client.get(f"{V1}/drones/{drones[0]}", headers=tenant.headers)).json()
    assert drone["kit"] == {"id": kit["id"], "serial": kit_serial}

    # Claimed by someone else: exactly like a kit that does not exist.
    assert_error(
        await client.get(f"{V1}/kits/{kit_serial}", headers=other_tenant.headers), 404, "not_found"
    )
    assert_error(
        await client.get(f"{V1}/kits/{serial('K')}", headers=other_tenant.headers), 404, "not_found"
    )
    assert_error(
        await client.post(f"{V1}/kits/{kit_serial}/claim", headers=other_tenant.headers),
        404,
        "not_found",
    )
    # Claiming one's own kit again changes nothing.
    again = await client.post(f"{V1}/kits/{kit_serial}/claim", headers=tenant.headers)
    assert again.status_code == 200 and again.json()["version"] == kit["version"]


async def test_concurrent_claims_have_one_winner(client, admin_headers, make_tenant, pg):
    kit_serial, _ = await preregister(client, admin_headers, models=("A", "B"))
    tenants = [await make_tenant(f"rival {i}") for i in range(4)]
    responses = await asyncio.gather(
        *(client.post(f"{V1}/kits/{kit_serial}/claim", headers=t.headers) for t in tenants)
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 404, 404, 404], [r.text for r in responses]
    winner = tenants[[r.status_code for r in responses].index(200)]
    journaled = await pg.fetch(
        "SELECT DISTINCT customer_id FROM sync_journal WHERE entity_type IN ('kit', 'drone') "
        "AND customer_id = ANY($1::uuid[])",
        [t.id for t in tenants],
    )
    assert [str(r["customer_id"]) for r in journaled] == [winner.id]


async def test_spare_drones_and_packing_rules(client, admin_headers, tenant: Tenant):
    kit_serial, _ = await claimed_kit(client, admin_headers, tenant)
    spare = serial()
    created = await client.post(
        f"{V1}/admin/drones", headers=admin_headers, json={"serial": spare, "model": "Perch Mk II"}
    )
    assert created.status_code == 201, created.text
    # A spare shipped alone is claimed by assigning it to one's kit.
    assigned = await client.post(f"{V1}/kits/{kit_serial}/drones/{spare}", headers=tenant.headers)
    assert assigned.status_code == 200, assigned.text
    assert spare in [d["serial"] for d in assigned.json()["drones"]]
    # A drone packed in someone's unclaimed kit cannot be taken out of it.
    other_kit, packed = await preregister(client, admin_headers)
    assert_error(
        await client.post(f"{V1}/kits/{kit_serial}/drones/{packed[0]}", headers=tenant.headers),
        409,
        "drone_in_unclaimed_kit",
    )
    # The admin packs drones only into unclaimed kits.
    assert_error(
        await client.post(
            f"{V1}/admin/drones",
            headers=admin_headers,
            json={"serial": serial(), "kit_serial": kit_serial},
        ),
        409,
        "kit_claimed",
    )
    into_unclaimed = await client.post(
        f"{V1}/admin/drones",
        headers=admin_headers,
        json={"serial": serial(), "kit_serial": other_kit},
    )
    assert into_unclaimed.status_code == 201
    assert into_unclaimed.json()["kit"]["serial"] == other_kit
    owner = (await client.get(f"{V1}/admin/kits/{other_kit}", headers=admin_headers)).json()
    assert owner["customer_id"] is None and len(owner["drones"]) == 2


# ------------------------------------------------------------------ journal + graph
async def graph_kits(graph: GraphClient, customer_id: str) -> dict[str, Any]:
    kits = await graph.read(
        "test.kits",
        "MATCH (k:Kit) WHERE k.customer_id = $c "
        "RETURN k.serial AS serial, k.name AS name, k.version AS version",
        {"c": customer_id},
    )
    drones = await graph.read(
        "test.drones",
        "MATCH (d:Drone) WHERE d.customer_id = $c "
        "OPTIONAL MATCH (d)-[:IN_KIT]->(k:Kit) "
        "RETURN d.serial AS serial, d.model AS model, d.version AS version, k.serial AS kit",
        {"c": customer_id},
    )
    return {
        "kits": {r["serial"]: dict(r) for r in kits},
        "drones": {r["serial"]: dict(r) for r in drones},
    }


async def test_kit_and_drone_changes_are_journaled_and_projected(
    app, client, admin_headers, tenant: Tenant, graph: GraphClient, pg
):
    resources = app.state.resources
    kit_serial, drones = await claimed_kit(
        client, admin_headers, tenant, models=("Perch Mk II", "Perch S")
    )
    rows = await pg.fetch(
        "SELECT entity_type, entity_id, version, payload FROM "
        "sync_journal WHERE customer_id = $1::uuid ORDER BY version",
        tenant.id,
    )
    assert [r["entity_type"] for r in rows] == ["kit", "drone", "drone"]
    states = await row_states(pg, tenant.id)
    assert all(states[r["version"]][0] == "applied" for r in rows)
    kit_row = await pg.fetchrow("SELECT id, version FROM kits WHERE serial = $1", kit_serial)
    assert (rows[0]["entity_id"], rows[0]["version"]) == (kit_row["id"], kit_row["version"])
    seen = await graph_kits(graph, tenant.id)
    assert seen["kits"][kit_serial]["name"] == "Kit A"
    assert {s: d["kit"] for s, d in seen["drones"].items()} == {s: kit_serial for s in drones}

    # Unassign, rename, change a model, reassign: each a new version, each in Neo4j.
    out = await client.delete(f"{V1}/kits/{kit_serial}/drones/{drones[0]}", headers=tenant.headers)
    assert out.status_code == 200 and drones[0] not in [d["serial"] for d in out.json()["drones"]]
    renamed = await client.patch(
        f"{V1}/kits/{kit_serial}", headers=tenant.headers, json={"name": "North gate kit"}
    )
    assert renamed.status_code == 200 and renamed.json()["version"] > kit_row["version"]
    remodeled = await client.patch(
        f"{V1}/drones/{drones[1]}", headers=tenant.headers, json={"model": "Perch Mk III"}
    )
    assert remodeled.status_code == 200 and remodeled.json()["model"] == "Perch Mk III"
    seen = await graph_kits(graph, tenant.id)
    assert seen["kits"][kit_serial]["name"] == "North gate kit"
    assert seen["drones"][drones[0]]["kit"] is None
    assert seen["drones"][drones[1]]["model"] == "Perch Mk III"
    back = await client.post(f"{V1}/kits/{kit_serial}/drones/{drones[0]}", headers=tenant.headers)
    assert back.status_code == 200
    seen = await graph_kits(graph, tenant.id)
    assert seen["drones"][drones[0]]["kit"] == kit_serial

    versions = [
        r["version"]
        for r in await pg.fetch(
            "SELECT version FROM sync_journal WHERE customer_id = $1::uuid ORDER BY version",
            tenant.id,
        )
    ]
    assert versions == list(range(1, len(versions) + 1)) and len(versions) == 7
    drone_rows = await pg.fetch(
        "SELECT serial, version FROM drones WHERE customer_id = $1::uuid", tenant.id
    )
    for row in drone_rows:
        assert seen["drones"][row["serial"]]["version"] == row["version"]
    drift = await verify(resources, uuid.UUID(tenant.id))
    assert drift.clean and drift.pending == 0, drift


async def test_operator_status_and_telemetry_are_not_journaled(
    client, admin_headers, tenant: Tenant, pg
):
    _, drones = await claimed_kit(client, admin_headers, tenant)
    before = await pg.fetchval(
        "SELECT count(*) FROM sync_journal WHERE customer_id = $1::uuid", tenant.id
    )
    assert (await send_beat(client, drones[0], tenant.headers)).status_code == 201
    changed = await client.patch(
        f"{V1}/drones/{drones[0]}/status", headers=tenant.headers, json={"status": "maintenance"}
    )
    assert changed.status_code == 200, changed.text
    after = await pg.fetchval(
        "SELECT count(*) FROM sync_journal WHERE customer_id = $1::uuid", tenant.id
    )
    assert after == before


# ------------------------------------------------------------------ tenancy
async def test_two_tenants_with_identical_data_see_only_their_own(
    client, admin_headers, tenant: Tenant, other_tenant: Tenant, pg
):
    fleets = {}
    for t in (tenant, other_tenant):
        kit_serial, drones = await claimed_kit(
            client, admin_headers, t, models=("Perch Mk II", "Perch Mk II")
        )
        for drone in drones:
            assert (await send_beat(client, drone, t.headers)).status_code == 201
            await client.post(
                f"{V1}/drones/{drone}/updates",
                headers=t.headers,
                json={
                    "to_version": "2.4.1",
                    "status": "success",
                    "started_at": "2026-11-01T00:00:00Z",
                    "finished_at": "2026-11-01T00:05:00Z",
                },
            )
        fleets[t.id] = (kit_serial, drones)
    mine_kit, mine = fleets[tenant.id]
    theirs_kit, theirs = fleets[other_tenant.id]
    h = tenant.headers

    kits = (await client.get(f"{V1}/kits", headers=h)).json()["items"]
    assert [k["serial"] for k in kits] == [mine_kit]
    listed = (await client.get(f"{V1}/drones", headers=h)).json()["items"]
    assert sorted(d["serial"] for d in listed) == sorted(mine)
    for query in (
        "?model=Perch%20Mk%20II",
        f"?kit={theirs_kit}",
        "?firmware=2.4.1",
        "?liveness=online",
        "?status=active",
    ):
        found = (await client.get(f"{V1}/drones{query}", headers=h)).json()["items"]
        assert {d["serial"] for d in found} <= set(mine), query
    assert (await client.get(f"{V1}/drones?kit={theirs_kit}", headers=h)).json()["items"] == []

    their_events = await pg.fetchval(
        "SELECT count(*) FROM device_events WHERE customer_id = $1::uuid", other_tenant.id
    )
    their_beats = await pg.fetchval(
        "SELECT count(*) FROM heartbeats WHERE customer_id = $1::uuid", other_tenant.id
    )
    drone = theirs[0]
    attempts = [
        client.get(f"{V1}/kits/{theirs_kit}", headers=h),
        client.post(f"{V1}/kits/{theirs_kit}/claim", headers=h),
        client.patch(f"{V1}/kits/{theirs_kit}", headers=h, json={"name": "mine now"}),
        client.post(f"{V1}/kits/{theirs_kit}/drones/{mine[0]}", headers=h),
        client.post(f"{V1}/kits/{mine_kit}/drones/{drone}", headers=h),
        client.delete(f"{V1}/kits/{theirs_kit}/drones/{drone}", headers=h),
        client.delete(f"{V1}/kits/{mine_kit}/drones/{drone}", headers=h),
        client.get(f"{V1}/drones/{drone}", headers=h),
        client.patch(f"{V1}/drones/{drone}", headers=h, json={"model": "x"}),
        client.post(f"{V1}/drones/{drone}/heartbeat", headers=h, json=beat()),
        client.patch(f"{V1}/drones/{drone}/status", headers=h, json={"status": "retired"}),
        client.get(f"{V1}/drones/{drone}/events", headers=h),
        client.get(f"{V1}/drones/{drone}/heartbeats", headers=h),
        client.get(f"{V1}/drones/{drone}/updates", headers=h),
        client.post(
            f"{V1}/drones/{drone}/updates",
            headers=h,
            json={"to_version": "9", "status": "failed", "started_at": "2026-11-01T00:00:00Z"},
        ),
    ]
    for response in await asyncio.gather(*attempts):
        error = assert_error(response, 404, "not_found")
        assert drone not in str(error["details"]) and theirs_kit not in str(error["details"])
    assert (
        await pg.fetchval(
            "SELECT count(*) FROM device_events WHERE customer_id = $1::uuid", other_tenant.id
        )
        == their_events
    )
    assert (
        await pg.fetchval(
            "SELECT count(*) FROM heartbeats WHERE customer_id = $1::uuid", other_tenant.id
        )
        == their_beats
    )
    theirs_now = (await client.get(f"{V1}/drones/{drone}", headers=other_tenant.headers)).json()
    assert theirs_now["status"] == "active" and theirs_now["model"] == "Perch Mk II"
    assert theirs_now["kit"]["serial"] == theirs_kit


# ------------------------------------------------------------------ scopes
async def test_device_key_sends_heartbeats_for_its_serial_and_nothing_else(
    client, admin_headers, tenant: Tenant
):
    kit_serial, drones = await claimed_kit(client, admin_headers, tenant, models=("A", "B"))
    device = headers_of(await make_key(client, tenant, "device", device_serial=drones[0]))
    assert (await send_beat(client, drones[0], device)).status_code == 201
    assert_error(await send_beat(client, drones[1], device), 403, "forbidden")
    assert_error(await send_beat(client, serial(), device), 403, "forbidden")
    forbidden = [
        client.get(f"{V1}/drones", headers=device),
        client.get(f"{V1}/drones/{drones[0]}", headers=device),
        client.get(f"{V1}/drones/{drones[0]}/events", headers=device),
        client.get(f"{V1}/drones/{drones[0]}/heartbeats", headers=device),
        client.get(f"{V1}/drones/{drones[0]}/updates", headers=device),
        client.post(
            f"{V1}/drones/{drones[0]}/updates",
            headers=device,
            json={"to_version": "2.5.0", "status": "success", "started_at": "2026-11-01T00:00:00Z"},
        ),
        client.patch(f"{V1}/drones/{drones[0]}/status", headers=device, json={"status": "retired"}),
        client.patch(f"{V1}/drones/{drones[0]}", headers=device, json={"model": "x"}),
        client.get(f"{V1}/kits", headers=device),
        client.get(f"{V1}/kits/{kit_serial}", headers=device),
        client.post(f"{V1}/kits/{kit_serial}/claim", headers=device),
        client.post(f"{V1}/kits/{kit_serial}/drones/{drones[1]}", headers=device),
        client.delete(f"{V1}/kits/{kit_serial}/drones/{drones[1]}", headers=device),
        client.post(f"{V1}/admin/kits", headers=device, json={"serial": serial("K")}),
        client.get(f"{AUTH}/keys", headers=device),
        client.post(f"{AUTH}/keys", headers=device, json={"name": "x", "scope": "customer"}),
        client.post(f"{AUTH}/customers", headers=device, json={"name": "x"}),
    ]
    for response in await asyncio.gather(*forbidden):
        assert_error(response, 403, "forbidden")
    # An unbound device key reports for any drone of its tenant, and only its tenant's.
    fleet_key = headers_of(await make_key(client, tenant, "device"))
    assert (await send_beat(client, drones[1], fleet_key)).status_code == 201
    assert_error(await send_beat(client, serial(), fleet_key), 404, "not_found")


async def test_analyst_reads_but_never_writes(client, admin_headers, tenant: Tenant, pg):
    kit_serial, drones = await claimed_kit(client, admin_headers, tenant)
    spare_kit, _ = await preregister(client, admin_headers)
    analyst = headers_of(await make_key(client, tenant, "analyst"))
    for url in (
        f"{V1}/kits",
        f"{V1}/kits/{kit_serial}",
        f"{V1}/drones",
        f"{V1}/drones/{drones[0]}",
        f"{V1}/drones/{drones[0]}/events",
        f"{V1}/drones/{drones[0]}/updates",
        f"{V1}/drones/{drones[0]}/heartbeats",
    ):
        assert (await client.get(url, headers=analyst)).status_code == 200, url
    writes = [
        client.post(f"{V1}/drones/{drones[0]}/heartbeat", headers=analyst, json=beat()),
        client.post(f"{V1}/kits/{spare_kit}/claim", headers=analyst),
        client.post(f"{V1}/kits/{kit_serial}/drones/{drones[0]}", headers=analyst),
        client.delete(f"{V1}/kits/{kit_serial}/drones/{drones[0]}", headers=analyst),
        client.patch(f"{V1}/kits/{kit_serial}", headers=analyst, json={"name": "x"}),
        client.patch(
            f"{V1}/drones/{drones[0]}/status", headers=analyst, json={"status": "maintenance"}
        ),
        client.post(
            f"{V1}/drones/{drones[0]}/updates",
            headers=analyst,
            json={"to_version": "2.5.0", "status": "success", "started_at": "2026-11-01T00:00:00Z"},
        ),
    ]
    for response in await asyncio.gather(*writes):
        assert_error(response, 403, "forbidden")
    assert await pg.fetchval("SELECT customer_id FROM kits WHERE serial = $1", spare_kit) is None
    assert (
        await pg.fetchval(
            "SELECT count(*) FROM heartbeats h JOIN drones d ON d.id = h.drone_id"
            " WHERE d.serial = $1",
            drones[0],
        )
        == 0
    )


async def test_workstation_runs_the_fleet_but_not_the_tenant(client, admin_headers, tenant: Tenant):
    ws = await client.post(
        f"{AUTH}/workstations/register", json={"name": "van 3"}, headers=tenant.headers
    )
    ws_headers = {"X-API-Key": ws.json()["api_key"]}
    kit_serial, _ = await preregister(client, admin_headers)
    claimed = await client.post(f"{V1}/kits/{kit_serial}/claim", headers=ws_headers)
    assert claimed.status_code == 200, claimed.text
    drone = claimed.json()["drones"][0]["serial"]
    assert (await client.get(f"{V1}/drones/{drone}", headers=ws_headers)).status_code == 200
    for response in await asyncio.gather(
        client.post(f"{AUTH}/customers", json={"name": "x"}, headers=ws_headers),
        client.post(f"{AUTH}/keys", json={"name": "x", "scope": "device"}, headers=ws_headers),
        client.get(f"{AUTH}/keys", headers=ws_headers),
        client.post(f"{V1}/admin/kits", json={"serial": serial("K")}, headers=ws_headers),
        client.post(f"{V1}/admin/drones", json={"serial": serial()}, headers=ws_headers),
        send_beat(client, drone, ws_headers),  # telemetry is for devices and customers
    ):
        assert_error(response, 403, "forbidden")
    # The admin provisions hardware but acts in no tenant.
    assert_error(await client.get(f"{V1}/kits", headers=admin_headers), 403, "forbidden")


async def test_revoked_rotated_and_disabled_device_keys_fail_at_once(
    client, admin_headers, tenant: Tenant
):
    _, drones = await claimed_kit(client, admin_headers, tenant)
    first = await make_key(client, tenant, "device", device_serial=drones[0])
    assert (await send_beat(client, drones[0], headers_of(first))).status_code == 201
    rotated = await client.post(f"{AUTH}/keys/{first['id']}/rotate", headers=tenant.headers)
    assert rotated.status_code == 201
    second = rotated.json()
    assert second["device_serial"] == drones[0]
    assert_error(await send_beat(client, drones[0], headers_of(first)), 401, "unauthorized")
    assert (await send_beat(client, drones[0], headers_of(second))).status_code == 201
    await client.delete(f"{AUTH}/keys/{second['id']}", headers=tenant.headers)
    assert_error(await send_beat(client, drones[0], headers_of(second)), 401, "unauthorized")

    third = await make_key(client, tenant, "device", device_serial=drones[0])
    await client.post(f"{AUTH}/customers/{tenant.id}/disable", headers=admin_headers)
    try:
        assert_error(await send_beat(client, drones[0], headers_of(third)), 401)
        assert_error(await send_beat(client, drones[0], tenant.headers), 401)
    finally:
        await client.post(f"{AUTH}/customers/{tenant.id}/enable", headers=admin_headers)
    assert (await send_beat(client, drones[0], headers_of(third))).status_code == 201


async def test_keys_are_never_logged_in_clear(
    client, admin_headers, tenant: Tenant, settings, capfd, pg
):
    from api.core.observability import configure_logging

    _, drones = await claimed_kit(client, admin_headers, tenant)
    configure_logging("INFO", json=True)  # the session runs at WARNING
    try:
        device = await make_key(client, tenant, "device", device_serial=drones[0])
        assert (await send_beat(client, drones[0], headers_of(device))).status_code == 201
        bad = {"X-API-Key": device["api_key"][:-3] + "xyz"}
        assert (await send_beat(client, drones[0], bad)).status_code == 401
        assert (await client.get(f"{V1}/drones", headers=tenant.headers)).status_code == 200
        output = capfd.readouterr().out
    finally:
        with capfd.disabled():
            configure_logging(settings.log_level, json=settings.log_json)
    assert f'"path": "/api/v1/drones/{drones[0]}/heartbeat"' in output  # requests were logged
    for secret in (
        device["api_key"],
        device["api_key"].split("_", 2)[2],
        tenant.key,
        tenant.key.split("_", 2)[2],
        bad["X-API-Key"],
    ):
        assert secret not in output
    stored = await pg.fetchrow("SELECT * FROM api_keys WHERE id = $1::uuid", device["id"])
    assert device["api_key"] not in " ".join(str(v) for v in stored.values())


# ------------------------------------------------------------------ bad input
BAD_BEATS = [
    beat(cpu_percent=100.5),
    beat(memory_percent=-1),
    beat(disk_percent="50"),
    beat(cpu_percent=True),
    beat(battery_percent=None),
    beat(battery_percent=...),
    beat(temperature_c=300),
    beat(temperature_c=-90),
    beat(firmware_version=""),
    beat(firmware_version="2.4.1; drop table"),
    beat(firmware_version="9" * 100_000),
    beat(status="exploded"),
    beat(uptime_seconds=-5),
    beat(uptime_seconds=1.5),
    beat(ip="not-an-ip"),
    beat(ip="10.0.0.1" * 1000),
    beat(extra_field=1),
    beat(cpu=12),
    {},
    [beat()],
]


@pytest.mark.parametrize("body", BAD_BEATS)
async def test_bad_heartbeats_get_field_errors_and_write_nothing(
    client, admin_headers, tenant: Tenant, pg, body
):
    _, drones = await claimed_kit(client, admin_headers, tenant)

    async def state() -> tuple:
        return (
            await pg.fetchval(
                "SELECT count(*) FROM heartbeats WHERE customer_id = $1::uuid", tenant.id
            ),
            await pg.fetchval(
                "SELECT count(*) FROM device_events WHERE customer_id = $1::uuid", tenant.id
            ),
            await pg.fetchval("SELECT last_heartbeat_at FROM drones WHERE serial = $1", drones[0]),
        )

    before = await state()
    response = await client.post(
        f"{V1}/drones/{drones[0]}/heartbeat", json=body, headers=tenant.headers
    )
    error = assert_error(response, 422, "validation_error")
    assert error["details"] and all("loc" in d and "msg" in d for d in error["details"])
    assert await state() == before


async def test_nan_temperature_is_refused(client, admin_headers, tenant: Tenant):
    _, drones = await claimed_kit(client, admin_headers, tenant)
    raw = (
        '{"cpu_percent": 1, "memory_percent": 1, "disk_percent": 1, "temperature_c": NaN, '
        '"battery_percent": 50, "firmware_version": "1", "status": "healthy"}'
    )
    response = await client.post(
        f"{V1}/drones/{drones[0]}/heartbeat",
        content=raw,
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    assert_error(response, 422, "validation_error")


@pytest.mark.parametrize(
    "body",
    [
        {"serial": "has space"},
        {"serial": ""},
        {"serial": "K" * 101},
        {"serial": "-leading"},
        {"serial": 123},
        {"serial": "K-OK", "name": "n" * 201},
        {"serial": "K-OK", "colour": "red"},
        {"serial": "K-OK", "drones": [{"serial": "D-1"}, {"serial": "D-1"}]},
        {"serial": "K-OK", "drones": [{"serial": "D-1", "model": "m" * 101}]},
        {"serial": "K-OK", "drones": [{"serial": f"D-{i}"} for i in range(65)]},
    ],
)
async def test_bad_preregistrations_write_nothing(client, admin_headers, pg, body):
    counts = "SELECT (SELECT count(*) FROM kits), (SELECT count(*) FROM drones)"
    before = await pg.fetchrow(counts)
    response = await client.post(f"{V1}/admin/kits", json=body, headers=admin_headers)
    assert assert_error(response, 422, "validation_error")["details"]
    assert await pg.fetchrow(counts) == before


async def test_duplicate_serials_answer_409_and_write_nothing(client, admin_headers, pg):
    kit_serial, drones = await preregister(client, admin_headers)
    counts = "SELECT (SELECT count(*) FROM kits), (SELECT count(*) FROM drones)"
    before = await pg.fetchrow(counts)
    error = assert_error(
        await client.post(f"{V1}/admin/kits", headers=admin_headers, json={"serial": kit_serial}),
        409,
        "duplicate_serial",
    )
    assert error["details"]["kits"] == [kit_serial]
    # A new kit carrying an already registered drone: neither is created.
    fresh = serial("K")
    error = assert_error(
        await client.post(
            f"{V1}/admin/kits",
            headers=admin_headers,
            json={"serial": fresh, "drones": [{"serial": serial()}, {"serial": drones[0]}]},
        ),
        409,
        "duplicate_serial",
    )
    assert error["details"]["drones"] == [drones[0]]
    assert_error(
        await client.post(f"{V1}/admin/drones", headers=admin_headers, json={"serial": drones[0]}),
        409,
        "duplicate_serial",
    )
    assert await pg.fetchrow(counts) == before
    assert await pg.fetchval("SELECT count(*) FROM kits WHERE serial = $1", fresh) == 0


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("status", {"status": "flying"}),
        ("status", {"status": "retired", "reason": "r" * 501}),
        ("status", {"status": "retired", "by": "me"}),
        (
            "updates",
            {
                "to_version": "2.5.0",
                "status": "success",
                "started_at": "2026-11-01T10:00:00Z",
                "finished_at": "2026-11-01T09:00:00Z",
            },
        ),
        (
            "updates",
            {"to_version": "2.5.0", "status": "success", "started_at": "2026-11-01T10:00:00"},
        ),
        (
            "updates",
            {"to_version": "2.5.0", "status": "done", "started_at": "2026-11-01T10:00:00Z"},
        ),
        ("updates", {"to_version": "2.5.0", "status": "success", "started_at": "yesterday"}),
        (
            "updates",
            {
                "to_version": "2.5.0",
                "status": "failed",
                "started_at": "2026-11-01T10:00:00Z",
                "health_check_passed": "yes",
            },
        ),
        (
            "updates",
            {
                "to_version": "2.5.0",
                "status": "failed",
                "started_at": "2026-11-01T10:00:00Z",
                "error_message": "e" * 2001,
            },
        ),
    ],
)
async def test_bad_status_and_update_records_write_nothing(
    client, admin_headers, tenant, pg, path, body
):
    _, drones = await claimed_kit(client, admin_headers, tenant)
    counts = (
        "SELECT (SELECT count(*) FROM device_events WHERE customer_id = $1::uuid), "
        "(SELECT count(*) FROM update_history WHERE customer_id = $1::uuid)"
    )
    before = await pg.fetchrow(counts, tenant.id)
    method = client.patch if path == "status" else client.post
    response = await method(f"{V1}/drones/{drones[0]}/{path}", json=body, headers=tenant.headers)
    assert_error(response, 422, "validation_error")
    assert await pg.fetchrow(counts, tenant.id) == before
    assert (await client.get(f"{V1}/drones/{drones[0]}", headers=tenant.headers)).json()[
        "status"
    ] == "active"


@pytest.mark.parametrize(
    "url",
    [
        f"{V1}/kits/{'K' * 101}",
        f"{V1}/drones/bad%20serial",
        f"{V1}/drones?cursor=!!!",
        f"{V1}/drones?cursor=WyJ4IiwgMV0",
        f"{V1}/drones?limit=0",
        f"{V1}/drones?limit=501",
        f"{V1}/drones?status=flying",
        f"{V1}/drones?liveness=asleep",
        f"{V1}/drones?last_seen_before=soon",
        f"{V1}/kits?cursor=bm90IGpzb24",
    ],
)
async def test_malformed_queries_answer_422_in_the_error_shape(client, tenant: Tenant, url):
    assert_error(await client.get(url, headers=tenant.headers), 422, "validation_error")


# ------------------------------------------------------------------ telemetry
async def test_heartbeat_is_the_drones_latest_and_part_of_its_history(
    client, admin_headers, tenant: Tenant
):
    kit_serial, drones = await claimed_kit(client, admin_headers, tenant)
    drone = drones[0]
    first = await send_beat(client, drone, tenant.headers, firmware_version="2.4.1")
    assert first.status_code == 201, first.text
    accepted = first.json()
    assert accepted["liveness"] == "online" and accepted["heartbeat_interval_seconds"] == 30
    second = await send_beat(
        client,
        drone,
        tenant.headers,
        firmware_version="2.5.0",
        cpu_percent=77.0,
        ip="fe80::1",
        uptime_seconds=None,
    )
    assert second.status_code == 201
    got = (await client.get(f"{V1}/drones/{drone}", headers=tenant.headers)).json()
    assert got["liveness"] == "online" and got["liveness_reasons"] == []
    assert got["firmware_version"] == "2.5.0"
    assert got["last_heartbeat"]["cpu_percent"] == 77.0 and got["last_heartbeat"]["ip"] == "fe80::1"
    assert (
        datetime.fromisoformat(got["last_heartbeat_at"])
        == datetime.fromisoformat(got["last_heartbeat"]["received_at"])
        == datetime.fromisoformat(second.json()["received_at"])
    )
    assert got["kit"]["serial"] == kit_serial

    history = (
        await client.get(f"{V1}/drones/{drone}/heartbeats?limit=1", headers=tenant.headers)
    ).json()
    assert [h["firmware_version"] for h in history["items"]] == ["2.5.0"]
    older = (
        await client.get(
            f"{V1}/drones/{drone}/heartbeats?limit=1&cursor={history['next_cursor']}",
            headers=tenant.headers,
        )
    ).json()
    assert [h["firmware_version"] for h in older["items"]] == ["2.4.1"]
    assert older["items"][0]["ip"] == "10.20.0.14"
    firmware = await events(client, tenant, drone, "firmware")
    assert [e["details"] for e in firmware] == [{"from": "2.4.1", "to": "2.5.0"}]


async def test_concurrent_heartbeats_of_one_drone_record_one_transition(
    client, admin_headers, tenant: Tenant, pg
):
    _, drones = await claimed_kit(client, admin_headers, tenant)
    responses = await asyncio.gather(
        *(send_beat(client, drones[0], tenant.headers) for _ in range(20))
    )
    assert [r.status_code for r in responses] == [201] * 20
    assert (
        await pg.fetchval(
            "SELECT count(*) FROM heartbeats h JOIN drones d ON d.id = "
            "h.drone_id WHERE d.serial = $1",
            drones[0],
        )
        == 20
    )
    assert [e["details"]["to"] for e in await events(client, tenant, drones[0], "liveness")] == [
        "online"
    ]


async def test_liveness_transitions_are_recorded_as_events(
    app, client, admin_headers, tenant: Tenant
):
    resources = app.state.resources
    _, drones = await claimed_kit(client, admin_headers, tenant)
    drone = drones[0]
    sent = await send_beat(client, drone, tenant.headers)
    t0 = datetime.fromisoformat(sent.json()["received_at"])

    def ours(transitions: list) -> list[tuple[str, str]]:
        return [(t.previous, t.state) for t in transitions if t.serial == drone]

    assert ours(await liveness_sweep(resources, now=t0 + timedelta(seconds=29))) == []
    assert ours(await liveness_sweep(resources, now=t0 + timedelta(seconds=31))) == [
        ("online", "degraded")
    ]
    assert ours(await liveness_sweep(resources, now=t0 + timedelta(seconds=32))) == []
    assert ours(await liveness_sweep(resources, now=t0 + timedelta(seconds=46))) == [
        ("degraded", "offline")
    ]
    assert ours(await liveness_sweep(resources, now=t0 + timedelta(hours=1))) == []
    # Back: the heartbeat records its own transition, and a hot one degrades the drone.
    assert (await send_beat(client, drone, tenant.headers)).json()["liveness"] == "online"
    hot = (await send_beat(client, drone, tenant.headers, temperature_c=81.0)).json()
    assert hot["liveness"] == "degraded" and hot["reasons"] == ["high_temperature"]

    found = [
        (e["details"]["from"], e["details"]["to"])
        for e in reversed(await events(client, tenant, drone, "liveness"))
    ]
    assert found == [
        ("unknown", "online"),
        ("online", "degraded"),
        ("degraded", "offline"),
        ("offline", "online"),
        ("online", "degraded"),
    ]
    severities = [e["severity"] for e in await events(client, tenant, drone, "liveness")]
    assert severities == ["warning", "info", "warning", "warning", "info"]


def test_liveness_rule():
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    ok = {"status": "healthy", "temperature_c": 40.0, "battery_percent": 80.0}

    def at(seconds: float, report: dict | None = None) -> tuple[Liveness, list[str]]:
        verdict = assess(
            now - timedelta(seconds=seconds), report or ok, now=now, interval_seconds=30
        )
        return verdict.state, verdict.reasons

    assert assess(None, None, now=now, interval_seconds=30).state is Liveness.unknown
    assert at(0) == (Liveness.online, [])
    assert at(30) == (Liveness.online, [])
    assert at(30.5) == (Liveness.degraded, ["heartbeat_late"])
    assert at(45) == (Liveness.degraded, ["heartbeat_late"])
    assert at(45.5) == (Liveness.offline, ["no_heartbeat"])
    assert at(0, ok | {"status": "failed"}) == (Liveness.degraded, ["reported_failed"])
    assert at(0, ok | {"temperature_c": 75.0})[1] == ["high_temperature"]
    assert at(0, ok | {"temperature_c": 74.9}) == (Liveness.online, [])
    assert at(0, ok | {"battery_percent": 15.0})[1] == ["low_battery"]
    assert at(50, ok | {"battery_percent": 5.0}) == (Liveness.offline, ["no_heartbeat"])


async def test_liveness_filter_agrees_with_the_rule(client, admin_headers, tenant: Tenant, pg):
    _, drones = await claimed_kit(client, admin_headers, tenant, models=("a", "b", "c", "d", "e"))
    never, fine, hot, late, gone = drones
    await send_beat(client, fine, tenant.headers)
    await send_beat(client, hot, tenant.headers, battery_percent=10.0)
    for drone, age in ((late, 40), (gone, 400)):
        await send_beat(client, drone, tenant.headers)
        await pg.execute(
            "UPDATE drones SET last_heartbeat_at = now() - make_interval(secs => $2)"
            " WHERE serial = $1",
            drone,
            age,
        )
    expected = {
        "unknown": [never],
        "online": [fine],
        "degraded": sorted([hot, late]),
        "offline": [gone],
    }
    for state, serials in expected.items():
        items = (await client.get(f"{V1}/drones?liveness={state}", headers=tenant.headers)).json()[
            "items"
        ]
        assert sorted(d["serial"] for d in items) == serials, state
        assert all(d["liveness"] == state for d in items)


async def test_drone_list_filters_and_stable_keyset_pages(client, admin_headers, tenant: Tenant):
    _, in_a = await claimed_kit(client, admin_headers, tenant, models=("a", "b", "c"))
    kit_b, in_b = await claimed_kit(client, admin_headers, tenant, models=("d", "e"))
    h = tenant.headers
    await send_beat(client, in_a[0], h, firmware_version="3.0.0")
    await send_beat(client, in_b[0], h, firmware_version="2.9.0")
    await client.patch(f"{V1}/drones/{in_a[1]}/status", headers=h, json={"status": "maintenance"})

    async def serials(query: str) -> list[str]:
        response = await client.get(f"{V1}/drones{query}", headers=h)
        assert response.status_code == 200, response.text
        return [d["serial"] for d in response.json()["items"]]

    assert await serials(f"?kit={kit_b}") == sorted(in_b)
    assert await serials("?firmware=3.0.0") == [in_a[0]]
    assert await serials("?status=maintenance") == [in_a[1]]
    assert await serials("?model=e") == [in_b[1]]
    cutoff = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    assert await serials(f"?last_seen_before={cutoff}") == sorted([in_a[0], in_b[0]])
    assert await serials(f"?last_seen_after={cutoff}") == []

    # Pages of 2 walk every drone once, in serial order, even as drones arrive mid-walk.
    everything = sorted(in_a + in_b)
    walked: list[str] = []
    cursor = None
    extra_kit: str | None = None
    extra: list[str] = []
    while True:
        page = (
            await client.get(
                f"{V1}/drones?limit=2" + (f"&cursor={cursor}" if cursor else ""), headers=h
            )
        ).json()
        walked += [d["serial"] for d in page["items"]]
        if extra_kit is None:
            extra_kit, extra = await claimed_kit(client, admin_headers, tenant)
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert walked == sorted(walked) and len(walked) == len(set(walked))
    assert set(everything) <= set(walked) <= set(everything + extra)


async def test_operator_status_changes_are_events(client, admin_headers, tenant: Tenant):
    _, drones = await claimed_kit(client, admin_headers, tenant)
    drone = drones[0]
    changed = await client.patch(
        f"{V1}/drones/{drone}/status",
        headers=tenant.headers,
        json={"status": "maintenance", "reason": "prop swap"},
    )
    assert changed.status_code == 200 and changed.json()["status"] == "maintenance"
    assert changed.json()["status_changed_at"]
    same = await client.patch(
        f"{V1}/drones/{drone}/status", headers=tenant.headers, json={"status": "maintenance"}
    )
    assert same.status_code == 200
    await client.patch(
        f"{V1}/drones/{drone}/status", headers=tenant.headers, json={"status": "retired"}
    )
    found = await events(client, tenant, drone, "status")
    assert [(e["details"]["from"], e["details"]["to"]) for e in found] == [
        ("maintenance", "retired"),
        ("active", "maintenance"),
    ]
    assert found[1]["details"]["reason"] == "prop swap" and "prop swap" in found[1]["message"]
    # Liveness is separate: a retired drone that reports is still online.
    assert (await send_beat(client, drone, tenant.headers)).json()["liveness"] == "online"


async def test_update_history_round_trip_and_pages(client, admin_headers, tenant: Tenant):
    _, drones = await claimed_kit(client, admin_headers, tenant)
    drone = drones[0]
    records = [
        {
            "from_version": "2.4.1",
            "to_version": "2.5.0",
            "status": "failed",
            "health_check_passed": False,
            "started_at": "2026-11-01T02:00:00Z",
            "finished_at": "2026-11-01T02:03:00Z",
            "error_message": "checksum mismatch",
        },
        {
            "from_version": "2.4.1",
            "to_version": "2.5.0",
            "status": "rolled_back",
            "health_check_passed": False,
            "started_at": "2026-11-02T02:00:00Z",
            "finished_at": "2026-11-02T02:09:00+00:00",
        },
        {
            "from_version": "2.4.1",
            "to_version": "2.5.1",
            "status": "success",
            "health_check_passed": True,
            "started_at": "2026-11-03T02:00:00+13:00",
        },
    ]
    for body in records:
        response = await client.post(
            f"{V1}/drones/{drone}/updates", headers=tenant.headers, json=body
        )
        assert response.status_code == 201, response.text
    first = (
        await client.get(f"{V1}/drones/{drone}/updates?limit=2", headers=tenant.headers)
    ).json()
    rest = (
        await client.get(
            f"{V1}/drones/{drone}/updates?limit=2&cursor={first['next_cursor']}",
            headers=tenant.headers,
        )
    ).json()
    got = first["items"] + rest["items"]
    assert [u["status"] for u in got] == ["success", "rolled_back", "failed"]
    assert got[2]["error_message"] == "checksum mismatch" and rest["next_cursor"] is None
    assert got[0]["started_at"].startswith("2026-11-02T13:00:00")  # stored in UTC
    severities = [e["severity"] for e in await events(client, tenant, drone, "update")]
    assert severities == ["info", "warning", "error"]


async def test_events_are_paginated_newest_first(client, admin_headers, tenant: Tenant):
    _, drones = await claimed_kit(client, admin_headers, tenant)
    for status in ("maintenance", "active", "maintenance", "active"):
        await client.patch(
            f"{V1}/drones/{drones[0]}/status", headers=tenant.headers, json={"status": status}
        )
    seen: list[int] = []
    cursor = None
    while True:
        page = (
            await client.get(
                f"{V1}/drones/{drones[0]}/events?limit=2" + (f"&cursor={cursor}" if cursor else ""),
                headers=tenant.headers,
            )
        ).json()
        seen += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == sorted(seen, reverse=True) and len(seen) == 5  # 1 claim + 4 status


# ------------------------------------------------------------------ retention
async def test_prune_removes_only_old_heartbeats(app, client, admin_headers, tenant: Tenant, pg):
    from api.fleet.service import prune_heartbeats

    _, drones = await claimed_kit(client, admin_headers, tenant)
    for _ in range(5):
        await send_beat(client, drones[0], tenant.headers)
    await pg.execute(
        "UPDATE heartbeats SET received_at = now() - interval '40 days' WHERE id IN "
        "(SELECT h.id FROM heartbeats h JOIN drones d ON d.id = h.drone_id "
        " WHERE d.serial = $1 ORDER BY h.id LIMIT 3)",
        drones[0],
    )
    removed = await prune_heartbeats(app.state.resources, datetime.now(UTC) - timedelta(days=30))
    assert removed >= 3
    assert (
        await pg.fetchval(
            "SELECT count(*) FROM heartbeats h JOIN drones d ON d.id = "
            "h.drone_id WHERE d.serial = $1",
            drones[0],
        )
        == 2
    )
    assert (
        await pg.fetchval(
            "SELECT count(*) FROM heartbeats WHERE received_at < now() - interval '30 days'"
        )
        == 0
    )


async def test_prune_command_reports_what_it_removed(test_database_url, pg):
    customer = await pg.fetchval(
        "INSERT INTO customers (id, name) VALUES (gen_random_uuid(), 'prune') RETURNING id"
    )
    drone = await pg.fetchval(
        "INSERT INTO drones (id, serial, customer_id, status, liveness, version) VALUES "
        "(gen_random_uuid(), $1, $2, 'active', 'unknown', 0) RETURNING id",
        serial(),
        customer,
    )
    await pg.executemany(
        "INSERT INTO heartbeats (customer_id, drone_id, received_at, cpu_percent, memory_percent,"
        " disk_percent, temperature_c, battery_percent, firmware_version, status) VALUES "
        "($1, $2, now() - make_interval(days => $3), 1, 1, 1, 20, 90, '1.0', 'healthy')",
        [(customer, drone, days) for days in (3, 8, 9)],
    )
    old = await pg.fetchval(
        "SELECT count(*) FROM heartbeats WHERE received_at < now() - interval '7 days'"
    )
    assert old >= 2
    env = {
        **os.environ,
        "ENVIRONMENT": "development",  # production (the default) refuses the default secrets
        "DATABASE_URL": test_database_url,
        "LOG_LEVEL": "WARNING",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "api.cli",
        "prune",
        "--heartbeat-days",
        "7",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output = (await proc.communicate())[0].decode()
    assert proc.returncode == 0, output
    assert f"heartbeats: removed {old} rows received before " in output
    assert await pg.fetchval("SELECT count(*) FROM heartbeats WHERE drone_id = $1", drone) == 1


# ------------------------------------------------------------------ wiring
def test_liveness_sweep_runs_in_every_process(settings):
    from main import process_loops

    loops = {name: (job, interval) for name, job, interval in process_loops(settings)}
    assert loops["liveness_sweep"] == (liveness_sweep, settings.heartbeat_interval_seconds / 2)


async def test_models_and_migration_0003_agree(test_database_url):
    assert (
        await schema_drift(
            test_database_url, {"kits", "drones", "heartbeats", "device_events", "update_history"}
        )
        == []
    )
