"""Sync health per workstation (issue 17, part 2): the list, status, gauges, prune's refusal.

On the real servers: workstations push and pull through the API; what only
time would produce (a pull weeks ago, an old tombstone) is set in Postgres.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid
from datetime import datetime, timedelta

from tests.conftest import ROOT, Tenant
from tests.test_sync import SYNC, do_push, mutation, register, uid

WORKSTATIONS = f"{SYNC}/workstations"
NIL = "00000000-0000-0000-0000-000000000000"


def venue(name: str) -> dict:
    return {"name": name}


async def listed(client, tenant: Tenant, **params) -> dict[str, dict]:
    r = await client.get(WORKSTATIONS, headers=tenant.headers, params=params)
    assert r.status_code == 200, r.text
    return {item["id"]: item for item in r.json()["items"]}


async def pull(client, headers, since: int = 0, limit: int = 500) -> dict:
    r = await client.get(f"{SYNC}/pull", params={"since": since, "limit": limit}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


# ------------------------------------------------------------------ the list
async def test_workstations_listed_with_their_push_pull_cursor_and_lag(
    client, tenant, other_tenant, pg, settings
):
    a, ha = await register(client, tenant, "van A")
    b, hb = await register(client, tenant, "van B")
    c, _ = await register(client, other_tenant, "elsewhere")
    # Two pushes: the last push time is the newer one's.
    await do_push(client, a, ha, [mutation(1, "venue", uid(), data=venue("V1"))])
    await do_push(client, a, ha, [mutation(2, "venue", uid(), data=venue("V2"))])
    pulled = await pull(client, ha)
    assert pulled["cursor"] == 2
    await do_push(client, b, hb, [mutation(7, "venue", uid(), data=venue("V3"))])

    got = await listed(client, tenant)
    assert set(got) == {a, b}  # tenant isolation: the other tenant's workstation is not listed
    assert set(await listed(client, other_tenant)) == {c}
    wa, wb = got[a], got[b]
    row_a = await pg.fetchrow(
        "SELECT last_pull_at, last_pull_cursor FROM workstations WHERE id = $1::uuid", a
    )
    pushed_a = await pg.fetchval(
        "SELECT max(created_at) FROM sync_mutations WHERE workstation_id = $1::uuid", a
    )
    pushed_b = await pg.fetchval(
        "SELECT max(created_at) FROM sync_mutations WHERE workstation_id = $1::uuid", b
    )
    assert (wa["name"], wa["deactivated"], wa["head"]) == ("van A", False, 3)
    assert (wa["cursor"], wa["versions_behind"], wa["expired"], wa["scope"]) == (2, 1, False, None)
    assert moment(wa["last_pull_at"]) == row_a["last_pull_at"]
    assert moment(wa["last_push_at"]) == pushed_a
    assert moment(wb["last_push_at"]) == pushed_b and pushed_b > pushed_a
    # A pulled just now, the change after its cursor came later: a full window left.
    retention = settings.tombstone_retention_days
    assert retention - 0.01 < wa["days_until_expiry"] <= retention
    assert moment(wa["cursor_expires_at"]) == row_a["last_pull_at"] + timedelta(days=retention)
    # B never pulled: no cursor, no lag figure, nothing to expire.
    assert (wb["last_pull_at"], wb["cursor"], wb["versions_behind"]) == (None, None, None)
    assert (wb["cursor_expires_at"], wb["days_until_expiry"], wb["expired"]) == (None, None, False)

    # The calling workstation's own health in /sync/status: the same item.
    status = await client.get(f"{SYNC}/status", headers=ha)
    assert status.status_code == 200, status.text
    own = status.json()["workstation"]
    assert {k: v for k, v in own.items() if k != "days_until_expiry"} == {
        k: v for k, v in wa.items() if k != "days_until_expiry"
    }
    assert status.json()["last_pull_cursor"] == 2  # the existing fields are unchanged

    # Pages by id, and a workstation key is refused the tenant's list.
    first = (await client.get(WORKSTATIONS, headers=tenant.headers, params={"limit": 1})).json()
    assert len(first["items"]) == 1 and first["next_cursor"]
    second = (
        await client.get(
            WORKSTATIONS,
            headers=tenant.headers,
            params={"limit": 1, "cursor": first["next_cursor"]},
        )
    ).json()
    assert {first["items"][0]["id"], second["items"][0]["id"]} == {a, b}
    refused = await client.get(WORKSTATIONS, headers=ha)
    assert refused.status_code == 403, refused.text


async def test_expiry_counts_from_the_first_unpulled_change_and_scope_is_shown(
    client, tenant, pg, settings
):
    ws, h = await register(client, tenant)
    venues = [uid() for _ in range(3)]
    await do_push(
        client,
        ws,
        h,
        [mutation(i + 1, "venue", v, data=venue(f"V{i}")) for i, v in enumerate(venues)],
    )
    page = await pull(client, h, limit=1)  # stops at version 1: versions 2 and 3 were already there
    assert (page["cursor"], page["has_more"]) == (1, True)
    retention = settings.tombstone_retention_days
    await pg.execute(
        "UPDATE workstations SET last_pull_at = now() - interval '3 days' WHERE id = $1::uuid", ws
    )
    days = (await listed(client, tenant))[ws]["days_until_expiry"]
    assert retention - 3.01 < days < retention - 2.99
    # A delete right after its cursor, committed 25 days ago, is pruned 25 days
    # sooner than the workstation's own last pull suggests.
    await pg.execute(
        "UPDATE sync_journal SET created_at = now() - interval '25 days' "
        "WHERE customer_id = $1::uuid AND version = 2",
        tenant.id,
    )
    days = (await listed(client, tenant))[ws]["days_until_expiry"]
    assert retention - 25.01 < days < retention - 24.99
    # Its journal row gone (older than a previous prune's window): overdue.
    await pg.execute(
        "DELETE FROM sync_journal WHERE customer_id = $1::uuid AND version = 2", tenant.id
    )
    item = (await listed(client, tenant))[ws]
    assert (item["days_until_expiry"], item["expired"]) == (0, False)
    # The horizon above its cursor: expired (its next pull answers 410).
    await pg.execute(
        "UPDATE customer_versions SET pruned_through = 2 WHERE customer_id = $1::uuid", tenant.id
    )
    assert (await listed(client, tenant))[ws]["expired"] is True
    assert (await client.get(f"{SYNC}/pull?since=1", headers=h)).status_code == 410

    # A scope: its venues without the tenant-wide pseudo-venue, and its version.
    await pg.execute(
        "INSERT INTO sync_scopes (workstation_id, customer_id, scope_version, last_request, "
        "last_answer) VALUES ($1::uuid, $2::uuid, 4, '{}', '{}')",
        ws,
        tenant.id,
    )
    await pg.executemany(
        "INSERT INTO sync_scope_venues (workstation_id, venue_id, customer_id, floor, added) "
        "VALUES ($1::uuid, $2::uuid, $3::uuid, 0, 0)",
        [(ws, v, tenant.id) for v in (NIL, venues[2], venues[0])],
    )
    assert (await listed(client, tenant))[ws]["scope"] == {
        "venues": sorted([venues[0], venues[2]]),
        "scope_version": 4,
    }


async def test_expired_agrees_with_pull_for_scoped_and_unscoped_workstations(client, tenant, pg):
    """A scoped pull reads each venue from GREATEST(cursor, floor): a scope
    declared at a later cursor is not expired by a horizon between the two,
    while an unscoped workstation at the same cursor is."""
    scoped, hs = await register(client, tenant, "scoped")
    whole, hw = await register(client, tenant, "whole tenant")
    kept = uid()
    await do_push(client, scoped, hs, [mutation(1, "venue", kept, data=venue("V1"))])
    assert (await pull(client, hs))["cursor"] == (await pull(client, hw))["cursor"] == 1
    await do_push(client, scoped, hs, [mutation(2, "venue", uid(), data=venue("V2"))])
    await do_push(client, scoped, hs, [mutation(3, "venue", uid(), data=venue("V3"))])
    put = await client.put(
        f"{SYNC}/scope", headers=hs, json={"venues": [kept], "cursor": 3, "scope_version": 0}
    )
    assert put.status_code == 200, put.text
    await pg.execute(
        "UPDATE customer_versions SET pruned_through = 2 WHERE customer_id = $1::uuid", tenant.id
    )
    got = await listed(client, tenant)
    assert (got[scoped]["cursor"], got[whole]["cursor"]) == (1, 1)
    assert got[scoped]["scope"] == {"venues": [kept], "scope_version": 1}
    assert (got[scoped]["expired"], got[whole]["expired"]) == (False, True)
    assert got[scoped]["days_until_expiry"] > 29
    assert (await client.get(f"{SYNC}/pull?since=1", headers=hw)).status_code == 410
    assert (await client.get(f"{SYNC}/pull?since=1", headers=hs)).status_code == 200
    # Once the horizon passes its venues' floor too, it is expired, and pull agrees.
    cursor = (await listed(client, tenant))[scoped]["cursor"]
    await do_push(client, scoped, hs, [mutation(4, "venue", uid(), data=venue("V4"))])
    await pg.execute(
        "UPDATE customer_versions SET pruned_through = $2 WHERE customer_id = $1::uuid",
        tenant.id,
        cursor + 1,
    )
    assert (await listed(client, tenant))[scoped]["expired"] is True
    assert (await client.get(f"{SYNC}/pull?since={cursor}", headers=hs)).status_code == 410


# ------------------------------------------------------------------ gauges
GAUGES = (
    "overwatch_sync_lag_versions_max",
    "overwatch_sync_workstations_near_expiry",
    "overwatch_sync_workstations_expired",
)


async def scrape(client) -> dict[str, float]:
    r = await client.get("/metrics")
    assert r.status_code == 200
    found = {}
    for name in GAUGES:
        m = re.search(rf"^{name} (\S+)$", r.text, re.M)
        assert m, f"{name} not in /metrics"
        found[name] = float(m.group(1))
    return found


async def test_gauges_show_the_worst_lag_and_the_workstations_near_expiry(
    client, make_tenant, pg, settings
):
    tenant = await make_tenant("gauges")
    ws, h = await register(client, tenant)
    await do_push(client, ws, h, [mutation(1, "venue", uid(), data=venue("V"))])
    await pull(client, h)
    # 40 versions behind: more than any other test's workstation falls behind.
    await do_push(
        client, ws, h, [mutation(i + 2, "venue", uid(), data=venue(f"W{i}")) for i in range(40)]
    )
    before = await scrape(client)
    head = await pg.fetchval("SELECT max(version) FROM customer_versions")
    assert 40 <= before["overwatch_sync_lag_versions_max"] <= head

    # Its last pull 29 days ago: with a 30-day window it expires within
    # SYNC_EXPIRY_WARNING_DAYS (2).
    assert (settings.tombstone_retention_days, settings.sync_expiry_warning_days) == (30, 2)
    await pg.execute(
        "UPDATE workstations SET last_pull_at = now() - interval '29 days' WHERE id = $1::uuid", ws
    )
    near = await scrape(client)
    assert near["overwatch_sync_workstations_near_expiry"] == (
        before["overwatch_sync_workstations_near_expiry"] + 1
    )
    # Expired: no longer "near", counted as expired, and its lag leaves the maximum.
    await pg.execute(
        "UPDATE customer_versions SET pruned_through = 5 WHERE customer_id = $1::uuid", tenant.id
    )
    gone = await scrape(client)
    assert (
        gone["overwatch_sync_workstations_near_expiry"]
        == before["overwatch_sync_workstations_near_expiry"]
    )
    assert gone["overwatch_sync_workstations_expired"] == (
        before["overwatch_sync_workstations_expired"] + 1
    )
    # Deactivated: counted nowhere.
    await pg.execute("UPDATE workstations SET deactivated_at = now() WHERE id = $1::uuid", ws)
    assert (await scrape(client))["overwatch_sync_workstations_expired"] == before[
        "overwatch_sync_workstations_expired"
    ]


# ------------------------------------------------------------------ prune
async def run_prune(test_database_url: str, *args: str) -> tuple[int, str]:
    env = {
        **os.environ,
        "ENVIRONMENT": "development",
        "DATABASE_URL": test_database_url,
        "LOG_LEVEL": "WARNING",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "api.cli",
        "prune",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output = (await proc.communicate())[0].decode()
    assert proc.returncode is not None
    return proc.returncode, output


async def test_prune_refuses_to_expire_a_recent_workstation_unless_forced(
    client, make_tenant, pg, test_database_url
):
    tenant = await make_tenant("prune")
    a, ha = await register(client, tenant, "recent")
    b, hb = await register(client, tenant, "gone quiet")
    gone = uid()
    await do_push(client, a, ha, [mutation(1, "venue", gone, data=venue("V"))])
    assert (await pull(client, ha))["cursor"] == 1
    assert (await pull(client, hb))["cursor"] == 1
    await do_push(client, a, ha, [mutation(2, "venue", gone, "delete", 1)])
    await do_push(client, a, ha, [mutation(3, "venue", uid(), data=venue("W"))])
    # A conflict in the inbox (an edit of what A deleted), recorded 40 days ago: it ages out too.
    stale = await do_push(client, b, hb, [mutation(1, "venue", gone, base=1, data=venue("V'"))])
    assert stale.json()["results"][0]["status"] == "conflict", stale.text
    await pg.execute(
        "UPDATE sync_conflicts SET created_at = now() - interval '40 days' "
        "WHERE customer_id = $1::uuid",
        tenant.id,
    )
    # The delete (version 2) is older than the window; A pulled within it, B
    # long ago (B is not warned about: it would be expired by the window anyway).
    await pg.execute(
        "UPDATE sync_entities SET updated_at = now() - interval '40 days' "
        "WHERE customer_id = $1::uuid AND deleted",
        tenant.id,
    )
    await pg.execute(
        "UPDATE workstations SET last_pull_at = now() - interval '40 days' WHERE id = $1::uuid", b
    )
    # Scope history: exits at and above the coming horizon (2); removals of B
    # (delivered: version <= its cursor, pulled after the scope change, before
    # the window) and of A (delivered but pulled within the window: kept).
    venue_id = uuid.uuid4()
    await pg.executemany(
        "INSERT INTO sync_scope_exits (customer_id, venue_id, version, entity_id, entity_type) "
        "VALUES ($1::uuid, $2, $3, $4, 'world_node')",
        [(tenant.id, venue_id, v, uuid.uuid4()) for v in (2, 3)],
    )
    for ws in (a, b):
        await pg.execute(
            "INSERT INTO sync_scopes (workstation_id, customer_id, scope_version, last_request, "
            "last_answer, updated_at) VALUES ($1::uuid, $2::uuid, 1, '{}', '{}', "
            "now() - interval '50 days')",
            ws,
            tenant.id,
        )
    await pg.executemany(
        "INSERT INTO sync_scope_removals (workstation_id, version, entity_id, customer_id, "
        "entity_type) VALUES ($1::uuid, $2, $3, $4::uuid, 'world_node')",
        [(ws, v, uuid.uuid4(), tenant.id) for ws, v in ((b, 1), (b, 2), (a, 1))],
    )

    async def state() -> tuple:
        return (
            await pg.fetchval(
                "SELECT count(*) FROM sync_entities WHERE customer_id = $1::uuid AND deleted",
                tenant.id,
            ),
            await pg.fetchval(
                "SELECT pruned_through FROM customer_versions WHERE customer_id = $1::uuid",
                tenant.id,
            ),
            sorted(
                await pg.fetch(
                    "SELECT version FROM sync_scope_exits WHERE customer_id = $1::uuid", tenant.id
                )
            ),
            sorted(
                (str(r["workstation_id"]), r["version"])
                for r in await pg.fetch(
                    "SELECT workstation_id, version FROM sync_scope_removals "
                    "WHERE customer_id = $1::uuid",
                    tenant.id,
                )
            ),
            await pg.fetchval(
                "SELECT count(*) FROM sync_conflicts WHERE customer_id = $1::uuid", tenant.id
            ),
        )

    untouched = await state()
    code, output = await run_prune(test_database_url)
    assert code == 1, output
    assert "refused" in output and "nothing was pruned" in output
    assert f"workstation {a} (recent): cursor 1 < new horizon 2" in output
    assert b not in output
    assert await state() == untouched  # nothing removed, horizon unchanged

    code, output = await run_prune(test_database_url, "--force")
    assert code == 0, output
    assert "warning" in output and f"workstation {a} (recent)" in output
    tombstones, horizon, exits, removals, conflicts = await state()
    assert (tombstones, horizon, conflicts) == (0, 2, 0)
    assert untouched[4] == 1
    assert [r["version"] for r in exits] == [3]
    assert removals == sorted([(b, 2), (a, 1)])
    assert (await client.get(f"{SYNC}/pull?since=1", headers=ha)).status_code == 410
    assert (await listed(client, tenant))[a]["expired"] is True
