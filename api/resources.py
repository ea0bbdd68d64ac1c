"""The long-lived clients one API process holds: Postgres, Neo4j, S3.

Created in the app lifespan (or by a CLI command), stored on `app.state`, and
handed to endpoints through the dependencies in `api/deps.py`. Nothing here is
process-global, so tests and benchmarks can run several apps side by side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.settings import Settings
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


@dataclass
class Resources:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    graph: GraphClient
    s3: Any
    s3_public: Any
    extras: dict[str, Any] = field(default_factory=dict)

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

    async def close(self) -> None:
        await self.graph.close()
        await self.engine.dispose()
