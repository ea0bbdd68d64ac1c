"""Every `/api/v1` router, in one place."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

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
    """Every `/api/v1` router, in V1_ROUTERS' order.

    No endpoint sees a query or path parameter that Postgres could not hold
    (NUL): every route is a `V1Route`, which refuses one before anything runs.
    """
    for router in V1_ROUTERS:
        for route in router.routes:
            if isinstance(route, APIRoute) and not isinstance(route, V1Route):
                raise RuntimeError(f"{route.path}: an /api/v1 route must be a V1Route")
        app.include_router(router, prefix=V1_PREFIX)
