"""The tenant transaction: lock, record, overlap the Neo4j apply with the journal's commit."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager, suppress
from typing import LiteralString

import structlog
from neo4j.exceptions import ServiceUnavailable
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from api.core.observability import error_text
from api.core.resources import Resources
from api.journal.apply import (
    _ANY_PENDING,
    _EPOCH,
    _HAND_OVER,
    _LOCK_TRY_HOLD,
    _LOCK_TRY_HOLD_LOADING,
    _MARK_APPLIED,
    _TRY_HOLD,
    _UNHOLD,
    JOURNAL_APPLIED,
    LOCK_WAIT,
    OVERLAP_TIMEOUT,
    Ahead,
    _poll_lock,
    as_graph_changes,
    try_apply,
)
from api.journal.changes import EntityState
from api.journal.circuit import graph_health
from api.journal.record import _ALLOCATE_AND_RECORD, Change, Origin, _record_params, lock_tenant
from api.journal.tenant_gate import tenant_connection
from graph.driver import OpenWrite
from graph.projection import GraphChange, rebase_versions, run_statements, statement_runs

log = structlog.get_logger("api.journal")

# How long a batch waits, before validating, for the statement it sent ahead
# to leave for Neo4j (`ahead_dispatched`): a few round trips on loopback.
AHEAD_WAIT = 0.02


class TenantTransaction:
    """One tenant's write: counter row locked, changes journaled, then applied.

    The order is the journal's (DESIGN.md §4): Neo4j commits only after the
    Postgres transaction that journaled the changes has committed, and the
    rows turn applied (the tenant's watermark, `_MARK_APPLIED`, passes them)
    only after that. What this adds is overlap: when the
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
        self._epoch = 0
        self._ahead: list[Change] | None = None  # `send_ahead`
        self._fence: tuple[str, int] | None = None  # (customer, epoch), raised by the first `_run`
        self._dispatched = asyncio.Event()  # set by `_run`
        # `start(preload=...)`: the states it loaded, for `ChangeSet.load`.
        self.preloaded: dict[uuid.UUID, EntityState | None] = {}

    async def start(self, preload: Sequence[uuid.UUID] = ()) -> None:
        """Take the counter row; if nothing is pending, the apply lock and a Neo4j transaction.

        `preload`: ids whose current state the write will read (`ChangeSet.prefetch`),
        loaded in the lock's round trip into `preloaded` when that state is current.
        """
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
        lock_params = {"customer_id": self.customer_id, "key": params["customer_id"]}
        if preload:
            preload = list(set(preload))  # a batch names its venue once a node
            rows = (
                await self.session.execute(_LOCK_TRY_HOLD_LOADING, lock_params | {"ids": preload})
            ).all()
        else:
            rows = (await self.session.execute(_LOCK_TRY_HOLD, lock_params)).all()
        if not rows:
            raise LookupError(f"customer {self.customer_id} has no version counter")
        locked = rows[0]
        if preload and locked.seen == locked.version:
            self.preloaded = dict.fromkeys(preload) | {
                row.entity_id: EntityState(
                    row.entity_type, row.owner, row.entity_version, row.deleted, row.payload
                )
                for row in rows
                if row.entity_id is not None
            }
        self.next_version = int(locked.version) + 1
        # Never wait for the apply lock: its holder may be an applier stuck on
        # an unreachable Neo4j, and this transaction holds the counter row that
        # every other writer of the tenant is queued on.
        self._holding = bool(locked.held)
        self._epoch = int(locked.epoch)  # the fencing token (api/journal/apply.py)
        if not self._holding and await _poll_lock(
            self.resources, self.session, _TRY_HOLD, params, within=LOCK_WAIT
        ):
            self._holding = True
            self._epoch = int((await self.session.execute(_EPOCH)).scalar_one())
        if not self._holding:
            await self._discard()
            self._opening = None
            return
        # Nothing pending as of a snapshot no journal write passed (see
        # `_LOCK_TRY_HOLD`); otherwise a new statement, so a new snapshot: it
        # sees rows written or marked while we waited.
        settled = self._holding and locked.seen == locked.version and not locked.pending
        if not settled and (await self.session.execute(_ANY_PENDING, params)).scalar_one():
            await self.session.execute(_UNHOLD, params)  # older rows first: try_apply
            self._holding = False
            await self._discard()
            self._opening = None
            return
        # The tenant's fence goes with the first statement (`_run`): a refused
        # one (a later applier passed) fails `_running`, and `complete` leaves
        # the rows to `try_apply`.
        self._fence = (str(self.customer_id), self._epoch)

    def send_ahead(self, ahead: Ahead) -> None:
        """Start Neo4j on the changes the caller expects to `record` next,
        before it has validated them (ChangeSet.send_ahead; `prepare_ahead`
        built their rows before the lock, numbered from 0: rebased here).

        The statements run in the still uncommitted Neo4j transaction. If
        `record` then gets exactly these changes, it does not send them again;
        if anything differs, the Neo4j transaction is discarded and the
        journaled rows are applied after the commit (`apply_later`). A refused
        batch rolls back both stores, as any failed write does.
        """
        if self._opening is None or self._running is not None or self._ahead or not ahead.changes:
            return
        self._ahead = ahead.changes  # `record` fills `_known`, off the statement's way
        rebase_versions(ahead.runs, self.next_version - ahead.base)
        ahead.base = self.next_version
        self._running = asyncio.create_task(self._run(None, ahead.runs))

    async def record(
        self, changes: Sequence[Change], origin: Origin, absent: Collection[uuid.UUID] = ()
    ) -> list[int]:
        """Journal `changes` in this transaction (see `record`) and start applying them.

        `absent`: ids known to have no row yet (`ChangeSet.absent`)."""
        if not changes:
            return []
        # The counter row is locked: the versions are known before `_allocate`
        # returns them, so Neo4j gets its statement a round trip earlier.
        versions = list(range(self.next_version, self.next_version + len(changes)))
        sent_ahead = False
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            sent_ahead = ahead == list(changes)
            if not sent_ahead:  # validation changed the set: drop what Neo4j ran
                await self._discard()
                self._opening = self._running = None
                self._known = {}
        if not sent_ahead:
            known = as_graph_changes(self.customer_id, changes, versions)
            self._known.update(known)
            if self._opening is not None:
                runs = statement_runs(list(known.values()))
                self._running = asyncio.create_task(self._run(self._running, runs))
                await asyncio.sleep(0)  # let Neo4j get the statement before Postgres its rows
        params = _record_params(self.customer_id, changes, versions, origin, absent)
        params["n"] = len(changes)
        last = (await self.session.execute(_ALLOCATE_AND_RECORD, params)).scalar_one_or_none()
        if sent_ahead:  # Neo4j has them already; noted here, while it works on them
            self._known.update(as_graph_changes(self.customer_id, changes, versions))
        if last is None:
            raise LookupError(f"customer {self.customer_id} has no version counter")
        assert last == versions[-1], "versions allocated outside this transaction"
        self.next_version = versions[-1] + 1
        return versions

    async def _run(
        self, before: asyncio.Task[None] | None, runs: list[tuple[LiteralString, list[dict]]]
    ) -> None:
        try:
            if before is not None:
                await before
            assert self._opening is not None
            opened = await self._opening
        finally:
            # Set before the statement is packed and written (no await between):
            # a waiter resumes once it is on the wire, or once this failed.
            self._dispatched.set()
        fence, self._fence = self._fence, None  # the transaction's first statement raises it
        await run_statements(opened.tx, runs, fence)

    async def ahead_dispatched(self) -> None:
        """Wait until the statement `send_ahead` started is on its way to Neo4j
        (its transaction opened), at most AHEAD_WAIT.

        The caller's validation is CPU work with no await in it: without this
        the statement would only go out when validation ends. Bounded, so a
        slow or frozen Neo4j never holds a write up (the journal does not
        wait for its projection)."""
        if self._running is None or self._dispatched.is_set():
            return
        with suppress(TimeoutError):
            await asyncio.wait_for(self._dispatched.wait(), AHEAD_WAIT)

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
    resources: Resources, customer_id: uuid.UUID, preload: Sequence[uuid.UUID] = ()
) -> AsyncIterator[TenantTransaction]:
    """Lock the tenant's counter row, yield, commit; then apply to Neo4j.

    `preload`: see `TenantTransaction.start`.
    The body validates and calls `tx.record(...)`; any exception rolls back
    both stores. After the block, `tx.applied` says whether Neo4j has the
    changes (False: they are journaled and the reconciler will apply them).
    """
    async with tenant_connection(
        resources, customer_id
    ) as connection:  # api/journal/tenant_gate.py
        async with resources.sessions(bind=connection) as session:
            tx = TenantTransaction(resources, connection, session, customer_id)
            try:
                await tx.start(preload)
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
