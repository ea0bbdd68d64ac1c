"""Turning requested changes into validated journal `Change`s.

Used by the REST endpoints and by sync push alike, so both obey one set of
rules. Current state comes from `sync_entities` (the journal's latest state
per entity), overlaid with the earlier changes of the same batch, so a batch
may create a venue and its nodes together.

Rules (documented in docs/graph-model.md):
- ids are UUIDs unique across tenants; another tenant's id is reported as
  `id_in_use` without saying whose it is;
- a world node's venue and an edge's venue, type and endpoints are fixed at
  creation (supersede an edge instead of re-pointing it);
- an edge connects two live nodes of its own venue; kinds and types come from
  the ontology allowlist;
- deleting a venue deletes its world nodes and edges (each gets a tombstone)
  and keeps its operations as history; deleting a node deletes its edges.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from api.core.settings import Settings
from api.journal.apply import Ahead
from api.journal.entities import (
    EntityData,
    EntityType,
    OperationData,
    WorldEdgeData,
    WorldNodeData,
    canonical,
    parse_data,
)
from api.journal.record import Change


class ChangeRejected(Exception):
    """One change cannot be accepted; `code` is stable, `details` lists fields."""

    def __init__(
        self, code: str, message: str, details: Any = None, status_code: int = 422
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.status_code = status_code


@dataclass
class EntityState:
    entity_type: str
    customer_id: uuid.UUID
    version: int
    deleted: bool
    data: dict[str, Any] | None


def field_errors(exc: ValidationError, prefix: tuple[str, ...] = ("data",)) -> list[dict[str, Any]]:
    return [
        {"loc": [*prefix, *[str(p) for p in err["loc"]]], "msg": err["msg"], "type": err["type"]}
        for err in exc.errors()
    ]


_FETCH = text(
    "SELECT entity_id, entity_type, customer_id, version, deleted, payload "
    "FROM sync_entities WHERE entity_id = ANY(:ids)"
)
_BY_VENUE = text(
    "SELECT entity_id, entity_type, customer_id, version, deleted, payload FROM sync_entities "
    "WHERE customer_id = :customer_id AND entity_type = ANY(:types) AND NOT deleted "
    "AND venue_id = CAST(:venue_id AS uuid) ORDER BY entity_type, version"
)
_EDGES_OF_NODE = text(
    "SELECT entity_id, entity_type, customer_id, version, deleted, payload FROM sync_entities "
    "WHERE customer_id = :customer_id AND entity_type = 'world_edge' AND NOT deleted "
    "AND (payload->>'from_id' = :node_id OR payload->>'to_id' = :node_id) ORDER BY version"
)


def references(model: EntityData) -> list[uuid.UUID]:
    """The ids an entity's state points at (checked to be live when it is written)."""
    if isinstance(model, WorldNodeData):
        return [model.venue_id]
    if isinstance(model, WorldEdgeData):
        return [model.venue_id, model.from_id, model.to_id]
    if isinstance(model, OperationData):
        kit = [model.kit_id] if model.kit_id is not None else []
        return [model.venue_id, *kit, *model.drone_ids]
    return []


class ChangeSet:
    """Validates changes of one tenant in order and collects the journal rows."""

    def __init__(
        self,
        session: AsyncSession,
        settings: Settings,
        customer_id: uuid.UUID,
        first_version: int = 0,
    ) -> None:
        self.session = session
        self.customer_id = customer_id
        # The version the first change will get when the set is journaled in one
        # `record` call (TenantTransaction.next_version); 0 if unknown. Lets later
        # changes see an earlier change's real version (push conflict checks).
        self.first_version = first_version
        self.kinds = frozenset(settings.ontology_node_kinds)
        self.edge_types = frozenset(settings.ontology_edge_types)
        self.changes: list[Change] = []
        self._known: dict[uuid.UUID, EntityState | None] = {}
        # Ids no row of `sync_entities` held when loaded (under the tenant's
        # lock): their journal rows are inserted, not upserted (`record`).
        self.absent: set[uuid.UUID] = set()
        # Only a venue merge may move nodes and edges to another venue.
        self.allow_venue_moves = False
        # Set by the writer (api/journal/writes.py): sends the changes a batch
        # expects to make to Neo4j before validation ends (`send_ahead`).
        self.ahead: Callable[[Ahead], None] | None = None
        self.ahead_dispatched: Callable[[], Awaitable[None]] | None = None

    def send_ahead(self, expected: Ahead) -> None:
        """The changes this set expects to collect, in order (`prepare_ahead`),
        before they are validated: their Neo4j statements start now, in the
        write's still uncommitted Neo4j transaction, instead of after
        validation. If the set ends up different (or refused), nothing sent
        ahead is committed (TenantTransaction.send_ahead).

        Call it once their ids are loaded (`prefetch`): a change of an id that
        is another tenant's, or another type's, is refused later, and is never
        sent ahead, since Neo4j's MERGE would hold that entity's lock until the
        transaction rolls back."""
        if (
            self.ahead is not None
            and not self.changes
            and self._in_ontology(expected.changes)
            and self._all_own(expected.changes)
        ):
            self.ahead(expected)

    def _all_own(self, changes: list[Change]) -> bool:
        """Whether every change's id is new or the tenant's own of that type."""
        for change in changes:
            if change.entity_id not in self._known:
                return False  # not loaded: the caller did not `prefetch` it
            found = self._known[change.entity_id]
            if found is not None and (
                found.customer_id != self.customer_id or found.entity_type != change.entity_type
            ):
                return False
        return True

    def _in_ontology(self, changes: list[Change]) -> bool:
        """Whether every node kind and edge type is the ontology's. Only then may
        they reach Neo4j before validation: labels and relationship types are
        tokens Neo4j keeps even when the transaction that named them rolls
        back, so an unchecked batch could fill its token store."""
        for change in changes:
            data = change.data or {}
            if change.entity_type is EntityType.world_node and data.get("kind") not in self.kinds:
                return False
            if change.entity_type is EntityType.world_edge and (
                data.get("type") not in self.edge_types
            ):
                return False
        return True

    async def let_ahead_go(self) -> None:
        """Before CPU-bound validation: let what `send_ahead` started reach
        Neo4j first (TenantTransaction.ahead_dispatched)."""
        if self.ahead_dispatched is not None:
            await self.ahead_dispatched()

    # ------------------------------------------------------------ state
    async def prefetch(self, ids: list[uuid.UUID]) -> None:
        """Load the current state of many ids in one query (optional speed-up)."""
        missing = [i for i in set(ids) if i not in self._known]
        if not missing:
            return
        for i in missing:
            self._known[i] = None
        self.absent.update(missing)
        rows = (await self.session.execute(_FETCH, {"ids": missing})).all()
        for r in rows:
            self.absent.discard(r.entity_id)
            self._known[r.entity_id] = EntityState(
                r.entity_type, r.customer_id, r.version, r.deleted, r.payload
            )

    def load(self, states: dict[uuid.UUID, EntityState | None]) -> None:
        """States loaded elsewhere in this transaction, current as `prefetch`
        would load them (TenantTransaction.start's `preload`)."""
        self._known.update(states)
        self.absent.update(i for i, state in states.items() if state is None)

    async def state(self, entity_id: uuid.UUID) -> EntityState | None:
        if entity_id not in self._known:
            await self.prefetch([entity_id])
        return self._known[entity_id]

    async def own(self, entity_id: uuid.UUID, entity_type: EntityType) -> EntityState | None:
        """The tenant's entity of that type, deleted or not; None if it never existed.

        Raises `id_in_use` if the id belongs to another tenant or another type.
        """
        await self.state(entity_id)
        return self._own(entity_id, entity_type)

    async def mine(self, entity_id: uuid.UUID, entity_type: EntityType) -> EntityState | None:
        """The tenant's entity of that type, or None (also for other tenants' ids)."""
        found = await self.state(entity_id)
        if (
            found is None
            or found.customer_id != self.customer_id
            or found.entity_type != entity_type
        ):
            return None
        return found

    # The synchronous checks below read `_known` only: callers load the ids first.
    def _own(self, entity_id: uuid.UUID, entity_type: EntityType) -> EntityState | None:
        found = self._known[entity_id]
        if found is None:
            return None
        if found.customer_id != self.customer_id or found.entity_type != entity_type:
            raise ChangeRejected(
                "id_in_use",
                f"id {entity_id} is already in use",
                [{"loc": ["id"], "msg": "id already in use"}],
                409,
            )
        return found

    def _live(self, entity_id: uuid.UUID, entity_type: EntityType, loc: list[str]) -> EntityState:
        found = self._known[entity_id]
        if (
            found is None
            or found.deleted
            or found.customer_id != self.customer_id
            or found.entity_type != entity_type
        ):
            raise ChangeRejected(
                "unknown_reference",
                f"{entity_type} {entity_id} does not exist",
                [{"loc": loc, "msg": f"no such {entity_type}"}],
            )
        return found

    def _remember(self, change: Change) -> None:
        self.changes.append(change)
        version = self.first_version + len(self.changes) - 1 if self.first_version else 0
        self._known[change.entity_id] = EntityState(
            change.entity_type,
            self.customer_id,
            version,
            change.op == "delete",
            change.data,
        )

    # ----------------------------------------------------------- upsert
    async def upsert(
        self,
        entity_type: EntityType,
        entity_id: uuid.UUID,
        data: dict[str, Any] | EntityData,
        *,
        mutation_id: int | None = None,
    ) -> dict[str, Any]:
        """Validate a complete new state; returns its canonical form.

        `data` may be an already validated model (the batch endpoints), which
        skips parsing it a second time.
        """
        if isinstance(data, EntityData):
            model = data
        else:
            try:
                model = parse_data(entity_type, data)
            except ValidationError as exc:
                raise ChangeRejected(
                    "invalid_data", "data did not validate", field_errors(exc)
                ) from exc
        needed = [entity_id, *references(model)]
        if any(i not in self._known for i in needed):
            await self.prefetch(needed)
        return self.upsert_loaded(entity_type, entity_id, model, mutation_id=mutation_id)

    def upsert_loaded(
        self,
        entity_type: EntityType,
        entity_id: uuid.UUID,
        model: EntityData,
        *,
        mutation_id: int | None = None,
        payload: dict[str, Any] | None = None,
        prepared: Change | None = None,
    ) -> dict[str, Any]:
        """`upsert` of a validated model whose id and references `prefetch`
        already loaded (the batch endpoints: one prefetch, then no awaits).
        `payload`: `canonical(model)`, if the caller already made it;
        `prepared`: the `Change` it already made of it (the one it sent ahead)."""
        existing = self._own(entity_id, entity_type)
        previous = existing.data if existing and not existing.deleted else None
        if isinstance(model, WorldNodeData):
            self._check_node(model, previous)
        elif isinstance(model, WorldEdgeData):
            self._check_edge(model, previous)
        elif isinstance(model, OperationData):
            self._check_operation(model, previous)
        if prepared is not None:
            assert prepared.entity_id == entity_id and prepared.op == "upsert"
            self._remember(prepared)
            return prepared.data or {}
        if payload is None:
            payload = canonical(model)
        self._remember(Change(entity_type, entity_id, "upsert", payload, mutation_id=mutation_id))
        return payload

    def _check_node(self, model: WorldNodeData, previous: dict[str, Any] | None) -> None:
        if model.kind not in self.kinds:
            raise ChangeRejected(
                "unknown_kind",
                f"kind {model.kind[:40]!r} is not in the ontology",
                [{"loc": ["data", "kind"], "msg": "not an allowed kind"}],
            )
        if (
            previous is not None
            and previous.get("venue_id") != str(model.venue_id)
            and not self.allow_venue_moves
        ):
            raise ChangeRejected(
                "immutable_field",
                "a world node cannot move to another venue",
                [{"loc": ["data", "venue_id"], "msg": "fixed at creation"}],
            )
        self._live(model.venue_id, EntityType.venue, ["data", "venue_id"])

    def _check_edge(self, model: WorldEdgeData, previous: dict[str, Any] | None) -> None:
        if model.type not in self.edge_types:
            raise ChangeRejected(
                "unknown_type",
                f"edge type {model.type[:40]!r} is not in the ontology",
                [{"loc": ["data", "type"], "msg": "not allowed"}],
            )
        if previous is not None:
            fixed = (
                ("type", "from_id", "to_id")
                if self.allow_venue_moves
                else ("venue_id", "type", "from_id", "to_id")
            )
            for name in fixed:
                if str(previous.get(name)) != str(getattr(model, name)):
                    raise ChangeRejected(
                        "immutable_field",
                        f"an edge's {name} is fixed at creation; supersede the edge instead",
                        [{"loc": ["data", name], "msg": "fixed at creation"}],
                    )
        self._live(model.venue_id, EntityType.venue, ["data", "venue_id"])
        for name in ("from_id", "to_id"):
            node = self._live(getattr(model, name), EntityType.world_node, ["data", name])
            if (node.data or {}).get("venue_id") != str(model.venue_id):
                raise ChangeRejected(
                    "cross_venue_edge",
                    f"{name} belongs to another venue than the edge",
                    [{"loc": ["data", name], "msg": "node of another venue"}],
                )

    def _check_operation(self, model: OperationData, previous: dict[str, Any] | None) -> None:
        if previous is None or previous.get("venue_id") != str(model.venue_id):
            self._live(model.venue_id, EntityType.venue, ["data", "venue_id"])
        if model.kit_id is not None:
            self._live(model.kit_id, EntityType.kit, ["data", "kit_id"])
        for index, drone_id in enumerate(model.drone_ids):
            self._live(drone_id, EntityType.drone, ["data", "drone_ids", str(index)])

    # ----------------------------------------------------------- delete
    async def delete(
        self,
        entity_type: EntityType,
        entity_id: uuid.UUID,
        *,
        mutation_id: int | None = None,
        merged_into: uuid.UUID | None = None,
    ) -> list[Change]:
        """Delete a live entity and what it owns; returns the changes added."""
        found = await self.mine(entity_id, entity_type)
        if found is None or found.deleted:
            raise ChangeRejected(
                "not_found", f"{entity_type.value} {entity_id} does not exist", status_code=404
            )
        start = len(self.changes)
        if entity_type is EntityType.venue:
            await self._cascade_venue(entity_id)
        elif entity_type is EntityType.world_node:
            await self._cascade_node(entity_id)
        self._remember(
            Change(
                entity_type,
                entity_id,
                "delete",
                found.data,
                merged_into=merged_into,
                mutation_id=mutation_id,
            )
        )
        return self.changes[start:]

    def _tombstone(
        self, entity_type: EntityType, entity_id: uuid.UUID, data: dict[str, Any] | None
    ) -> None:
        known = self._known.get(entity_id)
        if known is not None and known.deleted:
            return  # already deleted earlier in this batch
        self._remember(Change(entity_type, entity_id, "delete", data))

    def _batch_upserts(self, types: tuple[EntityType, ...]) -> list[Change]:
        """Entities created or updated earlier in this batch and still live."""
        last: dict[uuid.UUID, Change] = {c.entity_id: c for c in self.changes}
        return [c for c in last.values() if c.entity_type in types and c.op == "upsert"]

    async def _cascade_node(self, node_id: uuid.UUID) -> None:
        rows = (
            await self.session.execute(
                _EDGES_OF_NODE, {"customer_id": self.customer_id, "node_id": str(node_id)}
            )
        ).all()
        for row in rows:
            self._tombstone(EntityType.world_edge, row.entity_id, row.payload)
        for change in self._batch_upserts((EntityType.world_edge,)):
            data = change.data or {}
            if str(node_id) in (data.get("from_id"), data.get("to_id")):
                self._tombstone(change.entity_type, change.entity_id, data)

    async def _cascade_venue(self, venue_id: uuid.UUID) -> None:
        rows = (
            await self.session.execute(
                _BY_VENUE,
                {
                    "customer_id": self.customer_id,
                    "venue_id": str(venue_id),
                    "types": ["world_edge", "world_node"],
                },
            )
        ).all()
        # The query orders edges before nodes, so no edge outlives its endpoints.
        for row in rows:
            moved = self._known.get(row.entity_id)
            if moved is not None and (moved.data or {}).get("venue_id") != str(venue_id):
                continue  # moved to another venue earlier in this batch (a merge)
            self._tombstone(EntityType(row.entity_type), row.entity_id, row.payload)
        batch = self._batch_upserts((EntityType.world_edge, EntityType.world_node))
        for change in sorted(batch, key=lambda c: c.entity_type is not EntityType.world_edge):
            if (change.data or {}).get("venue_id") == str(venue_id):
                self._tombstone(change.entity_type, change.entity_id, change.data)
