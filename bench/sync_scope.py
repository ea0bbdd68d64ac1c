"""Scoped sync (issue 17): a workstation scoped to 1 of 200 venues against an
unscoped one, on the same tenant, in the same run.

The tenant has 200 venues and SCALE entities spread evenly over them (the
venues, then world nodes dealt round-robin; SCALE is 100,000 unless
OVERWATCH_BENCH_SCALE says otherwise, e.g. 1,000,000), seeded straight into
`sync_entities` like bench/sync_bootstrap.py does (the envelope trigger fills
each row's `venue_id`). Two workstations of that tenant, each with its own
key:

- bootstrap: the NDJSON stream of the scoped workstation (its venue, its
  nodes) against the unscoped one's (everything);
- catch-up: the scoped workstation declares its scope at cursor 0 and pulls
  from the cursor `PUT /sync/scope` answers, against the unscoped workstation
  pulling from 0 (pages of 5,000 through the same minimal HTTP client as the
  sync bench);
- grow: the scoped workstation, at the head, adds a second venue and pulls
  from the rewound cursor: the backfill of one venue (no unscoped twin: an
  unscoped workstation at the head has nothing to pull).

Every figure is the median of a few rounds (one for the unscoped side at
1,000,000 entities); the counts are checked against the seed. Rows show the
scoped figure under `api`, the unscoped one under `raw driver`, so `ratio` is
scoped / unscoped; a table with its own headings is printed too.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import httpx
import orjson

from bench.harness import BenchContext, Result
from bench.sync_bootstrap import SEED_CHUNK
from bench.sync_common import PULL_PAGE, SCALE, _node, _PageClient

VENUES = 200


async def _seed(ctx: BenchContext, customer_id: str, size: int) -> list[str]:
    """200 venues (versions 1..200), then world nodes dealt round-robin over
    them up to `size` entities in all; returns the venue ids in order."""
    pg = await ctx.pg()
    tenant = uuid.UUID(customer_id)
    venues = [uuid.uuid4() for _ in range(VENUES)]
    columns = ["customer_id", "entity_type", "entity_id", "version", "deleted", "payload"]
    try:
        await pg.copy_records_to_table(
            "sync_entities",
            records=[
                (tenant, "venue", v, n + 1, False, f'{{"name": "Venue {n}"}}')
                for n, v in enumerate(venues)
            ],
            columns=columns,
        )
        for start in range(VENUES, size, SEED_CHUNK):
            records = []
            for i in range(start, min(size, start + SEED_CHUNK)):
                venue = str(venues[i % VENUES])
                data = _node(venue, i) | {"name": f"Seat block {i}"}
                records.append(
                    (tenant, "world_node", uuid.uuid4(), i + 1, False, orjson.dumps(data).decode())
                )
            await pg.copy_records_to_table("sync_entities", records=records, columns=columns)
        await pg.execute(
            "UPDATE customer_versions SET version = $2 WHERE customer_id = $1", tenant, size
        )
        await pg.execute("ANALYZE sync_entities")
    finally:
        await pg.close()
    return [str(v) for v in venues]


def _in_venue(size: int, index: int) -> int:
    """Entities of venue `index` in the seed: itself and its round-robin nodes."""
    return 1 + len(range(VENUES + index, size, VENUES))


async def _register(http: httpx.AsyncClient, name: str) -> tuple[str, str]:
    r = await http.post("/api/v1/auth/workstations/register", json={"name": name})
    r.raise_for_status()
    return r.json()["id"], r.json()["api_key"]


async def _bootstrap(base: str, key: str) -> int:
    """Stream the whole bootstrap (one page); returns its entity lines."""
    lines = 0
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}, timeout=900) as http:
        async with http.stream("GET", "/api/v1/sync/bootstrap") as response:
            response.raise_for_status()
            async for chunk in response.aiter_raw():
                lines += chunk.count(b"\n")
    return lines - 2  # the header and the end line


async def _pull_from(base: str, key: str, since: int) -> int:
    """Pull from `since` to the head in pages of 5,000; returns the changes."""
    count = 0
    async with _PageClient(base, {"X-API-Key": key}) as client:
        while True:
            page = orjson.loads(
                await client.get(f"/api/v1/sync/pull?since={since}&limit={PULL_PAGE}")
            )
            count += len(page["changes"])
            since = page["cursor"]
            if not page["has_more"]:
                return count


async def _timed(
    rounds: int, call: Callable[[], Awaitable[int]], expected: int, what: str
) -> tuple[float, int]:
    """Median seconds of `rounds` calls, each checked to return `expected`."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        got = await call()
        times.append(time.perf_counter() - started)
        assert got == expected, (what, got, expected)
    return statistics.median(times), expected


async def _put_scope(
    base: str, key: str, venues: list[str], cursor: int, scope_version: int
) -> dict[str, int]:
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}, timeout=600) as http:
        r = await http.put(
            "/api/v1/sync/scope",
            json={"venues": venues, "cursor": cursor, "scope_version": scope_version},
        )
        r.raise_for_status()
        return dict(r.json())


def _row(name: str, scoped: tuple[float, int], whole: tuple[float, int] | None) -> Result:
    notes: dict[str, object] = {"scoped_entities": scoped[1]}
    if whole is not None:
        notes["unscoped_entities"] = whole[1]
        notes["unscoped_s"] = round(whole[0], 2)
    return Result(
        name,
        "ms (scoped | unscoped)",
        api=scoped[0] * 1000,
        raw=None if whole is None else whole[0] * 1000,
        notes=notes,
    )


async def run(ctx: BenchContext) -> list[Result]:
    size = SCALE
    scoped_rounds, whole_rounds = 5, (3 if size <= 200_000 else 1)
    async with ctx.server() as base:
        customer_id, customer_key = await ctx.new_tenant(base, f"scope-{size}")
        venues = await _seed(ctx, customer_id, size)
        async with httpx.AsyncClient(
            base_url=base, headers={"X-API-Key": customer_key}, timeout=60
        ) as http:
            _, scoped_key = await _register(http, "scoped to 1 venue")
            _, whole_key = await _register(http, "whole tenant")
        one = _in_venue(size, 0)
        answer = await _put_scope(base, scoped_key, [venues[0]], 0, 0)
        rewound = int(answer["cursor"])
        boot_scoped = await _timed(
            scoped_rounds, lambda: _bootstrap(base, scoped_key), one, "scoped bootstrap"
        )
        boot_whole = await _timed(
            whole_rounds, lambda: _bootstrap(base, whole_key), size, "unscoped bootstrap"
        )
        pull_scoped = await _timed(
            scoped_rounds, lambda: _pull_from(base, scoped_key, rewound), one, "scoped pull"
        )
        pull_whole = await _timed(
            whole_rounds, lambda: _pull_from(base, whole_key, 0), size, "unscoped pull"
        )
        # Grow at the head: one more venue, backfilled from the rewound cursor.
        grown = await _put_scope(
            base, scoped_key, [venues[0], venues[1]], size, int(answer["scope_version"])
        )
        grow = await _timed(
            scoped_rounds,
            lambda: _pull_from(base, scoped_key, int(grown["cursor"])),
            _in_venue(size, 1),
            "grown pull",
        )
    results = [
        _row(f"scoped bootstrap, 1 of {VENUES} venues, {size:,} entities", boot_scoped, boot_whole),
        _row(f"scoped catch-up pull from the scope's cursor {rewound}", pull_scoped, pull_whole),
        _row(f"scope grown by 1 venue at the head, pull from {grown['cursor']}", grow, None),
    ]
    print(f"\nscoped sync, {size:,} entities over {VENUES} venues (median seconds)")
    print(f"{'':<34}{'scoped (1 venue)':>20}{'unscoped':>20}{'scoped/unscoped':>17}")
    for label, s, w in (
        ("bootstrap", boot_scoped, boot_whole),
        ("catch-up pull", pull_scoped, pull_whole),
    ):
        print(f"{label:<34}{s[0]:>9.3f}s {s[1]:>9,}{w[0]:>9.3f}s {w[1]:>9,}{s[0] / w[0]:>17.4f}")
    print(f"{'grow by 1 venue, pull backfill':<34}{grow[0]:>9.3f}s {grow[1]:>9,}")
    return results
