"""Every `/api/v1` router, in one place."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIWebSocketRoute

from api.auth.endpoints import router as auth_router
from api.blobs.endpoints import router as blobs_router
from api.fleet.endpoints import admin_router as fleet_admin_router
from api.fleet.endpoints import drones_router, kits_router
from api.graphs.endpoints import router as graphs_router
from api.journal.route import V1Route
from api.operations.endpoints import router as operations_router
from api.search.endpoints import router as search_router
from api.streams.endpoints import router as streams_router
from api.sync.conflicts_endpoints import router as sync_conflicts_router
from api.sync.endpoints import router as sync_router
from api.sync.health_endpoints import router as sync_health_router
from api.sync.scope_endpoints import router as sync_scope_router
from api.venues.endpoints import router as venues_router
from api.world.endpoints import router as world_router

V1_PREFIX = "/api/v1"
# Each is included into the app itself under V1_PREFIX (`include_v1`), not
# through an `/api/v1` router of its own: FastAPI walks nested included
# routers on every request (matching, route versions), one level less per request.
V1_ROUTERS: list[APIRouter] = [
    # Drones first: the heartbeat is the hottest path, and routes are matched in
    # order, several microseconds each (~260 us to reach it tenth, ~30 us first);
    # no other router serves a `/drones` path, so the order changes no match.
    drones_router,
    auth_router,
    blobs_router,
    venues_router,
    search_router,
    world_router,
    operations_router,
    fleet_admin_router,
    kits_router,
    sync_router,
    sync_scope_router,
    sync_health_router,
    sync_conflicts_router,
    graphs_router,
    streams_router,
]


def include_v1(app: FastAPI) -> None:
    """Every `/api/v1` route, in V1_ROUTERS' order, on the app's own router.

    No endpoint sees a query or path parameter that Postgres could not hold
    (NUL): every route is a `V1Route`, which refuses one before anything runs.

    The routes are added one by one, as `include_router` did before FastAPI
    0.16x: that now keeps each router as a nested `_IncludedRouter`, matched
    in full once to find it and again to dispatch into it, about a fifth of a
    small authenticated request's time in the server. Every attribute a route
    was declared with is carried over, and the OpenAPI document is the same
    (`tests/test_middleware_cost.py`).
    """
    for router in V1_ROUTERS:
        for route in router.routes:
            if isinstance(route, APIWebSocketRoute):
                app.router.add_api_websocket_route(
                    V1_PREFIX + route.path,
                    route.endpoint,
                    name=route.name,
                    dependencies=route.dependencies,
                )
                continue
            if not isinstance(route, V1Route):
                path = getattr(route, "path", route)
                raise RuntimeError(f"{path}: an /api/v1 route must be a V1Route")
            app.router.add_api_route(
                V1_PREFIX + route.path,
                route.endpoint,
                response_model=route.response_model,
                status_code=route.status_code,
                tags=route.tags,
                dependencies=route.dependencies,
                summary=route.summary,
                description=route.description,
                response_description=route.response_description,
                responses=route.responses,
                deprecated=route.deprecated,
                methods=route.methods,
                operation_id=route.operation_id,
                response_model_include=route.response_model_include,
                response_model_exclude=route.response_model_exclude,
                response_model_by_alias=route.response_model_by_alias,
                response_model_exclude_unset=route.response_model_exclude_unset,
                response_model_exclude_defaults=route.response_model_exclude_defaults,
                response_model_exclude_none=route.response_model_exclude_none,
                include_in_schema=route.include_in_schema,
                response_class=route.response_class,
                name=route.name,
                route_class_override=type(route),
                callbacks=route.callbacks,
                openapi_extra=route.openapi_extra,
                generate_unique_id_function=route.generate_unique_id_function,
                strict_content_type=route.strict_content_type,
                max_body_size=route.max_body_size,
                form_limits=route.form_limits,
            )
