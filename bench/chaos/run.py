"""One chaos run from start to verdict (see bench/chaos/__init__.py)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from api.client import SyncClient
from bench.chaos import checks
from bench.chaos.faults import FAULT_KINDS, POISON, Schedule
from bench.chaos.stack import ROOT, ChaosStack, stack_command, start_stack
from bench.chaos.workload import Tracker, Workstation, http_client

DRAIN_SECONDS = 90.0  # after the faults: push what is left, then pull


@dataclass
class Options:
    seed: int = 1
    seconds: float = 60.0
    workstations: int = 4
    scoped: int | None = None  # how many of them are scoped (default: half, rounded down)
    heal_timeout: float = 60.0  # the projection must be caught up this long after the last fault
    reconcile_interval: float = 15.0  # the service's default
    keep_stack: bool = False
    log_dir: Path = field(default_factory=lambda: ROOT / ".local" / "chaos-logs")


@dataclass
class Report:
    ok: bool
    checks: list[checks.Check]
    numbers: dict[str, Any]


async def _post(http: httpx.AsyncClient, path: str, body: dict[str, Any], key: str) -> Any:
    response = await http.post(path, json=body, headers={"X-API-Key": key})
    response.raise_for_status()
    return response.json()


async def _tenant(stack: ChaosStack, count: int) -> tuple[str, str, list[tuple[str, str]]]:
    """A fresh customer and `count` + 1 registered workstations (the last sends poison)."""
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{stack.apis[0].port}", timeout=30
    ) as http:
        customer = await _post(
            http, "/api/v1/auth/customers", {"name": f"chaos-{uuid.uuid4()}"}, stack.admin_key
        )
        stations = [
            await _post(
                http, "/api/v1/auth/workstations/register", {"name": f"ws{n}"}, customer["api_key"]
            )
            for n in range(count + 1)
        ]
    return customer["id"], customer["api_key"], [(s["id"], s["api_key"]) for s in stations]


# The tenant's pending journal rows: above its watermark (migration 0019).
_PENDING = (
    "customer_id = $1 AND state = 'pending' AND version > "
    "COALESCE((SELECT through FROM journal_applied WHERE customer_id = $1), 0)"
)


async def _projection(stack: ChaosStack, customer_id: str) -> tuple[int, list[asyncpg.Record]]:
    conn = await asyncpg.connect(stack.dsn, timeout=10)
    try:
        pending = await conn.fetchval(
            f"SELECT count(*) FROM sync_journal WHERE {_PENDING}",
            customer_id,
        )
        failed = await conn.fetch(
            "SELECT version, entity_type, entity_id::text AS entity_id, state "
            "FROM sync_journal WHERE customer_id = $1 AND state = 'failed' "
            "ORDER BY version",
            customer_id,
        )
        return int(pending), list(failed)
    finally:
        await conn.close()


async def _heal(stack: ChaosStack, customer_id: str, deadline: float) -> tuple[float | None, int]:
    """Wait (bounded) until no journal row of the tenant is pending."""
    pending = -1
    while True:
        with contextlib.suppress(Exception):
            pending, _ = await _projection(stack, customer_id)
            if pending == 0:
                return time.monotonic(), 0
        if time.monotonic() >= deadline:
            return None, pending
        await asyncio.sleep(0.5)


async def _caught_up(stack: ChaosStack, customer_id: str, deadline: float) -> float | None:
    """When Neo4j held (or had refused) every change committed by now: the
    time to heal, measured while the workstations keep writing."""
    head: int | None = None
    while True:
        with contextlib.suppress(Exception):
            conn = await asyncpg.connect(stack.dsn, timeout=10)
            try:
                if head is None:
                    head = await conn.fetchval(
                        "SELECT version FROM customer_versions WHERE customer_id = $1",
                        customer_id,
                    )
                low = await conn.fetchval(
                    f"SELECT min(version) FROM sync_journal WHERE {_PENDING}",
                    customer_id,
                )
            finally:
                await conn.close()
            if head is not None and (low is None or low > head):
                return time.monotonic()
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(0.5)


async def chaos_run(options: Options) -> Report:
    rng = random.Random(options.seed)  # every random choice of the run comes from here
    options.log_dir.mkdir(parents=True, exist_ok=True)
    print(f"[chaos] seed {options.seed}, {options.seconds:.0f}s, {options.workstations} ws")
    stack = await start_stack(options.log_dir, options.reconcile_interval)
    try:
        await stack.start_apis(2)
        return await _run(stack, options, rng)
    finally:
        stack.stop_apis()
        if not options.keep_stack:
            with contextlib.suppress(Exception):
                await stack_command("down")


async def _run(stack: ChaosStack, options: Options, rng: random.Random) -> Report:
    customer_id, customer_key, stations = await _tenant(stack, options.workstations)
    ports = [api.port for api in stack.apis]
    tracker = Tracker()
    scoped = options.workstations // 2 if options.scoped is None else options.scoped
    first_scoped = options.workstations - min(scoped, options.workstations - 1)  # ws0 unscoped
    workstations = [
        Workstation(
            f"ws{n}" + ("s" if n >= first_scoped else ""),
            SyncClient(http_client(ports, n, key), ws_id),
            random.Random(rng.getrandbits(64)),
            tracker,
            scoped=n >= first_scoped,
        )
        for n, (ws_id, key) in enumerate(stations[:-1])
    ]
    # A few venues before anything else: the scoped workstations' first scopes.
    await workstations[0].seed_venues(rng.randint(5, 8), time.monotonic() + 60)
    poison_id, poison_key = stations[-1]
    poisoner = SyncClient(http_client(ports, 1, poison_key), poison_id)
    schedule = Schedule(
        stack, tracker, random.Random(rng.getrandbits(64)), options.seconds, poisoner
    )
    started = schedule.started = time.monotonic()
    stop_editing = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop_editing)) for w in workstations]
    try:
        # Bounded: each fault is bounded (stack.sh waits at most 4 min for a
        # Neo4j start), so the schedule ends within minutes of `seconds` even
        # on a crowded machine. Past the bound the run is judged as it stands.
        await asyncio.wait_for(schedule.run(), options.seconds * 2 + 900)
    except TimeoutError:
        for fault in schedule.faults:
            if not fault.end:
                fault.end, fault.error = time.monotonic(), "not over when the schedule timed out"
        print("[chaos] the fault schedule timed out", flush=True)
        with contextlib.suppress(Exception):  # judge with every server up
            await stack_command("up")
    finally:
        stop_editing.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 120)
    last_fault_end = max((f.end for f in schedule.faults), default=time.monotonic())
    print(f"[chaos] faults over at +{last_fault_end - started:.1f}s; draining", flush=True)
    heal_deadline = max(time.monotonic(), last_fault_end + options.heal_timeout)
    caught_up = asyncio.create_task(_caught_up(stack, customer_id, heal_deadline))
    drain_deadline = time.monotonic() + DRAIN_SECONDS
    await asyncio.gather(*(w.drain(drain_deadline) for w in workstations))
    # Every push is answered now: one more pull each, so none misses another's last writes.
    await asyncio.gather(*(w.drain(time.monotonic() + 30) for w in workstations))
    healed_at = await caught_up
    # And once the writing stopped, nothing at all may stay pending.
    settled, pending = await _heal(stack, customer_id, time.monotonic() + options.heal_timeout)
    if settled is None:
        healed_at = None
    for w in workstations:  # a stall still open at the end lasts until now
        if w.stall_since is not None:
            tracker.stalls.append(checks.Stall(w.name, w.stall_since, time.monotonic()))
    report = await _verdict(
        stack, options, customer_id, customer_key, workstations, poisoner, schedule
    )
    heal = None if healed_at is None else max(0.0, healed_at - last_fault_end)
    report.checks.insert(
        -1,
        checks.Check(
            f"projection lag 0 within {options.heal_timeout:.0f}s",
            healed_at is not None,
            f"healed {heal:.1f}s after the last fault"
            if heal is not None
            else f"not caught up in time; {pending} rows pending at the end",
        ),
    )
    report.numbers.update(
        heal_seconds=heal,
        longest_push=round(max((e - s for s, e in tracker.push_spans), default=0.0), 1),
        acknowledged_head=tracker.head,
        pushes=tracker.pushes,
        pulls=tracker.pulls,
        scoped=sum(w.scoped for w in workstations),
        scope_changes=tracker.scope_changes,
        scope_answers_lost=tracker.scope_answers_lost,
        seconds=time.monotonic() - started,
    )
    report.ok = all(c.ok for c in report.checks)
    checks.print_report(
        report.checks, schedule.faults, tracker.stalls, schedule.poison, started, tracker.push_spans
    )
    print(f"\n[chaos] errors seen by clients (retried): {tracker.errors}")
    print(f"[chaos] numbers: {report.numbers}")
    print(f"[chaos] seed {options.seed}: {'PASS' if report.ok else 'FAIL'}")
    for client in [w.client for w in workstations] + [poisoner]:
        await client.http.aclose()
    return report


async def _scoped_view(w: Workstation) -> checks.ScopedView:
    """The server's side of a scoped workstation: its scope and a fresh
    bootstrap with its own key (which streams only its scope)."""
    server_scope: dict[str, Any] | None = None
    state: dict[str, tuple[str, int, Any]] | None = None
    with contextlib.suppress(Exception):
        server_scope = await w.client.fetch_scope()
    with contextlib.suppress(Exception):
        fresh = SyncClient(w.client.http, w.client.workstation_id)
        await fresh.bootstrap(page_size=w.rng.choice((None, 10)))
        state = fresh.state()
    return checks.ScopedView(w.name, server_scope, state, w.client.scope_version)


async def _verdict(
    stack: ChaosStack,
    options: Options,
    customer_id: str,
    customer_key: str,
    workstations: list[Workstation],
    poisoner: SyncClient,
    schedule: Schedule,
) -> Report:
    ports = [api.port for api in stack.apis]
    with contextlib.suppress(Exception):
        await poisoner.pull()
    async with http_client(ports, 0, customer_key) as http:
        pulled = await checks.pull_from_zero(http)
        observer = SyncClient(http, "observer")
        await observer.bootstrap(page_size=500)
        bootstrap = observer.state()
        status = (await http.get("/api/v1/sync/status")).json()
    journal = await checks.journal_rows(stack.dsn, customer_id)
    _, failed = await _projection(stack, customer_id)
    code, output = await stack.cli("verify", "--customer", customer_id)
    synced = [
        checks.Synced(
            w.name,
            w.client.workstation_id,
            w.client.outcomes,
            w.sent,
            w.client.state() if w.stall_since is None else None,
            len(w.client.pending)
            + (1 if w.client.unanswered else 0)
            + (1 if w.client.unanswered_scope else 0),
            w.scoped,
            w.client.scope,
        )
        for w in workstations
    ]
    views = {w.name: await _scoped_view(w) for w in workstations if w.scoped}
    synced.append(
        checks.Synced(
            "poison",
            poisoner.workstation_id,
            poisoner.outcomes,
            schedule.sent,
            poisoner.state(),
            len(poisoner.pending) + (1 if poisoner.unanswered else 0),
        )
    )
    tracker = workstations[0].tracker
    found = checks.check_acknowledged(synced, pulled, journal, tracker.merges)
    found += [checks.check_once(journal, tracker.resend_violations)]
    found += checks.check_converged(synced, bootstrap, pulled)
    found += checks.check_scoped(
        synced,
        views,
        bootstrap,
        tracker.scope_changes,
        tracker.scope_answers_lost,
        tracker.scope_violations,
    )
    found += checks.check_faults(schedule.faults, tracker.stalls, FAULT_KINDS)
    found += checks.check_poison(schedule.poison, len(POISON))
    failed_ids = {r["entity_id"] for r in failed}
    found.append(checks.check_verify(code, output, failed_ids, customer_id))
    if failed:
        found.append(
            checks.Check(
                "failed journal rows (listed)",
                True,
                f"{len(failed)} failed",
                [f"v{r['version']} {r['entity_type']} {r['entity_id']}" for r in failed],
            )
        )
    projection = status.get("projection")
    numbers = {
        "customer": customer_id,
        "journal_rows": len(journal),
        "live_entities": len(bootstrap),
        "merges": len(tracker.merges),
        "projection_status": projection if projection is not None else "absent",
    }
    return Report(False, found, numbers)
