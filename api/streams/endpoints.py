"""`/api/v1/stream/*`: the ingest and subscribe sockets, and their counts.

The socket protocols are described in api/streams/ingest.py and
api/streams/feed.py (and in the README's Streams section); sockets do not
appear in the OpenAPI document.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, WebSocket

from api.auth.deps import Reader, tenant_of
from api.journal.route import V1Route
from api.streams import streams_of
from api.streams.feed import serve_subscriber
from api.streams.ingest import serve_ingest
from api.streams.schemas import StreamStats

router = APIRouter(prefix="/stream", tags=["streams"], route_class=V1Route)


@router.websocket("/ingest")
async def ingest(websocket: WebSocket) -> None:
    """Perception frames from cameras and drones (a device or customer key)."""
    await serve_ingest(websocket, streams_of(websocket.app).ingest)


@router.websocket("/subscribe")
async def subscribe(websocket: WebSocket) -> None:
    """The tenant's live events: changes, occupancy, drone liveness (read permission)."""
    await serve_subscriber(websocket, streams_of(websocket.app).hub)


@router.get("/stats", summary="Open stream sockets of the tenant", response_model=StreamStats)
async def stats(principal: Reader, request: Request) -> StreamStats:
    """Ingest and subscriber sockets of the caller's tenant across API processes
    (`WS /api/v1/stream/ingest`, `WS /api/v1/stream/subscribe`)."""
    return await streams_of(request.app).hub.stats(str(tenant_of(principal)))
