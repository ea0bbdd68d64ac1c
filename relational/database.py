"""Async SQLAlchemy engine and sessions for the registry, with latency metrics.

Repositories take an `AsyncSession`, build queries and flush; they never
commit. Whoever opened the session (a request dependency, a CLI command, a
service that owns a unit of work) commits or rolls back.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from prometheus_client import Histogram
from sqlalchemy import TextClause, event, text
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

POSTGRES_QUERY_SECONDS = Histogram(
    "overwatch_postgres_query_duration_seconds",
    "Latency of PostgreSQL statements, by statement kind.",
    ["operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

_KINDS = {"SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "BEGIN", "COMMIT", "ROLLBACK"}


def _statement_kind(statement: str) -> str:
    word = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else ""
    return word if word in _KINDS else "OTHER"


class DriverStatement:
    """A constant `text()` statement compiled once for asyncpg itself ($1, $2, ...).

    Hot paths (heartbeats, pull pages) run it on a driver connection of
    `Resources.direct()`, past SQLAlchemy's execution machinery and result rows
    (a heartbeat's ~300 us of CPU against ~500-700 through them; a pull page of
    5,000 rows 4 ms less). Timed in the same histogram as the engine's statements.
    """

    def __init__(self, statement: TextClause) -> None:
        compiled = statement.compile(dialect=asyncpg_dialect())
        self.sql = str(compiled)
        self.order = tuple(compiled.positiontup or ())
        self.operation = _statement_kind(self.sql)

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        return [params[name] for name in self.order]

    async def fetch(
        self, driver: asyncpg.Connection, params: Mapping[str, Any]
    ) -> list[asyncpg.Record]:
        started = time.perf_counter()
        try:
            return await driver.fetch(self.sql, *self.args(params))
        finally:
            POSTGRES_QUERY_SECONDS.labels(operation=self.operation).observe(
                time.perf_counter() - started
            )


def _instrument(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "before_cursor_execute")
    def _start(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        conn.info.setdefault("overwatch_started", []).append(time.perf_counter())

    @event.listens_for(sync_engine, "after_cursor_execute")
    def _stop(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        started = conn.info["overwatch_started"].pop()
        POSTGRES_QUERY_SECONDS.labels(operation=_statement_kind(statement)).observe(
            time.perf_counter() - started
        )

    @event.listens_for(sync_engine, "handle_error")
    def _failed(context: Any) -> None:
        stack = context.connection.info.get("overwatch_started") if context.connection else None
        if stack:
            stack.pop()


def _discard_closed(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """Pool `checkout`: a connection asyncpg already knows is closed is replaced.

    This is what makes a restarted or failed-over server survivable without
    `pool_pre_ping` (a round trip before every checkout, three with its
    BEGIN/ROLLBACK): the server closes its sessions on the way down, asyncpg
    sees the socket close while the connection idles, and the pool opens a new
    one instead. One that dies unseen fails on first use; SQLAlchemy then treats
    it as a disconnect and invalidates the pool's older connections too.
    """
    if record.driver_connection.is_closed():
        raise DisconnectionError("the connection was closed while in the pool")


def create_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> AsyncEngine:
    """An instrumented async engine whose pool replaces connections closed by the server."""
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=30,
        echo=echo,
        connect_args={"timeout": 5, "command_timeout": 60},
    )
    _instrument(engine)
    event.listen(engine.sync_engine.pool, "checkout", _discard_closed)
    return engine


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def unit_of_work(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session whose transaction commits on success and rolls back on error."""
    async with sessions() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


def is_unreachable(exc: BaseException) -> bool:
    """True when `exc` means PostgreSQL could not be reached, not that a query was bad.

    asyncpg raises a bare `ConnectionRefusedError` (an `OSError`) when a new
    connection is refused; SQLAlchemy wraps errors on live connections.
    """
    if isinstance(exc, (OperationalError, InterfaceError, PoolTimeoutError, OSError)):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    # A server shutting down, starting up or gone mid-query answers with SQLSTATE
    # class 57 (operator intervention: 57P01 admin shutdown, 57P03 cannot connect
    # now, ...) or 08 (connection exception); asyncpg raises them as plain errors.
    for error in (exc, getattr(exc, "orig", None), getattr(exc, "__cause__", None)):
        state = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
        if isinstance(state, str) and state[:2] in ("57", "08"):
            return True
    return False


PRUNE_BATCH = 10_000


async def delete_in_batches(engine: AsyncEngine, statement: Any, params: dict[str, Any]) -> int:
    """Run a `DELETE … LIMIT :batch`-style statement until a batch comes back short.

    Each batch is its own transaction, so a large backlog never holds locks or
    bloats one transaction. Returns how many rows went.
    """
    removed = 0
    while True:
        async with engine.begin() as conn:
            result = await conn.execute(statement, params | {"batch": PRUNE_BATCH})
        removed += result.rowcount
        if result.rowcount < PRUNE_BATCH:
            return removed


async def ping(engine: AsyncEngine) -> None:
    """Raise if PostgreSQL cannot answer a trivial query."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
