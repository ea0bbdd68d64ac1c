"""Applying journal rows to Neo4j in version order, under the tenant's apply lock."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, LiteralString

import structlog
from neo4j.exceptions import ClientError, ServiceUnavailable
from prometheus_client import Counter, Gauge
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from api.core.observability import error_text
from api.core.resources import Resources
from api.journal.circuit import graph_health
from api.journal.record import Change
from graph.projection import (
    GraphChange,
    StaleApplier,
    apply_changes,
    statement_runs,
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


# How far the tenant's journal is applied (migration 0019): every row at or
# below it is applied or failed. An SQL expression of `:customer_id`.
THROUGH_SQL = "COALESCE((SELECT through FROM journal_applied WHERE customer_id = :customer_id), 0)"


# The tenant's pending rows, as a condition on sync_journal beside
# `customer_id = :customer_id`: above the watermark (through the primary key),
# and neither failed nor settled otherwise.
PENDING_SQL = f"version > {THROUGH_SQL} AND state = 'pending'"


_PENDING = text(
    "SELECT version, entity_type, entity_id, op, payload FROM sync_journal "  # noqa: S608
    f"WHERE customer_id = :customer_id AND {PENDING_SQL} ORDER BY version LIMIT :limit"
)


_PENDING_VERSIONS = text(
    "SELECT version FROM sync_journal WHERE customer_id = :customer_id "  # noqa: S608
    f"AND {PENDING_SQL} ORDER BY version LIMIT :limit"
)


# Everything up to `upto` is settled: one row, whatever the batch's size. Only
# the holder of the tenant's apply lock moves it (and `retry_failed` lowers it).
_MARK_APPLIED = text(
    "INSERT INTO journal_applied AS a (customer_id, through, applied_at) "
    "VALUES (:customer_id, :upto, now()) ON CONFLICT (customer_id) DO UPDATE "
    "SET through = GREATEST(a.through, EXCLUDED.through), applied_at = EXCLUDED.applied_at"
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
#
# It also answers `_ANY_PENDING`, as of the statement's snapshot (`pending`),
# and reads the counter as of that snapshot too (`seen`). The snapshot is taken
# before the row lock is waited for; the locked row is the latest. Every
# journal write moves the counter in the transaction that adds its pending
# rows, so `seen == version` means no writer committed in between and
# `pending` misses none. Otherwise the caller asks `_ANY_PENDING` again.
_LOCKED_COLUMNS = (
    "SELECT version, "  # noqa: S608 (constant SQL)
    "pg_try_advisory_lock(hashtextextended(CAST(:key AS text), 7)) AS held, "
    "nextval('journal_apply_epoch') AS epoch, "
    "(SELECT version FROM customer_versions WHERE customer_id = :customer_id) AS seen, "
    "EXISTS (SELECT 1 FROM sync_journal WHERE customer_id = :customer_id "
    f"AND {PENDING_SQL}) AS pending FROM counter"
)
_COUNTER = (
    "WITH counter AS MATERIALIZED (SELECT version FROM customer_versions "
    "WHERE customer_id = :customer_id FOR UPDATE) "
)
_LOCK_TRY_HOLD = text(_COUNTER + _LOCKED_COLUMNS)


# `_LOCK_TRY_HOLD` that also loads the current state of the ids a write names
# (`ChangeSet.prefetch`'s columns), saving a batch that round trip: one row
# per id found, the lock's columns on each, or one row with null entity
# columns. The lock's columns are a materialised CTE, so the try and the
# epoch happen once whatever the join makes of them. The states are as of
# the statement's snapshot: current when `seen == version` (no writer of the
# tenant committed in between, see above); otherwise the caller loads them again.
_LOCK_TRY_HOLD_LOADING = text(
    f"{_COUNTER}, locked AS MATERIALIZED ({_LOCKED_COLUMNS}) "  # noqa: S608 (constant SQL)
    "SELECT locked.*, e.entity_id, e.entity_type, e.customer_id AS owner, "
    "e.version AS entity_version, e.deleted, e.payload "
    "FROM locked LEFT JOIN sync_entities e ON e.entity_id = ANY(:ids)"
)


# An apply lock holder's fencing token (migration 0015): every Neo4j apply
# transaction raises the tenant's fence to it first (graph.projection.FENCE),
# so a holder whose lock vanished with its connection (a Postgres restart)
# cannot land an older batch after a newer holder's. Drawn after the lock is
# taken; a sequence never repeats, crashes included.
_EPOCH = text("SELECT nextval('journal_apply_epoch')")


_UNHOLD = text("SELECT pg_advisory_unlock(hashtextextended(CAST(:customer_id AS text), 7))")


# Inside a new transaction: take the lock at transaction level (the session
# holds it, so this cannot wait), then drop the session-level hold. The
# transaction only marks rows applied (moves the tenant's watermark), so its
# commit does not wait for the WAL flush (`synchronous_commit` off for it
# alone): a mark lost in a crash leaves its rows pending and the reconciler
# applies them again, a no-op (version guards). WAL order keeps lost marks a
# suffix of each tenant's: the next writer's journal commit, synchronous,
# flushes every mark before it.
_HAND_OVER = text(
    "SELECT set_config('synchronous_commit', 'off', true), "
    "pg_advisory_xact_lock(hashtextextended(CAST(:customer_id AS text), 7)), "
    "pg_advisory_unlock(hashtextextended(CAST(:customer_id AS text), 7))"
)


_ANY_PENDING = text(
    "SELECT EXISTS (SELECT 1 FROM sync_journal WHERE "  # noqa: S608 (constant SQL)
    f"customer_id = :customer_id AND {PENDING_SQL})"
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
    resources: Resources, changes: Sequence[GraphChange], outcome: Applied, epoch: int
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
        await apply_changes(resources.graph, changes, epoch)
    except Exception as exc:
        if isinstance(exc, StaleApplier) or not refused_rows(exc):
            raise
        if len(changes) == 1:
            outcome.failed.append((changes[0], f"{type(exc).__name__}: {exc}"[:ERROR_TEXT_LIMIT]))
            outcome.through = changes[0].version
            return
        middle = len(changes) // 2
        await _apply_isolating(resources, changes[:middle], outcome, epoch)
        await _apply_isolating(resources, changes[middle:], outcome, epoch)
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
            epoch = int((await session.execute(_EPOCH)).scalar_one())
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
            stale = False
            try:
                await _apply_isolating(resources, changes, outcome, epoch)
            except StaleApplier as exc:
                # Our lock vanished (its connection dropped) and a later holder
                # applied: what we applied before stands, the rest is theirs.
                log.warning(
                    "journal.apply_superseded", customer_id=str(customer_id), error=str(exc)
                )
                stale = True
            except Exception as exc:
                JOURNAL_APPLY_FAILURES.inc()
                outage = exc
            await _settle(session, customer_id, outcome)
        if stale:
            # A later holder is at work, as when the lock is busy: without
            # `wait` the caller hears BUSY (its rows are that holder's to apply),
            # not a count that would let a request answer `applied: true`.
            return total + outcome.applied if wait else BUSY
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


@dataclass
class Ahead:
    """Changes a write expects to journal, with their Neo4j rows built before
    it takes the tenant's lock (versions numbered from 0 until then):
    `TenantTransaction.send_ahead`."""

    changes: list[Change]
    runs: list[tuple[LiteralString, list[dict[str, Any]]]]
    # The first version the rows are numbered from now: a write retried (an id
    # race) sends the same rows again in a new transaction, from a new base.
    base: int = 0


def prepare_ahead(customer_id: uuid.UUID, expected: Sequence[Change]) -> Ahead:
    graph = as_graph_changes(customer_id, expected, range(len(expected)))
    return Ahead(list(expected), statement_runs(list(graph.values())))


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
