"""Fixtures on real servers. Where they come from, in this order:

1. URLs from the environment: TEST_DATABASE_URL (an admin-capable Postgres URL;
   a fresh `<db>_test` database is built from it), TEST_NEO4J_URI /
   TEST_NEO4J_USER / TEST_NEO4J_PASSWORD, TEST_BLOB_ENDPOINT_URL.
2. Containers from testcontainers, when a Docker engine answers.
3. The project's test stack: `scripts/stack.sh` with OVERWATCH_STACK_INSTANCE=test
   (its own data directory `.local/test-stack` and ports), started here if
   needed and reused by later runs. Never the dev stack `make run` uses, so
   nothing a developer does there changes a test's result.

Postgres: one test database per session, built by `alembic upgrade head`.
Isolation: every test works in fresh tenants; their Neo4j data is removed after.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from api.core.migrate import migrate_postgres
from api.core.settings import Settings
from graph.driver import GraphClient
from graph.schema import migrate_graph

ROOT = Path(__file__).resolve().parent.parent
ADMIN_KEY = "ow_admin_test_" + secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Servers:
    admin_database_url: str  # a database we may CREATE DATABASE from
    neo4j_uri: str
    neo4j_user: str
    neo4j_password: str
    blob_endpoint_url: str
    origin: str


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


def _servers_from_env() -> Servers | None:
    url = os.environ.get("TEST_DATABASE_URL")
    neo4j = os.environ.get("TEST_NEO4J_URI")
    if not (url and neo4j):
        return None
    return Servers(
        admin_database_url=url,
        neo4j_uri=neo4j,
        neo4j_user=os.environ.get("TEST_NEO4J_USER", "neo4j"),
        neo4j_password=os.environ["TEST_NEO4J_PASSWORD"],
        blob_endpoint_url=os.environ.get("TEST_BLOB_ENDPOINT_URL", "http://127.0.0.1:9000"),
        origin="environment",
    )


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    from_env = _servers_from_env()
    if from_env:
        yield from_env
        return
    if os.environ.get("OVERWATCH_TEST_CONTAINERS", "auto") != "off" and _docker_answers():
        from testcontainers.minio import MinioContainer
        from testcontainers.neo4j import Neo4jContainer
        from testcontainers.postgres import PostgresContainer

        with (
            PostgresContainer("postgres:16", driver="asyncpg") as pg,
            Neo4jContainer("neo4j:5.26-community", password="containerpass") as neo,
            MinioContainer() as minio,
        ):
            cfg = minio.get_config()
            yield Servers(
                admin_database_url=pg.get_connection_url(),
                neo4j_uri=neo.get_connection_url(),
                neo4j_user="neo4j",
                neo4j_password="containerpass",
                blob_endpoint_url=f"http://{cfg['endpoint']}",
                origin="testcontainers",
            )
        return
    yield _test_stack()


def _test_stack() -> Servers:
    """Start (or reuse) the test stack instance and read its URLs from
    `scripts/stack.sh env`."""
    env = {**os.environ, "OVERWATCH_STACK_INSTANCE": "test"}
    script = str(ROOT / "scripts" / "stack.sh")
    subprocess.run(["bash", script, "up"], check=True, env=env)
    printed = subprocess.run(
        ["bash", script, "env"], check=True, env=env, capture_output=True, text=True
    ).stdout
    values = dict(
        line.removeprefix("export ").split("=", 1) for line in printed.splitlines() if "=" in line
    )
    values = {k: v.strip("'") for k, v in values.items()}
    return Servers(
        admin_database_url=values["TEST_DATABASE_URL"],
        neo4j_uri=values["TEST_NEO4J_URI"],
        neo4j_user="neo4j",
        neo4j_password=values["TEST_NEO4J_PASSWORD"],
        blob_endpoint_url=values["TEST_BLOB_ENDPOINT_URL"],
        origin="test stack",
    )


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture(scope="session")
async def test_database_url(servers: Servers) -> AsyncIterator[str]:
    """A fresh database for this session (`<db>_test_<pid>`), migrated with
    `alembic upgrade head` and dropped afterwards, so concurrent test runs on
    one server never touch each other's data."""
    admin = make_url(servers.admin_database_url)
    base = f"{admin.database or 'overwatch'}_test_"
    name = f"{base}{os.getpid()}"
    conn = await asyncpg.connect(_asyncpg_dsn(servers.admin_database_url))
    try:
        for row in await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE $1", base + "%"
        ):
            suffix = row["datname"][len(base) :]
            if suffix.isdigit() and not _pid_alive(int(suffix)):  # left by a killed run
                await conn.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = admin.set(database=name).render_as_string(hide_password=False)
    await migrate_postgres(url)
    yield url
    conn = await asyncpg.connect(_asyncpg_dsn(servers.admin_database_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def settings(servers: Servers, test_database_url: str) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="development",
        database_url=test_database_url,
        database_pool_size=10,
        neo4j_uri=servers.neo4j_uri,
        neo4j_user=servers.neo4j_user,
        neo4j_password=servers.neo4j_password,  # type: ignore[arg-type]
        api_key_pepper="test-pepper-" + secrets.token_hex(16),  # type: ignore[arg-type]
        admin_api_key=ADMIN_KEY,  # type: ignore[arg-type]
        blob_endpoint_url=servers.blob_endpoint_url,
        blob_bucket="overwatch-test-" + secrets.token_hex(4),
        log_level="WARNING",
        db_auto_migrate=False,
    )


@pytest.fixture(scope="session")
async def graph(settings: Settings) -> AsyncIterator[GraphClient]:
    client = GraphClient.connect(
        settings.neo4j_uri,
        settings.neo4j_user,
        settings.neo4j_password.get_secret_value(),
        settings.neo4j_database,
    )
    await migrate_graph(client)
    yield client
    await client.close()


@pytest.fixture(scope="session")
async def app(settings: Settings, graph: GraphClient) -> AsyncIterator[FastAPI]:
    """One app for the session, its lifespan running (bucket created, clients open)."""
    from main import create_app

    application = create_app(settings, background=False)
    async with application.router.lifespan_context(application):
        yield application
        _drop_bucket(application.state.resources.s3, settings.blob_bucket)


def _drop_bucket(s3: Any, bucket: str) -> None:
    """Remove the session's bucket: on SeaweedFS every bucket is a collection
    holding volume slots of its own, which a long-lived test stack would use up."""
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
        s3.delete_bucket(Bucket=bucket)
    except Exception as exc:  # cleanup only: never fail the session for it
        print(f"could not remove test bucket {bucket}: {exc}")


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"X-API-Key": ADMIN_KEY}


@pytest.fixture
async def pg(test_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A raw asyncpg connection to the test database, for assertions."""
    conn = await asyncpg.connect(_asyncpg_dsn(test_database_url))
    yield conn
    await conn.close()


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass
class Tenant:
    id: str
    name: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}


@pytest.fixture
async def make_tenant(
    client: httpx.AsyncClient, admin_headers: dict[str, str], graph: GraphClient
) -> AsyncIterator[Any]:
    """Factory for fresh tenants (via the admin API); their graph data is removed after."""
    created: list[Tenant] = []

    async def factory(name: str = "tenant") -> Tenant:
        response = await client.post(
            "/api/v1/auth/customers", json={"name": name}, headers=admin_headers
        )
        assert response.status_code == 201, response.text
        body = response.json()
        tenant = Tenant(id=body["id"], name=name, key=body["api_key"])
        created.append(tenant)
        return tenant

    yield factory
    if created:
        await graph.write(
            "test.clear_tenants",
            "MATCH (n) WHERE n.customer_id IN $ids DETACH DELETE n",
            {"ids": [t.id for t in created]},
        )


@pytest.fixture
async def tenant(make_tenant: Any) -> Tenant:
    return await make_tenant("alpha")


@pytest.fixture
async def other_tenant(make_tenant: Any) -> Tenant:
    return await make_tenant("beta")


async def schema_drift(database_url: str, tables: set[str] | None = None) -> list[Any]:
    """What Alembic's autogenerate sees between the migrated database and the
    models (relational/models/), limited to `tables` when given."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy.ext.asyncio import create_async_engine

    from relational.models import Base

    def diff(connection: Any) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        found = compare_metadata(context, Base.metadata)
        return [d for d in found if tables is None or any(t in repr(d) for t in tables)]

    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(diff)
    finally:
        await engine.dispose()


async def make_key(
    client: httpx.AsyncClient, tenant: Tenant, scope: str, **extra: Any
) -> dict[str, Any]:
    """A new API key of the tenant with `scope` (the create response, secret included)."""
    response = await client.post(
        "/api/v1/auth/keys",
        headers=tenant.headers,
        json={"name": f"{scope} key", "scope": scope, **extra},
    )
    assert response.status_code == 201, response.text
    return response.json()
