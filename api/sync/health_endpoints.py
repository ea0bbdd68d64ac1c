"""`/api/v1/sync` routes of the health feature (protocol version 2)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/sync", tags=["sync"])
