"""Every `/api/v1` router, in one place."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth.endpoints import router as auth_router
from api.blobs.endpoints import router as blobs_router
from api.fleet.endpoints import admin_router as fleet_admin_router
from api.fleet.endpoints import drones_router, kits_router

v1_router = APIRouter(prefix="/api/v1")
v1_router.include_router(auth_router)
v1_router.include_router(blobs_router)
v1_router.include_router(fleet_admin_router)
v1_router.include_router(kits_router)
v1_router.include_router(drones_router)
