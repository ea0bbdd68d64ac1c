"""Every `/api/v1` router, in one place."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from api.auth.endpoints import router as auth_router
from api.blobs.endpoints import router as blobs_router
from api.fleet.endpoints import admin_router as fleet_admin_router
from api.fleet.endpoints import drones_router, kits_router
from api.graphs.endpoints import router as graphs_router
from api.operations.endpoints import router as operations_router
from api.search.endpoints import router as search_router
from api.storable import refuse_unstorable_parameters
from api.streams.endpoints import router as streams_router
from api.sync.endpoints import router as sync_router
from api.sync.endpoints import venue_router as venue_merge_router
from api.venues.endpoints import router as venues_router
from api.world.endpoints import router as world_router

# No endpoint sees a query or path parameter that Postgres could not hold (NUL).
v1_router = APIRouter(prefix="/api/v1", dependencies=[Depends(refuse_unstorable_parameters)])
# Drones first: the heartbeat is the hottest path, and routes are matched in
# order, several microseconds each (~260 us to reach it tenth, ~30 us first); no
# other router serves a `/drones` path, so the order changes no match.
v1_router.include_router(drones_router)
# Search before venues: its `/venues/search` must win over `/venues/{venue_id}`.
v1_router.include_router(search_router)
v1_router.include_router(auth_router)
v1_router.include_router(blobs_router)
v1_router.include_router(venue_merge_router)
v1_router.include_router(venues_router)
v1_router.include_router(world_router)
v1_router.include_router(operations_router)
v1_router.include_router(fleet_admin_router)
v1_router.include_router(kits_router)
v1_router.include_router(sync_router)
v1_router.include_router(graphs_router)
v1_router.include_router(streams_router)
