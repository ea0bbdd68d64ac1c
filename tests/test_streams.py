"""Real-time streams on two real API processes (uvicorn subprocesses) that share
the test database and Neo4j: perception ingest, fan-out over LISTEN/NOTIFY,
the change feed in version order, filters, backpressure, heartbeat, bad input.

Setup data goes through the in-process app (`client`), which is a third API
process as far as Postgres is concerned: its changes reach the subprocesses'
subscribers through NOTIFY like anyone else's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from api.core.settings import Settings
from tests.conftest import ADMIN_KEY, Tenant, schema_drift
from tests.processes import ROOT, api_env, running_api

V1 = "/api/v1"
HEARTBEAT_SECONDS = 2
SUBSCRIBER_QUEUE = 1500
MAX_FRAME_BYTES = 8192
QUIET_SECONDS = 1.5  # how long "nothing arrives" is watched
STREAM_ENV = {
    "STREAM_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
    "STREAM_SUBSCRIBER_QUEUE": str(SUBSCRIBER_QUEUE),
    "STREAM_MAX_FRAME_BYTES": str(MAX_FRAME_BYTES),
    "STREAM_CAMERA_CACHE_SECONDS": "1",
    "STREAM_SUBSCRIBE_GRACE_SECONDS": "0.5",
}


# ------------------------------------------------------------------ processes
def _env(settings: Settings) -> dict[str, str]:
    return api_env(settings, **STREAM_ENV)


@dataclass
class Api:
    name: str
    base: str
    ws: str
    proc: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None


@contextlib.asynccontextmanager
async def api_process(settings: Settings, name: str, log_dir: Path) -> AsyncIterator[Api]:
    async with running_api(_env(settings), log_dir, name) as api:
        base = f"127.0.0.1:{api.port}"
        yield Api(name, f"http://{base}", f"ws://{base}{V1}/stream", api.proc, api.log)


@pytest.fixture(scope="module")
async def apis(settings, tmp_path_factory) -> AsyncIterator[tuple[Api, Api]]:
    """Two API processes, A and B, on the session's database."""
    log_dir = tmp_path_factory.mktemp("streams")
    async with contextlib.AsyncExitStack() as stack:
        a, b = await asyncio.gather(
            stack.enter_async_context(api_process(settings, "a", log_dir)),
            stack.enter_async_context(api_process(settings, "b", log_dir)),
        )
        yield a, b
        assert a.alive() and b.alive(), "an API process died during the stream tests"


# ------------------------------------------------------------------ clients
class Socket:
    """A stream client that reads all the time and answers pings, like a real one.

    Messages other than pings queue up for `next()`; the server's close ends the
    queue with the ConnectionClosed it raised.
    """

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.inbox: asyncio.Queue[dict[str, Any] | ConnectionClosed] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.conn:
                message = json.loads(raw)
                if message.get("event") == "ping":
                    with contextlib.suppress(ConnectionClosed):
                        await self.conn.send('{"type":"pong"}')
                    continue
                self.inbox.put_nowait(message)
            await self.conn.recv()  # raises the ConnectionClosed of the server's close
        except ConnectionClosed as closed:
            self.inbox.put_nowait(closed)

    async def send(self, message: Any) -> None:
        await self.conn.send(message if isinstance(message, str | bytes) else json.dumps(message))

    async def next(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next message that is not a ping."""
        item = await asyncio.wait_for(self.inbox.get(), timeout)
        if isinstance(item, ConnectionClosed):
            self.inbox.put_nowait(item)
            raise item
        return item

    async def collect(self, seconds: float) -> list[dict[str, Any]]:
        """Every non-ping message that arrives within `seconds`."""
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                got.append(await self.next(remaining))
            except TimeoutError:
                break
        return got

    async def until(self, done: Any, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Messages up to and including the first for which `done(message)` holds."""
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            got.append(await self.next(max(0.01, deadline - time.monotonic())))
            if done(got[-1]):
                return got

    async def closed(self, timeout: float = 15.0) -> ConnectionClosed:
        """Read until the server closes; the close it sent."""
        try:
            while True:
                await self.next(timeout)
        except ConnectionClosed as closed:
            return closed

    async def close(self) -> None:
        await self.conn.close()
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader


async def open_socket(url: str, key: str | None, **kw: Any) -> Socket:
    headers = {"X-API-Key": key} if key else {}
    conn = await connect(url, additional_headers=headers, proxy=None, open_timeout=10, **kw)
    return Socket(conn)


async def subscribe(api: Api, key: str, **subscription: Any) -> Socket:
    sock = await open_socket(api.ws + "/subscribe", key)
    await sock.send({"subscribe": subscription})
    first = await sock.next()
    assert first["event"] == "subscribed", first
    return sock


async def ingest(api: Api, key: str) -> Socket:
    sock = await open_socket(api.ws + "/ingest", key)
    ready = await sock.next()
    assert ready["event"] == "ready", ready
    return sock


def frame(
    camera: str = "cam-1",
    *,
    seq: int | None = None,
    people: int = 3,
    at: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "camera": camera,
        "timestamp": (at or datetime.now(UTC)).isoformat(),
        "summary": {
            "total_people": people,
            "free": ["A1", "A2"],
            "occupied": ["B1"],
            "detections": [{"class": "person", "confidence": 0.91, "bbox": [10, 20, 50, 120]}],
        },
    }
    if seq is not None:
        body["seq"] = seq
    return body | extra


@dataclass
class World:
    venue: str
    zone: str
    camera: str


async def world(
    client: httpx.AsyncClient, tenant: Tenant, camera: str = "cam-1", venue_id: str | None = None
) -> World:
    """A venue (or `venue_id`) with a zone watched by a camera known as `camera`."""
    h = tenant.headers
    if venue_id is None:
        r = await client.post(f"{V1}/venues", headers=h, json={"name": "Harbour Mall"})
        assert r.status_code == 201, r.text
        venue_id = r.json()["id"]
    zone = await client.post(
        f"{V1}/world-model/nodes",
        headers=h,
        json={"venue_id": venue_id, "kind": "Zone", "name": f"Zone of {camera}"},
    )
    cam = await client.post(
        f"{V1}/world-model/nodes",
        headers=h,
        json={
            "venue_id": venue_id,
            "kind": "Camera",
            "name": camera,
            "properties": {"external_id": camera},
        },
    )
    assert zone.status_code == cam.status_code == 201, (zone.text, cam.text)
    edge = await client.post(
        f"{V1}/world-model/edges",
        headers=h,
        json={
            "venue_id": venue_id,
            "type": "OBSERVED_IN",
            "from_id": cam.json()["id"],
            "to_id": zone.json()["id"],
        },
    )
    assert edge.status_code == 201, edge.text
    return World(venue_id, zone.json()["id"], cam.json()["id"])


async def zone_props(graph, tenant: Tenant, zone_id: str) -> dict[str, Any]:
    rows = await graph.read(
        "test.zone",
        "MATCH (z:Zone {id: $id}) WHERE z.customer_id = $c RETURN properties(z) AS p",
        {"id": zone_id, "c": tenant.id},
    )
    return dict(rows[0]["p"]) if rows else {}


def occupancy(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m["event"] == "occupancy"]


async def register(client, tenant: Tenant) -> tuple[str, dict[str, str]]:
    r = await client.post(
        f"{V1}/auth/workstations/register", json={"name": "ws"}, headers=tenant.headers
    )
    assert r.status_code == 201, r.text
    return r.json()["id"], {"X-API-Key": r.json()["api_key"]}


async def push(
    base: str, ws_id: str, headers: dict[str, str], mutations: list[dict[str, Any]]
) -> list[int]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        r = await http.post(
            f"{V1}/sync/push",
            headers=headers,
            json={"workstation_id": ws_id, "protocol_version": 1, "mutations": mutations},
        )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert all(x["status"] == "applied" for x in results), results
    return [x["version"] for x in results]


def node_mutation(mid: int, venue: str, name: str) -> dict[str, Any]:
    return {
        "mutation_id": mid,
        "type": "world_node",
        "id": str(uuid.uuid4()),
        "op": "upsert",
        "base_version": 0,
        "data": {"venue_id": venue, "kind": "PerchPoint", "name": name},
    }


# ------------------------------------------------------------------ ingest → fan-out
async def test_frame_on_one_process_reaches_the_tenant_on_the_other_and_no_one_else(
    apis, client, make_tenant, graph, pg
):
    a, b = apis
    alpha, beta = await make_tenant("alpha"), await make_tenant("beta")
    mine, theirs = await world(client, alpha), await world(client, beta)  # identical data
    watcher = await subscribe(b, alpha.key)
    outsiders = [await subscribe(b, beta.key), await subscribe(a, beta.key)]
    camera = await ingest(a, alpha.key)

    await camera.send(frame("cam-1", seq=41, people=7))
    ack = await camera.next()
    assert ack == {"event": "ack", "ack": 41, "zone_id": mine.zone}
    event = (await watcher.until(lambda m: m["event"] == "occupancy"))[-1]
    assert {
        k: event[k]
        for k in (
            "zone_id",
            "venue_id",
            "camera_id",
            "source",
            "people",
            "free",
            "occupied",
            "detections",
            "occupied_percent",
        )
    } == {
        "zone_id": mine.zone,
        "venue_id": mine.venue,
        "camera_id": mine.camera,
        "source": "cam-1",
        "people": 7,
        "free": 2,
        "occupied": 1,
        "detections": 1,
        "occupied_percent": 33.3,
    }

    props = await zone_props(graph, alpha, mine.zone)
    assert (props["occupancy_people"], props["occupancy_free"], props["occupancy_occupied"]) == (
        7,
        2,
        1,
    )
    assert "occupancy_people" not in await zone_props(graph, beta, theirs.zone)
    history = await pg.fetch(
        "SELECT customer_id::text AS c, people, detail FROM "
        "occupancy_history WHERE customer_id = ANY($1::uuid[])",
        [alpha.id, beta.id],
    )
    assert [(r["c"], r["people"]) for r in history] == [(alpha.id, 7)]
    assert json.loads(history[0]["detail"])["detections"][0]["class"] == "person"

    # Occupancy is telemetry outside the journal: renaming the zone keeps it.
    r = await client.patch(
        f"{V1}/world-model/nodes/{mine.zone}", headers=alpha.headers, json={"name": "Food court"}
    )
    assert r.status_code == 200, r.text
    props = await zone_props(graph, alpha, mine.zone)
    assert props["name"] == "Food court" and props["occupancy_people"] == 7
    shown = (await client.get(f"{V1}/world-model/nodes/{mine.zone}", headers=alpha.headers)).json()
    assert shown["occupancy_people"] == 7

    # An older frame (by capture time) is history, but does not overwrite the zone.
    await camera.send(
        frame("cam-1", seq=42, people=1, at=datetime.now(UTC) - timedelta(minutes=10))
    )
    assert (await camera.next())["ack"] == 42
    assert (await zone_props(graph, alpha, mine.zone))["occupancy_people"] == 7

    for outsider in outsiders:
        assert await outsider.collect(QUIET_SECONDS) == []
    for sock in (watcher, camera, *outsiders):
        await sock.close()


async def test_drone_frames_and_liveness_transitions(apis, client, admin_headers, tenant, graph):
    a, b = apis
    place = await world(client, tenant)
    kit, serial, spare = (f"STREAM-{uuid.uuid4().hex[:8]}" for _ in range(3))
    r = await client.post(
        f"{V1}/admin/kits",
        headers=admin_headers,
        json={"serial": kit, "drones": [{"serial": serial}, {"serial": spare}]},
    )
    assert r.status_code == 201, r.text
    assert (await client.post(f"{V1}/kits/{kit}/claim", headers=tenant.headers)).status_code == 200
    r = await client.post(
        f"{V1}/auth/keys",
        headers=tenant.headers,
        json={"name": "drone", "scope": "device", "device_serial": serial},
    )
    device_key = r.json()["api_key"]
    watcher = await subscribe(b, tenant.key, event_types=["liveness", "occupancy"])

    r = await client.post(
        f"{V1}/drones/{serial}/heartbeat",
        headers={"X-API-Key": device_key},
        json={
            "cpu_percent": 20,
            "memory_percent": 40,
            "disk_percent": 50,
            "temperature_c": 45,
            "battery_percent": 90,
            "firmware_version": "2.4.1",
            "status": "healthy",
        },
    )
    assert r.status_code == 201, r.text
    event = await watcher.next()
    assert {k: event[k] for k in ("event", "serial", "from", "to")} == {
        "event": "liveness",
        "serial": serial,
        "from": "unknown",
        "to": "online",
    }

    drone = await ingest(a, device_key)
    await drone.send({"zone_id": place.zone, "summary": {"total_people": 4}})
    assert (await drone.next())["zone_id"] == place.zone
    seen = await watcher.next()
    assert (seen["event"], seen["drone"], seen["source"], seen["people"], seen["camera_id"]) == (
        "occupancy",
        serial,
        serial,
        4,
        None,
    )
    # A drone's key reports for that drone only.
    await drone.send({"drone": spare, "zone_id": place.zone, "summary": {"total_people": 1}})
    assert (await drone.next())["error"]["code"] == "forbidden"
    customer = await ingest(a, tenant.key)
    await customer.send(
        {"drone": "NO-SUCH-DRONE", "zone_id": place.zone, "summary": {"total_people": 1}}
    )
    assert (await customer.next())["error"]["code"] == "unknown_drone"
    await customer.send(
        {"drone": spare, "zone_id": str(uuid.uuid4()), "summary": {"total_people": 1}}
    )
    assert (await customer.next())["error"]["code"] == "unknown_zone"
    for sock in (watcher, drone, customer):
        await sock.close()


# ------------------------------------------------------------------ change feed
async def test_pushes_to_both_processes_arrive_in_version_order_without_gaps(apis, client, tenant):
    a, b = apis
    ws_id, wkey = await register(client, tenant)
    ws2_id, wkey2 = await register(client, tenant)  # mutation ids rise per workstation
    venue = str(uuid.uuid4())
    [venue_version] = await push(
        a.base,
        ws_id,
        wkey,
        [
            {
                "mutation_id": 1,
                "type": "venue",
                "id": venue,
                "op": "upsert",
                "base_version": 0,
                "data": {"name": "Depot"},
            }
        ],
    )
    watchers = [await subscribe(api, tenant.key, event_types=["change"]) for api in (a, b)]

    mid = 1
    pushed: dict[int, str] = {}
    for round_ in range(4):
        batches = []
        for _ in (a, b):
            batch = [node_mutation(mid + k + 1, venue, f"p{round_}-{k}") for k in range(25)]
            mid += 25
            batches.append(batch)
        # Concurrent pushes through both processes: commits interleave per batch.
        results = await asyncio.gather(
            push(a.base, ws_id, wkey, batches[0]), push(b.base, ws2_id, wkey2, batches[1])
        )
        for batch, versions in zip(batches, results, strict=True):
            pushed |= {v: m["id"] for v, m in zip(versions, batch, strict=True)}
    last = max(pushed)
    assert len(pushed) == 200 and min(pushed) > venue_version

    for watcher in watchers:
        events = await watcher.until(lambda m: m.get("version") == last, timeout=30)
        changes = [e for e in events if e["event"] == "change"]
        versions = [e["version"] for e in changes]
        assert versions == list(range(versions[0], last + 1)), "out of order or with gaps"
        assert set(pushed) <= set(versions)
        for e in changes:
            assert (e["type"], e["id"], e["op"], e["venue_id"]) == (
                "world_node",
                pushed[e["version"]],
                "upsert",
                venue,
            )
        await watcher.close()


async def test_a_dropped_listen_connection_catches_up_without_gaps(apis, client, tenant, pg):
    a, b = apis
    ws_id, wkey = await register(client, tenant)
    venue = str(uuid.uuid4())
    await push(
        a.base,
        ws_id,
        wkey,
        [
            {
                "mutation_id": 1,
                "type": "venue",
                "id": venue,
                "op": "upsert",
                "base_version": 0,
                "data": {"name": "Depot"},
            }
        ],
    )
    watcher = await subscribe(b, tenant.key, event_types=["change"])
    # Every process's LISTEN connection dies; changes commit while they reconnect.
    killed = await pg.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = 'overwatch-stream-listener' AND datname = current_database()"
    )
    assert killed >= 2
    versions = await push(
        a.base, ws_id, wkey, [node_mutation(2 + k, venue, f"n{k}") for k in range(10)]
    )
    events = await watcher.until(lambda m: m.get("version") == versions[-1], timeout=20)
    assert [e["version"] for e in events if e["event"] == "change"] == versions
    await watcher.close()


# ------------------------------------------------------------------ filters
async def test_venue_event_type_and_entity_filters(apis, client, tenant):
    a, b = apis
    one = await world(client, tenant, "cam-1")
    two = await world(client, tenant, "cam-2")
    venue_one_changes = await subscribe(
        b, tenant.key, venue_ids=[one.venue], event_types=["change"]
    )
    only_occupancy = await subscribe(b, tenant.key, event_types=["occupancy"])
    venue_two = await subscribe(a, tenant.key, venue_ids=[two.venue])
    only_venues = await subscribe(a, tenant.key, entity_types=["venue"], event_types=["change"])
    camera = await ingest(a, tenant.key)

    h = tenant.headers
    n1 = (
        await client.post(
            f"{V1}/world-model/nodes",
            headers=h,
            json={"venue_id": one.venue, "kind": "Asset", "name": "Kiosk"},
        )
    ).json()
    n2 = (
        await client.post(
            f"{V1}/world-model/nodes",
            headers=h,
            json={"venue_id": two.venue, "kind": "Asset", "name": "Kiosk"},
        )
    ).json()
    r = await client.patch(f"{V1}/venues/{two.venue}", headers=h, json={"name": "Renamed"})
    assert r.status_code == 200, r.text
    for cam in ("cam-1", "cam-2"):
        await camera.send(frame(cam))
        assert (await camera.next())["event"] == "ack"

    got = await venue_one_changes.collect(QUIET_SECONDS)
    assert [(e["event"], e["id"]) for e in got] == [("change", n1["id"])]
    got = await only_occupancy.collect(QUIET_SECONDS)
    assert sorted((e["event"], e["zone_id"]) for e in got) == sorted(
        [("occupancy", one.zone), ("occupancy", two.zone)]
    )
    got = await venue_two.collect(QUIET_SECONDS)
    assert [(e["event"], e.get("id") or e.get("zone_id")) for e in got] == [
        ("change", n2["id"]),
        ("change", two.venue),
        ("occupancy", two.zone),
    ]
    got = await only_venues.collect(QUIET_SECONDS)
    assert [(e["type"], e["id"]) for e in got] == [("venue", two.venue)]

    # A later subscribe message replaces the filter.
    await only_occupancy.send({"subscribe": {"event_types": ["change"]}})
    assert (await only_occupancy.next())["event"] == "subscribed"
    await camera.send(frame("cam-1"))
    await camera.next()
    r = await client.patch(f"{V1}/venues/{one.venue}", headers=h, json={"name": "Again"})
    assert [e["event"] for e in await only_occupancy.collect(QUIET_SECONDS)] == ["change"]
    for sock in (venue_one_changes, only_occupancy, venue_two, only_venues, camera):
        await sock.close()


async def test_a_scoped_workstation_feed_follows_its_scope(apis, client, tenant):
    """A workstation key that names no venues hears its sync scope's changes,
    and an entity leaving the scope (with `left_venue_id`), nothing else."""
    a, b = apis
    writer, wh = await register(client, tenant)
    _, rh = await register(client, tenant)
    one, two, op = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())

    def upsert(mid: int, type_: str, id_: str, data: dict[str, Any]) -> dict[str, Any]:
        return {"mutation_id": mid, "type": type_, "id": id_, "op": "upsert",
                "base_version": 0, "force": True, "data": data}  # fmt: skip

    await push(a.base, writer, wh, [
        upsert(1, "venue", one, {"name": "One"}),
        upsert(2, "venue", two, {"name": "Two"}),
        upsert(3, "operation", op, {"venue_id": one, "status": "planned"}),
    ])  # fmt: skip
    r = await client.put(f"{V1}/sync/scope", headers=rh, json={"venues": [one], "cursor": 0})
    assert r.status_code == 200, r.text
    feed = await open_socket(b.ws + "/subscribe", rh["X-API-Key"])
    await feed.send({"subscribe": {"event_types": ["change"]}})
    assert (await feed.next())["venue_ids"] == [one]
    await push(a.base, writer, wh, [
        upsert(4, "operation", op, {"venue_id": one, "status": "active"}),
        node_mutation(5, two, "elsewhere"),
        upsert(6, "operation", op, {"venue_id": two, "status": "active"}),
    ])  # fmt: skip
    got = await feed.collect(QUIET_SECONDS)
    assert [(e["id"], e["venue_id"], e.get("left_venue_id")) for e in got] == [
        (op, one, None),
        (op, two, one),
    ]
    await feed.close()


# ------------------------------------------------------------------ backpressure, heartbeat
async def test_a_slow_subscriber_is_dropped_while_a_normal_one_keeps_up(apis, client, tenant):
    a, b = apis
    await world(client, tenant)
    normal = await subscribe(b, tenant.key, event_types=["occupancy"])
    # A client that never reads, with a tiny receive buffer so TCP backs up fast.
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.setblocking(False)
    port = int(b.base.rsplit(":", 1)[1])
    await asyncio.get_running_loop().sock_connect(raw, ("127.0.0.1", port))
    slow = await connect(
        b.ws + "/subscribe",
        additional_headers={"X-API-Key": tenant.key},
        proxy=None,
        sock=raw,
        compression=None,
        max_queue=1,
        ping_interval=None,
    )
    await slow.send(json.dumps({"subscribe": {"event_types": ["occupancy"]}}))

    async def keep_ponging() -> None:  # alive, just not reading
        while True:
            await asyncio.sleep(0.5)
            await slow.send('{"type":"pong"}')

    ponger = asyncio.create_task(keep_ponging())
    camera = await ingest(a, tenant.key)
    sent = 0

    async def flood(count: int) -> None:
        nonlocal sent
        first, sent = sent + 1, sent + count
        received: list[dict[str, Any]] = []

        async def send_all() -> None:
            for seq in range(first, sent + 1):
                await camera.send(frame("cam-1", seq=seq, people=seq % 50))

        async def read_acks() -> None:
            for _ in range(count):
                assert (await camera.next())["event"] == "ack"

        async def read_normal() -> None:
            while len(received) < count:
                received.extend(occupancy([await normal.next(timeout=20)]))

        await asyncio.gather(send_all(), read_acks(), read_normal())
        assert len(received) == count  # the normal subscriber missed nothing

    async def subscribers_here() -> int:
        async with httpx.AsyncClient(base_url=b.base) as http:
            r = await http.get(f"{V1}/stream/stats", headers=tenant.headers)
        return int(r.json()["this_process"]["subscribers"])

    for _ in range(50):
        if await subscribers_here() == 2:
            break
        await asyncio.sleep(0.1)
    # Flood until the slow one's TCP buffers and its queue are full and it is dropped.
    while sent < 40_000 and await subscribers_here() == 2:
        await flood(2000)
    assert await subscribers_here() == 1, f"still subscribed after {sent} events"
    ponger.cancel()
    with pytest.raises(ConnectionClosed) as closed:
        while True:  # what was buffered, then the close
            await asyncio.wait_for(slow.recv(), 15)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4008, "too slow")
    # The normal one is still served.
    await camera.send(frame("cam-1", seq=sent + 1))
    assert (await camera.next())["ack"] == sent + 1
    assert occupancy([await normal.next()])
    for sock in (normal, camera):
        await sock.close()


async def test_a_client_that_never_answers_pings_is_dropped(apis, tenant):
    a, _ = apis
    conn = await connect(
        a.ws + "/subscribe", additional_headers={"X-API-Key": tenant.key}, proxy=None
    )
    await conn.send(json.dumps({"subscribe": {}}))
    pings = 0
    started = time.monotonic()
    with pytest.raises(ConnectionClosed) as closed:
        while True:  # reads everything, answers nothing
            message = json.loads(await asyncio.wait_for(conn.recv(), 15))
            pings += message["event"] == "ping"
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4000, "heartbeat timeout")
    assert pings >= 1
    assert time.monotonic() - started < 4 * HEARTBEAT_SECONDS + 2


async def test_a_silent_subscriber_gets_everything_of_its_tenant_and_is_kept(
    apis, client, tenant, other_tenant
):
    """Clients written for the perception server connect and just listen: no
    subscribe message, no answers to the server's pings."""
    a, b = apis
    conns = [
        await connect(
            a.ws + "/subscribe", additional_headers={"X-API-Key": tenant.key}, proxy=None
        ),
        await connect(b.ws + "/subscribe", proxy=None),  # key in the first message, nothing else
    ]
    await conns[1].send(json.dumps({"api_key": tenant.key}))

    async def next_event(conn: ClientConnection) -> tuple[dict[str, Any], int]:
        """The next message that is not a ping, and how many pings came before it."""
        pings = 0
        while True:
            message = json.loads(await asyncio.wait_for(conn.recv(), 15))
            if message["event"] != "ping":
                return message, pings
            pings += 1

    for conn in conns:
        subscribed, _ = await next_event(conn)
        assert subscribed["event"] == "subscribed", subscribed
        assert subscribed["venue_ids"] is None and subscribed["entity_types"] is None
        assert set(subscribed["event_types"]) == {"change", "occupancy", "liveness"}

    theirs = await client.post(f"{V1}/venues", headers=other_tenant.headers, json={"name": "X"})
    mine = await client.post(f"{V1}/venues", headers=tenant.headers, json={"name": "Mine"})
    assert theirs.status_code == mine.status_code == 201
    for conn in conns:
        event, _ = await next_event(conn)  # the other tenant's venue never arrives
        assert (event["event"], event["id"]) == ("change", mine.json()["id"]), event

    # Three pings unanswered: a socket that had subscribed would have been closed
    # for silence at the third heartbeat (test_a_client_that_never_answers_pings…).
    pings = 0
    while pings < 3:
        message = json.loads(await asyncio.wait_for(conns[0].recv(), 15))
        assert message["event"] == "ping", message
        pings += 1
    later = await client.post(f"{V1}/venues", headers=tenant.headers, json={"name": "Later"})
    event, _ = await next_event(conns[0])
    assert (event["event"], event["id"]) == ("change", later.json()["id"]), event
    for conn in conns:
        await conn.close()


# ------------------------------------------------------------------ bad input
async def test_bad_frames_get_error_frames_and_the_connection_lives_on(apis, client, tenant):
    a, _ = apis
    await world(client, tenant)
    camera = await ingest(a, tenant.key)

    await camera.send("this is not json")
    assert (await camera.next())["error"]["code"] == "invalid_json"
    await camera.send({"camera": 5, "summary": "lots"})
    bad = await camera.next()
    assert bad["error"]["code"] == "invalid_frame" and bad["seq"] == 2
    assert {tuple(d["loc"]) for d in bad["error"]["details"]} >= {("camera",), ("summary",)}
    await camera.send(frame("cam-1", summary={"total_people": -1}))
    assert (await camera.next())["error"]["code"] == "invalid_frame"
    await camera.send(frame("cam-1", at=datetime.now(UTC) + timedelta(hours=1)))
    assert (await camera.next())["error"]["code"] == "invalid_frame"
    await camera.send(frame("no-such-camera", seq=77))
    unknown = await camera.next()
    assert (unknown["error"]["code"], unknown["seq"]) == ("unknown_camera", 77)
    await camera.send(frame("cam-1", padding="x" * (MAX_FRAME_BYTES + 1)))
    assert (await camera.next())["error"]["code"] == "frame_too_large"
    await camera.send(frame("cam-1", seq=100))
    assert (await camera.next())["ack"] == 100
    await camera.send(json.dumps(frame("cam-1", seq=101)).encode())  # binary frames too
    assert (await camera.next())["ack"] == 101
    await camera.close()

    async with httpx.AsyncClient(base_url=a.base) as http:
        metrics = (await http.get("/metrics")).text
    for reason in ("invalid_json", "invalid_frame", "unknown_camera", "frame_too_large"):
        assert f'overwatch_stream_frames_rejected_total{{reason="{reason}"}}' in metrics


async def test_bad_keys_and_messages_close_with_a_reason(apis, client, tenant):
    a, b = apis
    r = await client.post(
        f"{V1}/auth/keys", headers=tenant.headers, json={"name": "a", "scope": "analyst"}
    )
    analyst = r.json()["api_key"]
    r = await client.post(
        f"{V1}/auth/keys", headers=tenant.headers, json={"name": "d", "scope": "device"}
    )
    device = r.json()["api_key"]

    async def refused(path: str, key: str | None, first: Any = None) -> tuple[str, int, str]:
        sock = await open_socket(a.ws + path, key)
        if first is not None:
            with contextlib.suppress(ConnectionClosed):  # a bad header key is refused at once
                await sock.send(first)
        error = await sock.next()
        closed = await sock.closed()
        assert closed.rcvd is not None
        return error["error"]["code"], closed.rcvd.code, closed.rcvd.reason

    assert await refused("/ingest", "owk_not_a_real_key") == (
        "unauthorized",
        1008,
        "invalid or inactive API key",
    )
    assert await refused("/ingest", None, {"api_key": "owk_nope"}) == (
        "unauthorized",
        1008,
        "invalid or inactive API key",
    )
    assert (await refused("/ingest", None, "hello"))[:2] == ("unauthorized", 1008)
    assert await refused("/ingest", analyst) == (
        "forbidden",
        1008,
        "this key lacks the 'telemetry' permission",
    )
    assert await refused("/subscribe", device, {"subscribe": {}}) == (
        "forbidden",
        1008,
        "this key lacks the 'read' permission",
    )
    assert (await refused("/subscribe", ADMIN_KEY, {"subscribe": {}}))[:2] == ("forbidden", 1008)
    code, close, reason = await refused(
        "/subscribe", tenant.key, {"subscribe": {"event_types": ["weather"]}}
    )
    assert (code, close) == ("invalid_subscription", 1008) and "event_types" in reason

    # Key in the first message, subscription alongside it.
    sock = await open_socket(b.ws + "/subscribe", None)
    await sock.send({"api_key": analyst, "subscribe": {"event_types": ["change"]}})
    assert (await sock.next())["event"] == "subscribed"
    await sock.close()
    # Nothing above hurt the process.
    async with httpx.AsyncClient(base_url=a.base) as http:
        assert (await http.get("/healthz")).status_code == 200
    camera = await ingest(a, tenant.key)
    await camera.close()
    assert a.alive() and b.alive()


# ------------------------------------------------------------------ stats
async def test_stats_count_sockets_across_processes(apis, tenant, other_tenant):
    a, b = apis
    sockets = [
        await ingest(a, tenant.key),
        await ingest(a, tenant.key),
        await subscribe(b, tenant.key),
    ]

    async def stats(api: Api, who: Tenant) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=api.base) as http:
            r = await http.get(f"{V1}/stream/stats", headers=who.headers)
        assert r.status_code == 200, r.text
        return dict(r.json())

    for _ in range(50):
        seen = await stats(a, tenant)
        if (seen["ingest"], seen["subscribers"]) == (2, 1):
            break
        await asyncio.sleep(0.1)
    assert seen == {
        "ingest": 2,
        "subscribers": 1,
        "processes": 2,
        "this_process": {"ingest": 2, "subscribers": 0},
    }
    assert (await stats(b, other_tenant))["ingest"] == 0
    async with httpx.AsyncClient(base_url=a.base) as http:
        metrics = (await http.get("/metrics")).text
    gauge = next(
        line
        for line in metrics.splitlines()
        if line.startswith("overwatch_stream_ingest_connections ")
    )
    assert float(gauge.split()[1]) >= 2

    for sock in sockets:
        await sock.close()
    for _ in range(50):
        seen = await stats(b, tenant)
        if seen["ingest"] == seen["subscribers"] == 0:
            break
        await asyncio.sleep(0.1)
    assert (seen["ingest"], seen["subscribers"], seen["processes"]) == (0, 0, 0)


# ------------------------------------------------------------------ retention, schema
async def test_prune_removes_old_occupancy_history(settings, tenant, pg):
    zone, venue = uuid.uuid4(), uuid.uuid4()
    insert = (
        "INSERT INTO occupancy_history (customer_id, zone_id, venue_id, source, "
        "observed_at, received_at, people, free, occupied, detections) "
        "VALUES ($1::uuid, $2, $3, 'cam', $4, $4, 1, 0, 0, 0)"
    )
    now = datetime.now(UTC)
    await pg.execute(insert, tenant.id, zone, venue, now - timedelta(days=40))
    await pg.execute(insert, tenant.id, zone, venue, now - timedelta(days=2))
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "api.cli", "prune", "--occupancy-days", "30"],
        cwd=ROOT,
        env=_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "occupancy: removed" in proc.stdout
    left = await pg.fetch("SELECT received_at FROM occupancy_history WHERE zone_id = $1", zone)
    assert len(left) == 1 and left[0]["received_at"] > now - timedelta(days=3)


async def test_models_and_migration_0006_agree(test_database_url):
    assert await schema_drift(test_database_url, {"occupancy_history", "stream_presence"}) == []
