"""A fixed-seed chaos run inside `make test` (issue 13): nothing acknowledged is
ever stuck.

It runs `python -m bench.chaos` as `make chaos` does, on the `chaos` stack
instance and two API processes of its own (never the test or dev servers):
workstations on the reference client push and pull while Neo4j is killed and
hung, an API process is killed and Postgres restarts mid-push, with poison
values in between; one workstation syncs a changing scope of venues. The
harness checks the protocol's invariants and exits 1 if any failed; its table
is shown when this test fails. Deselect with `-m "not chaos"`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from typing import Any

import httpx
import pytest

from api.client import SyncClient
from tests.conftest import Tenant
from tests.processes import ROOT

SEED = int(os.environ.get("CHAOS_TEST_SEED", "7"))
SECONDS = int(os.environ.get("CHAOS_TEST_SECONDS", "60"))


@pytest.mark.chaos
@pytest.mark.slow
def test_chaos_run_keeps_every_acknowledged_write() -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.chaos",
            "--seed",
            str(SEED),
            "--seconds",
            str(SECONDS),
            "--workstations",
            "3",
            "--scoped",
            "1",  # one of the three syncs a scope of venues (issue 17)
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        # A bound, not a threshold: a hung run fails instead of hanging CI.
        timeout=3600,
    )
    report = run.stdout[-12000:] + run.stderr[-4000:]
    assert run.returncode == 0, report
    # The run really happened: every fault kind and the verdict table were printed.
    for line in ("neo4j_kill", "neo4j_hang", "api_kill", "postgres_restart", "PASS"):
        assert line in run.stdout, report
    # ... with a scoped workstation, judged on its scope.
    scoped = r"scoped workstations equal the server in scope +ok +1/1 converged"
    assert re.search(scoped, run.stdout), report


class LoseFirstPushAnswer(httpx.AsyncBaseTransport):
    """The server gets and commits the first push; its answer never arrives."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.bodies: list[dict] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        push = request.url.path.endswith("/sync/push")
        if push:
            self.bodies.append(json.loads(await request.aread()))
        response = await self.inner.handle_async_request(request)
        if push and len(self.bodies) == 1:
            await response.aread()
            raise httpx.ReadError("the answer was lost", request=request)
        return response


async def test_reference_client_resends_an_unanswered_push_unchanged(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    """What the chaos run's workstations rely on: after a push that got no
    answer, the next push sends exactly that body again (the server answers it
    from its stored outcomes), and newer edits wait for the push after it."""
    r = await client.post(
        "/api/v1/auth/workstations/register", json={"name": "lossy"}, headers=tenant.headers
    )
    ws = r.json()
    lossy = LoseFirstPushAnswer(client._transport)
    http = httpx.AsyncClient(
        transport=lossy, base_url="http://test", headers={"X-API-Key": ws["api_key"]}
    )
    sync = SyncClient(http, ws["id"], max_attempts=1)
    sync.upsert("venue", str(uuid.uuid4()), {"name": "First"})
    with pytest.raises(httpx.ReadError):
        await sync.push()
    sync.upsert("venue", str(uuid.uuid4()), {"name": "Second, edited offline meanwhile"})
    answer = await sync.push()
    assert lossy.bodies[1] == lossy.bodies[0]
    assert answer is not None
    assert [
        (r["mutation_id"], r["status"], r.get("original_status")) for r in answer["results"]
    ] == [(1, "duplicate", "applied")]
    assert [m.mutation_id for m in sync.pending] == [2]
    answer = await sync.push()
    assert answer is not None
    assert [(r["mutation_id"], r["status"]) for r in answer["results"]] == [(2, "applied")]
    await http.aclose()


class LoseFirstScopeAnswer(httpx.AsyncBaseTransport):
    """The server gets and stores the first scope PUT; its answer never arrives."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.bodies: list[dict] = []
        self.pulls: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        scope = request.method == "PUT" and request.url.path.endswith("/sync/scope")
        if scope:
            self.bodies.append(json.loads(await request.aread()))
        if request.url.path.endswith("/sync/pull"):
            self.pulls.append(len(self.bodies))
        response = await self.inner.handle_async_request(request)
        if scope and len(self.bodies) == 1:
            await response.aread()
            raise httpx.ReadError("the answer was lost", request=request)
        return response


async def test_reference_client_resends_an_unanswered_scope_request(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    """What the chaos run's scoped workstations rely on: a scope PUT whose
    answer was lost is sent again, unchanged, before the next pull (which then
    starts from the answered cursor); the pull removes what left the scope, a
    grown scope backfills the added venue whole, and the client ends equal to
    the tenant's state restricted to its scope."""
    r = await client.post(
        "/api/v1/auth/workstations/register", json={"name": "scoped"}, headers=tenant.headers
    )
    ws = r.json()
    lossy = LoseFirstScopeAnswer(client._transport)
    http = httpx.AsyncClient(
        transport=lossy, base_url="http://test", headers={"X-API-Key": ws["api_key"]}
    )
    sync = SyncClient(http, ws["id"], max_attempts=1)
    venues = [str(uuid.uuid4()) for _ in range(3)]
    for n, venue in enumerate(venues):
        sync.upsert("venue", venue, {"name": f"Venue {n}"})
        for k in range(3):
            data = {"venue_id": venue, "kind": "Zone", "name": f"Zone {n}.{k}"}
            sync.upsert("world_node", str(uuid.uuid4()), data)
    await sync.push()
    await sync.pull()
    assert len(sync.confirmed) == 12
    with pytest.raises(httpx.ReadError):
        await sync.set_scope([venues[0]])
    assert sync.unanswered_scope is not None
    # Meanwhile another venue gains a node the scoped client must never see.
    sync.upsert(
        "world_node", str(uuid.uuid4()), {"venue_id": venues[2], "kind": "Zone", "name": "x"}
    )
    await sync.push()
    await sync.pull()
    assert lossy.bodies[1] == lossy.bodies[0]  # resent unchanged ...
    assert lossy.pulls[-1] == 2  # ... before the pull
    assert sync.unanswered_scope is None and sync.scope == [venues[0]]

    async def restricted() -> dict[str, tuple[str, int, Any]]:
        observer = SyncClient(client, "observer")
        observer.http.headers.update(tenant.headers)
        await observer.pull()
        return {
            k: v
            for k, v in observer.state().items()
            if (k if v[0] == "venue" else v[2].get("venue_id")) in set(sync.scope or [])
        }

    assert sync.state() == await restricted()
    assert len(sync.confirmed) == 4
    await sync.set_scope([venues[0], venues[1]])  # grow: venue 1 arrives whole
    await sync.pull()
    assert sync.state() == await restricted()
    assert len(sync.confirmed) == 8
    await http.aclose()
