"""The one write path: Postgres journal first, Neo4j second (DESIGN.md §3-4).

1. `tenant_transaction` locks the tenant's counter row; `TenantTransaction.
   record` allocates the next versions from it (`UPDATE … RETURNING`
   serialises writers of one tenant, so versions become visible in order),
   writes one journal row per change as `pending`, and upserts the entity's
   latest state.
2. The changes are applied to Neo4j in one write transaction (idempotent,
   version-guarded) that commits only after the journal committed; the rows
   are marked `applied` only after Neo4j committed. When nothing older is
   pending, the Neo4j work overlaps the journal's commit (`TenantTransaction`);
   otherwise `apply_pending` applies *every* pending row of the tenant in
   version order, under the tenant's apply lock.
3. `reconcile_all` runs `apply_pending` for every tenant with pending rows
   (startup, timer, `overwatch reconcile`). If Neo4j is down, rows stay
   `pending`: the projection lags (`projection_status`), sync does not wait.
4. A row Neo4j refuses (a client error, not an outage) never holds its tenant
   back: `apply_pending` bisects the batch until the refused rows stand alone,
   marks each `failed` with Neo4j's error, and applies the rows after it.
   `retry_failed` (`overwatch reconcile --retry-failed`) puts them back.

Sync reads only Postgres: pull, bootstrap and status are bounded by the
tenant's committed head (`HEAD_SQL`), never by what Neo4j has applied.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from neo4j.exceptions import ClientError, ServiceUnavailable
from prometheus_client import Counter, Gauge
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from api.auth.principal import Principal
from api.entities import EntityType
from api.observability import error_text
from api.resources import Resources
from api.tenant_gate import tenant_connection
from graph.driver import GraphClient, OpenWrite
from graph.projection import (
    GraphChange,
    apply_changes,
    run_statements,
    statement_runs,
    stored_versions,
)
from relational.database import unit_of_work

log = structlog.get_logger("api.journal")

APPLY_BATCH = 5000

JOURNAL_APPLIED = Counter("overwatch_journal_applied_total", "Journal rows applied to Neo4j.")
JOURNAL_APPLY_FAILURES = Counter(
    "overwatch_journal_apply_failures_total", "Attempts to apply pending journal rows that failed."
)
JOURNAL_PENDING = Gauge(
    "overwatch_journal_pending_rows",
    "Journal rows not yet applied to Neo4j (sampled by the reconciler).",
)
JOURNAL_ROWS_FAILED = Counter(
    "overwatch_journal_rows_failed_total",
    "Journal rows Neo4j refused, isolated and marked failed.",
)
# Sampled from Postgres by the reconciler and by /readyz (every process sees
# every tenant: alert on the maximum across processes). No tenant label: one
# series per tenant would grow without bound; `overwatch projection` names them.
PROJECTION_LAG_VERSIONS = Gauge(
    "overwatch_projection_lag_versions",
    "Largest number of versions any tenant's Neo4j projection is behind its committed head.",
)
PROJECTION_LAG_SECONDS = Gauge(
    "overwatch_projection_lag_seconds",
    "Age of the oldest journal row not yet applied to Neo4j, over all tenants.",
)
PROJECTION_LAGGING_TENANTS = Gauge(
    "overwatch_projection_lagging_tenants", "Tenants with journal rows not yet applied to Neo4j."
)
PROJECTION_FAILED_ROWS = Gauge(
    "overwatch_projection_failed_rows", "Journal rows marked failed (Neo4j refused them)."
)


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


def origin_of(principal: Principal) -> Origin:
    """The origin of a REST write: the workstation of a workstation key, else the key."""
    if principal.workstation_id is not None:
        return Origin(
            updated_by=f"workstation:{principal.workstation_id}",
            workstation_id=principal.workstation_id,
        )
    return Origin(updated_by=f"key:{principal.key_uuid}")


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

# One statement journals a batch: the changes arrive as column arrays (`unnest`
# zips them back into rows, payload text sent once) and feed, in data-modifying
# CTEs, the journal rows, the embedding queue (venue and world-node upserts),
# the stream notification (NOTIFY is delivered on commit, in commit order; the
# payload is small, listeners read the rows back by version range) and, in the
# main INSERT, the latest state of each entity (its last change in the batch).
_RECORD_CTES = """
r AS (
  SELECT * FROM unnest(
    CAST(:versions AS bigint[]), CAST(:entity_types AS text[]), CAST(:entity_ids AS uuid[]),
    CAST(:ops AS text[]), CAST(:payloads AS text[]), CAST(:mutation_ids AS bigint[]),
    CAST(:merged_into AS uuid[]), CAST(:is_last AS boolean[]))
  AS r(version, entity_type, entity_id, op, payload, mutation_id, merged_into, is_last)
),
journal AS (
  INSERT INTO sync_journal (customer_id, version, entity_type, entity_id, op, payload,
                            workstation_id, mutation_id, state)
  SELECT :customer_id, version, entity_type, entity_id, op,
         CASE WHEN merged_into IS NULL THEN payload::jsonb
              ELSE COALESCE(payload::jsonb, '{}'::jsonb)
                   || jsonb_build_object('merged_into', merged_into) END,
         :workstation_id, mutation_id, 'pending'
  FROM r
),
queued AS (
  INSERT INTO embedding_queue (customer_id, entity_type, entity_id, version)
  SELECT :customer_id, entity_type, entity_id, version FROM r
  WHERE op = 'upsert' AND entity_type IN ('venue', 'world_node')
),
notified AS (SELECT pg_notify(:channel, :notify) AS sent)"""
_RECORD_ENTITIES = """
INSERT INTO sync_entities (customer_id, entity_type, entity_id, version, deleted, payload,
                           merged_into, updated_by, updated_at)
SELECT :customer_id, r.entity_type, r.entity_id, r.version, r.op = 'delete', r.payload::json,
       r.merged_into, :updated_by, now()
FROM r CROSS JOIN notified
WHERE r.is_last
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
    customer_id: uuid.UUID, changes: Sequence[Change], versions: list[int], origin: Origin
) -> dict[str, Any]:
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


_PENDING = text(
    "SELECT version, entity_type, entity_id, op, payload FROM sync_journal "
    "WHERE customer_id = :customer_id AND state = 'pending' ORDER BY version LIMIT :limit"
)
_PENDING_VERSIONS = text(
    "SELECT version FROM sync_journal "
    "WHERE customer_id = :customer_id AND state = 'pending' ORDER BY version LIMIT :limit"
)
_MARK_APPLIED = text(
    "UPDATE sync_journal SET state = 'applied', applied_at = now() "
    "WHERE customer_id = :customer_id AND state = 'pending' AND version <= :upto"
)
_MARK_FAILED = text(
    "UPDATE sync_journal j SET state = 'failed', error = f.error, failed_at = now() "
    "FROM unnest(CAST(:versions AS bigint[]), CAST(:errors AS text[])) AS f(version, error) "
    "WHERE j.customer_id = :customer_id AND j.version = f.version AND j.state = 'pending'"
)
# The tenant's apply lock: held by whoever applies its journal to Neo4j.
_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(CAST(:customer_id AS text), 7))")
_TRY_LOCK = text(
    "SELECT pg_try_advisory_xact_lock(hashtextextended(CAST(:customer_id AS text), 7))"
)
_TRY_HOLD = text("SELECT pg_try_advisory_lock(hashtextextended(CAST(:customer_id AS text), 7))")
# `lock_tenant`, then one `_TRY_HOLD`: the outer SELECT runs on the row the
# materialised CTE returns, so the try happens only once the row is locked.
_LOCK_TRY_HOLD = text(
    "WITH counter AS MATERIALIZED (SELECT version FROM customer_versions "
    "WHERE customer_id = :customer_id FOR UPDATE) "
    "SELECT version, pg_try_advisory_lock(hashtextextended(CAST(:key AS text), 7)) AS held "
    "FROM counter"
)
_UNHOLD = text("SELECT pg_advisory_unlock(hashtextextended(CAST(:customer_id AS text), 7))")
# Inside a new transaction: take the lock at transaction level (the session
# holds it, so this cannot wait), then drop the session-level hold. The
# transaction only marks rows applied, so its commit does not wait for the WAL
# flush (`synchronous_commit` off for it alone): a mark lost in a crash leaves
# its rows pending and the reconciler applies them again, a no-op (version
# guards). WAL order keeps lost marks a suffix of each tenant's: the next
# writer's journal commit, synchronous, flushes every mark before it.
_HAND_OVER = text(
    "SELECT set_config('synchronous_commit', 'off', true), "
    "pg_advisory_xact_lock(hashtextextended(CAST(:customer_id AS text), 7)), "
    "pg_advisory_unlock(hashtextextended(CAST(:customer_id AS text), 7))"
)
_ANY_PENDING = text(
    "SELECT EXISTS (SELECT 1 FROM sync_journal "
    "WHERE customer_id = :customer_id AND state = 'pending')"
)

# Neo4j refused the statement itself (a value it cannot store, a constraint,
# a statement that fails on these rows): the same rows fail again however often
# they are retried. Anything else (connection lost, timeouts, transient and
# database errors, authentication) is an outage: the rows stay pending.
_REFUSAL_CODES = (
    "Neo.ClientError.Statement.",
    "Neo.ClientError.Schema.",
    "Neo.ClientError.Request.",
)
ERROR_TEXT_LIMIT = 2000


def refused_rows(exc: BaseException) -> bool:
    """True when `exc` means Neo4j (or the driver, encoding the rows) refused the
    rows sent, rather than being unavailable."""
    if isinstance(exc, ClientError):
        return (exc.code or "").startswith(_REFUSAL_CODES)
    # Raised before anything reached Neo4j: building a row from its payload
    # (graph/projection.py `to_row`) or encoding a value (an integer beyond 64 bits).
    return isinstance(exc, ValueError | TypeError | KeyError | OverflowError)


@dataclass
class Applied:
    """What one `_apply_isolating` pass settled, in version order."""

    through: int | None = None  # every change up to this version is applied or failed
    applied: int = 0
    failed: list[tuple[GraphChange, str]] = field(default_factory=list)


async def _apply_isolating(
    resources: Resources, changes: Sequence[GraphChange], outcome: Applied
) -> None:
    """Apply `changes` in order; when Neo4j refuses a batch, bisect it.

    Each half is applied in its own transaction, left before right, so the
    tenant's order holds; a single refused change is recorded in
    `outcome.failed`. One refused row among n costs about 2·log2(n) extra
    transactions. A batch that fails only as a whole (some interaction between
    its statements) is applied in smaller pieces and nothing is marked failed.
    Outages propagate: `outcome` says how far it got.
    """
    try:
        await apply_changes(resources.graph, changes)
    except Exception as exc:
        if not refused_rows(exc):
            raise
        if len(changes) == 1:
            outcome.failed.append((changes[0], f"{type(exc).__name__}: {exc}"[:ERROR_TEXT_LIMIT]))
            outcome.through = changes[0].version
            return
        middle = len(changes) // 2
        await _apply_isolating(resources, changes[:middle], outcome)
        await _apply_isolating(resources, changes[middle:], outcome)
        return
    outcome.applied += len(changes)
    outcome.through = changes[-1].version


async def _settle(session: AsyncSession, customer_id: uuid.UUID, outcome: Applied) -> None:
    """Mark what `outcome` settled: refused rows `failed` first, then the rest applied."""
    if outcome.failed:
        await session.execute(
            _MARK_FAILED,
            {
                "customer_id": customer_id,
                "versions": [change.version for change, _ in outcome.failed],
                "errors": [error for _, error in outcome.failed],
            },
        )
    if outcome.through is not None:
        await session.execute(_MARK_APPLIED, {"customer_id": customer_id, "upto": outcome.through})


# Seconds a write waits, inside its request, for Neo4j to take its changes.
OVERLAP_TIMEOUT = 5.0
# Seconds a writer holding the tenant's counter row polls for the apply lock
# (its usual holder, the previous writer, needs milliseconds); past that it
# journals without the overlap rather than keep the tenant's writers queued.
LOCK_WAIT = 0.5
BUSY = -1  # apply_pending(wait=False): another applier holds the tenant's lock


async def _poll_lock(
    resources: Resources,
    session: AsyncSession,
    attempt: Any,
    params: dict[str, Any],
    within: float = OVERLAP_TIMEOUT,
) -> bool:
    """Take a lock with `attempt` (a `pg_try_advisory_*lock`), retrying briefly.

    The usual holder is the tenant's previous writer, marking its rows while
    Neo4j commits: a few milliseconds. An applier stuck on an unreachable
    Neo4j could hold it far longer, and a blocking wait there would hold this
    writer's counter row (and every writer queued behind it): give up after
    `within` seconds, or as soon as Neo4j is known to be failing.
    """
    deadline = time.monotonic() + within
    pause = 0.001
    health = graph_health(resources)
    while True:
        if (await session.execute(attempt, params)).scalar():
            return True
        if health.suspect() or time.monotonic() >= deadline:
            return False
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.02)


async def apply_pending(
    resources: Resources,
    customer_id: uuid.UUID,
    known: dict[int, GraphChange] | None = None,
    *,
    wait: bool = True,
) -> int:
    """Apply every pending change of a tenant to Neo4j in version order.

    Serialised per tenant by an advisory lock, so two processes never apply a
    tenant's changes out of order. A change Neo4j refuses is marked `failed`
    and the later ones are applied (`_apply_isolating`). Raises if Neo4j is
    unavailable: what was applied before is marked, the rest stays pending.
    `known` holds changes the caller just journaled: when the pending rows are
    exactly those, their payloads are not read back from Postgres.
    Returns how many rows were applied. `wait=False`: if another applier holds
    the tenant's lock, return `BUSY` at once (it, or the reconciler, applies
    the rows).
    """
    total = 0
    while True:
        outage: Exception | None = None
        outcome = Applied()
        async with unit_of_work(resources.sessions) as session:
            # The lock is its own statement on purpose: the next statement's
            # snapshot then includes rows another applier marked while we waited.
            if wait:
                await session.execute(_LOCK, {"customer_id": str(customer_id)})
            elif not await _poll_lock(
                resources, session, _TRY_LOCK, {"customer_id": str(customer_id)}
            ):
                return BUSY
            params = {"customer_id": customer_id, "limit": APPLY_BATCH}
            changes: list[GraphChange] = []
            if known:
                versions = (await session.execute(_PENDING_VERSIONS, params)).scalars().all()
                if all(v in known for v in versions):
                    changes = [known[v] for v in versions]
            if not changes:
                rows = (await session.execute(_PENDING, params)).all()
                changes = [
                    GraphChange(
                        entity_type=r.entity_type,
                        entity_id=str(r.entity_id),
                        op=r.op,
                        version=r.version,
                        customer_id=str(customer_id),
                        data=r.payload,
                    )
                    for r in rows
                ]
            if not changes:
                return total
            try:
                await _apply_isolating(resources, changes, outcome)
            except Exception as exc:
                JOURNAL_APPLY_FAILURES.inc()
                outage = exc
            await _settle(session, customer_id, outcome)
        total += outcome.applied
        if outage is None:
            graph_health(resources).ok()
        JOURNAL_APPLIED.inc(outcome.applied)
        _report_failed(customer_id, outcome.failed)
        if outage is not None:
            raise outage
        known = None
        if len(changes) < APPLY_BATCH:
            return total


def _report_failed(customer_id: uuid.UUID, failed: list[tuple[GraphChange, str]]) -> None:
    """Count and log each refused row once: when it is marked failed (it is not retried)."""
    if not failed:
        return
    JOURNAL_ROWS_FAILED.inc(len(failed))
    for change, error in failed:
        log.error(
            "journal.row_failed",
            customer_id=str(customer_id),
            version=change.version,
            entity_type=change.entity_type,
            entity_id=change.entity_id,
            op=change.op,
            error=error[:300],
        )


def as_graph_changes(
    customer_id: uuid.UUID, changes: Sequence[Change], versions: Sequence[int]
) -> dict[int, GraphChange]:
    """The just-journaled changes keyed by version, for `apply_pending(known=...)`."""
    customer = str(customer_id)  # once, not per change
    return {
        version: GraphChange(
            change.entity_type.value,
            str(change.entity_id),
            change.op,
            version,
            customer,
            change.data,
        )
        for version, change in zip(versions, changes, strict=True)
    }


async def try_apply(
    resources: Resources, customer_id: uuid.UUID, known: dict[int, GraphChange] | None = None
) -> bool:
    """Apply pending changes now, if Neo4j is expected to answer and no other
    applier is at work; on failure log and leave them to the reconciler."""
    health = graph_health(resources)
    if health.suspect():
        return False
    try:
        applied = await asyncio.wait_for(
            apply_pending(resources, customer_id, known, wait=False), OVERLAP_TIMEOUT * 2
        )
    except Exception as exc:
        if isinstance(exc, ServiceUnavailable | TimeoutError):
            health.failed()
        log.warning(
            "journal.apply_deferred",
            customer_id=str(customer_id),
            error=error_text(exc),
        )
        return False
    return applied != BUSY


class GraphHealth:
    """Whether this process should expect Neo4j to take a write right now.

    A write never waits on Neo4j for long (DESIGN.md §4: sync never waits for
    the projection): its in-request apply gives up after `OVERLAP_TIMEOUT`
    seconds, and after any such failure (unreachable, frozen, timed out) the
    writes of the next `COOLDOWN` seconds do not try at all. Their rows stay
    `pending` and the reconciler, which retries on its own timer, applies
    them once Neo4j answers; its first success closes the circuit again.
    """

    COOLDOWN = 5.0

    def __init__(self) -> None:
        self._until = 0.0

    def suspect(self) -> bool:
        return time.monotonic() < self._until

    def failed(self) -> None:
        self._until = time.monotonic() + self.COOLDOWN

    def ok(self) -> None:
        self._until = 0.0


_HEALTH: weakref.WeakKeyDictionary[GraphClient, GraphHealth] = weakref.WeakKeyDictionary()


def graph_health(resources: Resources) -> GraphHealth:
    """The circuit of this process's Neo4j client (one per app)."""
    health = _HEALTH.get(resources.graph)
    if health is None:
        health = _HEALTH[resources.graph] = GraphHealth()
    return health


class TenantTransaction:
    """One tenant's write: counter row locked, changes journaled, then applied.

    The order is the journal's (DESIGN.md §4): Neo4j commits only after the
    Postgres transaction that journaled the changes has committed, and the
    rows turn `applied` only after that. What this adds is overlap: when the
    tenant has nothing pending, the transaction holds the tenant's apply lock
    from the start, opens a Neo4j transaction while the caller validates, and
    `record` runs the changes in it while Postgres writes and commits the
    journal rows.

    - The journal transaction fails: the Neo4j transaction is rolled back.
    - The process dies before the Neo4j commit: Neo4j never saw a commit; the
      rows are `pending` and the reconciler applies them.
    - The Neo4j side fails: the rows are `pending`; `try_apply` retries in a
      managed transaction (unless Neo4j is unreachable), then the reconciler.

    Lock order, everywhere: counter row, then apply lock. Appliers that hold
    the apply lock (`apply_pending`) never wait for a counter row, so the two
    cannot deadlock. The apply lock is held until the rows are marked
    applied, so no other applier runs this tenant's changes in between, and
    it is only kept when nothing older is pending, so everything below these
    versions is already in Neo4j. It is a session lock on this transaction's
    own connection, released (or the connection closed) before the connection
    goes back to the pool.
    """

    def __init__(
        self,
        resources: Resources,
        connection: AsyncConnection,
        session: AsyncSession,
        customer_id: uuid.UUID,
    ) -> None:
        self.resources = resources
        self.connection = connection
        self.session = session
        self.customer_id = customer_id
        self.applied = False
        self._known: dict[int, GraphChange] = {}
        self._holding = False
        self._opening: asyncio.Task[OpenWrite] | None = None
        self._running: asyncio.Task[None] | None = None
        self._unreachable = False
        # The first version `record` will allocate (the counter is locked).
        self.next_version = 0

    async def start(self) -> None:
        """Take the counter row; if nothing is pending, the apply lock and a Neo4j transaction."""
        if graph_health(self.resources).suspect():
            # Neo4j just failed a write: journal only; the reconciler applies.
            self._unreachable = True
            self.next_version = await lock_tenant(self.session, self.customer_id) + 1
            return
        # Opening a Neo4j transaction takes a round trip: start it first, let it
        # proceed while Postgres locks and the caller validates.
        self._opening = asyncio.create_task(self.resources.graph.open_write("journal.apply"))
        params = {"customer_id": str(self.customer_id)}
        # The counter row and a first try for the apply lock in one round trip
        # (`_LOCK_TRY_HOLD`: the try comes after the row lock, in lock order).
        locked = (
            await self.session.execute(
                _LOCK_TRY_HOLD, {"customer_id": self.customer_id, "key": params["customer_id"]}
            )
        ).first()
        if locked is None:
            raise LookupError(f"customer {self.customer_id} has no version counter")
        self.next_version = int(locked.version) + 1
        # Never wait for the apply lock: its holder may be an applier stuck on
        # an unreachable Neo4j, and this transaction holds the counter row that
        # every other writer of the tenant is queued on.
        self._holding = bool(locked.held) or await _poll_lock(
            self.resources, self.session, _TRY_HOLD, params, within=LOCK_WAIT
        )
        if not self._holding:
            await self._discard()
            self._opening = None
            return
        # A new statement, so a new snapshot: it sees rows marked while we waited.
        if (await self.session.execute(_ANY_PENDING, params)).scalar_one():
            await self.session.execute(_UNHOLD, params)  # older rows first: try_apply
            self._holding = False
            await self._discard()
            self._opening = None

    async def record(self, changes: Sequence[Change], origin: Origin) -> list[int]:
        """Journal `changes` in this transaction (see `record`) and start applying them."""
        if not changes:
            return []
        # The counter row is locked: the versions are known before `_allocate`
        # returns them, so Neo4j gets its statement a round trip earlier.
        versions = list(range(self.next_version, self.next_version + len(changes)))
        known = as_graph_changes(self.customer_id, changes, versions)
        self._known.update(known)
        if self._opening is not None:
            self._running = asyncio.create_task(self._run(self._running, list(known.values())))
            await asyncio.sleep(0)  # let Neo4j get the statement before Postgres its rows
        params = _record_params(self.customer_id, changes, versions, origin)
        params["n"] = len(changes)
        last = (await self.session.execute(_ALLOCATE_AND_RECORD, params)).scalar_one_or_none()
        if last is None:
            raise LookupError(f"customer {self.customer_id} has no version counter")
        assert last == versions[-1], "versions allocated outside this transaction"
        self.next_version = versions[-1] + 1
        return versions

    async def _run(self, before: asyncio.Task[None] | None, changes: list[GraphChange]) -> None:
        runs = statement_runs(changes)
        if before is not None:
            await before
        assert self._opening is not None
        await run_statements((await self._opening).tx, runs)

    async def complete(self) -> bool:
        """After the journal committed: commit Neo4j and mark the rows applied.

        Returns True when the changes still need `try_apply` (older rows were
        pending, or the overlapped apply failed), which the caller runs once
        this transaction's connection is back in the pool.
        """
        try:
            if not self._known:
                self.applied = True
                await self._discard()
                return False
            if self._opening is not None and await self._commit_graph():
                self.applied = True
                return False
        finally:
            await self._release()
        # Neo4j unreachable: pending; the reconciler applies them when it is back.
        return not self._unreachable

    async def apply_later(self) -> None:
        self.applied = await try_apply(self.resources, self.customer_id, self._known)

    async def _commit_graph(self) -> bool:
        """Commit Neo4j, and mark the rows applied in a transaction that commits after it.

        The journal has committed, so Neo4j may commit as soon as its statements
        are done; the marking runs meanwhile and only its commit waits. The
        apply lock moves from this session to the marking transaction (the
        session already holds it, so taking it again cannot wait), which
        releases it when it ends.
        """
        assert self._opening is not None and self._running is not None
        graph_commit = asyncio.create_task(self._commit_neo4j())
        params = {"customer_id": self.customer_id, "upto": max(self._known)}
        marking = True
        try:
            await self.session.execute(_HAND_OVER, {"customer_id": str(self.customer_id)})
            self._holding = False
            await self.session.execute(_MARK_APPLIED, params)
        except Exception as exc:  # Postgres trouble: the rows stay pending for the reconciler
            log.warning("journal.mark_applied_failed", error=error_text(exc))
            marking = False
        try:
            await asyncio.wait_for(graph_commit, OVERLAP_TIMEOUT)
        except Exception as exc:
            # Unreachable or frozen (timed out): the reconciler applies these
            # rows; a refusal is isolated by `try_apply`.
            self._unreachable = isinstance(exc, ServiceUnavailable | TimeoutError)
            if self._unreachable:
                graph_health(self.resources).failed()
            log.info("journal.overlap_failed", error=error_text(exc) or type(exc).__name__)
            await self._end_marking(commit=False)
            await self._discard()
            return False
        graph_health(self.resources).ok()
        JOURNAL_APPLIED.inc(len(self._known))
        await self._end_marking(commit=marking)
        return True

    async def _commit_neo4j(self) -> None:
        assert self._opening is not None and self._running is not None
        await self._running
        await (await self._opening).commit()

    async def _end_marking(self, *, commit: bool) -> None:
        try:
            if commit:
                await self.session.commit()
            else:
                await self.session.rollback()
        except Exception as exc:  # the reconciler marks them later; reapplying is a no-op
            log.warning("journal.mark_applied_failed", error=error_text(exc))
            await self.connection.invalidate()  # never pool a connection that may hold the lock

    async def abandon(self) -> None:
        """The journal transaction did not commit: undo the Neo4j side."""
        try:
            await self._discard()
        finally:
            await self._release()

    async def _discard(self) -> None:
        """Stop and roll back the Neo4j transaction, if one was opened."""
        for task in (self._running, self._opening):
            if task is not None and not task.done():
                task.cancel()
        if self._running is not None:
            await asyncio.gather(self._running, return_exceptions=True)
        if self._opening is not None:
            opened = (await asyncio.gather(self._opening, return_exceptions=True))[0]
            if isinstance(opened, OpenWrite):
                # A frozen Neo4j never answers the rollback; the server drops the
                # transaction with the connection.
                try:
                    await asyncio.wait_for(opened.rollback(), OVERLAP_TIMEOUT)
                except Exception as exc:
                    log.info("journal.rollback_abandoned", error=error_text(exc) or "timeout")

    async def _release(self) -> None:
        """Give the apply lock back, outside the journal transaction."""
        if not self._holding:
            return
        self._holding = False
        try:
            await self.session.execute(_UNHOLD, {"customer_id": str(self.customer_id)})
            await self.session.commit()
        except BaseException as exc:
            # A closed connection releases its session locks on the server.
            log.warning("journal.unlock_failed", error=error_text(exc))
            await self.connection.invalidate()
            if not isinstance(exc, Exception):
                raise


@asynccontextmanager
async def tenant_transaction(
    resources: Resources, customer_id: uuid.UUID
) -> AsyncIterator[TenantTransaction]:
    """Lock the tenant's counter row, yield, commit; then apply to Neo4j.

    The body validates and calls `tx.record(...)`; any exception rolls back
    both stores. After the block, `tx.applied` says whether Neo4j has the
    changes (False: they are journaled and the reconciler will apply them).
    """
    async with tenant_connection(resources, customer_id) as connection:  # api/tenant_gate.py
        async with resources.sessions(bind=connection) as session:
            tx = TenantTransaction(resources, connection, session, customer_id)
            try:
                await tx.start()
                yield tx
                await session.commit()
            except BaseException:
                try:
                    await session.rollback()
                finally:
                    await tx.abandon()
                raise
            retry = await tx.complete()
    if retry:  # outside: it takes a connection of its own
        await tx.apply_later()


# The tenant's committed head, as an SQL expression of `:customer_id` for
# statements that read it together with the rows it bounds (api/sync/pull.py).
# Versions are allocated from this counter row in the transaction that writes
# their journal and entity rows, and the row lock passes to the next writer
# only once that transaction is committed (and visible). So a snapshot that
# sees the counter at V sees every change at or below V: read in the same
# statement (one snapshot) as a page, nothing at or below it can turn up later.
HEAD_SQL = "COALESCE((SELECT version FROM customer_versions WHERE customer_id = :customer_id), 0)"
_HEAD = text("SELECT " + HEAD_SQL)

# How far Neo4j has applied the tenant's journal: every version at or below it
# is applied or failed (none pending). Not a bound for sync any more.
APPLIED_THROUGH_SQL = (
    "COALESCE("  # noqa: S608 (constant SQL)
    " (SELECT min(version) - 1 FROM sync_journal "
    "  WHERE customer_id = :customer_id AND state = 'pending'),"
    f" {HEAD_SQL})"
)
_APPLIED_THROUGH = text("SELECT " + APPLIED_THROUGH_SQL)


async def committed_head(session: AsyncSession, customer_id: uuid.UUID) -> int:
    """The tenant's committed head: every change at or below it is committed."""
    return int((await session.execute(_HEAD, {"customer_id": customer_id})).scalar_one())


async def applied_through(session: AsyncSession, customer_id: uuid.UUID) -> int:
    """The highest version V such that every change of the tenant ≤ V reached
    Neo4j (applied) or was refused by it (failed).

    One statement, one snapshot: a committed counter value implies its journal
    rows are committed too (same transaction), so nothing unseen lies below V.
    """
    return int((await session.execute(_APPLIED_THROUGH, {"customer_id": customer_id})).scalar_one())


# The name sync used before it stopped waiting for Neo4j (tests and tools).
frontier = applied_through


_PENDING_COUNT = text(
    "SELECT count(*) FROM sync_journal WHERE customer_id = :customer_id AND state = 'pending'"
)


async def pending_count(session: AsyncSession, customer_id: uuid.UUID) -> int:
    """How many of the tenant's journal rows have not reached Neo4j yet."""
    return int((await session.execute(_PENDING_COUNT, {"customer_id": customer_id})).scalar_one())


@dataclass(frozen=True)
class Projection:
    """How far one tenant's Neo4j projection is behind its journal.

    `applied_through`: every version at or below it is applied (or failed);
    `lag_versions`: committed head minus applied_through; `lag_seconds`: age
    of the oldest pending row (0 when none); `pending` and `failed`: row counts.
    """

    customer_id: str
    head: int
    applied_through: int
    lag_versions: int
    lag_seconds: float
    pending: int
    failed: int

    @property
    def lagging(self) -> bool:
        return self.pending > 0


# Only tenants with pending or failed rows, through the two partial indexes.
_PROJECTION = """
WITH p AS (
  SELECT customer_id, min(version) AS first_pending, count(*) AS pending,
         EXTRACT(EPOCH FROM now() - min(created_at)) AS lag_seconds
  FROM sync_journal WHERE state = 'pending' {where} GROUP BY customer_id
), f AS (
  SELECT customer_id, count(*) AS failed FROM sync_journal
  WHERE state = 'failed' {where} GROUP BY customer_id
)
SELECT cv.customer_id, cv.version AS head,
       COALESCE(p.first_pending - 1, cv.version) AS applied_through,
       COALESCE(p.lag_seconds, 0) AS lag_seconds,
       COALESCE(p.pending, 0) AS pending, COALESCE(f.failed, 0) AS failed
FROM customer_versions cv LEFT JOIN p USING (customer_id) LEFT JOIN f USING (customer_id)
WHERE {tenants}
ORDER BY cv.customer_id
"""
_PROJECTION_ALL = text(
    _PROJECTION.format(where="", tenants="p.customer_id IS NOT NULL OR f.customer_id IS NOT NULL")
)
_PROJECTION_ONE = text(
    _PROJECTION.format(
        where="AND customer_id = :customer_id", tenants="cv.customer_id = :customer_id"
    )
)


def _projection(row: Any) -> Projection:
    return Projection(
        customer_id=str(row.customer_id),
        head=int(row.head),
        applied_through=int(row.applied_through),
        lag_versions=int(row.head) - int(row.applied_through),
        lag_seconds=round(max(float(row.lag_seconds), 0.0), 3),
        pending=int(row.pending),
        failed=int(row.failed),
    )


async def projection_status(session: AsyncSession, customer_id: uuid.UUID) -> Projection:
    """One tenant's projection lag (read from Postgres only; Neo4j may be down)."""
    row = (await session.execute(_PROJECTION_ONE, {"customer_id": customer_id})).first()
    if row is None:
        return Projection(str(customer_id), 0, 0, 0, 0.0, 0, 0)
    return _projection(row)


async def projection_overview(session: AsyncSession) -> list[Projection]:
    """Every tenant whose projection lags or holds failed rows; also sets the gauges."""
    found = [_projection(r) for r in (await session.execute(_PROJECTION_ALL)).all()]
    PROJECTION_LAG_VERSIONS.set(max((p.lag_versions for p in found), default=0))
    PROJECTION_LAG_SECONDS.set(max((p.lag_seconds for p in found), default=0.0))
    PROJECTION_LAGGING_TENANTS.set(sum(1 for p in found if p.lagging))
    PROJECTION_FAILED_ROWS.set(sum(p.failed for p in found))
    JOURNAL_PENDING.set(sum(p.pending for p in found))
    return found


@dataclass(frozen=True)
class FailedRow:
    customer_id: str
    version: int
    entity_type: str
    entity_id: str
    op: str
    error: str
    failed_at: str


_FAILED_ROWS = text(
    "SELECT customer_id, version, entity_type, entity_id, op, error, failed_at FROM sync_journal "
    "WHERE state = 'failed' AND (CAST(:customer_id AS uuid) IS NULL OR customer_id = :customer_id) "
    "ORDER BY customer_id, version LIMIT :limit"
)


async def failed_rows(
    session: AsyncSession, customer_id: uuid.UUID | None = None, limit: int = 1000
) -> list[FailedRow]:
    """Journal rows Neo4j refused, oldest first (all tenants unless one is named)."""
    rows = (await session.execute(_FAILED_ROWS, {"customer_id": customer_id, "limit": limit})).all()
    return [
        FailedRow(
            customer_id=str(r.customer_id),
            version=int(r.version),
            entity_type=r.entity_type,
            entity_id=str(r.entity_id),
            op=r.op,
            error=r.error or "",
            failed_at=r.failed_at.isoformat() if r.failed_at else "",
        )
        for r in rows
    ]


# A failed row that is still its entity's latest change goes back to pending.
# One that a later change superseded is settled by that change: replaying it
# could bring back what the later change deleted, so it is marked applied
# (skipped) with a note, and is never sent.
_RETRY_FAILED = text("""
WITH latest AS (
  SELECT j.version, COALESCE(e.version, j.version) AS latest
  FROM sync_journal j LEFT JOIN sync_entities e
    ON e.customer_id = j.customer_id AND e.entity_type = j.entity_type
   AND e.entity_id = j.entity_id
  WHERE j.customer_id = :customer_id AND j.state = 'failed'
), retried AS (
  UPDATE sync_journal j SET
    state = CASE WHEN l.latest > j.version THEN 'applied' ELSE 'pending' END,
    applied_at = CASE WHEN l.latest > j.version THEN now() END,
    error = CASE WHEN l.latest > j.version
                 THEN 'superseded by version ' || l.latest || '; was: ' || j.error END,
    failed_at = NULL
  FROM latest l
  WHERE j.customer_id = :customer_id AND j.version = l.version
  RETURNING j.state
)
SELECT count(*) FILTER (WHERE state = 'pending') AS pending,
       count(*) FILTER (WHERE state = 'applied') AS superseded
FROM retried
""")
_FAILED_TENANTS = text(
    "SELECT DISTINCT customer_id FROM sync_journal WHERE state = 'failed' "
    "AND (CAST(:customer_id AS uuid) IS NULL OR customer_id = :customer_id)"
)


async def retry_failed(resources: Resources, customer_id: uuid.UUID) -> tuple[int, int]:
    """Put the tenant's failed rows back to pending (see `_RETRY_FAILED`);
    returns (rows to apply again, superseded rows settled).

    Under the tenant's apply lock, so no applier is between reading its batch
    and marking it while older rows turn pending again.
    """
    async with unit_of_work(resources.sessions) as session:
        await session.execute(_LOCK, {"customer_id": str(customer_id)})
        row = (await session.execute(_RETRY_FAILED, {"customer_id": customer_id})).one()
    return int(row.pending), int(row.superseded)


@dataclass
class Reconciled:
    """What one reconcile pass did, per tenant (customer id as text)."""

    applied: dict[str, int] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)  # tenant -> the outage's error
    retried: int = 0
    superseded: int = 0
    projection: list[Projection] = field(default_factory=list)  # lagging or failed, after

    @property
    def failed_rows(self) -> int:
        return sum(p.failed for p in self.projection)

    @property
    def ok(self) -> bool:
        """Nothing is pending and nothing failed."""
        return not self.unavailable and not self.projection


_PENDING_TENANTS = text(
    "SELECT customer_id FROM sync_journal WHERE state = 'pending' "
    "AND (CAST(:customer_id AS uuid) IS NULL OR customer_id = :customer_id) "
    "GROUP BY customer_id ORDER BY min(created_at)"
)


async def reconcile(
    resources: Resources,
    *,
    retry: bool = False,
    customers: Sequence[uuid.UUID] | None = None,
) -> Reconciled:
    """Apply the pending rows of every tenant (or of `customers`), oldest first.

    With `retry`, failed rows are first put back (`retry_failed`). A tenant
    whose apply fails for an outage is reported in `unavailable`; the others
    carry on. Afterwards `projection` lists every tenant still lagging or
    holding failed rows.
    """
    report = Reconciled()
    scope: Sequence[uuid.UUID | None] = customers or [None]
    if retry:
        for one in scope:
            async with resources.sessions() as session:
                ids = list((await session.execute(_FAILED_TENANTS, {"customer_id": one})).scalars())
            for customer_id in ids:
                pending, superseded = await retry_failed(resources, customer_id)
                report.retried += pending
                report.superseded += superseded
    pending_tenants: list[uuid.UUID] = []
    async with resources.sessions() as session:
        for one in scope:
            pending_tenants += (
                await session.execute(_PENDING_TENANTS, {"customer_id": one})
            ).scalars()
    for customer_id in pending_tenants:
        try:
            report.applied[str(customer_id)] = await apply_pending(resources, customer_id)
        except Exception as exc:
            report.unavailable[str(customer_id)] = error_text(exc)
            log.warning(
                "journal.reconcile_failed", customer_id=str(customer_id), error=error_text(exc)
            )
    async with resources.sessions() as session:
        overview = await projection_overview(session)
    wanted = {str(c) for c in customers} if customers else None
    report.projection = [p for p in overview if wanted is None or p.customer_id in wanted]
    if report.applied:
        log.info(
            "journal.reconciled", tenants=len(report.applied), rows=sum(report.applied.values())
        )
    return report


async def reconcile_all(resources: Resources) -> dict[str, int]:
    """Re-apply pending rows of every tenant, oldest tenants first (the timer
    loop and startup); returns rows applied per tenant. See `reconcile`."""
    return (await reconcile(resources)).applied


@dataclass
class Drift:
    customer_id: str
    pending: int
    missing: list[tuple[str, str]] = field(default_factory=list)  # journal has, graph lacks
    # graph has, but the journal deleted or never had:
    unexpected: list[tuple[str, str]] = field(default_factory=list)
    stale: list[tuple[str, str, int, int]] = field(default_factory=list)  # type, id, graph, journal
    # Rows Neo4j refused; their entities are left out of the three lists above.
    failed: list[FailedRow] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.stale)


VERIFIED_TYPES = ("venue", "world_node", "world_edge", "operation", "kit", "drone")


async def verify(resources: Resources, customer_id: uuid.UUID) -> Drift:
    """Compare what Neo4j holds with the latest state the journal implies.

    An entity whose latest change failed is reported under `failed`, not as
    drift: its state in Neo4j is known to differ, and why.
    """
    async with resources.sessions() as session:
        expected_rows = (
            await session.execute(
                text(
                    "SELECT entity_type, entity_id, version FROM sync_entities "
                    "WHERE customer_id = :customer_id AND NOT deleted"
                ),
                {"customer_id": customer_id},
            )
        ).all()
        pending = await pending_count(session, customer_id)
        failed = await failed_rows(session, customer_id)
    expected = {(r.entity_type, str(r.entity_id)): int(r.version) for r in expected_rows}
    stored = await stored_versions(resources.graph, str(customer_id), VERIFIED_TYPES)
    # The latest failed version per entity: it excuses the entity while it is
    # still the entity's latest change (a later change that applied does not).
    excused = {(f.entity_type, f.entity_id): f.version for f in failed}
    drift = Drift(customer_id=str(customer_id), pending=pending, failed=failed)
    for key, version in expected.items():
        if excused.get(key, -1) >= version:
            continue
        if key not in stored:
            drift.missing.append(key)
        elif stored[key] != version:
            drift.stale.append((key[0], key[1], stored[key], version))
    drift.unexpected = [key for key in stored if key not in expected and key not in excused]
    return drift


async def tenants(resources: Resources) -> list[uuid.UUID]:
    async with resources.sessions() as session:
        return list((await session.execute(text("SELECT id FROM customers ORDER BY id"))).scalars())
