"""The per-process key cache (api/auth/cache.py): no database round trip for a
known key, and revocation in force in every process before it is answered.

Two real API processes, A and B, share the session's database; the session's
in-process app is a third. A key is used on B (so B caches it), revoked through
A, and the very next request on B is refused: no sleep in between, the
revocation's 2xx is the promise.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import event

from api.auth.cache import ACK_CHANNEL, AUTH_CHANNEL, auth_cache
from api.core.resources import LISTENER_NAME
from api.core.settings import Settings
from api.streams import streams_of
from tests.conftest import ADMIN_KEY, Tenant
from tests.processes import api_env, running_api
from tests.test_streams import subscribe

V1 = "/api/v1"
ME = f"{V1}/auth/me"
ADMIN = {"X-API-Key": ADMIN_KEY}


@pytest.fixture(scope="module")
async def two(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient, int]]:
    """API processes A and B (HTTP clients), and B's port for its WebSocket URL."""
    log_dir = tmp_path_factory.mktemp("auth_cache")
    env = api_env(settings)
    async with contextlib.AsyncExitStack() as stack:
        apis = await asyncio.gather(
            stack.enter_async_context(running_api(env, log_dir, "a")),
            stack.enter_async_context(running_api(env, log_dir, "b")),
        )
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{api.port}", timeout=30)
            )
            for api in apis
        ]
        for http in clients:  # the cache is used only once LISTEN is up
            await _until(lambda h=http: _metric(h, "overwatch_stream_listen_connects_total"))
        yield clients[0], clients[1], apis[1].port
        assert all(api.proc.poll() is None for api in apis), "an API process died"


async def _metric(http: httpx.AsyncClient, name: str, labels: str = "") -> float:
    text = (await http.get("/metrics")).text
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def _hits(http: httpx.AsyncClient) -> float:
    return await _metric(http, "overwatch_auth_cache_total", '{result="hit"}')


async def _until(condition: Any, timeout: float = 30.0) -> None:
    """Wait until `condition()` (a value or an awaitable) is true."""

    async def poll() -> None:
        while True:
            value = condition()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


async def _tenant(http: httpx.AsyncClient, name: str) -> Tenant:
    response = await http.post(f"{V1}/auth/customers", json={"name": name}, headers=ADMIN)
    assert response.status_code == 201, response.text
    body = response.json()
    return Tenant(id=body["id"], name=name, key=body["api_key"])


async def _key(http: httpx.AsyncClient, tenant: Tenant, scope: str = "analyst") -> dict[str, Any]:
    response = await http.post(
        f"{V1}/auth/keys", json={"name": "cached", "scope": scope}, headers=tenant.headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def _cached_on(http: httpx.AsyncClient, key: str) -> None:
    """Use `key` on the process until it serves it from its cache."""
    headers = {"X-API-Key": key}
    assert (await http.get(ME, headers=headers)).status_code == 200
    before = await _hits(http)
    assert (await http.get(ME, headers=headers)).status_code == 200
    assert await _hits(http) == before + 1, "the second use was not a cache hit"


async def test_a_key_revoked_through_one_process_is_refused_by_another_at_once(
    two: tuple[httpx.AsyncClient, httpx.AsyncClient, int],
) -> None:
    a, b, _ = two
    tenant = await _tenant(a, "revoke")
    key = await _key(a, tenant)
    await _cached_on(b, key["api_key"])
    revoked = await a.delete(f"{V1}/auth/keys/{key['id']}", headers=tenant.headers)
    assert revoked.status_code == 200, revoked.text
    assert (await b.get(ME, headers={"X-API-Key": key["api_key"]})).status_code == 401


async def test_a_rotated_key_is_refused_by_another_process_at_once(
    two: tuple[httpx.AsyncClient, httpx.AsyncClient, int],
) -> None:
    a, b, _ = two
    tenant = await _tenant(a, "rotate")
    key = await _key(a, tenant)
    await _cached_on(b, key["api_key"])
    rotated = await a.post(f"{V1}/auth/keys/{key['id']}/rotate", headers=tenant.headers)
    assert rotated.status_code == 201, rotated.text
    assert (await b.get(ME, headers={"X-API-Key": key["api_key"]})).status_code == 401
    assert (await b.get(ME, headers={"X-API-Key": rotated.json()["api_key"]})).status_code == 200


async def test_a_disabled_customer_is_refused_by_another_process_at_once(
    two: tuple[httpx.AsyncClient, httpx.AsyncClient, int],
) -> None:
    a, b, _ = two
    tenant = await _tenant(a, "disable")
    await _cached_on(b, tenant.key)
    disabled = await a.post(f"{V1}/auth/customers/{tenant.id}/disable", headers=ADMIN)
    assert disabled.status_code == 200, disabled.text
    assert (await b.get(ME, headers=tenant.headers)).status_code == 401


async def test_a_deactivated_workstation_is_refused_by_another_process_at_once(
    two: tuple[httpx.AsyncClient, httpx.AsyncClient, int],
) -> None:
    a, b, _ = two
    tenant = await _tenant(a, "deactivate")
    registered = await a.post(
        f"{V1}/auth/workstations/register", json={"name": "ws"}, headers=tenant.headers
    )
    assert registered.status_code == 201, registered.text
    workstation = registered.json()
    await _cached_on(b, workstation["api_key"])
    deactivated = await a.post(
        f"{V1}/auth/workstations/{workstation['id']}/deactivate", headers=tenant.headers
    )
    assert deactivated.status_code == 200, deactivated.text
    assert (await b.get(ME, headers={"X-API-Key": workstation["api_key"]})).status_code == 401


async def test_a_revoked_keys_subscriber_socket_is_closed_at_once(
    two: tuple[httpx.AsyncClient, httpx.AsyncClient, int],
) -> None:
    a, _, b_port = two
    tenant = await _tenant(a, "socket")
    key = await _key(a, tenant)
    other = await _key(a, tenant)
    b_streams = SimpleNamespace(ws=f"ws://127.0.0.1:{b_port}{V1}/stream")
    doomed = await subscribe(b_streams, key["api_key"])  # type: ignore[arg-type]
    spared = await subscribe(b_streams, other["api_key"])  # type: ignore[arg-type]
    try:
        revoked = await a.delete(f"{V1}/auth/keys/{key['id']}", headers=tenant.headers)
        assert revoked.status_code == 200, revoked.text
        # Far sooner than the sockets' own periodic check (REAUTH_SECONDS, 60 s).
        closed = await doomed.closed(timeout=30)
        assert closed.rcvd is not None
        assert (closed.rcvd.code, closed.rcvd.reason) == (1008, "invalid or inactive API key")
        await spared.send({"type": "pong"})  # the other key's socket is still open
        assert not spared.reader.done()
    finally:
        await doomed.close()
        await spared.close()


async def _listening(app: FastAPI) -> None:
    await asyncio.wait_for(streams_of(app).hub.listening.wait(), 30)
    assert auth_cache(app.state.resources).active


def _count_lookups(app: FastAPI) -> tuple[list[str], Any]:
    """Record the key lookups the app's engine runs (the statement text names them)."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FROM api_keys k" in statement:
            seen.append(statement)

    event.listen(app.state.resources.engine.sync_engine, "before_cursor_execute", record)
    return seen, record


async def test_a_cached_key_is_served_without_a_database_query(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await _listening(app)
    cache = auth_cache(app.state.resources)
    seen, record = _count_lookups(app)
    try:
        assert (await client.get(ME, headers=tenant.headers)).status_code == 200
        assert len(seen) == 1  # the first use looks the key up
        hits = cache.hits
        for _ in range(3):
            assert (await client.get(ME, headers=tenant.headers)).status_code == 200
        assert len(seen) == 1, "a cached key was looked up again"
        assert cache.hits == hits + 3
        # The secret is still checked on a hit: the right key id, a wrong secret.
        forged = tenant.key[:-4] + ("AAAA" if not tenant.key.endswith("AAAA") else "BBBB")
        assert (await client.get(ME, headers={"X-API-Key": forged})).status_code == 401
        assert len(seen) == 1
    finally:
        event.remove(app.state.resources.engine.sync_engine, "before_cursor_execute", record)


async def test_without_its_listener_a_process_does_not_trust_its_cache(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant, pg: asyncpg.Connection
) -> None:
    await _listening(app)
    cache = auth_cache(app.state.resources)
    assert (await client.get(ME, headers=tenant.headers)).status_code == 200
    hits = cache.hits
    assert (await client.get(ME, headers=tenant.headers)).status_code == 200
    assert cache.hits == hits + 1  # cached
    # Kill the LISTEN connections (the hub reconnects after a pause), then
    # revoke behind every process's back: no notification reaches this one.
    hub = streams_of(app).hub
    seen = LossSeen()
    hub.add_hook(seen)
    try:
        await pg.execute(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
            "WHERE application_name = $1 AND datname = current_database()",
            LISTENER_NAME,
        )
        await asyncio.wait_for(seen.lost.wait(), 30)  # the hub saw it go
        await pg.execute(
            "UPDATE customers SET disabled_at = now() WHERE id = $1", uuid.UUID(tenant.id)
        )
        assert (await client.get(ME, headers=tenant.headers)).status_code == 401
        assert cache.hits == hits + 1
    finally:
        hub._hooks.remove(seen)
    await _listening(app)


class LossSeen:
    """A listener hook that only notes the hub's loss of its connection."""

    channels: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.lost = asyncio.Event()

    def listener_connected(self, execute: Any) -> None:
        pass

    def listener_notified(self, channel: str, payload: str) -> None:
        pass

    def listener_lost(self) -> None:
        self.lost.set()


async def test_pool_connections_killed_server_side_are_replaced_without_errors(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant, pg: asyncpg.Connection
) -> None:
    # Fill the pool with several idle connections, then kill them all.
    answers = await asyncio.gather(
        *(client.get(f"{V1}/auth/keys", headers=tenant.headers) for _ in range(6))
    )
    assert {r.status_code for r in answers} == {200}
    killed = await pg.fetchval(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND application_name <> $1) AS t",
        LISTENER_NAME,
    )
    assert killed >= 1
    for _ in range(12):  # more than the pool holds: every dead connection is met
        response = await client.get(f"{V1}/auth/keys", headers=tenant.headers)
        assert response.status_code == 200, response.text


async def test_a_revocation_is_answered_only_once_every_process_has_cleared_its_cache(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    """A stand-in for another API process: a listener connection that the test
    makes acknowledge the revocation's barrier only when it chooses."""
    await _listening(app)
    key = await _key(client, tenant)
    other = await asyncpg.connect(
        settings.sync_database_url, server_settings={"application_name": LISTENER_NAME}
    )
    try:
        barriers: asyncio.Queue[str] = asyncio.Queue()

        def heard(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            if payload.startswith("barrier:"):
                barriers.put_nowait(payload.removeprefix("barrier:"))

        await other.add_listener(AUTH_CHANNEL, heard)
        timeouts = REGISTRY.get_sample_value("overwatch_auth_barrier_timeouts_total") or 0.0
        revoke = asyncio.create_task(
            client.delete(f"{V1}/auth/keys/{key['id']}", headers=tenant.headers)
        )
        token = await asyncio.wait_for(barriers.get(), 30)
        # Every other process (this one included) has acknowledged; the stand-in not yet.
        listeners = await other.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = $1 AND datname = current_database()",
            LISTENER_NAME,
        )
        barrier = auth_cache(app.state.resources)._barriers.get(token)
        assert barrier is not None, "answered before every process acknowledged"
        await _until(lambda: len(barrier.acks) >= listeners - 1)
        assert not barrier.done.is_set() and not revoke.done(), "answered too early"
        await other.execute("SELECT pg_notify($1, $2)", ACK_CHANNEL, f"{token}:stand-in")
        response = await revoke
        assert response.status_code == 200, response.text
        assert REGISTRY.get_sample_value("overwatch_auth_barrier_timeouts_total") == timeouts
    finally:
        await other.close()
