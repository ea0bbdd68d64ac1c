"""Foundation: migrations, health/readiness, request ids, metrics, settings."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from api.core.migrate import migrate_postgres
from api.core.settings import Settings
from graph.driver import GraphClient
from graph.schema import load_migrations, migrate_graph
from tests.conftest import schema_drift


async def test_postgres_migrations_reach_head_and_reapply(pg, test_database_url):
    tables = {
        r["tablename"]
        for r in await pg.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    }
    assert {
        "customers",
        "api_keys",
        "workstations",
        "sync_journal",
        "sync_entities",
        "alembic_version",
    } <= tables
    head = await pg.fetchval("SELECT version_num FROM alembic_version")
    await migrate_postgres(test_database_url)  # second run: nothing to do, no error
    assert await pg.fetchval("SELECT version_num FROM alembic_version") == head


async def test_models_and_migrations_agree_on_every_table(test_database_url):
    """The migrated schema is the one relational/models/ declares, all tables."""
    assert await schema_drift(test_database_url) == []


async def test_a_deleted_customer_takes_its_journal_states_and_queue(client, tenant, pg):
    """The journal's tables have no foreign key to customers (migration 0016):
    the trigger does the cascade the foreign keys did."""
    venue = await client.post("/api/v1/venues", json={"name": "Cascade"}, headers=tenant.headers)
    assert venue.status_code == 201, venue.text
    tables = ("sync_journal", "sync_entities", "embedding_queue")

    async def counts() -> list[int]:
        return [
            await pg.fetchval(f"SELECT count(*) FROM {t} WHERE customer_id = $1", tenant.id)
            for t in tables
        ]

    assert all(await counts())
    await pg.execute("DELETE FROM customers WHERE id = $1", tenant.id)
    assert await counts() == [0, 0, 0]


async def test_neo4j_migrations_recorded_in_graph_and_idempotent(graph: GraphClient):
    expected = [m.version for m in load_migrations()]
    assert await migrate_graph(graph) == []  # the session fixture applied them already
    rows = await graph.read(
        "test.migrations", "MATCH (m:SchemaMigration) RETURN m.version AS v ORDER BY v"
    )
    assert [r["v"] for r in rows] == expected
    indexes = {
        r["name"]: r
        for r in await graph.read(
            "test.indexes", "SHOW INDEXES YIELD name, type, state RETURN name, type, state"
        )
    }
    assert indexes["venue_embedding"]["type"] == "VECTOR"
    assert indexes["world_node_embedding"]["type"] == "VECTOR"
    assert indexes["venue_text"]["type"] == "FULLTEXT"
    assert indexes["world_node_customer_version"]["type"] == "RANGE"
    constraints = {
        r["name"]
        for r in await graph.read("test.constraints", "SHOW CONSTRAINTS YIELD name RETURN name")
    }
    assert {"venue_id", "world_node_id", "operation_id", "kit_id", "drone_id"} <= constraints


async def test_liveness(client: httpx.AsyncClient):
    for path in ("/health", "/healthz"):
        response = await client.get(path)
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}


async def test_readyz_all_dependencies_ok(client: httpx.AsyncClient):
    response = await client.get("/readyz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["failed"] == []
    assert {name: c["status"] for name, c in body["checks"].items()} == {
        "postgres": "ok",
        "neo4j": "ok",
        "s3": "ok",
    }


async def _readyz_with(settings: Settings, **overrides) -> httpx.Response:
    from main import create_app

    app: FastAPI = create_app(settings.model_copy(update=overrides), background=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return await c.get("/readyz")


async def test_readyz_names_neo4j_when_it_is_down(settings: Settings):
    # Nothing listens on port 1: the same refusal a stopped Neo4j gives. Sync
    # reads Postgres only, so the API still serves: degraded, not unavailable.
    response = await _readyz_with(settings, neo4j_uri="bolt://127.0.0.1:1")
    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "degraded" and body["failed"] == []
    assert "neo4j" in body["degraded"]
    assert body["checks"]["postgres"]["status"] == "ok"
    assert body["checks"]["neo4j"]["status"] == "fail"


async def test_readyz_names_postgres_and_s3_when_down(settings: Settings):
    response = await _readyz_with(
        settings,
        database_url="postgresql+asyncpg://overwatch:overwatch@127.0.0.1:1/overwatch",
        blob_endpoint_url="http://127.0.0.1:1",
    )
    assert response.status_code == 503
    assert sorted(response.json()["failed"]) == ["postgres", "s3"]


async def test_request_id_is_returned_and_propagated(client: httpx.AsyncClient):
    fresh = await client.get("/healthz")
    assert len(fresh.headers["x-request-id"]) >= 16
    given = await client.get("/healthz", headers={"X-Request-ID": "trace-abc.123"})
    assert given.headers["x-request-id"] == "trace-abc.123"
    hostile = await client.get("/healthz", headers={"X-Request-ID": "bad id\r\nx"})
    assert hostile.headers["x-request-id"] != "bad id\r\nx"


def _sample(metrics: str, prefix: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient):
    key = 'overwatch_http_requests_total{method="GET",route="/healthz",status="200"}'
    before = _sample((await client.get("/metrics")).text, key)
    for _ in range(3):
        await client.get("/healthz")
    text = (await client.get("/metrics")).text
    assert _sample(text, key) == before + 3
    assert "overwatch_http_request_duration_seconds_bucket" in text
    # The readiness probe above went through both instrumented clients.
    await client.get("/readyz")
    text = (await client.get("/metrics")).text
    assert 'overwatch_neo4j_query_duration_seconds_count{mode="read",query="ping"}' in text
    assert 'overwatch_postgres_query_duration_seconds_count{operation="SELECT"}' in text


async def test_unknown_route_uses_the_error_shape(client: httpx.AsyncClient):
    response = await client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("environment", ["test", "staging", "production"])
def test_default_secrets_refused_outside_development(environment):
    with pytest.raises(ValidationError) as excinfo:
        Settings(_env_file=None, environment=environment)  # type: ignore[call-arg]
    message = str(excinfo.value)
    for name in ("API_KEY_PEPPER", "ADMIN_API_KEY", "NEO4J_PASSWORD", "BLOB_SECRET_ACCESS_KEY"):
        assert name in message


def test_real_secrets_accepted_in_production():
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="production",
        api_key_pepper="p" * 32,
        admin_api_key="a" * 40,
        neo4j_password="n" * 20,
        blob_secret_access_key="s" * 20,
    )
    assert settings.environment == "production"


def test_auto_migrate_refused_in_production():
    with pytest.raises(ValidationError, match="DB_AUTO_MIGRATE"):
        Settings(
            _env_file=None,
            environment="production",
            db_auto_migrate=True,  # type: ignore[call-arg]
            api_key_pepper="p" * 32,
            admin_api_key="a" * 40,
            neo4j_password="n" * 20,
            blob_secret_access_key="s" * 20,
        )
