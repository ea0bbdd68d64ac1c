"""`WS /api/v1/stream/ingest`: perception frames in, one answer per frame out.

Protocol (JSON text or binary messages): authenticate (api/streams/sockets.py)
with a device or customer key; the server says `{"event": "ready", ...}`.
Then each frame (api/streams/schemas.py `IngestFrame`) gets, in order, either
`{"event": "ack", "ack": seq, "zone_id": …}` once its history row committed,
or `{"event": "error", "seq": seq, "error": {"code", "message"}}`:
`frame_too_large`, `invalid_json`, `invalid_frame`, `unknown_camera`,
`camera_not_in_zone`, `unknown_zone`, `unknown_drone`, `forbidden` or
`unavailable` (retry later). A bad frame never ends the socket; a client that
sends nothing but bad frames (MAX_CONSECUTIVE_REJECTS in a row) is closed with
1008.

Frames are read while earlier ones are written (up to INGEST_WINDOW in
flight per socket), so a client that pipelines frames is limited by the
batch writer, not by round trips; a client that stops reading answers is
slowed down by ordinary TCP backpressure.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import WebSocket, WebSocketDisconnect
from prometheus_client import Counter
from pydantic import ValidationError

from api.auth.principal import Permission
from api.streams.hub import StreamHub
from api.streams.occupancy import FrameRejected, OccupancyWriter, ZoneResolver
from api.streams.schemas import IngestFrame
from api.streams.sockets import (
    POLICY,
    SocketClosed,
    SocketSession,
    close_socket,
    error_message,
    json_object,
    keep_alive,
    open_session,
    ping_message,
    receive,
)
from api.streams.subscriber import encode

log = structlog.get_logger("api.streams.ingest")

INGEST_WINDOW = 256
MAX_CONSECUTIVE_REJECTS = 100
FRAMES_REJECTED = Counter(
    "overwatch_stream_frames_rejected_total",
    "Ingest frames answered with an error frame, by error code.",
    ["reason"],
)


@dataclass(frozen=True)
class PendingAck:
    seq: int
    zone_id: str
    stored: asyncio.Future[None]


@dataclass
class Ingest:
    """What an ingest socket needs from its process."""

    hub: StreamHub
    resolver: ZoneResolver
    writer: OccupancyWriter


def _size(raw: str | bytes, limit: int) -> int:
    # Characters never outnumber UTF-8 bytes: encode only when it could matter.
    if isinstance(raw, bytes) or len(raw) > limit or len(raw) * 4 <= limit:
        return len(raw)
    return len(raw.encode())


def _rejected(code: str, message: str, seq: int | None, details: object = None) -> str:
    FRAMES_REJECTED.labels(reason=code).inc()
    return error_message(code, message, seq=seq, details=details)


async def serve_ingest(ws: WebSocket, ingest: Ingest) -> None:
    """Run one ingest socket until it closes."""
    hub = ingest.hub
    try:
        session, _ = await open_session(ws, hub.resources, Permission.telemetry)
    except SocketClosed as closed:
        await close_socket(ws, closed.code, closed.reason, closed.error_code)
        return
    except WebSocketDisconnect:
        return
    hub.ingest_opened(session.customer_id)
    try:
        outcome = await _run(session, ingest)
    finally:
        hub.ingest_closed(session.customer_id)
    if outcome is not None:
        await close_socket(ws, *outcome)


async def _frame(
    session: SocketSession, ingest: Ingest, raw: str | bytes, position: int
) -> str | PendingAck | None:
    """Check one frame and hand it to the writer; an error message if it is refused,
    None for a pong (not a frame)."""
    limit = session.resources.settings.stream_max_frame_bytes
    size = _size(raw, limit)
    if size > limit:
        return _rejected(
            "frame_too_large", f"the frame has {size} bytes; the limit is {limit}", position
        )
    data = json_object(raw)
    if data is None:
        return _rejected("invalid_json", "a frame is one JSON object", position)
    if data.get("type") == "pong" and len(data) == 1:
        return None
    try:
        frame = IngestFrame.model_validate(data)
    except ValidationError as exc:
        details = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()[:10]]
        seq = data.get("seq") if isinstance(data.get("seq"), int) else position
        return _rejected(
            "invalid_frame", "the frame does not match the ingest schema", seq, details
        )
    seq = frame.seq if frame.seq is not None else position
    try:
        observation = await ingest.resolver.observe(session.principal, frame)
    except FrameRejected as refused:
        return _rejected(refused.code, refused.message, seq)
    return PendingAck(seq, observation.target.zone_id, ingest.writer.submit(observation))


async def _run(session: SocketSession, ingest: Ingest) -> tuple[int, str] | None:
    ws = session.ws
    outbox: asyncio.Queue[str | PendingAck] = asyncio.Queue(INGEST_WINDOW)
    settings = session.resources.settings
    await ws.send_text(
        encode(
            {
                "event": "ready",
                "customer_id": session.customer_id,
                "max_frame_bytes": settings.stream_max_frame_bytes,
                "heartbeat_seconds": settings.stream_heartbeat_seconds,
            }
        )
    )

    async def read() -> tuple[int, str]:
        position = rejects = 0
        while True:
            raw = await receive(ws)
            session.heard()
            item = await _frame(session, ingest, raw, position + 1)
            if item is None:
                continue
            position += 1
            rejects = rejects + 1 if isinstance(item, str) else 0
            await outbox.put(item)
            if rejects >= MAX_CONSECUTIVE_REJECTS:
                return POLICY, f"{rejects} invalid frames in a row"

    async def answer() -> None:
        while True:
            item = await outbox.get()
            if isinstance(item, PendingAck):
                try:
                    await item.stored
                    message = encode({"event": "ack", "ack": item.seq, "zone_id": item.zone_id})
                except FrameRejected as refused:
                    message = _rejected(refused.code, refused.message, item.seq)
            else:
                message = item
            await ws.send_text(message)
            outbox.task_done()

    def ping() -> None:
        with contextlib.suppress(asyncio.QueueFull):  # answers are flowing anyway
            outbox.put_nowait(ping_message())

    reader = asyncio.create_task(read())
    writer = asyncio.create_task(answer())
    heartbeat = asyncio.create_task(keep_alive(session, Permission.telemetry, ping))
    outcome: tuple[int, str] | None = None
    try:
        await asyncio.wait([reader, writer, heartbeat], return_when=asyncio.FIRST_COMPLETED)
        for ender in (reader, heartbeat):
            if ender.done() and not ender.cancelled() and ender.exception() is None:
                outcome = ender.result()
                # Answer what was read before closing.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(outbox.join(), 5)
                break
    finally:
        tasks: list[asyncio.Task[Any]] = [reader, writer, heartbeat]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    return outcome
