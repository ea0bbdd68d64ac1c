"""The one thin wrapper around the official async Neo4j driver.

Every query goes through `GraphClient.read` / `GraphClient.write` with a name:
the name labels the latency histogram and the log line, and the parameters are
never logged (they carry customer data). Query text is `LiteralString`, so a
type checker flags any query assembled from runtime strings.

Every read transaction carries a server-side timeout (NEO4J_READ_TIMEOUT_SECONDS,
`read_timeout`): Neo4j itself stops a read that runs past it, so a runaway
traversal never keeps running after its caller gave up. A read that names its
own timeout (named queries, admin Cypher) keeps that one.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, LiteralString, TypeVar

import structlog
from neo4j import (
    AsyncDriver,
    AsyncGraphDatabase,
    AsyncManagedTransaction,
    AsyncSession,
    AsyncTransaction,
    Query,
    unit_of_work,
)
from prometheus_client import Histogram

log = structlog.get_logger("graph")

NEO4J_QUERY_SECONDS = Histogram(
    "overwatch_neo4j_query_duration_seconds",
    "Latency of Neo4j queries and transactions, by query name.",
    ["query", "mode"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

T = TypeVar("T")

DEFAULT_READ_TIMEOUT_SECONDS = 30.0


class GraphClient:
    """Named, timed, tenant-agnostic access to one Neo4j database."""

    def __init__(
        self,
        driver: AsyncDriver,
        database: str,
        *,
        read_timeout: float | None = DEFAULT_READ_TIMEOUT_SECONDS,
    ) -> None:
        self.driver = driver
        self.database = database
        self.read_timeout = read_timeout

    @classmethod
    def connect(
        cls,
        uri: str,
        user: str,
        password: str,
        database: str,
        *,
        max_pool_size: int = 50,
        connection_timeout: float = 5.0,
        read_timeout: float | None = DEFAULT_READ_TIMEOUT_SECONDS,
    ) -> GraphClient:
        driver = AsyncGraphDatabase.driver(
            uri,
            auth=(user, password),
            max_connection_pool_size=max_pool_size,
            connection_timeout=connection_timeout,
            # Fail fast when the server is gone instead of retrying for 30 s:
            # the write path records the change and the reconciler retries.
            max_transaction_retry_time=5.0,
            # Queries are fixed constants; "property key does not exist" style
            # notifications on a young database are noise in the service logs.
            notifications_min_severity="OFF",
        )
        return cls(driver, database, read_timeout=read_timeout)

    async def close(self) -> None:
        await self.driver.close()

    async def ping(self) -> None:
        """Raise if the database cannot answer a trivial read."""
        await self.read("ping", "RETURN 1 AS ok")

    async def read(
        self,
        name: str,
        query: LiteralString,
        params: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (the server-side tx timeout)
    ) -> list[dict[str, Any]]:
        """Run one read query in a managed read transaction; rows as dicts."""

        async def work(tx: AsyncManagedTransaction) -> list[dict[str, Any]]:
            result = await tx.run(query, dict(params or {}))
            return [record.data() async for record in result]

        if timeout is not None:
            work = unit_of_work(timeout=timeout)(work)
        return await self.read_tx(name, work)

    async def write(
        self, name: str, query: LiteralString, params: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Run one write query in a managed write transaction; rows as dicts."""

        async def work(tx: AsyncManagedTransaction) -> list[dict[str, Any]]:
            result = await tx.run(query, dict(params or {}))
            return [record.data() async for record in result]

        return await self.write_tx(name, work)

    async def read_tx(
        self, name: str, work: Callable[[AsyncManagedTransaction], Awaitable[T]]
    ) -> T:
        """Run `work` in a managed read transaction, with the server-side read timeout
        unless `work` carries one of its own (`neo4j.unit_of_work`)."""
        if getattr(work, "timeout", None) is None and self.read_timeout is not None:
            work = unit_of_work(timeout=self.read_timeout)(work)
        async with self._timed(name, "read"), self.driver.session(database=self.database) as s:
            return await s.execute_read(work)

    async def write_tx(
        self, name: str, work: Callable[[AsyncManagedTransaction], Awaitable[T]]
    ) -> T:
        async with self._timed(name, "write"), self.driver.session(database=self.database) as s:
            return await s.execute_write(work)

    async def open_write(self, name: str) -> OpenWrite:
        """Begin an explicit write transaction that commits only when told to.

        For work that must run now but may only become visible after something
        else succeeds (the journal's commit, see api/journal/). No retries:
        the caller falls back to a managed transaction if this one fails.
        """
        session = self.driver.session(database=self.database)
        try:
            tx = await session.begin_transaction()
        except BaseException:
            await session.close()
            raise
        return OpenWrite(name, session, tx)

    @asynccontextmanager
    async def _timed(self, name: str, mode: str) -> AsyncIterator[None]:
        started = time.perf_counter()
        outcome = "ok"
        try:
            yield
        except Exception:
            outcome = "error"
            raise
        finally:
            elapsed = time.perf_counter() - started
            NEO4J_QUERY_SECONDS.labels(query=name, mode=mode).observe(elapsed)
            log.debug(
                "neo4j.query", query=name, mode=mode, ms=round(elapsed * 1000, 2), outcome=outcome
            )

    async def run_schema(self, name: str, statement: str) -> None:
        """Run one schema statement (constraint/index) in its own auto-commit transaction.

        Schema statements come from the versioned files in `cypher/migrations/`,
        never from a request, which is why plain `str` is accepted here.
        """
        async with self._timed(name, "schema"), self.driver.session(database=self.database) as s:
            result = await s.run(Query(statement))  # a file, not a request: see docstring
            await result.consume()


class Rows(list[Mapping[str, Any]]):
    """A statement's rows, as the driver sends them. The driver formats every
    RUN's parameters for its debug log whether or not that log is on (6.4:
    `repr` of all of them, eagerly); for a 500-row batch that took 2 to 5 ms
    of the event loop just before the statement left. This list's `repr` is
    its length; it packs as any list."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<{len(self)} rows>"


class OpenWrite:
    """An explicit write transaction from `GraphClient.open_write`.

    End it with `commit()` or `rollback()`; both close its session. Its
    latency (begin to end) is recorded like any named write.
    """

    def __init__(self, name: str, session: AsyncSession, tx: AsyncTransaction) -> None:
        self.name = name
        self.tx = tx
        self._session = session
        self._started = time.perf_counter()
        self._ended = False

    async def commit(self) -> None:
        try:
            await self.tx.commit()
        except BaseException:
            await self._end("error")
            raise
        await self._end("ok")

    async def rollback(self) -> None:
        """Roll back and close; never raises (the transaction dies with its session)."""
        if self._ended:
            return
        try:
            if not self.tx.closed():
                await self.tx.rollback()
        except Exception as exc:  # the server rolls back what it never saw committed
            log.debug("neo4j.rollback_failed", query=self.name, error=type(exc).__name__)
        await self._end("rolled_back")

    async def _end(self, outcome: str) -> None:
        self._ended = True
        try:
            await self._session.close()
        finally:
            elapsed = time.perf_counter() - self._started
            NEO4J_QUERY_SECONDS.labels(query=self.name, mode="write").observe(elapsed)
            log.debug(
                "neo4j.query",
                query=self.name,
                mode="write",
                ms=round(elapsed * 1000, 2),
                outcome=outcome,
            )
