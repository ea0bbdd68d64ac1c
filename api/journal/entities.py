"""The `data` of each synced graph entity: one schema for REST and for sync push.

`data` is an entity's complete state, not a patch. Fields the server manages
(version, timestamps, embeddings) are dropped before validation; anything
else unknown is refused, so a typo never silently disappears.

Limits on the flat property map (`properties`): at most 64 keys, keys
`^[a-z][a-z0-9_]{0,63}$`, values string (≤ 2,000 chars), integer (64-bit),
finite float, boolean, or a list (≤ 64) of those scalars, all of one kind
(integers mixed with floats become floats); 16 KiB in all as JSON. No map
nests inside: Neo4j properties are primitives or arrays of them. Every value
must be storable in both stores (api/journal/storable.py: text without NUL,
datetimes with an offset within ±18:00, ...).
"""

from __future__ import annotations

import json
import math
import re
import uuid
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy.exc import IntegrityError

from api.journal.storable import StorableDatetime, StorableModel, check_property_list


class EntityType(StrEnum):
    venue = "venue"
    world_node = "world_node"
    world_edge = "world_edge"
    operation = "operation"
    kit = "kit"
    drone = "drone"


# Workstations push these; kits and drones are read-only projections of the registry.
PUSHABLE_TYPES = frozenset(
    {EntityType.venue, EntityType.world_node, EntityType.world_edge, EntityType.operation}
)
SERVER_MANAGED_FIELDS = frozenset(
    {
        "version",
        "updated_at",
        "updated_by",
        "created_at",
        "embedding",
        "embedding_hash",
        "customer_id",
        "id",
        "blob_ids",
    }
)

PROPERTY_KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_PROPERTIES = 64
MAX_PROPERTY_BYTES = 16 * 1024
MAX_LIST_ITEMS = 64
MAX_STRING = 2000
INT64 = 2**63

Text200 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Text500 = Annotated[str, StringConstraints(max_length=500)]
Text5000 = Annotated[str, StringConstraints(max_length=5000)]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]


def _check_scalar(key: str, value: Any) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if not -INT64 <= value < INT64:
            raise ValueError(f"property {key!r}: integer out of 64-bit range")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"property {key!r}: NaN and infinity are not allowed")
        return
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise ValueError(f"property {key!r}: string longer than {MAX_STRING}")
        return
    raise ValueError(f"property {key!r}: values are strings, numbers, booleans or lists of them")


def _rough_size(value: dict[str, Any]) -> int:
    """An upper bound of the map's JSON size (a \\uXXXX escape is 6 bytes a character)."""
    size = 2
    for key, item in value.items():
        size += len(key) + 4
        for element in item if isinstance(item, list) else (item,):
            size += 6 * len(element) + 2 if isinstance(element, str) else 24
    return size


def check_properties(value: dict[str, Any]) -> dict[str, Any]:
    if len(value) > MAX_PROPERTIES:
        raise ValueError(f"at most {MAX_PROPERTIES} properties")
    for key, item in value.items():
        if not PROPERTY_KEY_RE.match(key):
            raise ValueError(f"property key {key[:80]!r} must match {PROPERTY_KEY_RE.pattern}")
        if isinstance(item, list):
            if len(item) > MAX_LIST_ITEMS:
                raise ValueError(f"property {key!r}: at most {MAX_LIST_ITEMS} list items")
            value[key] = check_property_list(key, item)
            for element in item:
                _check_scalar(key, element)
        else:
            _check_scalar(key, item)
    # Encode only maps that might be near the limit: the common small map is
    # bounded well below it by the per-item limits checked above.
    if _rough_size(value) > MAX_PROPERTY_BYTES // 2 and len(json.dumps(value)) > MAX_PROPERTY_BYTES:
        raise ValueError(f"properties exceed {MAX_PROPERTY_BYTES} bytes as JSON")
    return value


Properties = Annotated[dict[str, Any], AfterValidator(check_properties)]


class EntityData(StorableModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class Part(BaseModel):
    """A part of an entity's data (a position, a location, a provenance), never
    a request or an entity by itself: the `EntityData` that holds it has already
    checked its input (`StorableModel`), so it skips that per-instance check,
    about 2 µs each, 1 ms of a 500-node batch."""

    model_config = EntityData.model_config


class Location(Part):
    latitude: float = Field(ge=-90, le=90, allow_inf_nan=False)
    longitude: float = Field(ge=-180, le=180, allow_inf_nan=False)


class Position(Part):
    """A position inside the venue's local frame, in metres."""

    x: float = Field(allow_inf_nan=False, ge=-1e6, le=1e6)
    y: float = Field(allow_inf_nan=False, ge=-1e6, le=1e6)
    z: float = Field(0.0, allow_inf_nan=False, ge=-1e5, le=1e5)


class VenueData(EntityData):
    name: Text200
    address: Text500 | None = None
    description: Text5000 | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    location: Location | None = None
    properties: Properties = Field(default_factory=dict)

    @field_validator("tags")
    @classmethod
    def _dedupe_tags(cls, tags: list[str]) -> list[str]:
        return sorted(set(tags))


class WorldNodeData(EntityData):
    venue_id: uuid.UUID
    kind: str = Field(max_length=40, description="One of the ontology's node kinds.")
    name: Text200
    description: Text5000 | None = None
    position: Position | None = None
    properties: Properties = Field(default_factory=dict)


class Provenance(Part):
    workstation_id: uuid.UUID | None = None
    drone_id: uuid.UUID | None = None
    operation_id: uuid.UUID | None = None


class WorldEdgeData(EntityData):
    venue_id: uuid.UUID
    type: str = Field(max_length=40, description="One of the ontology's edge types.")
    from_id: uuid.UUID
    to_id: uuid.UUID
    valid_from: StorableDatetime | None = None
    valid_to: StorableDatetime | None = None
    confidence: float = Field(1.0, ge=0.0, le=1.0, allow_inf_nan=False)
    provenance: Provenance = Field(default_factory=Provenance)
    supersedes: uuid.UUID | None = Field(None, description="The edge this fact replaced.")
    properties: Properties = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_validity(self) -> WorldEdgeData:
        if self.from_id == self.to_id:
            raise ValueError("an edge cannot connect a node to itself")
        if self.valid_from and self.valid_to and self.valid_to <= self.valid_from:
            raise ValueError("valid_to must be after valid_from")
        return self


class OperationStatus(StrEnum):
    planned = "planned"
    active = "active"
    paused = "paused"
    completed = "completed"
    aborted = "aborted"
    failed = "failed"


class OperationData(EntityData):
    venue_id: uuid.UUID
    status: OperationStatus
    name: Text200 | None = None
    kind: Annotated[str, StringConstraints(max_length=50)] | None = Field(
        None, examples=["patrol", "inspection", "mapping"]
    )
    started_at: StorableDatetime | None = None
    ended_at: StorableDatetime | None = None
    kit_id: uuid.UUID | None = None
    drone_ids: list[uuid.UUID] = Field(default_factory=list, max_length=100)
    summary: Text5000 | None = None
    properties: Properties = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_times(self) -> OperationData:
        if self.started_at and self.ended_at and self.ended_at < self.started_at:
            raise ValueError("ended_at is before started_at")
        return self


class KitData(EntityData):
    serial: str
    name: str | None = None


class DroneData(EntityData):
    serial: str
    kit_id: uuid.UUID | None = None
    model: str | None = None


DATA_SCHEMAS: dict[EntityType, type[EntityData]] = {
    EntityType.venue: VenueData,
    EntityType.world_node: WorldNodeData,
    EntityType.world_edge: WorldEdgeData,
    EntityType.operation: OperationData,
    EntityType.kit: KitData,
    EntityType.drone: DroneData,
}


_SCHEMA_TYPES = frozenset(DATA_SCHEMAS.values())

# Ids are unique across tenants (one row per id in sync_entities). Two tenants
# creating one id at the same moment both find it free; the second's journal
# insert then waits for the first and fails on this constraint. Its writer
# runs again and, now seeing the first's row, refuses the id (`id_in_use`).
ENTITY_ID_CONSTRAINT = "uq_sync_entities_entity_id"
ID_RACE_ATTEMPTS = 3


def id_taken_concurrently(exc: BaseException) -> bool:
    """Whether a failed write lost the race for an entity id to another tenant."""
    return isinstance(exc, IntegrityError) and ENTITY_ID_CONSTRAINT in str(exc.orig)


def parse_data(entity_type: EntityType, data: dict[str, Any]) -> EntityData:
    """Validate an entity's `data`, dropping server-managed fields first.

    Raises pydantic's `ValidationError` with field-level messages.
    """
    cleaned = {k: v for k, v in data.items() if k not in SERVER_MANAGED_FIELDS}
    return DATA_SCHEMAS[entity_type].model_validate(cleaned)


def canonical(model: EntityData) -> dict[str, Any]:
    """The JSON form stored in the journal and returned in envelopes.

    Only the fields of the entity's own schema: request models that extend it
    (with a client-chosen `id`, say) dump the same canonical shape.
    """
    fields = _CANONICAL_FIELDS.get(type(model))
    if fields is None:
        fields = _CANONICAL_FIELDS[type(model)] = _canonical_fields(type(model))
    return model.model_dump(mode="json", include=fields)


# The fields `canonical` keeps, per model class (computed once; never mutated).
_CANONICAL_FIELDS: dict[type[EntityData], set[str] | None] = {}


def _canonical_fields(model: type[EntityData]) -> set[str] | None:
    for schema in model.__mro__:
        if schema in _SCHEMA_TYPES:
            return set(schema.model_fields)
    return None


ChangeOp = Literal["upsert", "delete"]

__all__ = ["DATA_SCHEMAS", "ChangeOp", "EntityType", "ValidationError", "canonical", "parse_data"]
