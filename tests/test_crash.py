"""A real API process killed with SIGKILL mid-stream, and the CLI that repairs it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from api.core.settings import Settings
from tests.conftest import ADMIN_KEY
from tests.processes import ROOT, api_env, running_api


@contextlib.asynccontextmanager
async def api_process(settings: Settings, tmp_path: Path):
    async with running_api(api_env(settings), tmp_path, "crash") as api:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api.port}", timeout=30) as client:
            yield api.proc, client


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        cwd=ROOT,
        env=api_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
async def test_sigkill_mid_push_loses_nothing_accepted(settings, tmp_path, pg, graph):
    async with api_process(settings, tmp_path) as (proc, client):
        customer = (
            await client.post(
                "/api/v1/auth/customers", json={"name": "crash"}, headers={"X-API-Key": ADMIN_KEY}
            )
        ).json()
        key = {"X-API-Key": customer["api_key"]}
        ws = (
            await client.post("/api/v1/auth/workstations/register", json={"name": "w"}, headers=key)
        ).json()
        wkey = {"X-API-Key": ws["api_key"]}
        venue = str(uuid.uuid4())
        accepted: dict[int, int] = {}
        body = {
            "workstation_id": ws["id"],
            "protocol_version": 1,
            "mutations": [
                {
                    "mutation_id": 1,
                    "type": "venue",
                    "id": venue,
                    "op": "upsert",
                    "base_version": 0,
                    "data": {"name": "Crash site"},
                }
            ],
        }
        r = await client.post("/api/v1/sync/push", json=body, headers=wkey)
        accepted[1] = r.json()["results"][0]["version"]

        progress = asyncio.Event()

        async def pusher() -> None:
            mid = 2
            while True:
                if len(accepted) > 60:
                    progress.set()
                batch = [
                    {
                        "mutation_id": mid + k,
                        "type": "world_node",
                        "id": str(uuid.uuid4()),
                        "op": "upsert",
                        "base_version": 0,
                        "data": {"venue_id": venue, "kind": "PerchPoint", "name": f"p{mid + k}"},
                    }
                    for k in range(20)
                ]
                try:
                    r = await client.post(
                        "/api/v1/sync/push",
                        headers=wkey,
                        json={
                            "workstation_id": ws["id"],
                            "protocol_version": 1,
                            "mutations": batch,
                        },
                    )
                except httpx.HTTPError:
                    return
                for result in r.json()["results"]:
                    accepted[result["mutation_id"]] = result["version"]
                mid += 20

        task = asyncio.create_task(pusher())
        # Kill once pushes are flowing (however slow the machine), while one is
        # in flight: somewhere between journal commit, Neo4j apply and answer.
        await asyncio.wait_for(progress.wait(), timeout=120)
        await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # no shutdown hooks, no cleanup
        proc.wait(timeout=10)
        await task
    assert len(accepted) > 20
    customer_id = customer["id"]
    # A new process: its startup reconcile applies whatever the dead one left.
    async with api_process(settings, tmp_path) as (_, client):
        for _ in range(50):
            status = (await client.get("/api/v1/sync/status", headers=wkey)).json()
            if status["pending"] == 0:
                break
            await asyncio.sleep(0.2)
        assert status["pending"] == 0
        cursor, seen = 0, {}
        while True:
            page = (
                await client.get(f"/api/v1/sync/pull?since={cursor}&limit=37", headers=wkey)
            ).json()
            for change in page["changes"]:
                seen[change["version"]] = change
            cursor = page["cursor"]
            if not page["has_more"]:
                break
    # Every accepted mutation is there: the response said so, so pull must show it.
    assert set(accepted.values()) <= set(seen)
    journaled = await pg.fetchval(
        "SELECT count(*) FROM sync_journal WHERE customer_id = $1::uuid", customer_id
    )
    assert journaled >= len(accepted)
    verify = _cli(settings, "verify", "--customer", customer_id)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    nodes = await graph.read(
        "t", "MATCH (n:WorldNode) WHERE n.customer_id = $c RETURN count(n) AS n", {"c": customer_id}
    )
    assert nodes[0]["n"] == journaled - 1  # every journaled node, plus the venue row
    await graph.write("t", "MATCH (n) WHERE n.customer_id = $c DETACH DELETE n", {"c": customer_id})


async def test_cli_verify_reports_drift_and_reconcile_repairs_it(settings, app, tenant, graph):
    from api.journal.entities import EntityType
    from api.journal.record import Change, Origin, record
    from relational.database import unit_of_work

    resources = app.state.resources
    venue = uuid.uuid4()
    async with unit_of_work(resources.sessions) as session:  # journaled, never applied
        await record(
            session,
            uuid.UUID(tenant.id),
            [
                Change(
                    EntityType.venue,
                    venue,
                    "upsert",
                    {"name": "Drifted", "tags": [], "properties": {}},
                )
            ],
            Origin(updated_by="test"),
        )
    drift = _cli(settings, "verify", "--customer", tenant.id)
    assert drift.returncode == 1
    assert f"missing: ('venue', '{venue}')" in drift.stdout
    # This tenant only: other tests in the session leave failed rows in theirs.
    repaired = _cli(settings, "reconcile", "--customer", tenant.id)
    assert repaired.returncode == 0 and "reconciled" in repaired.stdout
    clean = _cli(settings, "verify", "--customer", tenant.id)
    assert clean.returncode == 0, clean.stdout
    assert "no drift" in clean.stdout
