"""The end of a chaos run: the protocol's invariants, checked and printed.

Written against docs/SYNC_PROTOCOL (and DESIGN.md §4), not against what the
code happens to do: every acknowledged write is in pull-from-0 and in
bootstrap at its acknowledged version (or superseded by a later journaled
change), nothing is applied twice, every workstation converges on the
server's state (a scoped one on that state restricted to its scope, issue
17), and the projection heals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx

from bench.chaos.faults import NEO4J_FAULTS, Fault, PoisonOutcome
from bench.chaos.workload import Stall

STALL_SLACK = 2.0  # seconds a pull may stall beyond a Neo4j fault (issue 13)
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass
class Check:
    name: str
    ok: bool
    value: str
    details: list[str] = field(default_factory=list)


@dataclass
class Synced:
    """One client as the checks see it: its answers, what it sent, its state."""

    name: str
    workstation_id: str
    outcomes: dict[int, dict[str, Any]]
    sent: dict[int, dict[str, Any]]
    state: dict[str, tuple[str, int, Any]] | None  # after its final pull (None: not pulled)
    unanswered: int
    scoped: bool = False  # a scoped workstation: judged by check_scoped
    scope: list[str] | None = None  # its scope as the client holds it (None: whole tenant)


async def pull_from_zero(http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    """Every entity's latest envelope, tombstones included, following cursors."""
    latest: dict[str, dict[str, Any]] = {}
    since = 0
    for _ in range(10_000):  # bounded: 5000 per page
        response = await http.get("/api/v1/sync/pull", params={"since": since, "limit": 5000})
        response.raise_for_status()
        page = response.json()
        for envelope in page["changes"]:
            latest[envelope["id"]] = envelope
        since = page["cursor"]
        if not page["has_more"]:
            break
    return latest


async def journal_rows(dsn: str, customer_id: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(
            await conn.fetch(
                "SELECT version, entity_type, entity_id::text AS entity_id, op, payload, "
                "workstation_id::text AS workstation_id, mutation_id, state "
                "FROM sync_journal WHERE customer_id = $1 ORDER BY version",
                customer_id,
            )
        )
    finally:
        await conn.close()


def _effective(result: dict[str, Any]) -> str:
    return str(result.get("original_status") or result["status"])


def _subset_differs(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    return [k for k, v in expected.items() if actual.get(k) != v]


def check_acknowledged(
    clients: list[Synced],
    pulled: dict[str, dict[str, Any]],
    journal: list[asyncpg.Record],
    merges: list[dict[str, Any]],
) -> list[Check]:
    by_key = {(r["workstation_id"], r["mutation_id"]): r for r in journal if r["mutation_id"]}
    versions_of: dict[str, set[int]] = {}
    payload_at: dict[tuple[str, int], Any] = {}
    for r in journal:
        versions_of.setdefault(r["entity_id"], set()).add(r["version"])
        payload_at[(r["entity_id"], r["version"])] = r["payload"]
    acknowledged = lost = stale = mismatched = refused_in_journal = noop_deletes = 0

    def _journaled(envelope: dict[str, Any]) -> bool:  # a later change the journal holds
        return envelope["version"] in versions_of.get(envelope["id"], set())

    details: list[str] = []
    for c in clients:
        for mid, result in sorted(c.outcomes.items()):
            status, wire = _effective(result), c.sent.get(mid)
            row = by_key.get((c.workstation_id, mid))
            if status != "applied":
                if row is not None:
                    refused_in_journal += 1
                    details.append(f"{c.name} #{mid} answered {status} but journaled v{row[0]}")
                continue
            acknowledged += 1
            version = int(result["version"])
            if row is None and wire and wire["op"] == "delete":
                # "A delete of an entity that is already deleted is applied as a
                # no-op": no row of its own, but the entity must be a tombstone.
                envelope = pulled.get(wire["id"])
                if envelope is not None and (
                    envelope["op"] == "delete"
                    or (envelope["version"] > version and _journaled(envelope))
                ):
                    noop_deletes += 1
                    continue
            if row is None or row["version"] != version:
                lost += 1
                op = (wire or {}).get("op")
                details.append(f"{c.name} #{mid} {op} applied v{version}: not in the journal")
                continue
            entity_id = row["entity_id"]
            envelope = pulled.get(entity_id)
            if envelope is None or envelope["version"] < version:
                lost += envelope is None
                stale += envelope is not None
                seen = "absent" if envelope is None else f"v{envelope['version']}"
                details.append(f"{c.name} #{mid} {entity_id} applied v{version}: pull has {seen}")
            elif envelope["version"] > version:
                if envelope["version"] not in versions_of.get(entity_id, set()):
                    mismatched += 1
                    details.append(f"{entity_id}: pull has v{envelope['version']}, not journaled")
            elif envelope["op"] != row["op"]:
                mismatched += 1
                details.append(f"{entity_id} v{version}: pull says {envelope['op']}")
            elif row["op"] == "upsert":
                wrong = _subset_differs(
                    _payload(payload_at[(entity_id, version)]), envelope["data"]
                )
                if wire and row["entity_type"] != "venue":  # venues may merge disjoint edits
                    wrong += _subset_differs(wire.get("data") or {}, envelope["data"])
                if wrong:
                    mismatched += 1
                    details.append(f"{entity_id} v{version}: fields differ {sorted(set(wrong))}")
    for merge in merges:
        acknowledged += 1
        survivor, merged = pulled.get(merge["survivor"]), pulled.get(merge["merged"])
        if survivor is None or survivor["version"] < merge["version"]:
            stale += 1
            details.append(f"merge v{merge['version']}: survivor {merge['survivor']} behind")
        superseded = merged is not None and merged["version"] > merge["version"]
        if merged is None or (merged["op"] != "delete" and not superseded):
            stale += 1
            details.append(f"merge v{merge['version']}: {merge['merged']} not a tombstone")
    return [
        Check(
            "acknowledged writes in pull-from-0",
            lost == 0 and stale == 0 and mismatched == 0,
            f"{acknowledged} acknowledged: {lost} lost, {stale} stale, {mismatched} mismatched"
            f" ({noop_deletes} no-op deletes)",
            details,
        ),
        Check(
            "refused mutations never journaled",
            refused_in_journal == 0,
            f"{refused_in_journal} journaled",
        ),
    ]


def _payload(value: Any) -> dict[str, Any]:
    import json

    if isinstance(value, str):
        value = json.loads(value)
    return dict(value or {})


def check_once(journal: list[asyncpg.Record], resend_violations: list[str]) -> Check:
    seen: dict[tuple[str, int], int] = {}
    for r in journal:
        if r["mutation_id"] is not None:
            key = (r["workstation_id"], r["mutation_id"])
            seen[key] = seen.get(key, 0) + 1
    doubled = [f"{ws} #{mid} journaled {n} times" for (ws, mid), n in seen.items() if n > 1]
    return Check(
        "nothing applied twice",
        not doubled and not resend_violations,
        f"{len(doubled)} doubled in the journal, {len(resend_violations)} resends answered anew",
        doubled + resend_violations,
    )


def live_state(pulled: dict[str, dict[str, Any]]) -> dict[str, tuple[str, int, Any]]:
    return {
        k: (e["type"], e["version"], e["data"]) for k, e in pulled.items() if e["op"] != "delete"
    }


def check_converged(
    clients: list[Synced],
    bootstrap: dict[str, tuple[str, int, Any]],
    pulled: dict[str, dict[str, Any]],
) -> list[Check]:
    checks = []
    live = live_state(pulled)
    differ = sorted(k for k in set(live) | set(bootstrap) if live.get(k) != bootstrap.get(k))
    checks.append(
        Check(
            "bootstrap equals pull-from-0",
            not differ,
            f"{len(bootstrap)} live entities, {len(differ)} differ",
            [
                f"{k}: pull {live.get(k)!r:.120} / bootstrap {bootstrap.get(k)!r:.120}"
                for k in differ
            ],
        )
    )
    details: list[str] = []
    differing = 0
    whole = [c for c in clients if not c.scoped]
    for c in whole:
        if c.state is None:
            differing += 1
            details.append(f"{c.name}: its final pull failed")
            continue
        keys = set(c.state) | set(bootstrap)
        wrong = sorted(k for k in keys if c.state.get(k) != bootstrap.get(k))
        if wrong:
            differing += 1
            details.append(f"{c.name}: {len(wrong)} entities differ")
            details += [
                f"  {k}: {_brief(c.state.get(k))} / server {_brief(bootstrap.get(k))}"
                for k in wrong[:4]
            ]
    checks.append(
        Check(
            "workstations equal the server",
            not details,
            f"{sum(c.state is not None for c in whole)}/{len(whole)} converged"
            if not details
            else f"{differing} of {len(whole)} differ",
            details,
        )
    )
    unanswered = [f"{c.name}: {c.unanswered} unanswered" for c in clients if c.unanswered]
    checks.append(
        Check(
            "every push answered in the end",
            not unanswered,
            f"{sum(c.unanswered for c in clients)} unanswered",
            unanswered,
        )
    )
    return checks


TENANT_WIDE_TYPES = ("kit", "drone")


def restrict(
    state: dict[str, tuple[str, int, Any]], scope: list[str] | None
) -> dict[str, tuple[str, int, Any]]:
    """The part of a live state a workstation with `scope` holds: the scope's
    venues, their world nodes, edges and operations, and every kit and drone."""
    if scope is None:
        return dict(state)
    venues = set(scope)

    def inside(entity_id: str, entity_type: str, data: Any) -> bool:
        if entity_type in TENANT_WIDE_TYPES:
            return True
        if entity_type == "venue":
            return entity_id in venues
        return str((data or {}).get("venue_id")) in venues

    return {k: v for k, v in state.items() if inside(k, v[0], v[2])}


@dataclass
class ScopedView:
    """What the server says of one scoped workstation at the end."""

    name: str
    server_scope: dict[str, Any] | None  # GET /sync/scope (None: the call failed)
    bootstrap: dict[str, tuple[str, int, Any]] | None  # a fresh scoped bootstrap with its key
    scope_version: int  # the client's


def check_scoped(
    clients: list[Synced],
    views: dict[str, ScopedView],
    bootstrap: dict[str, tuple[str, int, Any]],
    changes: int,
    lost: int,
    violations: list[str],
) -> list[Check]:
    """Each scoped workstation holds exactly the server's live state restricted
    to its scope (nothing skipped, nothing extra), its scope is the server's,
    and a fresh bootstrap with its key streams that same state."""
    scoped = [c for c in clients if c.scoped]
    details: list[str] = []
    failing = skipped = extra = stale = 0
    held = 0
    for c in scoped:
        view = views.get(c.name)
        if c.state is None:
            failing += 1
            details.append(f"{c.name}: its final pull failed")
            continue
        expected = restrict(bootstrap, c.scope)
        held += len(expected)
        missing = sorted(set(expected) - set(c.state))
        more = sorted(set(c.state) - set(expected))
        wrong = sorted(k for k in set(expected) & set(c.state) if expected[k] != c.state[k])
        skipped, extra, stale = skipped + len(missing), extra + len(more), stale + len(wrong)
        scope = "whole tenant" if c.scope is None else f"{len(c.scope)} venues"
        problems = []
        if missing or more or wrong:
            problems.append(
                f"{len(missing)} skipped, {len(more)} extra, {len(wrong)} stale "
                f"of {len(expected)} in scope ({scope})"
            )
            problems += [f"  skipped {k}: server {_brief(expected[k])}" for k in missing[:3]] + [
                f"  extra {k}: holds {_brief(c.state[k])}" for k in more[:3]
            ]
            problems += [
                f"  stale {k}: holds {_brief(c.state[k])} / server {_brief(expected[k])}"
                for k in wrong[:3]
            ]
        if view is None or view.server_scope is None:
            problems.append("GET /sync/scope failed")
        else:
            server_venues = view.server_scope.get("venues")
            if (sorted(server_venues) if server_venues is not None else None) != (
                sorted(c.scope) if c.scope is not None else None
            ) or view.server_scope.get("scope_version") != view.scope_version:
                problems.append(
                    f"scope differs: client v{view.scope_version} {c.scope}, server "
                    f"v{view.server_scope.get('scope_version')} {server_venues}"
                )
        if view is None or view.bootstrap is None:
            problems.append("its scoped bootstrap failed")
        elif view.bootstrap != expected:
            keys = set(view.bootstrap) | set(expected)
            differ = sorted(k for k in keys if view.bootstrap.get(k) != expected.get(k))
            problems.append(f"scoped bootstrap: {len(differ)} of {len(keys)} differ")
            problems += [
                f"  {k}: bootstrap {_brief(view.bootstrap.get(k))} / server "
                f"{_brief(expected.get(k))}"
                for k in differ[:3]
            ]
        if problems:
            failing += 1
            details += [f"{c.name}: {problems[0]}", *problems[1:]]
    return [
        Check(
            "scoped workstations equal the server in scope",
            not details and bool(scoped),
            f"{len(scoped) - failing}/{len(scoped)} converged on {held} entities in scope: "
            f"{skipped} skipped, {extra} extra, {stale} stale"
            if scoped
            else "no scoped workstation",
            details,
        ),
        Check(
            "scope requests retried: same answer",
            not violations,
            f"{changes} scope changes, {lost} answers lost and resent, "
            f"{len(violations)} answered differently",
            violations,
        ),
    ]


def _brief(entry: tuple[str, int, Any] | None) -> str:
    if entry is None:
        return "absent"
    entity_type, version, data = entry
    return f"{entity_type} v{version} {str(data)[:60]}"


def longest_stall(stalls: list[Stall], start: float, end: float) -> float:
    return max((s.end - s.start for s in stalls if s.start <= end and s.end >= start), default=0.0)


def check_faults(faults: list[Fault], stalls: list[Stall], kinds: tuple[str, ...]) -> list[Check]:
    missing = [k for k in kinds if not any(f.kind == k and not f.error for f in faults)]
    failed = [f"{f.kind}: {f.error}" for f in faults if f.error]
    checks = [
        Check(
            "every fault kind injected",
            not missing and not failed,
            f"{len(faults)} faults" + (f", missing {missing}" if missing else ""),
            failed,
        )
    ]
    over = []
    for f in faults:
        if f.kind in NEO4J_FAULTS:
            stall = longest_stall(stalls, f.start, f.end)
            if stall > f.duration + STALL_SLACK:
                over.append(f"{f.kind}: stalled {stall:.1f}s, fault {f.duration:.1f}s")
    checks.append(
        Check(
            f"pull stall <= Neo4j fault + {STALL_SLACK:.0f}s",
            not over,
            f"{len(over)} over",
            over,
        )
    )
    return checks


def check_poison(poison: list[PoisonOutcome], expected: int) -> list[Check]:
    accepted = [f"{p.label}: push {p.push_status}, REST {p.rest_status}" for p in poison]
    bad = [a for a, p in zip(accepted, poison, strict=True) if not p.refused]
    blocked = [f"{p.label}: next write {p.follower_status}" for p in poison]
    blocked = [b for b, p in zip(blocked, poison, strict=True) if p.follower_status != "applied"]
    return [
        Check(
            "poison refused (rejected / 422)",
            not bad and len(poison) == expected,
            f"{len(poison) - len(bad)}/{expected} refused",
            bad,
        ),
        Check("writes after poison applied", not blocked, f"{len(blocked)} blocked", blocked),
    ]


def check_verify(code: int, output: str, failed_ids: set[str], customer_id: str) -> Check:
    mentioned = set(UUID_RE.findall(output)) - {customer_id}
    excused = code != 0 and failed_ids and mentioned and mentioned <= failed_ids
    lines = [line for line in output.splitlines() if line.strip()][-12:]
    return Check(
        "overwatch verify clean",
        code == 0 or bool(excused),
        f"exit {code}" + (" (drift only in failed rows)" if excused else ""),
        [] if code == 0 else lines,
    )


def print_report(
    checks: list[Check],
    faults: list[Fault],
    stalls: list[Stall],
    poison: list[PoisonOutcome],
    started: float,
    push_spans: list[tuple[float, float]],
    show: int = 8,
) -> None:
    print("\nfault               at      lasted  longest pull stall  longest push")
    for f in faults:
        stall = longest_stall(stalls, f.start, f.end)
        push = max((e - s for s, e in push_spans if s <= f.end and e >= f.start), default=0.0)
        note = f.error or f.detail
        print(
            f"{f.kind:<18} {f.start - started:6.1f}s {f.duration:7.1f}s {stall:8.1f}s"
            f"           {push:6.1f}s   {note}"
        )
    outside = [
        s.end - s.start
        for s in stalls
        if not any(s.start <= f.end and s.end >= f.start for f in faults)
    ]
    print(f"pull stalls outside faults: {len(outside)}, longest {max(outside, default=0):.1f}s")
    if poison:
        print("\npoison value                                       push       then      REST")
        for p in poison:
            print(f"{p.label[:50]:<50} {p.push_status:<10} {p.follower_status:<9} {p.rest_status}")
    width = max(len(c.name) for c in checks)
    print(f"\n{'invariant':<{width}}  result  value")
    for c in checks:
        print(f"{c.name:<{width}}  {'ok' if c.ok else 'FAIL':<6}  {c.value}")
        for line in c.details[:show]:
            print(f"{'':<{width}}          {line}")
        if len(c.details) > show:
            print(f"{'':<{width}}          ... {len(c.details) - show} more")
