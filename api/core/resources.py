"""The long-lived clients one API process holds: Postgres, Neo4j, S3.

Created in the app lifespan (or by a CLI command), stored on `app.state`, and
handed to endpoints through the dependencies in `api/core/deps.py`. Nothing here is
process-global, so tests and benchmarks can run several apps side by side.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import boto3
from botocore.config import Config as BotoConfig
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.core.settings import Settings
from graph.driver import GraphClient
from relational.database import create_engine, create_sessionmaker


def create_s3_client(settings: Settings, *, public: bool = False) -> Any:
    """A boto3 S3 client; `public=True` signs URLs for the address clients use."""
    endpoint = settings.blob_endpoint_url or None
    if public and settings.blob_public_endpoint_url:
        endpoint = settings.blob_public_endpoint_url
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=settings.blob_region,
        aws_access_key_id=settings.blob_access_key_id,
        aws_secret_access_key=settings.blob_secret_access_key.get_secret_value(),
        config=BotoConfig(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            connect_timeout=3,
            read_timeout=10,
            retries={"max_attempts": 2},
        ),
    )


# The application_name of the one LISTEN connection each API process holds
# (api/streams/hub.py); the key cache counts them to know who must acknowledge.
LISTENER_NAME = "overwatch-stream-listener"


async def _rollback_if_open(connection: asyncpg.Connection) -> None:
    """The direct pool's reset on return: users run single autocommitted statements
    and change no session state, so asyncpg's default reset query (a round trip
    on every release) is needed only if a transaction was left open."""
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


# The direct pool runs key lookups (heartbeats, the pull note) and pull pages,
# which read a tenant's rows along (customer_id, version) and stop at the
# page; its planner is told so: no bitmap and no sequential scans. The page's
# range (since, head] has a bound known only while the statement runs (the
# head, read in the same snapshot), for which Postgres assumes 0.5 % of the
# tenant's rows match; with that estimate its custom plan for the first
# executions of a pull was a bitmap scan of every row past the cursor and a
# sort of them all: the first five pages of a 100,000-entity catch-up took
# 100-200 ms each instead of ~13 (auto_explain, bench `sync`). A sequential
# scan and a sort is the same mistake when an estimate errs the other way.
# Without either, the index yields the page in version order and the scan
# ends at the limit (tests/test_sync.py).
DIRECT_SETTINGS = {"enable_bitmapscan": "off", "enable_seqscan": "off"}


@dataclass
class Resources:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    graph: GraphClient
    s3: Any
    s3_public: Any
    extras: dict[str, Any] = field(default_factory=dict)
    _direct: asyncpg.Pool | None = None
    _direct_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def autocommit(self) -> AsyncEngine:
        """The engine's pool, each statement its own transaction: for readers
        of one statement (a statement is one snapshot), no BEGIN or COMMIT
        round trips. Connections go back to the pool in the default mode."""
        engine = self.extras.get("autocommit")
        if engine is None:
            engine = self.extras["autocommit"] = self.engine.execution_options(
                isolation_level="AUTOCOMMIT"
            )
        return engine

    @classmethod
    def open(cls, settings: Settings) -> Resources:
        engine = create_engine(settings.database_url, pool_size=settings.database_pool_size)
        graph = GraphClient.connect(
            settings.neo4j_uri,
            settings.neo4j_user,
            settings.neo4j_password.get_secret_value(),
            settings.neo4j_database,
            read_timeout=settings.neo4j_read_timeout_seconds,
        )
        return cls(
            settings=settings,
            engine=engine,
            sessions=create_sessionmaker(engine),
            graph=graph,
            s3=create_s3_client(settings),
            s3_public=create_s3_client(settings, public=True),
        )

    async def direct(self) -> asyncpg.Pool:
        """A plain asyncpg pool for hot paths of one statement (heartbeats, pull pages),
        opened on first use.

        Apart from the engine's pool on purpose: it never opens overflow
        connections (under more concurrent requests than connections a caller
        waits for one, instead of paying a connect, TLS probe and statement
        preparation per request as the engine's closed-on-return overflow
        connections did), and neither a telemetry storm nor many workstations
        catching up can take the connections the journal's writes need.
        asyncpg replaces a connection it finds closed when it hands it out, so
        a restarted Postgres costs no ping per request.
        """
        if self._direct is None:
            async with self._direct_lock:
                if self._direct is None:
                    self._direct = await asyncpg.create_pool(
                        self.settings.sync_database_url,
                        min_size=1,
                        max_size=self.settings.database_pool_size,
                        timeout=5,
                        command_timeout=60,
                        max_inactive_connection_lifetime=300,
                        reset=_rollback_if_open,
                        server_settings=DIRECT_SETTINGS,
                    )
        return self._direct

    async def close(self) -> None:
        await self.graph.close()
        if self._direct is not None:
            await self._direct.close()
        await self.engine.dispose()
