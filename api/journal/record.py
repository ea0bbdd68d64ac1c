"""Journal rows: versions allocated from the tenant's counter row, one `pending` row per change."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from api.journal.entities import EntityType

log = structlog.get_logger("api.journal")


@dataclass(frozen=True)
class Change:
    """One accepted change of one entity. `data` is the complete state (upsert)
    or the last known state (delete, so cascades and edge lookups work)."""

    entity_type: EntityType
    entity_id: uuid.UUID
    op: str
    data: dict[str, Any] | None
    merged_into: uuid.UUID | None = None
    mutation_id: int | None = None


@dataclass(frozen=True)
class Origin:
    """Who made the changes: a workstation (sync) or an API key (REST)."""

    updated_by: str
    workstation_id: uuid.UUID | None = None


class Author(Protocol):
    """Whoever writes through the journal (a principal, in the domains): its tenant and origin."""

    @property
    def customer_id(self) -> uuid.UUID | None: ...

    def origin(self) -> Origin: ...


@dataclass
class Recorded:
    versions: list[int] = field(default_factory=list)
    applied: bool = False

    @property
    def last_version(self) -> int:
        return self.versions[-1] if self.versions else 0


_ALLOCATE = text(
    "UPDATE customer_versions SET version = version + :n WHERE customer_id = :customer_id "
    "RETURNING version"
)


CHANGES_CHANNEL = "overwatch_changes"  # LISTENed to by api/streams/hub.py


# The row of an entity's latest state (its last change in the batch), with
# its venue (`_venue`, migration 0018) and its envelope (`sync_envelope`, the
# trigger's own function, migration 0020): an insert naming both skips the
# envelope trigger. Completed below with `true` or `false`.
_ENTITY_ROWS = """
INSERT INTO sync_entities (customer_id, entity_type, entity_id, version, deleted, payload,
                           merged_into, updated_by, updated_at, venue_id, envelope)
SELECT :customer_id, r.entity_type, r.entity_id, r.version, r.op = 'delete', r.payload::json,
       r.merged_into, :updated_by, now(),
       COALESCE(CAST(r.venue_id AS uuid), '00000000-0000-0000-0000-000000000000'),
       sync_envelope(r.entity_type, r.entity_id, r.op = 'delete', r.version, now(),
                     :updated_by, r.merged_into, r.payload::json)
FROM r CROSS JOIN notified
WHERE r.is_last AND r.is_new = """


# One statement journals a batch: the changes arrive as column arrays (`unnest`
# zips them back into rows, payload text sent once) and feed, in data-modifying
# CTEs, the journal rows, the embedding queue (venue and world-node upserts),
# the stream notification (NOTIFY is delivered on commit, in commit order; the
# payload is small, listeners read the rows back by version range) and, in the
# INSERTs below, the latest state of each entity (its last change in the batch),
# with its venue and envelope (`_ENTITY_ROWS`), so a new entity's row skips
# the envelope trigger (migrations 0018, 0020).
_RECORD_CTES = f"""
r AS (
  SELECT * FROM unnest(
    CAST(:versions AS bigint[]), CAST(:entity_types AS text[]), CAST(:entity_ids AS uuid[]),
    CAST(:ops AS text[]), CAST(:payloads AS text[]), CAST(:mutation_ids AS bigint[]),
    CAST(:merged_into AS uuid[]), CAST(:is_last AS boolean[]), CAST(:venue_ids AS text[]),
    CAST(:is_new AS boolean[]))
  AS r(version, entity_type, entity_id, op, payload, mutation_id, merged_into, is_last, venue_id,
       is_new)
),
journal AS (
  INSERT INTO sync_journal (customer_id, version, entity_type, entity_id, op, payload,
                            workstation_id, mutation_id, state)
  SELECT :customer_id, version, entity_type, entity_id, op,
         CASE WHEN merged_into IS NULL THEN payload::jsonb
              ELSE COALESCE(payload::jsonb, '{{}}'::jsonb)
                   || jsonb_build_object('merged_into', merged_into) END,
         :workstation_id, mutation_id, 'pending'
  FROM r
),
queued AS (
  INSERT INTO embedding_queue (customer_id, entity_type, entity_id, version)
  SELECT :customer_id, entity_type, entity_id, version FROM r
  WHERE op = 'upsert' AND entity_type IN ('venue', 'world_node')
),
notified AS (SELECT pg_notify(:channel, :notify) AS sent),
fresh AS ({_ENTITY_ROWS}true)"""  # noqa: S608 (constant SQL)


# The latest state of each entity: a plain insert for the entities the writer
# found absent (`is_new`: most of a batch of new nodes; an insert that may
# conflict costs a speculative insertion and its confirmation, ~4 µs a row),
# an upsert for the rest. Under the tenant's lock only another tenant can take
# a new id meanwhile: the plain insert then fails on the id's unique
# constraint, as the upsert would, and the write runs again (api/journal/writes.py).
_RECORD_ENTITIES = f"""{_ENTITY_ROWS}false
ON CONFLICT (customer_id, entity_type, entity_id) DO UPDATE SET
  version = excluded.version, deleted = excluded.deleted, payload = excluded.payload,
  merged_into = excluded.merged_into, updated_by = excluded.updated_by, updated_at = now()
WHERE sync_entities.version < excluded.version
"""


_RECORD = text(f"WITH {_RECORD_CTES}{_RECORD_ENTITIES}")


# `_ALLOCATE` and `_RECORD` in one round trip, for a writer that holds the
# counter row (TenantTransaction): the same statements as CTEs of one, which
# returns the counter's new value.
_ALLOCATE_AND_RECORD = text(
    "WITH allocated AS (UPDATE customer_versions SET version = version + :n "  # noqa: S608
    f"WHERE customer_id = :customer_id RETURNING version),{_RECORD_CTES}, "
    f"entities AS ({_RECORD_ENTITIES}) SELECT version FROM allocated"
)


_LOCK_TENANT = text(
    "SELECT version FROM customer_versions WHERE customer_id = :customer_id FOR UPDATE"
)


async def lock_tenant(session: AsyncSession, customer_id: uuid.UUID) -> int:
    """Serialise the tenant's writers until this transaction ends; return the
    tenant's current version.

    Taken before validation, so a writer never validates against a state
    another is about to change; `record()` then allocates versions from the
    same row, starting right after the version returned here.
    """
    current = (await session.execute(_LOCK_TENANT, {"customer_id": customer_id})).scalar()
    if current is None:
        raise LookupError(f"customer {customer_id} has no version counter")
    return int(current)


# The trigger's test of a venue id in a payload (migration 0013's UUID_TEXT).
_UUID_TEXT = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def _venue(change: Change) -> str | None:
    """The venue the envelope trigger would derive for this change's new row
    (migrations 0018, 0020), or None where it derives none (the nil UUID:
    kits and drones, a payload without a well-formed `venue_id`)."""
    if change.entity_type == EntityType.venue:
        return str(change.entity_id)
    if change.data is None or change.entity_type in (EntityType.kit, EntityType.drone):
        return None
    venue = change.data.get("venue_id")
    return venue if isinstance(venue, str) and _UUID_TEXT.fullmatch(venue) else None


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


async def _allocate(session: AsyncSession, customer_id: uuid.UUID, count: int) -> list[int]:
    last = (
        await session.execute(_ALLOCATE, {"n": count, "customer_id": customer_id})
    ).scalar_one_or_none()
    if last is None:
        raise LookupError(f"customer {customer_id} has no version counter")
    return list(range(last - count + 1, last + 1))


async def _insert(
    session: AsyncSession,
    customer_id: uuid.UUID,
    changes: Sequence[Change],
    versions: list[int],
    origin: Origin,
) -> None:
    await session.execute(_RECORD, _record_params(customer_id, changes, versions, origin))


def _record_params(
    customer_id: uuid.UUID,
    changes: Sequence[Change],
    versions: list[int],
    origin: Origin,
    absent: Collection[uuid.UUID] = (),
) -> dict[str, Any]:
    """`absent`: ids the writer found in no row of `sync_entities` under the
    tenant's lock (`ChangeSet.absent`); their rows are inserted, not upserted."""
    last_change = {(c.entity_type, c.entity_id): i for i, c in enumerate(changes)}
    return {
        "customer_id": customer_id,
        "workstation_id": origin.workstation_id,
        "updated_by": origin.updated_by,
        "versions": versions,
        "entity_types": [str(c.entity_type) for c in changes],
        "entity_ids": [c.entity_id for c in changes],
        "ops": [c.op for c in changes],
        "payloads": [_json(c.data) for c in changes],
        "mutation_ids": [c.mutation_id for c in changes],
        "merged_into": [c.merged_into for c in changes],
        "is_last": [last_change[(c.entity_type, c.entity_id)] == i for i, c in enumerate(changes)],
        "venue_ids": [_venue(c) for c in changes],
        "is_new": [c.entity_id in absent for c in changes],
        "channel": CHANGES_CHANNEL,
        "notify": json.dumps(
            {"customer_id": str(customer_id), "first": versions[0], "last": versions[-1]}
        ),
    }


async def record(
    session: AsyncSession, customer_id: uuid.UUID, changes: Sequence[Change], origin: Origin
) -> list[int]:
    """Journal `changes` as pending, in order; return their versions.

    Runs in the caller's transaction and holds the tenant's counter row lock
    until it commits: keep the transaction short. Writers normally call
    `TenantTransaction.record`, which also applies the changes to Neo4j.
    """
    if not changes:
        return []
    versions = await _allocate(session, customer_id, len(changes))
    await _insert(session, customer_id, changes, versions, origin)
    return versions
