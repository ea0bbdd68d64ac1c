"""Every `/api/v1` router, in one place."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth.endpoints import router as auth_router
from api.blobs.endpoints import router as blobs_router

v1_router = APIRouter(prefix="/api/v1")
v1_router.include_router(auth_router)
v1_router.include_router(blobs_router)
