"""Apply both migration sets: Alembic for Postgres, `cypher/migrations` for Neo4j."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

from api.core.settings import Settings
from graph.driver import GraphClient
from graph.schema import migrate_graph

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # api/core/migrate.py -> the repository


def alembic_config(database_url: str) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    # The service configures logging itself (api.core.observability renders Alembic's
    # lines); alembic.ini's logging sections are for the bare `alembic` command.
    config.attributes["configure_logger"] = False
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


async def migrate_postgres(database_url: str) -> None:
    """`alembic upgrade heads`, in a worker thread (env.py starts its own loop).

    `heads`: revisions written in parallel may branch from one parent until a
    merge revision joins them; every branch is applied either way.
    """
    await asyncio.to_thread(command.upgrade, alembic_config(database_url), "heads")


async def migrate_all(settings: Settings, graph: GraphClient | None = None) -> list[int]:
    """Postgres first (it is the system of record), then the Neo4j schema."""
    await migrate_postgres(settings.database_url)
    own = graph is None
    client = graph or GraphClient.connect(
        settings.neo4j_uri,
        settings.neo4j_user,
        settings.neo4j_password.get_secret_value(),
        settings.neo4j_database,
    )
    try:
        return await migrate_graph(client)
    finally:
        if own:
            await client.close()
