"""What every request pays for, kept small without changing what it does.

No timings here (the benchmark measures them: bench/heartbeat.py); these tests
pin the mechanisms: no threadpool hop for a dependency or an endpoint, one
pooled connection and one statement (no BEGIN/COMMIT/ROLLBACK) per
heartbeat, and the request middleware's metrics and access log line intact
with its cached metric children.
"""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
import structlog
from fastapi import FastAPI
from fastapi.datastructures import DefaultPlaceholder
from prometheus_client import REGISTRY
from sqlalchemy import event
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from api.auth.deps import KeyAuth
from api.auth.principal import Principal, Scope
from api.core.deps import get_session
from api.core.errors import DependencyUnavailable
from api.core.observability import RequestContextMiddleware
from api.core.resources import Resources, _rollback_if_open
from api.fleet import service
from api.fleet.schemas import HeartbeatIn
from tests.conftest import Tenant
from tests.test_registry import beat, claimed_kit


def _api_routes(routes: list[Any]) -> Iterator[Any]:
    """Every endpoint as the app serves it: its full path and its dependencies,
    the including routers' included (FastAPI's included routers resolve them
    in `effective_candidates()`; a plain route carries them itself)."""
    for route in routes:
        if hasattr(route, "effective_candidates"):
            yield from _api_routes(route.effective_candidates())
        elif getattr(route, "dependant", None) is not None:
            yield route


def _is_async(call: Any) -> bool:
    return (
        inspect.iscoroutinefunction(call)
        or inspect.isasyncgenfunction(call)
        or inspect.iscoroutinefunction(type(call).__call__)  # e.g. APIKeyHeader
    )


def _sync_dependencies(dependant: Any) -> Iterator[Any]:
    for dependency in dependant.dependencies:
        if not _is_async(dependency.call):
            yield dependency.call
        yield from _sync_dependencies(dependency)


def test_no_dependency_or_endpoint_runs_in_the_threadpool(app: FastAPI):
    """FastAPI runs a plain `def` dependency or endpoint in its threadpool: a
    thread hop (and GIL contention) on every request that uses it."""
    api_routes = list(_api_routes(app.routes))
    assert any(r.path == "/api/v1/drones/{serial}/heartbeat" for r in api_routes)
    offenders = {
        f"{route.path}: {getattr(call, '__qualname__', call)}"
        for route in api_routes
        for call in [
            *_sync_dependencies(route.dependant),
            *([] if _is_async(route.endpoint) else [route.endpoint]),
        ]
    }
    assert not offenders, sorted(offenders)


def _authenticates(dependency: Any) -> bool:
    return isinstance(dependency.call, KeyAuth) or any(
        _authenticates(d) for d in dependency.dependencies
    )


def test_fleet_endpoints_authenticate_before_they_open_a_session(app: FastAPI):
    """Dependencies resolve in declaration order: with the principal first, a
    refused caller (401/403) costs no session. (Fleet endpoints: the hot ones.)"""
    checked = 0
    for route in _api_routes(app.routes):
        if route.endpoint.__module__ != "api.fleet.endpoints":
            continue
        dependencies = route.dependant.dependencies
        session = [i for i, d in enumerate(dependencies) if d.call is get_session]
        auth = [
            i for i, d in enumerate(dependencies) if d.call is not get_session and _authenticates(d)
        ]
        assert auth, route.path
        if session:
            checked += 1
            assert auth[0] < session[0], f"{route.path}: the session opens before authentication"
    assert checked >= 10


async def test_a_heartbeat_takes_one_connection_and_runs_one_statement(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: dict[str, str], tenant: Tenant
):
    """One connection from the direct pool, one statement on it, and nothing else:
    no BEGIN/COMMIT/ROLLBACK around it, no reset query on return, and the
    engine's pool (the journal's) is not touched."""
    _, drones = await claimed_kit(client, admin_headers, tenant)
    resources = app.state.resources
    executed: list[str] = []  # every query the connection runs, the pool's reset included
    acquired = 0
    engine_checkouts = 0

    def log_query(record: Any) -> None:
        executed.append(record.query)

    async def on_acquire(connection: asyncpg.Connection) -> None:
        nonlocal acquired
        acquired += 1
        connection.remove_query_logger(log_query)
        connection.add_query_logger(log_query)

    def on_checkout(*_: Any) -> None:
        nonlocal engine_checkouts
        engine_checkouts += 1

    pool = await asyncpg.create_pool(
        resources.settings.sync_database_url,
        min_size=1,
        max_size=2,
        setup=on_acquire,
        reset=_rollback_if_open,
    )
    replaced, resources._direct = resources._direct, pool
    event.listen(resources.engine.sync_engine.pool, "checkout", on_checkout)
    principal = Principal(
        key_uuid=uuid.uuid4(),
        scopes=frozenset({Scope.device}),
        customer_id=uuid.UUID(tenant.id),
        device_serial=drones[0],
    )
    try:
        accepted = await service.record_heartbeat(
            resources, principal, drones[0], HeartbeatIn.model_validate(beat())
        )
    finally:
        event.remove(resources.engine.sync_engine.pool, "checkout", on_checkout)
        resources._direct = replaced
        await pool.close()
    assert accepted.serial == drones[0]
    assert acquired == 1
    assert engine_checkouts == 0
    assert len(executed) == 1, executed
    assert executed[0].lstrip().startswith("WITH d AS MATERIALIZED")


async def test_a_heartbeat_without_postgres_is_a_503_naming_it(settings: Any):
    """The direct pool keeps the outage answer: nothing recorded, 503."""
    unreachable = settings.model_copy(
        update={"database_url": "postgresql+asyncpg://nobody:nothing@127.0.0.1:1/none"}
    )
    resources = Resources.open(unreachable)
    principal = Principal(
        key_uuid=None, scopes=frozenset({Scope.customer}), customer_id=uuid.uuid4()
    )
    try:
        with pytest.raises(DependencyUnavailable) as refused:
            await service.record_heartbeat(
                resources, principal, "D-NOWHERE", HeartbeatIn.model_validate(beat())
            )
    finally:
        await resources.close()
    assert refused.value.details == {"dependency": "postgres"}


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_request_metrics_and_access_log_per_route_and_status():
    """Metric children are cached per (method, route, status): a second status
    on the same route is its own series, and each request counts once."""

    async def item(request: Request) -> PlainTextResponse:
        found = request.path_params["item_id"] == "1"
        return PlainTextResponse("ok" if found else "no", status_code=200 if found else 404)

    app = RequestContextMiddleware(Starlette(routes=[Route("/cost-test/{item_id}", item)]))
    route = "/cost-test/{item_id}"
    ok = {"method": "GET", "route": route, "status": "200"}
    missing = {"method": "GET", "route": route, "status": "404"}
    before_ok = _sample("overwatch_http_requests_total", **ok)
    before_missing = _sample("overwatch_http_requests_total", **missing)
    before_seconds = _sample("overwatch_http_request_duration_seconds_count", **missing)
    transport = httpx.ASGITransport(app=app)
    config = structlog.get_config()
    # The access log is at INFO, which the test settings' level may filter out.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    try:
        with structlog.testing.capture_logs() as logs:
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                responses = [
                    await c.get("/cost-test/1"),
                    await c.get("/cost-test/1"),
                    await c.get("/cost-test/2", headers={"X-Request-ID": "cost-test.1"}),
                ]
    finally:
        structlog.configure(**config)
    assert [r.status_code for r in responses] == [200, 200, 404]
    assert responses[2].headers["x-request-id"] == "cost-test.1"
    assert len(responses[0].headers["x-request-id"]) == 32
    assert _sample("overwatch_http_requests_total", **ok) == before_ok + 2
    assert _sample("overwatch_http_requests_total", **missing) == before_missing + 1
    assert _sample("overwatch_http_request_duration_seconds_count", **missing) == (
        before_seconds + 1
    )
    access = [entry for entry in logs if entry["event"] == "http.request"]
    assert [(e["route"], e["path"], e["status"]) for e in access] == [
        (route, "/cost-test/1", 200),
        (route, "/cost-test/1", 200),
        (route, "/cost-test/2", 404),
    ]
    assert all(e["method"] == "GET" and e["ms"] >= 0 for e in access)


@pytest.mark.parametrize("declared", [True, False])
async def test_the_body_cap_still_counts_a_body_without_a_declared_length(
    client: httpx.AsyncClient, tenant: Tenant, settings: Any, declared: bool
):
    """Declared lengths within the cap pass straight through; a chunked body is
    still counted, and refused once past the cap."""
    body = b'{"name": "' + b"x" * (settings.request_max_body_bytes + 10) + b'"}'

    async def chunks() -> Any:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    response = await client.post(
        "/api/v1/auth/keys",
        headers={**tenant.headers, "Content-Type": "application/json"},
        content=body if declared else chunks(),
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"


def test_an_api_v1_route_without_the_parameter_check_is_refused_at_startup(monkeypatch):
    """The NUL check runs in `V1Route`, not as a dependency: a router that
    forgot the route class would serve unchecked parameters, so the app refuses it."""
    from fastapi import APIRouter

    from api import router as v1

    plain = APIRouter(prefix="/plain")

    @plain.get("/{name}")
    async def echo(name: str) -> str:
        return name

    monkeypatch.setattr(v1, "V1_ROUTERS", [*v1.V1_ROUTERS, plain])
    with pytest.raises(RuntimeError, match="must be a V1Route"):
        v1.include_v1(FastAPI())


# What `include_v1` carries from a declared route to the one it serves.
_CARRIED = (
    "response_model status_code tags summary description response_description responses "
    "deprecated operation_id response_model_include response_model_exclude "
    "response_model_by_alias response_model_exclude_unset response_model_exclude_defaults "
    "response_model_exclude_none include_in_schema response_class name callbacks "
    "openapi_extra generate_unique_id_function strict_content_type max_body_size form_limits"
).split()


def _resolved(value: Any) -> str:
    """A route attribute as it acts: a FastAPI default placeholder is its value."""
    return repr(value.value if isinstance(value, DefaultPlaceholder) else value)


def test_the_flat_api_v1_routes_serve_what_included_routers_would(monkeypatch, settings: Any):
    """`include_v1` adds each route to the app's own router (FastAPI's nested
    included routers are matched twice per request) and carries every
    attribute over: the OpenAPI document and each route's path, methods,
    endpoint, class and dependencies equal those of `include_router`."""
    from api import router as v1
    from main import create_app

    flat = create_app(settings, background=False)

    def nested(app: FastAPI) -> None:
        for router in v1.V1_ROUTERS:
            app.include_router(router, prefix=v1.V1_PREFIX)

    monkeypatch.setattr("main.include_v1", nested)
    included = create_app(settings, background=False)
    assert flat.openapi() == included.openapi()

    def served(app: FastAPI) -> list[tuple[Any, ...]]:
        return [  # HTTP routes (an included router's are its effective contexts)
            (
                route.path,
                sorted(route.methods),
                route.endpoint,
                type(getattr(route, "original_route", route)),
                [d.call for d in route.dependant.dependencies],
                [_resolved(getattr(getattr(route, "original_route", route), a)) for a in _CARRIED],
            )
            for route in _api_routes(app.routes)
            if getattr(route, "methods", None)
        ]

    assert served(flat) == served(included)
    v1_routes = [r for r in flat.routes if getattr(r, "path", "").startswith(v1.V1_PREFIX)]
    declared = sum(len(router.routes) for router in v1.V1_ROUTERS)  # WebSockets too
    assert len(v1_routes) == declared  # each one on the app's own router
