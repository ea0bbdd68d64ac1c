"""Sync never waits for the graph projection, and the projection never stalls.

- Pull, bootstrap and status answer with everything committed while Neo4j is
  unreachable (a second app whose Settings point at a dead port); status and
  /readyz report the lag; once Neo4j is back everything applies.
- A journal row Neo4j refuses is isolated (bisected out of its batch), marked
  `failed` with Neo4j's error, and the tenant's later rows are applied.
- `overwatch reconcile`, `verify` and `projection` exit non-zero and say what
  failed when anything failed.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from api.core.resources import Resources
from api.core.settings import Settings
from api.journal.entities import EntityType
from api.journal.reconcile import verify
from api.journal.record import Change, Origin, record
from relational.database import unit_of_work
from tests.conftest import Tenant
from tests.journal_state import row_states
from tests.test_sync import SYNC, do_push, mutation, register, uid

DEAD_NEO4J = "bolt://127.0.0.1:1"  # nothing listens: the refusal a stopped Neo4j gives
# A property list of mixed types: Neo4j refuses to store it (Statement.TypeError).
POISON = {"name": "Poison", "tags": [], "properties": {"x": [1, "a"]}}


def venue(name: str) -> dict[str, Any]:
    return {"name": name, "tags": [], "properties": {}}


async def journal_directly(
    resources: Resources, tenant: Tenant, changes: Sequence[tuple[uuid.UUID, dict[str, Any]]]
) -> list[int]:
    """Journal venue upserts as pending rows, past the API's validation and
    without applying them (as a write the process died after, or a value the
    validation let through)."""
    async with unit_of_work(resources.sessions) as session:
        return await record(
            session,
            uuid.UUID(tenant.id),
            [Change(EntityType.venue, entity_id, "upsert", data) for entity_id, data in changes],
            Origin(updated_by="test"),
        )


@dataclass
class Ran:
    returncode: int
    stdout: str


@pytest.fixture
def cli(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Awaitable[Ran]]:
    """Run an `overwatch` command in this process (a subprocess spends most of
    its time importing), with the test settings; `neo4j_uri=` overrides."""
    import api.cli.main
    import api.core.observability

    monkeypatch.setattr(api.core.observability, "configure_logging", lambda *a, **k: None)

    async def run(*args: str, neo4j_uri: str | None = None) -> Ran:
        chosen = settings.model_copy(update={"neo4j_uri": neo4j_uri or settings.neo4j_uri})
        monkeypatch.setattr(api.cli.main, "get_settings", lambda: chosen)
        # The command runs its own event loop (asyncio.run): give it a thread.
        result = await asyncio.to_thread(CliRunner().invoke, api.cli.main.app, list(args))
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return Ran(result.exit_code, result.output)

    return run


async def states(pg, tenant: Tenant) -> dict[int, tuple[str, str | None]]:
    return await row_states(pg, tenant.id)


async def test_sync_answers_everything_committed_while_neo4j_is_unreachable(
    settings, app, client, tenant
):
    from api.journal.reconcile import reconcile_all
    from main import create_app

    ws, h = await register(client, tenant)
    before = await do_push(client, ws, h, [mutation(1, "venue", uid(), data=venue("before"))])
    first = before.json()["results"][0]["version"]
    down = create_app(settings.model_copy(update={"neo4j_uri": DEAD_NEO4J}), background=False)
    async with down.router.lifespan_context(down):
        transport = httpx.ASGITransport(app=down)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            venue_id = uid()
            r = await do_push(
                c,
                ws,
                h,
                [
                    mutation(2, "venue", venue_id, data=venue("during")),
                    mutation(
                        3,
                        "world_node",
                        uid(),
                        data={"venue_id": venue_id, "kind": "Zone", "name": "Atrium"},
                    ),
                ],
            )
            assert [x["status"] for x in r.json()["results"]] == ["applied", "applied"]
            head = r.json()["write_checkpoint"]
            assert head == first + 2

            page = (await c.get(f"{SYNC}/pull?since=0", headers=h)).json()
            assert page["frontier"] == head and page["has_more"] is False
            assert [x["version"] for x in page["changes"]] == [first, first + 1, first + 2]

            lines = (await c.get(f"{SYNC}/bootstrap", headers=h)).text.splitlines()
            header, *envelopes, end = (json.loads(line) for line in lines)
            assert header["snapshot_version"] == head
            assert header["counts"] == {"venue": 2, "world_node": 1}
            assert end["end"] is True and end["count"] == 3 == len(envelopes)

            status = (await c.get(f"{SYNC}/status", headers=h)).json()
            assert status["frontier"] == head and status["pending"] == 2
            assert status["projection"]["applied_through"] == first
            assert status["projection"]["lag_versions"] == 2
            assert status["projection"]["lag_seconds"] >= 0
            assert status["projection"]["failed"] == 0

            ready = await c.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["status"] == "degraded" and "neo4j" in ready.json()["degraded"]
            assert ready.json()["projection"]["pending_rows"] >= 2
    # Neo4j back (the healthy app): the reconciler applies, the lag returns to 0.
    await reconcile_all(app.state.resources)
    status = (await client.get(f"{SYNC}/status", headers=h)).json()
    assert status["pending"] == 0 and status["frontier"] == head
    assert status["projection"] == {
        "applied_through": head,
        "lag_versions": 0,
        "lag_seconds": 0.0,
        "failed": 0,
    }
    assert (await verify(app.state.resources, uuid.UUID(tenant.id))).clean
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and "neo4j" not in ready.json()["degraded"]


def _failed_total() -> float:
    return REGISTRY.get_sample_value("overwatch_journal_rows_failed_total") or 0.0


async def test_a_row_neo4j_refuses_is_isolated_and_later_rows_flow(app, client, tenant, pg, cli):
    resources = app.state.resources
    customer = uuid.UUID(tenant.id)
    ws, h = await register(client, tenant)
    await do_push(client, ws, h, [mutation(1, "venue", uid(), data=venue("A"))])
    poison_id = uuid.uuid4()
    failed_before = _failed_total()
    good_before, poison, good_after = await journal_directly(
        resources,
        tenant,
        [(uuid.uuid4(), venue("G1")), (poison_id, POISON), (uuid.uuid4(), venue("G2"))],
    )
    # The next write finds three rows pending and applies them with its own:
    # the batch fails as a whole, the bisection isolates the poison row.
    r = await do_push(client, ws, h, [mutation(2, "venue", uid(), data=venue("B"))])
    pushed = r.json()["results"][0]["version"]
    journal = await states(pg, tenant)
    assert journal[poison][0] == "failed"
    assert "Neo.ClientError.Statement.TypeError" in journal[poison][1]
    assert {v: s for v, (s, _) in journal.items() if v != poison} == {
        v: "applied" for v in journal if v != poison
    }
    assert {good_before, good_after, pushed} < set(journal)
    assert _failed_total() == failed_before + 1

    drift = await verify(resources, customer)
    assert drift.clean and drift.pending == 0
    assert [(f.version, f.entity_id) for f in drift.failed] == [(poison, str(poison_id))]

    # Later writes take the ordinary path again; sync hands everything out.
    r = await do_push(client, ws, h, [mutation(3, "venue", uid(), data=venue("C"))])
    latest = r.json()["results"][0]["version"]
    page = (await client.get(f"{SYNC}/pull?since=0", headers=h)).json()
    assert page["frontier"] == latest and poison in [x["version"] for x in page["changes"]]
    status = (await client.get(f"{SYNC}/status", headers=h)).json()
    assert status["projection"] == {
        "applied_through": latest,
        "lag_versions": 0,
        "lag_seconds": 0.0,
        "failed": 1,
    }
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and "projection" in ready.json()["degraded"]
    assert (await verify(resources, customer)).clean

    # The commands say what failed, and exit non-zero.
    checked = await cli("verify", "--customer", tenant.id)
    assert checked.returncode == 3, checked.stdout
    assert f"failed: version {poison} venue {poison_id}" in checked.stdout
    listed = await cli("projection")
    assert listed.returncode == 1 and f"tenant {tenant.id}:" in listed.stdout
    retried = await cli("reconcile", "--retry-failed", "--customer", tenant.id)
    assert retried.returncode == 1, retried.stdout
    assert "retried 1 failed row(s)" in retried.stdout
    assert f"failed: version {poison}" in retried.stdout
    assert "Neo.ClientError.Statement.TypeError" in retried.stdout
    assert (await states(pg, tenant))[poison][0] == "failed"

    # After a fix (here: the row's payload made storable) a retry applies it.
    await pg.execute(
        "UPDATE sync_journal SET payload = $3::jsonb WHERE customer_id = $1::uuid AND version = $2",
        tenant.id,
        poison,
        json.dumps(venue("Cured")),
    )
    fixed = await cli("reconcile", "--retry-failed", "--customer", tenant.id)
    assert fixed.returncode == 0, fixed.stdout
    assert "retried 1 failed row(s)" in fixed.stdout
    assert (await states(pg, tenant))[poison][0] == "applied"
    checked = await cli("verify", "--customer", tenant.id)
    assert checked.returncode == 0, checked.stdout
    status = (await client.get(f"{SYNC}/status", headers=h)).json()
    assert status["projection"]["failed"] == 0


async def test_a_failed_row_superseded_by_a_later_change_is_not_replayed(
    app, client, tenant, pg, graph
):
    from api.journal.reconcile import reconcile

    resources = app.state.resources
    customer = uuid.UUID(tenant.id)
    ws, h = await register(client, tenant)
    poison_id = uuid.uuid4()
    (poison,) = await journal_directly(resources, tenant, [(poison_id, POISON)])
    await reconcile(resources, customers=[customer])
    assert (await states(pg, tenant))[poison][0] == "failed"
    # The workstation deletes the venue: replaying the failed upsert would revive it.
    r = await do_push(
        client, ws, h, [mutation(1, "venue", str(poison_id), op="delete", base=poison)]
    )
    assert r.json()["results"][0]["status"] == "applied", r.text
    report = await reconcile(resources, retry=True, customers=[customer])
    assert (report.retried, report.superseded) == (0, 1) and report.ok
    state, error = (await states(pg, tenant))[poison]
    assert state == "applied" and error.startswith("superseded by version")
    drift = await verify(resources, customer)
    assert drift.clean and not drift.failed


async def test_reconcile_and_verify_exit_non_zero_when_neo4j_is_unreachable(app, tenant, pg, cli):
    resources = app.state.resources
    (pending,) = await journal_directly(resources, tenant, [(uuid.uuid4(), venue("Waiting"))])
    down = await cli("reconcile", "--customer", tenant.id, neo4j_uri=DEAD_NEO4J)
    assert down.returncode == 1, down.stdout
    assert f"tenant {tenant.id}: could not apply its pending rows: ServiceUnavailable" in (
        down.stdout
    )
    assert (await states(pg, tenant))[pending][0] == "pending"
    unverified = await cli("verify", "--customer", tenant.id, neo4j_uri=DEAD_NEO4J)
    assert unverified.returncode == 1, unverified.stdout
    assert f"tenant {tenant.id}: could not verify: ServiceUnavailable" in unverified.stdout
    healthy = await cli("reconcile", "--customer", tenant.id)
    assert healthy.returncode == 0, healthy.stdout
    assert "reconciled 1 pending change(s) across 1 tenant(s)" in healthy.stdout
    assert (await states(pg, tenant))[pending][0] == "applied"


async def test_a_pull_racing_prune_never_skips_a_delete(app, client, tenant, monkeypatch):
    """Issue 14.11: `overwatch prune` committing between a pull's reading of the
    retention bound and of its page must not hand out a page without a delete
    the client has not seen. The prune is committed right before the pull's
    page is read; with one snapshot the pull then sees the raised bound (410)."""
    from datetime import UTC, datetime, timedelta

    from api.sync import pull as pull_module
    from api.sync.prune import prune_sync

    resources = app.state.resources
    ws, h = await register(client, tenant)
    venue_id = uid()
    r = await do_push(client, ws, h, [mutation(1, "venue", venue_id, data=venue("V"))])
    seen = r.json()["results"][0]["version"]
    await do_push(client, ws, h, [mutation(2, "venue", venue_id, "delete", seen)])
    await do_push(client, ws, h, [mutation(3, "venue", uid(), data=venue("W"))])
    pruned: list[int] = []
    # The page statement runs on a driver connection (api/sync/pull.py): the
    # prune is committed right before it is sent.
    page = pull_module._PULL_DRIVER
    fetch = page.fetch

    async def prune_first(driver: Any, params: Any) -> Any:
        if not pruned:
            cutoff = datetime.now(UTC) + timedelta(days=1)
            pruned.append((await prune_sync(resources, cutoff)).tombstones)
        return await fetch(driver, params)

    monkeypatch.setattr(page, "fetch", prune_first)
    racing = await client.get(f"{SYNC}/pull?since={seen}", headers=h)
    monkeypatch.undo()
    assert pruned and pruned[0] >= 1
    if racing.status_code == 200:  # then the page must carry the delete
        ops = [(c["id"], c["op"]) for c in racing.json()["changes"]]
        assert (venue_id, "delete") in ops, racing.text
    else:
        assert racing.status_code == 410, racing.text
        assert racing.json()["error"]["code"] == "cursor_expired"


async def test_bisection_isolates_each_refused_row_of_a_large_batch(app, tenant, pg):
    from api.journal.apply import apply_pending

    resources = app.state.resources
    rows = [(uuid.uuid4(), venue(f"V{i}")) for i in range(30)]
    for position in (0, 17, 29):  # first, middle, last
        rows[position] = (rows[position][0], POISON)
    failed_before = _failed_total()
    versions = await journal_directly(resources, tenant, rows)
    assert await apply_pending(resources, uuid.UUID(tenant.id)) == 27
    journal = await states(pg, tenant)
    refused = {versions[p] for p in (0, 17, 29)}
    assert {v for v, (state, _) in journal.items() if state == "failed"} == refused
    assert all(journal[v][0] == "applied" for v in versions if v not in refused)
    assert _failed_total() == failed_before + 3
    drift = await verify(resources, uuid.UUID(tenant.id))
    assert drift.clean and drift.pending == 0 and len(drift.failed) == 3
