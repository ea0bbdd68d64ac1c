"""The seeded fault schedule and the poison mutations sent while it runs.

Kinds: `neo4j_kill` (SIGKILL, then `stack.sh up neo4j`), `neo4j_hang` (SIGSTOP
longer than the driver's timeouts, then SIGCONT), `api_kill` (SIGKILL one API
process, restart it on its port), `postgres_restart` (`pg_ctl -m fast
restart` while a push is in flight). The first cycle runs every kind once, in
a seeded order; later cycles pick kinds at random until the time is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from api.client import SyncClient
from bench.chaos.stack import ChaosStack
from bench.chaos.workload import Tracker

FAULT_KINDS = ("neo4j_kill", "neo4j_hang", "api_kill", "postgres_restart")
NEO4J_FAULTS = ("neo4j_kill", "neo4j_hang")

# Values Neo4j cannot store (issue 13): each must be refused, and must never
# stop the tenant's later writes. (type, field, value)
POISON: list[tuple[str, str, Any]] = [
    ("venue", "properties", {"x": [1, "a"]}),
    ("venue", "properties", {"x": [True, 1]}),
    ("operation", "started_at", "2026-01-01T10:00:00+18:01"),
    ("operation", "started_at", "2026-01-01T10:00:00+19:00"),
    ("operation", "started_at", "9999-12-31T23:59:59-14:00"),
    ("venue", "name", "nul\u0000name"),
]
REST_PATHS = {"venue": "/api/v1/venues", "operation": "/api/v1/operations"}


@dataclass
class Fault:
    kind: str
    start: float
    end: float = 0.0
    detail: str = ""
    error: str = ""

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class PoisonOutcome:
    label: str
    push_status: str  # the poison mutation's answer, or "HTTP nnn" for the whole push
    follower_status: str  # the ordinary mutation after it in the same push
    rest_status: int | None  # the same value through the REST endpoint
    refused: bool = False


@dataclass
class Schedule:
    stack: ChaosStack
    tracker: Tracker
    rng: random.Random
    seconds: float
    poisoner: SyncClient
    faults: list[Fault] = field(default_factory=list)
    poison: list[PoisonOutcome] = field(default_factory=list)
    venue_for_poison: str = ""
    started: float = 0.0  # the run's start, for the log lines
    sent: dict[int, dict[str, Any]] = field(default_factory=dict)  # the poisoner's mutations

    async def run(self) -> None:
        """Faults one after another, poison in between, until `seconds` have
        passed and every kind ran at least once."""
        started = self.started
        kinds = list(FAULT_KINDS)
        self.rng.shuffle(kinds)
        poison = list(range(len(POISON)))
        self.rng.shuffle(poison)
        await asyncio.sleep(self.rng.uniform(2.0, 4.0))
        while kinds or time.monotonic() - started < self.seconds:
            kind = kinds.pop(0) if kinds else self.rng.choice(FAULT_KINDS)
            # Poison before the fault (all of it before the first cycle's last
            # one), so the run ends on a fault and the heal clock starts there.
            for _ in range(self.rng.randint(1, 2) if kinds else len(poison)):
                if poison:
                    await self.send_poison(poison.pop())
            await asyncio.sleep(self.rng.uniform(1.0, 3.0))
            await self.inject(kind)
            await asyncio.sleep(self.rng.uniform(1.0, 4.0))

    async def inject(self, kind: str) -> None:
        fault = Fault(kind, time.monotonic())
        self.faults.append(fault)
        print(f"[chaos] fault {kind} at +{fault.start - self.started:.1f}s", flush=True)
        try:
            if kind == "neo4j_kill":
                self.stack.signal_neo4j(signal.SIGKILL)
                await asyncio.sleep(self.rng.uniform(1.0, 4.0))
                await self.stack.neo4j_up()
            elif kind == "neo4j_hang":
                hold = self.rng.uniform(7.0, 11.0)  # driver: 5 s connect and retry timeouts
                fault.detail = f"stopped {hold:.1f}s"
                self.stack.signal_neo4j(signal.SIGSTOP)
                try:
                    await asyncio.sleep(hold)
                finally:
                    self.stack.signal_neo4j(signal.SIGCONT)
            elif kind == "api_kill":
                api = self.rng.choice(self.stack.apis)
                fault.detail = api.name
                self.stack.kill_api(api)
                await asyncio.sleep(self.rng.uniform(0.5, 2.0))
                await self.stack.start_api(api)
            elif kind == "postgres_restart":
                waited = time.monotonic()
                while self.tracker.pushes_in_flight == 0 and time.monotonic() - waited < 5:
                    await asyncio.sleep(0.01)
                fault.detail = f"pushes in flight {self.tracker.pushes_in_flight}"
                await self.stack.postgres_restart()
        except Exception as exc:  # a fault that could not be injected is reported
            fault.error = f"{type(exc).__name__}: {exc}"[:300]
        fault.end = time.monotonic()

    # ---------------------------------------------------------------- poison
    async def _ensure_venue(self) -> None:
        if self.venue_for_poison:
            return
        venue = str(uuid.uuid4())
        first = self.poisoner.upsert("venue", venue, {"name": "Poison target"})
        self.sent[first.mutation_id] = first.wire()
        for _ in range(20):
            with contextlib.suppress(Exception):
                await self.poisoner.push()
                if not self.poisoner.pending and not self.poisoner.unanswered:
                    self.venue_for_poison = venue
                    return
            await asyncio.sleep(1.0)

    def _data(self, entity_type: str, name: str, value: Any) -> dict[str, Any]:
        if entity_type == "venue":
            data: dict[str, Any] = {"name": "Poisoned venue"}
        else:
            data = {"venue_id": self.venue_for_poison, "status": "planned"}
        data[name] = value
        return data

    async def send_poison(self, index: int) -> None:
        """Push [poison, ordinary] in one push, then the poison through REST."""
        entity_type, name, value = POISON[index]
        label = f"{entity_type}.{name}={value!r}"
        await self._ensure_venue()
        client = self.poisoner
        bad = client.upsert(entity_type, str(uuid.uuid4()), self._data(entity_type, name, value))
        good = client.upsert("venue", str(uuid.uuid4()), {"name": "After poison"})
        self.sent.update({m.mutation_id: m.wire() for m in (bad, good)})
        push_status = follower = "unanswered"
        deadline = time.monotonic() + 60  # a push that never gets an answer is reported so
        while time.monotonic() < deadline:
            try:
                answer = await client.push(limit=2)
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code < 500:
                    push_status = follower = f"HTTP {exc.response.status_code}"
                    ids = (bad.mutation_id, good.mutation_id)
                    client.pending = [m for m in client.pending if m.mutation_id not in ids]
                    break
            except Exception as exc:
                self.tracker.error("poison push", exc)
            else:
                if answer is not None:
                    by_id = {r["mutation_id"]: r for r in answer["results"]}
                    push_status = _status(by_id.get(bad.mutation_id))
                    follower = _status(by_id.get(good.mutation_id))
                    self.tracker.saw(answer.get("write_checkpoint"))
                    break
            await asyncio.sleep(1.0)
        rest: int | None = None
        body = {"id": str(uuid.uuid4()), **self._data(entity_type, name, value)}
        for _ in range(5):
            with contextlib.suppress(httpx.HTTPError):
                rest = (await client.http.post(REST_PATHS[entity_type], json=body)).status_code
            if rest is not None and rest < 500:
                break
            await asyncio.sleep(1.0)
        refused = push_status in ("rejected", "HTTP 422") and rest in (400, 422)
        self.poison.append(PoisonOutcome(label, push_status, follower, rest, refused))
        print(f"[chaos] poison {label}: push {push_status}, then {follower}; REST {rest}")


def _status(result: dict[str, Any] | None) -> str:
    if result is None:
        return "missing"
    return str(result.get("original_status") or result["status"])
