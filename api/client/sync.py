"""A small reference workstation client for the sync protocol (versions 1 and 2).

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

Scopes (protocol version 2): `await client.set_scope([venue_a, venue_b])`
syncs only those venues (their world nodes, edges and operations) plus the
tenant-wide kits and drones. The server answers a cursor at or below the
client's own; the client adopts it and the next pull brings the added
venues' whole current state and a removal (`out_of_scope: true`, a delete)
for every entity it holds that left the scope. A scope request that got no
answer is kept in `unanswered_scope` and sent again, unchanged, before any
other scope request and before the next pull: pulling with the old cursor
while the server already holds the new scope could pass over the added
venues' older entities. `clear_scope()` returns to the whole tenant and
pulls again from 0.
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
TENANT_WIDE_TYPES = ("kit", "drone")  # in every scope


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
    # Scope (protocol v2): the venues this client syncs (None: the whole
    # tenant), the `scope_version` of the last scope answer it holds, and a
    # scope request that got no answer (sent again, unchanged, before the
    # next scope request or pull). Persist these three with the cursor.
    scope: list[str] | None = None
    scope_version: int = 0
    unanswered_scope: dict[str, Any] | None = None
    last_scope_answer: dict[str, Any] | None = None
    # Ids a pull from 0 after clear_scope() has brought so far (None: none running).
    resync: set[str] | None = None

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
        """Pull until `has_more` is false; returns how many envelopes were applied.

        A scope request still unanswered is sent again first (see the module
        docstring): the cursor to pull from depends on its answer.
        """
        if self.unanswered_scope is not None:
            await self._send_scope(self.unanswered_scope)
        applied = 0
        while True:
            response = await self._request(
                "GET", "/pull", params={"since": self.cursor, "limit": limit}
            )
            response.raise_for_status()
            page = response.json()
            for envelope in page["changes"]:
                self.apply(envelope)
                if self.resync is not None:
                    self.resync.add(envelope["id"])
            applied += len(page["changes"])
            self.cursor = page["cursor"]
            if not page["has_more"]:
                if self.resync is not None:  # a pull from 0 ended: drop what it did not bring
                    seen = self.resync
                    self.confirmed = {k: v for k, v in self.confirmed.items() if k in seen}
                    self.resync = None
                return applied

    def apply(self, envelope: dict[str, Any]) -> None:
        """One pulled envelope. A delete, including a scope removal
        (`out_of_scope: true`: the entity still exists but left this client's
        scope), drops the entity; one this client never held is a no-op."""
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
        """Replace the confirmed state with a snapshot, then pull from it.

        A scoped workstation's snapshot holds only its scope (the header says
        which); a scope request still unanswered is sent again first.
        """
        if self.unanswered_scope is not None:
            await self._send_scope(self.unanswered_scope)
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
                        scope = record.get("scope")  # protocol v2: scoped streams only
                        self.scope = None if scope is None else [str(v) for v in scope["venues"]]
                        if scope is not None:
                            self.scope_version = int(scope["scope_version"])
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
        self.resync = None  # the snapshot is whole: nothing stale to prune
        return len(confirmed) + await self.pull()

    # ------------------------------------------------------ scopes (v2)
    async def set_scope(self, venues: list[str]) -> dict[str, Any]:
        """Sync only `venues` (plus kits and drones); returns the server's answer.

        Sends the client's cursor and the `scope_version` of the last scope
        answer it holds, then adopts the answered cursor (at or below its
        own): the next `pull()` brings the added venues' current state and
        removals for what left the scope. A request without an answer
        (transport error, 5xx) stays in `unanswered_scope` and is sent again
        unchanged, before this one, by the next call or pull. 422
        `unknown_venue`: nothing changed (raised as `httpx.HTTPStatusError`).
        """
        if self.unanswered_scope is not None:
            await self._send_scope(self.unanswered_scope)
        body = {
            "venues": sorted({str(v) for v in venues}),
            "cursor": self.cursor,
            "scope_version": self.scope_version,
        }
        return await self._send_scope(body)

    async def clear_scope(self) -> dict[str, Any]:
        """Back to the whole tenant (`DELETE /sync/scope`); returns the answer.

        The server answers cursor 0: the next `pull()` brings every entity
        again, and what this client held that the pull from 0 did not bring
        is dropped when it ends. Unanswered, it is sent again like a PUT.
        """
        if self.unanswered_scope is not None:
            await self._send_scope(self.unanswered_scope)
        return await self._send_scope({"venues": None})

    async def fetch_scope(self) -> dict[str, Any]:
        """`GET /sync/scope`: the server's view of this workstation's scope."""
        response = await self._request("GET", "/scope")
        response.raise_for_status()
        return dict(response.json())

    def in_scope(self, entity: dict[str, Any]) -> bool:
        """Whether an envelope (its type, id and data) belongs to this client's scope."""
        if self.scope is None or entity["type"] in TENANT_WIDE_TYPES:
            return True
        if entity["type"] == "venue":
            return str(entity.get("id")) in self.scope
        return str((entity.get("data") or {}).get("venue_id")) in self.scope

    async def _send_scope(self, body: dict[str, Any]) -> dict[str, Any]:
        # A copy, kept until answered: a retry must send exactly these bytes.
        self.unanswered_scope = json.loads(json.dumps(body))
        if body["venues"] is None:  # clear_scope
            response = await self._request("DELETE", "/scope")
        else:
            response = await self._request("PUT", "/scope", json=self.unanswered_scope)
        if 400 <= response.status_code < 500:
            self.unanswered_scope = None  # refused: nothing changed on the server
        response.raise_for_status()
        self.unanswered_scope = None
        answer = dict(response.json())
        self._adopt(answer)
        return answer

    def _adopt(self, answer: dict[str, Any]) -> None:
        venues = answer.get("venues")
        self.scope = None if venues is None else [str(v) for v in venues]
        self.scope_version = int(answer["scope_version"])
        # Never forward: the answer is at or below the cursor that was sent.
        self.cursor = min(self.cursor, int(answer["cursor"]))
        if venues is None and self.cursor == 0:
            self.resync = set()  # whole tenant again: prune what the pull from 0 lacks
        self.last_scope_answer = answer

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
