"""A small reference workstation client for the sync protocol, version 1.

Written to be read by workstation teams; the tests and benchmarks use it. It
imports nothing from the server. Its model, after Replicache:

- `confirmed` is the server's state as far as this client has pulled it,
  changed only by pull and bootstrap;
- `pending` are local mutations not yet answered by a push;
- what the user sees is `view()`: confirmed with pending laid over it.

A push that fails in transit is retried with the *same* body: the server
recognises mutation ids it already holds, so a retry never applies twice.
Conflicts and rejections drop the local mutation; the next pull brings the
server's state (server wins). After a venue merge, pull brings deletes with
`merged_into`; pending mutations that pointed at the merged venue are
re-pointed at the survivor before they are pushed.

    client = SyncClient(http, workstation_id)
    await client.bootstrap()
    client.upsert("venue", venue_id, {"name": "Harbour Mall"})
    await client.push(); await client.pull()
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

RETRYABLE = {502, 503, 504}
REFERENCE_FIELDS = ("venue_id", "from_id", "to_id")


@dataclass
class PendingMutation:
    mutation_id: int
    type: str
    id: str
    op: str
    base_version: int
    data: dict[str, Any] | None = None
    force: bool = False

    def wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "mutation_id": self.mutation_id,
            "type": self.type,
            "id": self.id,
            "op": self.op,
            "base_version": self.base_version,
        }
        if self.data is not None:
            body["data"] = self.data
        if self.force:
            body["force"] = True
        return body


@dataclass
class SyncClient:
    http: httpx.AsyncClient
    workstation_id: str
    prefix: str = "/api/v1/sync"
    cursor: int = 0
    next_mutation_id: int = 1
    confirmed: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: list[PendingMutation] = field(default_factory=list)
    outcomes: dict[int, dict[str, Any]] = field(default_factory=dict)  # first answer per id
    history: list[dict[str, Any]] = field(default_factory=list)  # every answer, in order
    # The body of a push that got no answer: the next push sends exactly it
    # again before anything newer, so the server can recognise every id in it.
    unanswered: dict[str, Any] | None = None
    last_pushed: dict[str, Any] | None = None  # the last body the server answered
    max_attempts: int = 5

    # ------------------------------------------------------------ local edits
    def upsert(
        self, entity_type: str, entity_id: str, data: dict[str, Any], *, force: bool = False
    ) -> PendingMutation:
        return self._queue(entity_type, entity_id, "upsert", data, force)

    def delete(self, entity_type: str, entity_id: str) -> PendingMutation:
        return self._queue(entity_type, entity_id, "delete", None, False)

    def _queue(
        self, entity_type: str, entity_id: str, op: str, data: dict[str, Any] | None, force: bool
    ) -> PendingMutation:
        seen = self.confirmed.get(entity_id)
        mutation = PendingMutation(
            self.next_mutation_id,
            entity_type,
            entity_id,
            op,
            seen["version"] if seen else 0,
            data,
            force,
        )
        self.next_mutation_id += 1
        self.pending.append(mutation)
        return mutation

    def view(self) -> dict[str, dict[str, Any]]:
        """What the user sees: confirmed state with pending mutations laid over it."""
        state = {k: {"type": v["type"], "data": v["data"]} for k, v in self.confirmed.items()}
        for m in self.pending:
            if m.op == "delete":
                state.pop(m.id, None)
            else:
                state[m.id] = {"type": m.type, "data": m.data}
        return state

    def state(self) -> dict[str, tuple[str, int, Any]]:
        """The confirmed state: id -> (type, version, data)."""
        return {k: (v["type"], v["version"], v["data"]) for k, v in self.confirmed.items()}

    # ----------------------------------------------------------------- wire
    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        delay = 0.05
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = await self.http.request(method, self.prefix + path, **kwargs)
            except httpx.TransportError:
                if attempt == self.max_attempts:
                    raise
            else:
                if response.status_code not in RETRYABLE or attempt == self.max_attempts:
                    return response
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    async def push(self, limit: int = 500) -> dict[str, Any] | None:
        """Push up to `limit` pending mutations; retried with the same body if lost.

        A push that raised without an answer (transport error, 5xx) leaves its
        body in `unanswered`; the next call sends that body again, unchanged,
        before anything newer. A 4xx answer means nothing was recorded: the
        body is dropped and the mutations stay pending for the app to fix.
        """
        if self.unanswered is None:
            if not self.pending:
                return None
            body = {
                "workstation_id": self.workstation_id,
                "protocol_version": 1,
                "mutations": [m.wire() for m in self.pending[:limit]],
            }
            # A copy: a later merge remap must not change what a retry sends.
            self.unanswered = json.loads(json.dumps(body))
        body = self.unanswered
        response = await self._request("POST", "/push", json=body)
        if 400 <= response.status_code < 500:
            self.unanswered = None
        response.raise_for_status()
        self.unanswered = None
        self.last_pushed = body
        answer = response.json()
        answered = {r["mutation_id"] for r in answer["results"]}
        for result in answer["results"]:
            self.outcomes.setdefault(result["mutation_id"], result)
            self.history.append(result)
        self.pending = [m for m in self.pending if m.mutation_id not in answered]
        return dict(answer)

    async def pull(self, limit: int = 500) -> int:
        """Pull until `has_more` is false; returns how many envelopes were applied."""
        applied = 0
        while True:
            response = await self._request(
                "GET", "/pull", params={"since": self.cursor, "limit": limit}
            )
            response.raise_for_status()
            page = response.json()
            for envelope in page["changes"]:
                self.apply(envelope)
            applied += len(page["changes"])
            self.cursor = page["cursor"]
            if not page["has_more"]:
                return applied

    def apply(self, envelope: dict[str, Any]) -> None:
        if envelope["op"] == "delete":
            self.confirmed.pop(envelope["id"], None)
            survivor = envelope.get("merged_into")
            if survivor:
                self._remap(envelope["id"], survivor)
        else:
            self.confirmed[envelope["id"]] = envelope

    def _remap(self, old: str, new: str) -> None:
        for m in self.pending:
            if m.data:
                for name in REFERENCE_FIELDS:
                    if m.data.get(name) == old:
                        m.data[name] = new

    async def bootstrap(self, page_size: int | None = None) -> int:
        """Replace the confirmed state with a snapshot, then pull from it."""
        confirmed: dict[str, dict[str, Any]] = {}
        params: dict[str, Any] = {} if page_size is None else {"page_size": page_size}
        snapshot = None
        while True:
            async with self.http.stream(
                "GET", self.prefix + "/bootstrap", params=params
            ) as response:
                response.raise_for_status()
                digest = hashlib.sha256()
                end: dict[str, Any] = {}
                async for line in response.aiter_lines():
                    if not line:
                        continue
                    record = json.loads(line)
                    if "snapshot_version" in record:
                        snapshot = record["snapshot_version"]
                    elif "end" in record:
                        end = record
                    else:
                        digest.update((line + "\n").encode())
                        confirmed[record["id"]] = record
            if end.get("checksum") != "sha256:" + digest.hexdigest():
                raise ValueError("bootstrap checksum mismatch")
            if end.get("end"):
                break
            params = {"snapshot_version": snapshot, "after": end["next"], "page_size": page_size}
        self.confirmed = confirmed
        self.cursor = int(snapshot or 0)
        return len(confirmed) + await self.pull()

    async def resume_mutation_ids(self) -> None:
        """Continue after the last mutation id the server holds (after a reinstall)."""
        response = await self._request(
            "GET", "/status", params={"workstation_id": self.workstation_id}
        )
        response.raise_for_status()
        self.next_mutation_id = max(
            self.next_mutation_id, int(response.json()["last_mutation_id"]) + 1
        )


def new_id() -> str:
    return str(uuid.uuid4())
