"""Workstations on the reference client: random offline edits, pushes, pulls.

Each workstation owns a `random.Random` derived from the run's seed. It edits
offline (creates, updates with the right and the wrong base version, forced
writes, deletes, venue cascades), pushes random batches, resends every
unanswered push with the same body (`SyncClient.unanswered`), sometimes
resends an answered one, merges venues, and pulls. What the server answered
and how each pull went is recorded for the final checks.

A scoped workstation (protocol v2) holds a random set of the tenant's venues
and changes it at random during the run (grow, shrink, replace, now and then
back to the whole tenant); some of its scope requests lose their answer in
the transport, so the client sends the same request again. It edits only
entities of its scope's venues, sometimes moves an operation (or tries to
move a node, which the server refuses) to a venue outside it, and merges
venues of its scope, sometimes into one outside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from api.client import SyncClient

NODE_KINDS = ("Zone", "Room", "Level", "PerchPoint", "Corridor")
EDGE_TYPES = ("CONNECTS_TO", "ADJACENT_TO", "NEAR")


class FailoverTransport(httpx.AsyncBaseTransport):
    """A load balancer in miniature: send to the preferred API process, and to
    the next one when a connection cannot be made (that process is down).

    `lose_scope_answers`: that many of the next scope PUTs reach the server
    and are answered, but the answer is dropped (a read error), as a flaky
    network would; the answers dropped are kept in `lost_scope_answers`."""

    def __init__(self, ports: list[int], preferred: int) -> None:
        self.ports = ports
        self.preferred = preferred
        self.inner = httpx.AsyncHTTPTransport()
        self.lose_scope_answers = 0
        self.lost_scope_answers: list[tuple[bytes, dict[str, Any]]] = []  # (request, answer)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        order = self.ports[self.preferred :] + self.ports[: self.preferred]
        for n, port in enumerate(order):
            request.url = request.url.copy_with(host="127.0.0.1", port=port)
            try:
                response = await self.inner.handle_async_request(request)
            except httpx.ConnectError:
                if n == len(order) - 1:
                    raise
                continue
            if (
                self.lose_scope_answers > 0
                and request.method == "PUT"
                and request.url.path.endswith("/sync/scope")
            ):
                body = await response.aread()
                if response.status_code == 200:
                    self.lose_scope_answers -= 1
                    self.lost_scope_answers.append((request.content, dict(json.loads(body))))
                    raise httpx.ReadError("the scope answer was lost", request=request)
                return httpx.Response(response.status_code, headers=response.headers, content=body)
            return response
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await self.inner.aclose()


def http_client(ports: list[int], preferred: int, key: str) -> httpx.AsyncClient:
    # Longer than the driver's timeouts, so a hung Neo4j shows as a slow answer
    # (or a timeout the client retries), never as a harness that waits forever.
    return httpx.AsyncClient(
        base_url="http://api",
        transport=FailoverTransport(ports, preferred % len(ports)),
        headers={"X-API-Key": key},
        timeout=httpx.Timeout(20.0, connect=3.0),
    )


@dataclass
class Stall:
    workstation: str
    start: float
    end: float


@dataclass
class Tracker:
    """What every workstation shares: the acknowledged head, in-flight pushes,
    merges the server acknowledged, stalls seen and anything odd."""

    head: int = 0
    pushes_in_flight: int = 0
    merges: list[dict[str, Any]] = field(default_factory=list)
    stalls: list[Stall] = field(default_factory=list)
    resend_violations: list[str] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    pulls: int = 0
    pushes: int = 0
    push_spans: list[tuple[float, float]] = field(default_factory=list)  # every push attempt
    # Scopes: venue ids some workstation created or held live (the pool scope
    # changes draw from), scope changes answered, answers lost and resent,
    # and resent scope requests whose answer differed from the lost one.
    created_venues: set[str] = field(default_factory=set)
    live_venues: dict[str, set[str]] = field(default_factory=dict)  # per unscoped workstation
    scope_changes: int = 0
    scope_answers_lost: int = 0
    scope_violations: list[str] = field(default_factory=list)

    def venue_pool(self) -> list[str]:
        """Venues live as the unscoped workstations last pulled them (a scope
        naming a deleted venue is refused, 422 `unknown_venue`); before any
        pull, the venues created so far."""
        pool: set[str] = set()
        for live in self.live_venues.values():
            pool |= live
        return sorted(pool or self.created_venues)

    def saw(self, version: int | None) -> None:
        if version:
            self.head = max(self.head, int(version))

    def error(self, what: str, exc: BaseException) -> None:
        key = f"{what}: {type(exc).__name__}"
        if isinstance(exc, httpx.HTTPStatusError):
            key = f"{what}: HTTP {exc.response.status_code}"
        self.errors[key] = self.errors.get(key, 0) + 1


@dataclass
class Workstation:
    name: str
    client: SyncClient
    rng: random.Random
    tracker: Tracker
    sent: dict[int, dict[str, Any]] = field(default_factory=dict)  # mutation id -> wire form
    stall_since: float | None = None
    counter: int = 0
    refused_whole: list[int] = field(default_factory=list)  # ids of pushes answered 4xx
    scoped: bool = False  # holds a scope of the tenant's venues (protocol v2)

    # ---------------------------------------------------------------- edits
    def _live(self, entity_type: str, *, confirmed: bool = False) -> list[str]:
        source = (
            {k: {"type": v["type"]} for k, v in self.client.confirmed.items()}
            if confirmed
            else self.client.view()
        )
        return sorted(k for k, v in source.items() if v["type"] == entity_type)

    def _in_venue(self, entity_type: str, venue_id: str) -> list[str]:
        view = self.client.view()
        return sorted(
            k
            for k, v in view.items()
            if v["type"] == entity_type and (v["data"] or {}).get("venue_id") == venue_id
        )

    def _name(self, what: str) -> str:
        self.counter += 1
        return f"{what} {self.name}-{self.counter}"

    def edit(self) -> None:
        """One random offline edit, queued on the client."""
        rng = self.rng
        venues = self._live("venue")
        if self.scoped:  # only venues of its scope (a venue it creates is outside it)
            scope = set(venues if self.client.scope is None else self.client.scope)
            venues = [v for v in venues if v in scope]
        roll = rng.random()
        data: dict[str, Any]
        if not venues or roll < 0.08:
            venue_id = str(uuid.uuid4())
            data = {"name": self._name("Venue"), "properties": {"floors": rng.randint(1, 9)}}
            self._queue(self.client.upsert("venue", venue_id, data))
            self.tracker.created_venues.add(venue_id)
            return
        if self.scoped and roll < 0.12:
            self._move_out()
            return
        venue = rng.choice(venues)
        nodes = self._in_venue("world_node", venue)
        if roll < 0.35:
            data = {
                "venue_id": venue,
                "kind": rng.choice(NODE_KINDS),
                "name": self._name("Node"),
                "properties": {"level": rng.randint(0, 5)},
            }
            self._queue(self.client.upsert("world_node", str(uuid.uuid4()), data))
        elif roll < 0.5 and len(nodes) >= 2:
            a, b = rng.sample(nodes, 2)
            edge: dict[str, Any] = {"venue_id": venue, "type": rng.choice(EDGE_TYPES)}
            edge |= {"from_id": a, "to_id": b, "confidence": round(rng.random(), 3)}
            self._queue(self.client.upsert("world_edge", str(uuid.uuid4()), edge))
        elif roll < 0.58:
            data = {"venue_id": venue, "status": "planned", "name": self._name("Op")}
            self._queue(self.client.upsert("operation", str(uuid.uuid4()), data))
        elif roll < 0.85:
            self._update()
        elif roll < 0.97:
            self._delete()
        else:
            self._queue(self.client.delete("venue", venue))  # cascades on the server

    def _update(self) -> None:
        """Change a confirmed entity: right base, wrong base, or wrong base forced."""
        rng = self.rng
        known = sorted(self.client.confirmed)
        if not known:
            return
        entity = self.client.confirmed[rng.choice(known)]
        data = dict(entity["data"])
        if entity["type"] in ("venue", "world_node", "operation"):
            data["name"] = self._name(entity["type"].title())
        properties = dict(data.get("properties") or {})
        properties["touch"] = rng.randint(0, 1000)
        data["properties"] = properties
        kind = rng.random()
        mutation = self.client.upsert(entity["type"], entity["id"], data, force=kind < 0.15)
        if kind < 0.35:  # a stale base: a conflict unless forced or mergeable
            mutation.base_version = max(0, mutation.base_version - rng.randint(1, 3))
        self._queue(mutation)

    def _delete(self) -> None:
        candidates = [
            k
            for t in ("world_node", "world_edge", "operation")
            for k in self._live(t, confirmed=True)
        ]
        if candidates:
            entity_id = self.rng.choice(candidates)
            self._queue(self.client.delete(self.client.confirmed[entity_id]["type"], entity_id))

    def _move_out(self) -> None:
        """Move an operation of the scope to a venue outside it (it leaves the
        scope: a removal), or try to move a node (refused: nodes stay put)."""
        scope = set(self.client.scope or [])
        outside = [v for v in self.tracker.venue_pool() if v not in scope]
        kind = "world_node" if self.rng.random() < 0.25 else "operation"
        candidates = self._live(kind, confirmed=True)
        if not outside or not candidates:
            return
        entity = self.client.confirmed[self.rng.choice(candidates)]
        data = dict(entity["data"]) | {"venue_id": self.rng.choice(outside)}
        self._queue(self.client.upsert(kind, entity["id"], data))

    def _queue(self, mutation: Any) -> None:
        self.sent[mutation.mutation_id] = mutation.wire()

    # ----------------------------------------------------------------- wire
    async def push(self) -> None:
        limit = self.rng.randint(1, 25)
        body = self.client.unanswered
        ids = (
            [m["mutation_id"] for m in body["mutations"]]
            if body
            else [m.mutation_id for m in self.client.pending[:limit]]
        )
        self.tracker.pushes_in_flight += 1
        started = time.monotonic()
        try:
            answer = await self.client.push(limit=limit)
        except httpx.HTTPStatusError as exc:
            self.tracker.error("push", exc)
            if exc.response.status_code < 500:  # refused whole, nothing recorded: drop them
                self.refused_whole.extend(ids)
                self.client.pending = [m for m in self.client.pending if m.mutation_id not in ids]
            return
        except Exception as exc:  # unanswered: the next push resends the same body
            self.tracker.error("push", exc)
            return
        finally:
            self.tracker.pushes_in_flight -= 1
            if ids:
                self.tracker.push_spans.append((started, time.monotonic()))
        if answer:
            self.tracker.pushes += 1
            self.tracker.saw(answer.get("write_checkpoint"))
            for result in answer["results"]:
                self.tracker.saw(result.get("version"))
            # Remember exactly what the server saw for the retried mutations.
            if self.client.last_pushed:
                for m in self.client.last_pushed["mutations"]:
                    self.sent[m["mutation_id"]] = m

    async def resend_answered(self) -> None:
        """Send an answered push again: every result must repeat the original."""
        body = self.client.last_pushed
        if not body:
            return
        try:
            response = await self.client.http.post("/api/v1/sync/push", json=body)
            response.raise_for_status()
        except Exception as exc:
            self.tracker.error("resend", exc)
            return
        for result in response.json()["results"]:
            original = self.client.outcomes.get(result["mutation_id"])
            if original is None:
                continue
            first = original.get("original_status") or original["status"]
            again = result.get("original_status") or result["status"]
            if (
                result["status"] != "duplicate"
                or first != again
                or original.get("version") != result.get("version")
            ):
                self.tracker.resend_violations.append(
                    f"{self.name} mutation {result['mutation_id']}: first {first}"
                    f"@{original.get('version')}, resent {result['status']}/{again}"
                    f"@{result.get('version')}"
                )

    async def pull(self) -> None:
        """Pull; a pull that errs or ends below the head acknowledged before it
        started (while that head is ahead of the cursor) is a stall."""
        target, before, started = self.tracker.head, self.client.cursor, time.monotonic()
        try:
            await self.client.pull(limit=self.rng.choice((50, 200, 500)))
            ok = self.client.cursor >= target
        except Exception as exc:
            self.tracker.error("pull", exc)
            ok = False
        self.tracker.pulls += 1
        if not self.scoped:
            self.tracker.live_venues[self.name] = set(self._live("venue", confirmed=True))
        now = time.monotonic()
        if ok or target <= before:
            if ok and self.stall_since is not None:
                self.tracker.stalls.append(Stall(self.name, self.stall_since, now))
                self.stall_since = None
        elif self.stall_since is None:
            self.stall_since = started

    async def merge(self) -> None:
        """Fold one confirmed venue into another (an online call, not retried:
        a merge has no idempotency key)."""
        venues = self._live("venue", confirmed=True)
        if len(venues) < (2 if self.scoped else 3):
            return
        survivor, merged = self.rng.sample(venues, 2)
        outside = [v for v in self.tracker.venue_pool() if v not in venues]
        if self.scoped and outside and self.rng.random() < 0.5:
            survivor = self.rng.choice(outside)  # its nodes leave the scope
        try:
            response = await self.client.http.post(
                f"/api/v1/venues/{survivor}/merge", json={"merge_ids": [merged]}
            )
        except Exception as exc:
            self.tracker.error("merge", exc)
            return
        if response.status_code == 200:
            version = response.json().get("version")
            self.tracker.saw(version)
            self.tracker.merges.append(
                {"survivor": survivor, "merged": merged, "version": version, "by": self.name}
            )
        else:
            self.tracker.errors[f"merge: HTTP {response.status_code}"] = (
                self.tracker.errors.get(f"merge: HTTP {response.status_code}", 0) + 1
            )

    # --------------------------------------------------------------- scopes
    def _next_scope(self) -> list[str] | None:
        """Grow, shrink or replace the scope (None: back to the whole tenant)."""
        rng = self.rng
        pool = self.tracker.venue_pool()
        # Venues of the scope deleted or merged away since (their tombstones
        # were pulled) are mostly left out, and now and then kept: the server
        # accepts a venue the tenant had, and its pull must stay exact.
        live = set(pool) | set(self._live("venue", confirmed=True))
        keep_gone = rng.random() < 0.2
        current = [v for v in self.client.scope or [] if keep_gone or v in live]
        roll = rng.random()
        if self.client.scope is not None and roll < 0.08:
            return None
        if roll < 0.45 or not current:  # grow
            extra = [v for v in pool if v not in current]
            return current + rng.sample(extra, min(len(extra), rng.randint(1, 2)))
        if roll < 0.75:  # shrink (now and then to no venue at all: kits and drones only)
            keep = rng.randint(0 if rng.random() < 0.1 else 1, max(1, len(current) - 1))
            return rng.sample(current, min(keep, len(current)))
        return rng.sample(pool, min(len(pool), rng.randint(1, 3)))  # replace

    async def change_scope(self, venues: list[str] | None = None) -> None:
        """Set `venues` as the scope, or (None) a random change; sometimes the
        answer is lost in transit and the client sends the same request again
        (its `_request` retry), which must be answered the same."""
        target = self._next_scope() if venues is None else venues
        transport = getattr(self.client.http, "_transport", None)
        # Not when an older request is still unanswered: the client resends
        # that one first, and its answer is not the one to compare.
        lossy = (
            isinstance(transport, FailoverTransport)
            and target is not None
            and self.client.unanswered_scope is None
        )
        if lossy and self.rng.random() < 0.3:
            assert isinstance(transport, FailoverTransport)
            transport.lose_scope_answers = 1
        try:
            if target is None:
                answer = await self.client.clear_scope()
            else:
                answer = await self.client.set_scope(target)
        except Exception as exc:
            self.tracker.error("scope", exc)
            if isinstance(transport, FailoverTransport):  # unanswered: nothing to compare
                transport.lost_scope_answers.clear()
            return
        finally:
            if isinstance(transport, FailoverTransport):
                transport.lose_scope_answers = 0
        self.tracker.scope_changes += 1
        if isinstance(transport, FailoverTransport) and transport.lost_scope_answers:
            same = ("venues", "scope_version", "cursor")
            for sent, lost in transport.lost_scope_answers:
                self.tracker.scope_answers_lost += 1
                if [lost.get(k) for k in same] != [answer.get(k) for k in same]:
                    self.tracker.scope_violations.append(
                        f"{self.name}: request {sent[:200]!r} answered {lost} then {answer}"
                    )
            transport.lost_scope_answers.clear()

    async def seed_venues(self, count: int, deadline: float) -> None:
        """Create `count` venues before the faults start, so scoped
        workstations have a tenant to choose their first scope from."""
        for _ in range(count):
            venue_id = str(uuid.uuid4())
            data = {"name": self._name("Venue"), "properties": {"floors": self.rng.randint(1, 9)}}
            self._queue(self.client.upsert("venue", venue_id, data))
            self.tracker.created_venues.add(venue_id)
        await self.drain(deadline)

    async def start(self) -> None:
        """A scoped workstation's first scope, then a bootstrap or a pull."""
        if not self.scoped:
            return
        pool = self.tracker.venue_pool()
        await self.change_scope(self.rng.sample(pool, min(len(pool), self.rng.randint(1, 3))))
        try:
            if self.rng.random() < 0.5:
                await self.client.bootstrap(page_size=self.rng.choice((None, 7, 50)))
            else:
                await self.pull()
        except Exception as exc:
            self.tracker.error("start", exc)

    # ---------------------------------------------------------------- loops
    async def run(self, stop_editing: asyncio.Event) -> None:
        """Edit, push and pull until told to stop editing (bounded by the caller)."""
        rng = self.rng
        await self.start()
        while not stop_editing.is_set():
            for _ in range(rng.randint(0, 4)):
                self.edit()
            roll = rng.random()
            if roll < 0.55:
                await self.push()
            elif roll < 0.58:
                await self.resend_answered()
            elif roll < 0.6:
                await self.merge()
            elif self.scoped and roll < 0.68:
                await self.change_scope()
            elif self.scoped and roll < 0.685:
                with contextlib.suppress(Exception):  # replaces the confirmed state whole
                    await self.client.bootstrap(page_size=rng.choice((None, 25)))
            if rng.random() < 0.45:
                await self.pull()
            await asyncio.sleep(rng.uniform(0.05, 0.3))

    async def drain(self, deadline: float) -> None:
        """Push until nothing is pending or unanswered, then pull (by `deadline`)."""
        while time.monotonic() < deadline and (self.client.pending or self.client.unanswered):
            await self.push()
            if self.client.pending or self.client.unanswered:
                await asyncio.sleep(0.3)
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                await self.pull()
                if self.stall_since is None:
                    return
            await asyncio.sleep(0.5)
