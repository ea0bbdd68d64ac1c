"""Verified API keys cached per process, invalidated in every process at once.

Authenticating used to cost a pooled connection and a query on every request.
Now each process keeps the keys it has verified: key id → (principal, stored
HMAC digest, expiry, when cached). A hit still compares the presented secret
with the stored digest in constant time and checks the expiry against now; a
miss runs the lookup (retried once on a connection found dead) and caches the
result if the key is valid. Failures are never cached (garbage keys would grow
the cache); the cache holds at most CACHE_SIZE keys for at most
MAX_AGE_SECONDS each, a backstop only.

Invalidation: triggers (migration 0012_auth_notify) notify `overwatch_auth`
on commit whenever a key changes or is deleted, a customer is disabled or a
workstation deactivated. Every process hears it on the stream hub's LISTEN
connection (api/streams/hub.py) and clears its whole cache (revocations are
rare). The cache is used only while that connection is up: it is cleared on
connect and on loss, since notifications may have been missed, and bypassed
in between. A generation counter, bumped by every clear, keeps a lookup that
started before an invalidation from caching what it read after it.

Revocation is in effect everywhere before it is answered: after its commit,
the revoking request sends a barrier (`barrier:<token>` on the same channel,
so it arrives after the trigger's notification) and waits until every API
process has answered `<token>:<process>` on `overwatch_auth_ack`, which each
sends from its listener connection after clearing its cache. The processes to
wait for are the listener connections in `pg_stat_activity`; the wait is
bounded by BARRIER_TIMEOUT_SECONDS, after which it answers anyway and logs.

The same invalidation ends the stream sockets (api/streams/sockets.py) of a
key no longer valid at once: every open socket's key is checked again, all in
one query, and those that fail are closed as an invalid key is.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from cachetools import TTLCache
from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from api.auth.keys import key_digest, parse_key_id
from api.auth.principal import Principal, Scope
from api.auth.service import INVALID_KEY, fetch_key, verify_key
from api.core.errors import Unauthorized
from api.core.resources import LISTENER_NAME, Resources

log = structlog.get_logger("api.auth")

AUTH_CHANNEL = "overwatch_auth"
ACK_CHANNEL = "overwatch_auth_ack"
CACHE_SIZE = 10_000  # keys per process
MAX_AGE_SECONDS = 60.0  # a backstop: notifications invalidate at once
BARRIER_TIMEOUT_SECONDS = 2.0

AUTH_CACHE = Counter(
    "overwatch_auth_cache_total",
    "Key authentications: hit (no database), miss (looked up), bypass (cache off: "
    "the LISTEN connection is down).",
    ["result"],
)
_HIT, _MISS, _BYPASS = (AUTH_CACHE.labels(result=r) for r in ("hit", "miss", "bypass"))
ADMIN = Principal(key_uuid=None, scopes=frozenset({Scope.admin}), customer_id=None)
AUTH_INVALIDATIONS = Counter(
    "overwatch_auth_cache_invalidations_total",
    "Times this process cleared its key cache (notifications, LISTEN reconnects and losses).",
)
AUTH_BARRIER_TIMEOUTS = Counter(
    "overwatch_auth_barrier_timeouts_total",
    "Revocations answered before every API process acknowledged them.",
)

_COUNT_LISTENERS = text(
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE application_name = :name AND datname = current_database()"
)
_NOTIFY = text("SELECT pg_notify(:channel, :payload)")
# The keys of open sockets that are still valid (the same rules as a lookup).
_STILL_VALID = text(
    "SELECT k.id FROM api_keys k LEFT JOIN customers c ON c.id = k.customer_id "
    "LEFT JOIN workstations w ON w.id = k.workstation_id "
    "WHERE k.id = ANY(CAST(:ids AS uuid[])) AND k.revoked_at IS NULL "
    "AND (k.expires_at IS NULL OR k.expires_at > now()) "
    "AND c.disabled_at IS NULL AND w.deactivated_at IS NULL"
)

ListenerExecute = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class CachedKey:
    principal: Principal
    digest: bytes
    expires_at: datetime | None
    cached_at: float  # time.monotonic()


@dataclass(eq=False)
class KeyWatch:
    """An open socket's key: `revoked` is set when the key stops being valid."""

    key_uuid: uuid.UUID
    revoked: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(eq=False)
class _Barrier:
    acks: set[str] = field(default_factory=set)
    expected: int | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def check(self) -> None:
        if self.expected is not None and len(self.acks) >= self.expected:
            self.done.set()


class KeyCache:
    """This process's verified keys, and its side of the invalidation protocol.

    The stream hub drives it as a listener hook: `listener_connected`,
    `listener_notified` (for `channels`) and `listener_lost`.
    """

    channels: tuple[str, ...] = (AUTH_CHANNEL, ACK_CHANNEL)

    def __init__(self, resources: Resources, *, size: int = CACHE_SIZE) -> None:
        self.resources = resources
        self.process_id = uuid.uuid4().hex
        self._entries: TTLCache[str, CachedKey] = TTLCache(
            maxsize=size, ttl=MAX_AGE_SECONDS, timer=time.monotonic
        )
        self.generation = 0
        self.active = False  # the LISTEN connection is up: entries may be used
        self.hits = 0
        self.lookups = 0  # database lookups (misses and bypasses)
        self._execute: ListenerExecute | None = None
        self._barriers: dict[str, _Barrier] = {}
        self._watches: set[KeyWatch] = set()
        self._recheck: asyncio.Task[None] | None = None
        self._recheck_again = False
        self._tasks: set[asyncio.Task[Any]] = set()
        # One statement, no transaction: no BEGIN before it, no ROLLBACK after.
        self._autocommit = resources.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._admin: tuple[Any, str, bytes] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    # ------------------------------------------------------------ authenticate
    async def authenticate(self, presented: str) -> Principal:
        """`X-API-Key` → principal, or 401; from the cache when it may be used.

        The presented key's digest is computed once and compared, in constant
        time, with the admin key's (computed once per process) and the cached one.
        """
        presented = presented.strip(" \t")
        pepper, admin_digest = self._secrets()
        digest = key_digest(pepper, presented)
        if hmac.compare_digest(admin_digest, digest):
            return ADMIN
        key_id = parse_key_id(presented)
        if key_id is None:
            raise Unauthorized(INVALID_KEY)
        if self.active:
            entry = self._entries.get(key_id)
            if entry is not None:
                if not hmac.compare_digest(entry.digest, digest) or (
                    entry.expires_at is not None and entry.expires_at <= datetime.now(UTC)
                ):
                    raise Unauthorized(INVALID_KEY)
                self.hits += 1
                _HIT.inc()
                return entry.principal
            _MISS.inc()
        else:
            _BYPASS.inc()
        generation = self.generation
        row = await self._lookup(key_id)
        principal = verify_key(row, pepper, presented)  # raises 401: nothing cached
        assert row is not None
        if self.active and generation == self.generation:
            self._entries[key_id] = CachedKey(
                principal, bytes(row.key_hash), row.expires_at, time.monotonic()
            )
        return principal

    def _secrets(self) -> tuple[str, bytes]:
        """The pepper and the admin key's digest, derived once from the settings."""
        settings = self.resources.settings
        if self._admin is None or self._admin[0] is not settings:
            pepper = settings.api_key_pepper.get_secret_value()
            admin = key_digest(pepper, settings.admin_api_key.get_secret_value())
            self._admin = (settings, pepper, admin)
        return self._admin[1], self._admin[2]

    async def _lookup(self, key_id: str) -> Any:
        """The key's row; a connection found dead is replaced and the lookup retried once."""
        self.lookups += 1
        try:
            async with self._autocommit.connect() as conn:
                return await fetch_key(conn, key_id)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            log.info("auth.lookup_retry", error=str(exc.orig)[:200])
        async with self._autocommit.connect() as conn:
            return await fetch_key(conn, key_id)

    # ------------------------------------------------------------ invalidation
    def invalidate(self) -> None:
        """Forget every key; lookups in flight will not cache what they read."""
        self._entries.clear()
        self.generation += 1
        AUTH_INVALIDATIONS.inc()
        if self._watches:
            self._schedule_recheck()

    def listener_connected(self, execute: ListenerExecute) -> None:
        # LISTEN is in place: from here on no invalidation is missed.
        self._execute = execute
        self.invalidate()
        self.active = True

    def listener_lost(self) -> None:
        self.active = False
        self._execute = None
        self.invalidate()

    def listener_notified(self, channel: str, payload: str) -> None:
        if channel == ACK_CHANNEL:
            token, _, process = payload.partition(":")
            barrier = self._barriers.get(token)
            if barrier is not None:
                barrier.acks.add(process)
                barrier.check()
            return
        self.invalidate()
        if payload.startswith("barrier:") and self._execute is not None:
            token = payload.removeprefix("barrier:")
            self._spawn(self._acknowledge(self._execute, token))

    async def _acknowledge(self, execute: ListenerExecute, token: str) -> None:
        try:
            await execute("SELECT pg_notify($1, $2)", ACK_CHANNEL, f"{token}:{self.process_id}")
        except Exception as exc:  # the listener is going; its loss clears the cache
            log.warning("auth.barrier_ack_failed", error=str(exc)[:200])

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def barrier(self, wait_seconds: float = BARRIER_TIMEOUT_SECONDS) -> bool:
        """After a committed revocation: wait until every API process has cleared
        its cache (True), or `wait_seconds` passed (False, logged). Never raises."""

        token = secrets.token_hex(12)
        barrier = _Barrier()
        self._barriers[token] = barrier
        try:
            async with self.resources.engine.begin() as conn:
                await conn.execute(
                    _NOTIFY, {"channel": AUTH_CHANNEL, "payload": f"barrier:{token}"}
                )
                # Counted in the notifying transaction: a listener connecting
                # later clears its cache when it connects.
                barrier.expected = int(
                    (await conn.execute(_COUNT_LISTENERS, {"name": LISTENER_NAME})).scalar() or 0
                )
            barrier.check()
            await asyncio.wait_for(barrier.done.wait(), wait_seconds)
            return True
        except TimeoutError:
            AUTH_BARRIER_TIMEOUTS.inc()
            log.warning(
                "auth.barrier_timeout",
                expected=barrier.expected,
                acknowledged=len(barrier.acks),
                timeout_seconds=wait_seconds,
            )
            return False
        except Exception as exc:  # committed already: answer; listeners that lost us clear
            AUTH_BARRIER_TIMEOUTS.inc()
            log.warning("auth.barrier_failed", error=str(exc)[:300])
            return False
        finally:
            del self._barriers[token]

    # ------------------------------------------------------------ sockets
    def watch(self, key_uuid: uuid.UUID, generation: int) -> KeyWatch:
        """Follow an open socket's key, verified when the cache was at `generation`."""
        watch = KeyWatch(key_uuid)
        self._watches.add(watch)
        if generation != self.generation:  # an invalidation came in between
            self._schedule_recheck()
        return watch

    def unwatch(self, watch: KeyWatch) -> None:
        self._watches.discard(watch)

    def _schedule_recheck(self) -> None:
        if self._recheck is not None and not self._recheck.done():
            self._recheck_again = True
            return
        self._recheck = asyncio.ensure_future(self._recheck_sockets())

    async def _recheck_sockets(self) -> None:
        while True:
            self._recheck_again = False
            watches = list(self._watches)
            if not watches:
                return
            ids = sorted({w.key_uuid for w in watches})
            try:
                async with self._autocommit.connect() as conn:
                    valid = {row.id for row in await conn.execute(_STILL_VALID, {"ids": ids})}
            except Exception as exc:  # the sockets' own periodic check is the backstop
                log.warning("auth.socket_recheck_failed", error=str(exc)[:300])
                return
            for watch in watches:
                if watch.key_uuid not in valid:
                    watch.revoked.set()
            if not self._recheck_again:
                return

    async def close(self) -> None:
        for task in [*self._tasks, self._recheck]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


def auth_cache(resources: Resources) -> KeyCache:
    """This process's key cache (one per `Resources`)."""
    cache: KeyCache | None = resources.extras.get("auth_cache")
    if cache is None:
        cache = KeyCache(resources)
        resources.extras["auth_cache"] = cache
    return cache


async def revocation_barrier(resources: Resources) -> None:
    """Call after committing a revocation: returns once every process enforces it."""
    await auth_cache(resources).barrier()
