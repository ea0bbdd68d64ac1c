"""Every `/api/v1` router, in one place."""

from __future__ import annotations

from fastapi import APIRouter

v1_router = APIRouter(prefix="/api/v1")
