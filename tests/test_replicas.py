"""Three API processes behind one port: what a load-balanced deployment relies on.

The API is stateless (docs/deploy.md): anything one replica writes, every
other replica reads back at once, because all state lives in the shared
stores. Here three real uvicorn processes share the test stack's Postgres,
Neo4j and S3, and a small TCP round-robin proxy in this test stands in for the
load balancer. Every request opens a new connection, so the proxy sends
consecutive requests to consecutive replicas, and its own per-backend tally
shows which replica served each one.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.core.settings import Settings
from graph.driver import GraphClient
from tests.conftest import ADMIN_KEY
from tests.processes import ApiProcess, api_env, running_api

V1 = "/api/v1"
REPLICAS = 3


class RoundRobinProxy:
    """A TCP load balancer: each accepted connection goes to the next backend."""

    def __init__(self, backend_ports: list[int]) -> None:
        self.backend_ports = backend_ports
        self.served: list[int] = []  # the backend index of each connection, in order
        self._next = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def counts(self) -> list[int]:
        return [self.served.count(i) for i in range(len(self.backend_ports))]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        index = self._next
        self._next = (index + 1) % len(self.backend_ports)
        self.served.append(index)
        try:
            backend_r, backend_w = await asyncio.open_connection(
                "127.0.0.1", self.backend_ports[index]
            )
        except OSError:
            client_w.close()
            return
        await asyncio.gather(self._pipe(client_r, backend_w), self._pipe(backend_r, client_w))
        for w in (client_w, backend_w):
            w.close()
            with contextlib.suppress(ConnectionError, OSError):
                await w.wait_closed()

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            if dst.can_write_eof():
                dst.write_eof()  # pass the half-close on: the other side ends too
        except (ConnectionError, OSError):
            dst.close()


@pytest.fixture(scope="module")
async def replicas(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[RoundRobinProxy, list[ApiProcess]]]:
    log_dir: Path = tmp_path_factory.mktemp("replicas")
    # Production is the default ENVIRONMENT; these processes use the test
    # stack's development secrets, so they say so explicitly.
    env = api_env(settings, ENVIRONMENT="development")
    async with contextlib.AsyncExitStack() as stack:
        apis = list(
            await asyncio.gather(
                *(
                    stack.enter_async_context(running_api(env, log_dir, f"replica{i}"))
                    for i in range(REPLICAS)
                )
            )
        )
        proxy = RoundRobinProxy([api.port for api in apis])
        await proxy.start()
        stack.push_async_callback(proxy.stop)
        yield proxy, apis
        assert all(api.proc.poll() is None for api in apis), "a replica died during the test"


class Balanced:
    """An HTTP client of the proxy that opens a new connection per request, and
    knows which replica answered the last one."""

    def __init__(self, proxy: RoundRobinProxy) -> None:
        self.proxy = proxy
        self.sent = 0
        self.http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{proxy.port}",
            timeout=30,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    async def request(self, method: str, url: str, **kwargs: Any) -> tuple[int, httpx.Response]:
        """The response and the index of the replica that served it."""
        before = len(self.proxy.served)
        response = await self.http.request(method, url, **kwargs)
        self.sent += 1
        assert len(self.proxy.served) == before + 1, "one request, one new connection"
        return self.proxy.served[-1], response

    async def on_each_other(
        self, writer: int, method: str, url: str, **kwargs: Any
    ) -> list[httpx.Response]:
        """The same request on each replica but `writer` (round robin: the next ones)."""
        answers: dict[int, httpx.Response] = {}
        for _ in range(REPLICAS):
            if len(answers) == REPLICAS - 1:
                break
            served, response = await self.request(method, url, **kwargs)
            assert served not in answers, "round robin repeats a replica too early"
            if served != writer:
                answers[served] = response
        assert len(answers) == REPLICAS - 1, f"the balancer skipped replicas: {answers}"
        return list(answers.values())


async def test_writes_through_any_replica_are_read_back_through_the_others(
    replicas: tuple[RoundRobinProxy, list[ApiProcess]], graph: GraphClient
) -> None:
    proxy, _ = replicas
    lb = Balanced(proxy)
    start = len(proxy.served)
    tenant_id = ""
    try:
        # A customer created through one replica; its key works on the others.
        creator, made = await lb.request(
            "POST",
            f"{V1}/auth/customers",
            json={"name": "replicated"},
            headers={"X-API-Key": ADMIN_KEY},
        )
        assert made.status_code == 201, made.text
        tenant_id = made.json()["id"]
        owner = {"X-API-Key": made.json()["api_key"]}
        for answer in await lb.on_each_other(creator, "GET", f"{V1}/venues", headers=owner):
            assert answer.status_code == 200, answer.text

        # An API key created via one replica is accepted by the other two at once.
        creator, key = await lb.request(
            "POST",
            f"{V1}/auth/keys",
            headers=owner,
            json={"name": "analyst", "scope": "analyst"},
        )
        assert key.status_code == 201, key.text
        analyst = {"X-API-Key": key.json()["api_key"]}
        for answer in await lb.on_each_other(creator, "GET", f"{V1}/venues", headers=analyst):
            assert answer.status_code == 200, answer.text

        # A venue created through one replica is read back through the others.
        creator, venue = await lb.request(
            "POST", f"{V1}/venues", headers=owner, json={"name": "Harbour depot"}
        )
        assert venue.status_code == 201, venue.text
        venue_id = venue.json()["id"]
        for answer in await lb.on_each_other(
            creator, "GET", f"{V1}/venues/{venue_id}", headers=analyst
        ):
            assert answer.status_code == 200, answer.text
            assert answer.json()["name"] == "Harbour depot"

        # A workstation registered on one replica pushes through another, and a
        # pull through the third sees the change at the version the push gave.
        registrar, registered = await lb.request(
            "POST", f"{V1}/auth/workstations/register", headers=owner, json={"name": "ws"}
        )
        assert registered.status_code == 201, registered.text
        ws_id = registered.json()["id"]
        ws = {"X-API-Key": registered.json()["api_key"]}
        pushed_venue = str(uuid.uuid4())
        mutation = {
            "mutation_id": 1,
            "type": "venue",
            "id": pushed_venue,
            "op": "upsert",
            "base_version": 0,
            "data": {"name": "Pushed offline"},
        }
        pusher, push = await lb.request(
            "POST",
            f"{V1}/sync/push",
            headers=ws,
            json={"workstation_id": ws_id, "protocol_version": 1, "mutations": [mutation]},
        )
        assert push.status_code == 200, push.text
        assert pusher != registrar
        result = push.json()["results"][0]
        assert result["status"] == "applied", push.text
        for answer in await lb.on_each_other(
            pusher, "GET", f"{V1}/sync/pull", params={"since": 0}, headers=ws
        ):
            assert answer.status_code == 200, answer.text
            changes = {c["id"]: c for c in answer.json()["changes"]}
            assert changes[pushed_venue]["version"] == result["version"]
            assert answer.json()["last_mutation_id"] == 1
        # ... and the same push retried through the other replicas is a duplicate.
        for retry in await lb.on_each_other(
            pusher,
            "POST",
            f"{V1}/sync/push",
            headers=ws,
            json={"workstation_id": ws_id, "protocol_version": 1, "mutations": [mutation]},
        ):
            assert retry.status_code == 200, retry.text
            assert retry.json()["results"][0]["status"] == "duplicate", retry.text
            assert retry.json()["results"][0]["version"] == result["version"]

        # Revoking a key through one replica is seen by the others at once.
        revoker, revoked = await lb.request(
            "DELETE", f"{V1}/auth/keys/{key.json()['id']}", headers=owner
        )
        assert revoked.status_code in (200, 204), revoked.text
        for answer in await lb.on_each_other(revoker, "GET", f"{V1}/venues", headers=analyst):
            assert answer.status_code == 401, answer.text

        # The requests really were spread over the three processes, evenly.
        mine = proxy.served[start:]
        counts = [mine.count(i) for i in range(REPLICAS)]
        assert sum(counts) == len(mine) == lb.sent
        assert min(counts) >= lb.sent // REPLICAS >= 6, counts
    finally:
        await lb.http.aclose()
        if tenant_id:
            await graph.write(
                "test.clear_tenants",
                "MATCH (n) WHERE n.customer_id = $id DETACH DELETE n",
                {"id": tenant_id},
            )
