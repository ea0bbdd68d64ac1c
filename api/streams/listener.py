"""The one LISTEN connection of an API process, shared by the stream hub and the key cache.

Every process holds one dedicated asyncpg connection for LISTEN and reconnects
if it drops. `StreamHub` (api/streams/hub.py) is a `Listening`: it owns the
connection's loop; other parts of the process ride on it through a
`ListenerHook` (api/auth/cache.py: the key cache, which may be used only while
the connection is up). A half-open connection is found by a probe every
PROBE_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import asyncpg
import structlog
from prometheus_client import Counter

from api.core.observability import error_text
from api.core.resources import LISTENER_NAME, Resources

log = structlog.get_logger("api.streams")

PROBE_SECONDS = 10.0  # how often the LISTEN connection is checked

STREAM_LISTEN_CONNECTS = Counter(
    "overwatch_stream_listen_connects_total",
    "LISTEN connections opened (more than one: reconnects).",
)

STREAM_NOTIFICATIONS_DROPPED = Counter(
    "overwatch_stream_notifications_dropped_total",
    "Notifications dropped because the dispatcher fell behind (changes are caught up).",
)


class ListenerHook(Protocol):
    """Something else riding on the hub's LISTEN connection."""

    channels: tuple[str, ...]

    def listener_connected(self, execute: Callable[..., Awaitable[Any]]) -> None:
        """LISTEN is in place on every channel; `execute(query, *args)` runs on it."""

    def listener_notified(self, channel: str, payload: str) -> None: ...

    def listener_lost(self) -> None:
        """The connection is gone (notifications may be missed until the next connect)."""


class Listening:
    """The LISTEN loop and its hooks; the hub provides the channels' own handling."""

    resources: Resources
    listening: asyncio.Event
    _inbox: asyncio.Queue[tuple[str, str]]
    _catch_up_all: bool
    _hooks: list[ListenerHook]
    _hooks_connected: bool
    _listener_lock: asyncio.Lock
    channels: tuple[str, ...]

    def add_hook(self, hook: ListenerHook) -> None:
        """Ride on the LISTEN connection from its next (re)connect on."""
        self._hooks.append(hook)

    # ------------------------------------------------------------ LISTEN
    def _on_notification(self, _conn: object, _pid: int, channel: str, payload: str) -> None:
        try:
            self._inbox.put_nowait((channel, payload))
        except asyncio.QueueFull:
            STREAM_NOTIFICATIONS_DROPPED.inc()
            self._catch_up_all = True

    def _on_hook_notification(
        self, hook: ListenerHook, _conn: object, _pid: int, channel: str, payload: str
    ) -> None:
        try:
            hook.listener_notified(channel, payload)
        except Exception as exc:
            log.warning("stream.hook_failed", channel=channel, error=error_text(exc))

    def _on_lost(self, lost: asyncio.Event, *_: object) -> None:
        lost.set()
        self._hooks_lost()

    def _hooks_lost(self) -> None:
        # At once, not when the loop wakes up: a hook must not trust a dead connection.
        if self._hooks_connected:
            self._hooks_connected = False
            for hook in self._hooks:
                hook.listener_lost()

    async def _listener_execute(self, conn: asyncpg.Connection, query: str, *args: Any) -> Any:
        async with self._listener_lock:
            return await asyncio.wait_for(conn.execute(query, *args), 5)

    async def _listen_loop(self) -> None:
        backoff = 0.2
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(
                    self.resources.settings.sync_database_url,
                    timeout=5,
                    server_settings={"application_name": LISTENER_NAME},
                )
                lost = asyncio.Event()
                conn.add_termination_listener(functools.partial(self._on_lost, lost))
                for channel in self.channels:
                    await conn.add_listener(channel, self._on_notification)
                for hook in self._hooks:
                    for channel in hook.channels:
                        await conn.add_listener(
                            channel, functools.partial(self._on_hook_notification, hook)
                        )
                STREAM_LISTEN_CONNECTS.inc()
                self.listening.set()
                if not lost.is_set():
                    self._hooks_connected = True
                    execute = functools.partial(self._listener_execute, conn)
                    for hook in self._hooks:
                        hook.listener_connected(execute)
                # Whatever was committed while nobody listened is read now.
                self._catch_up_all = True
                with contextlib.suppress(asyncio.QueueFull):
                    self._inbox.put_nowait(("catch_up", ""))
                backoff = 0.2
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), PROBE_SECONDS)
                        break
                    # A half-open TCP connection only shows when we ask.
                    async with self._listener_lock:
                        await asyncio.wait_for(conn.fetchval("SELECT 1"), 5)
                log.warning("stream.listen_lost")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("stream.listen_failed", error=error_text(exc))
            finally:
                self.listening.clear()
                self._hooks_lost()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2)
                    if not conn.is_closed():
                        conn.terminate()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
