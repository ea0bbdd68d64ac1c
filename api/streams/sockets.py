"""What both stream sockets share: authentication, the heartbeat, closing with a reason.

A socket authenticates with the `X-API-Key` header, or, for clients that
cannot set headers (browsers), with a first message `{"api_key": "…"}`. The key
is checked again whenever this process hears that keys changed (api/auth/cache.py:
one query for all its open sockets), so revoking it (disabling the customer,
deactivating the workstation) ends its streams at once; and every
REAUTH_SECONDS in any case, should that notification be missed. Failures are an error message
`{"event": "error", "error": {"code", "message"}}` followed by a close with a
code and a reason; they never reach the process.

Heartbeat: every STREAM_HEARTBEAT_SECONDS the server sends
`{"event": "ping", "at": …}`. Anything the client sends counts as a sign of
life (`{"type": "pong"}` is the polite answer); a socket silent for more than
two intervals is closed with 4000 `heartbeat timeout`, so dead connections
are dropped whatever the proxies in between do.

Listen-only clients (those written for the perception server this product
grew from connect and never send anything): a subscriber silent for
STREAM_SUBSCRIBE_GRACE_SECONDS after authenticating gets the default
subscription, every event of its tenant. Such a socket is `listen_only`: it is
not expected to answer pings, so the silence rule above does not apply to it;
the WebSocket protocol's own ping (uvicorn sends one every 20 s and closes a
peer that does not answer) drops it when the peer is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLTimeoutError

from api.auth.cache import KeyWatch, auth_cache
from api.auth.principal import Permission, Principal
from api.auth.service import KeyUsage
from api.core.errors import Unauthorized
from api.core.resources import Resources
from api.streams.subscriber import STREAM_DROPPED, encode

AUTH_TIMEOUT_SECONDS = 10.0
REAUTH_SECONDS = 60.0
CLOSE_TIMEOUT_SECONDS = 10.0
HEARTBEAT_TIMEOUT = (4000, "heartbeat timeout")
POLICY = 1008  # bad key, missing permission, unusable first message
TRY_AGAIN = 1013  # a store is down
INVALID_KEY = "invalid or inactive API key"
KEY_REVOKED = (POLICY, INVALID_KEY)


class SocketClosed(Exception):
    """End the socket with `code` and `reason`, after an error message with `error_code`."""

    def __init__(self, code: int, reason: str, error_code: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.error_code = error_code


def error_message(code: str, message: str, *, seq: int | None = None, details: Any = None) -> str:
    body: dict[str, Any] = {
        "event": "error",
        "error": {"code": code, "message": message, "details": details},
    }
    if seq is not None:
        body["seq"] = seq
    return encode(body)


def ping_message() -> str:
    return encode({"event": "ping", "at": datetime.now(UTC).isoformat()})


async def receive(ws: WebSocket) -> str | bytes:
    """The next message, text or binary; raises WebSocketDisconnect when the peer left."""
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
    if message.get("text") is not None:
        return str(message["text"])
    return bytes(message.get("bytes") or b"")


def json_object(raw: str | bytes) -> dict[str, Any] | None:
    """`raw` parsed as a JSON object, or None."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


@dataclass
class SocketSession:
    """An authenticated socket: who is on it, and when we last heard from it."""

    ws: WebSocket
    resources: Resources
    key: str
    principal: Principal
    last_heard: float
    listen_only: bool = False  # never spoke: not held to the heartbeat silence rule
    auth_generation: int = 0  # the key cache's generation when the key was checked

    @property
    def customer_id(self) -> str:
        return str(self.principal.customer_id)

    def heard(self) -> None:
        self.last_heard = time.monotonic()


async def check_key(resources: Resources, key: str, permission: Permission) -> Principal:
    """The key's principal if it may use a stream needing `permission`, else SocketClosed."""
    try:
        principal = await auth_cache(resources).authenticate(key)
    except Unauthorized as exc:
        raise SocketClosed(POLICY, INVALID_KEY, "unauthorized") from exc
    except (OperationalError, InterfaceError, OSError, SQLTimeoutError) as exc:
        raise SocketClosed(
            TRY_AGAIN, "postgres is unavailable; try again later", "unavailable"
        ) from exc
    if principal.customer_id is None:
        raise SocketClosed(
            POLICY, "streams act inside one tenant; use a customer-bound key", "forbidden"
        )
    if not principal.can(permission):
        raise SocketClosed(
            POLICY, f"this key lacks the {permission.value!r} permission", "forbidden"
        )
    if principal.key_uuid is not None:
        usage: KeyUsage = resources.extras.setdefault("key_usage", KeyUsage())
        usage.touch(principal.key_uuid)
    return principal


async def open_session(
    ws: WebSocket, resources: Resources, permission: Permission
) -> tuple[SocketSession, dict[str, Any] | None]:
    """Accept and authenticate; also returns what else the first message carried."""
    await ws.accept()
    key = ws.headers.get("x-api-key")
    rest: dict[str, Any] | None = None
    if not key:
        try:
            raw = await asyncio.wait_for(receive(ws), AUTH_TIMEOUT_SECONDS)
        except TimeoutError as exc:
            raise SocketClosed(POLICY, "authentication timeout", "unauthorized") from exc
        first = json_object(raw)
        if first is None or not isinstance(first.get("api_key"), str):
            raise SocketClosed(
                POLICY, 'send the X-API-Key header or {"api_key": ...} first', "unauthorized"
            )
        key = first.pop("api_key")
        rest = first or None
    generation = auth_cache(resources).generation
    principal = await check_key(resources, key, permission)
    session = SocketSession(ws, resources, key, principal, time.monotonic())
    session.auth_generation = generation
    return session, rest


async def first_request(
    session: SocketSession, grace_seconds: float, default: dict[str, Any]
) -> dict[str, Any] | None:
    """The client's first message as a JSON object (None if it is not one), or
    `default` if it says nothing for `grace_seconds` (the socket is then listen-only)."""
    try:
        raw = await asyncio.wait_for(receive(session.ws), grace_seconds)
    except TimeoutError:
        session.listen_only = True
        return dict(default)
    session.heard()
    return json_object(raw)


async def close_socket(
    ws: WebSocket, code: int, reason: str, error_code: str | None = None
) -> None:
    """Say why (if `error_code`), then close; a peer that is gone or stuck is let go."""
    with contextlib.suppress(Exception):
        if error_code is not None:
            await asyncio.wait_for(
                ws.send_text(error_message(error_code, reason)), CLOSE_TIMEOUT_SECONDS
            )
        # Close reasons are limited to 123 bytes.
        await asyncio.wait_for(
            ws.close(code, reason.encode()[:120].decode(errors="ignore")), CLOSE_TIMEOUT_SECONDS
        )


async def keep_alive(
    session: SocketSession, permission: Permission, ping: Callable[[], None]
) -> tuple[int, str]:
    """Ping every interval; returns why the socket must close (silence, a dead key)."""
    interval = session.resources.settings.stream_heartbeat_seconds
    checked = time.monotonic()
    cache = auth_cache(session.resources)
    key_uuid = session.principal.key_uuid
    watch = cache.watch(key_uuid, session.auth_generation) if key_uuid is not None else None
    try:
        return await _keep_alive(session, permission, ping, interval, checked, watch)
    finally:
        if watch is not None:
            cache.unwatch(watch)


async def _keep_alive(
    session: SocketSession,
    permission: Permission,
    ping: Callable[[], None],
    interval: float,
    checked: float,
    watch: KeyWatch | None,
) -> tuple[int, str]:
    while True:
        if watch is None:
            await asyncio.sleep(interval)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watch.revoked.wait(), interval)
            if watch.revoked.is_set():  # keys changed and this one is no longer valid
                STREAM_DROPPED.labels(reason="key").inc()
                return KEY_REVOKED
        now = time.monotonic()
        if not session.listen_only and now - session.last_heard > 2 * interval:
            STREAM_DROPPED.labels(reason="heartbeat").inc()
            return HEARTBEAT_TIMEOUT
        ping()
        if now - checked >= REAUTH_SECONDS:
            try:
                await check_key(session.resources, session.key, permission)
            except SocketClosed as closed:
                if closed.error_code != "unavailable":  # a Postgres blip ends nothing
                    STREAM_DROPPED.labels(reason="key").inc()
                    return closed.code, closed.reason
            checked = now
