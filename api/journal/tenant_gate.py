"""Per-tenant admission to the write path: a tenant's queue waits in memory, not on the pool.

Writers of one tenant are serialised by its counter row lock (api/journal/).
A writer that checks out a pooled connection and then waits for that lock
holds the connection without using it, so some twenty queued pushes of one
tenant used to take the whole pool and starve every other tenant. Here each
API process admits at most TENANT_WRITE_CONCURRENCY writers per tenant to
check out a connection; the rest wait on an asyncio semaphore, holding
nothing. Two is enough to keep the lock busy: while one writes, the next
already waits on the row, so hand-over costs no round trip.

A writer queued longer than TENANT_WRITE_QUEUE_SECONDS gets a 503
`tenant_busy` (nothing was recorded; retry). Across processes nothing is
shared and nothing needs to be: each process has a pool of its own.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncConnection

from api.core.errors import OverwatchError
from api.core.resources import Resources

_EXTRAS_KEY = "tenant_gate"


class TenantBusy(OverwatchError):
    status_code = 503
    code = "tenant_busy"


@dataclass
class _Queue:
    slots: asyncio.Semaphore
    users: int = 0  # admitted plus waiting; the entry goes when it drops to 0


@dataclass
class TenantGate:
    """At most `limit` admitted writers per tenant; the others wait their turn."""

    limit: int
    wait_seconds: float
    _queues: dict[uuid.UUID, _Queue] = field(default_factory=dict)

    def waiting(self, customer_id: uuid.UUID) -> int:
        """Writers of the tenant queued here, not yet admitted."""
        queue = self._queues.get(customer_id)
        if queue is None:
            return 0
        return max(0, queue.users - self.limit)

    @asynccontextmanager
    async def admitted(self, customer_id: uuid.UUID) -> AsyncIterator[None]:
        queue = self._queues.get(customer_id)
        if queue is None:
            queue = self._queues[customer_id] = _Queue(asyncio.Semaphore(self.limit))
        queue.users += 1
        try:
            try:
                async with asyncio.timeout(self.wait_seconds):
                    await queue.slots.acquire()
            except TimeoutError as exc:
                raise TenantBusy(
                    "too many writes of this tenant are queued; nothing was recorded, retry",
                    details={"queued_seconds": self.wait_seconds},
                    headers={"Retry-After": "1"},
                ) from exc
            try:
                yield
            finally:
                queue.slots.release()
        finally:
            queue.users -= 1
            if queue.users == 0:
                del self._queues[customer_id]


def gate_of(resources: Resources) -> TenantGate:
    """The process's gate (one per `Resources`, created on first use)."""
    gate = resources.extras.get(_EXTRAS_KEY)
    if gate is None:
        settings = resources.settings
        gate = resources.extras[_EXTRAS_KEY] = TenantGate(
            settings.tenant_write_concurrency, settings.tenant_write_queue_seconds
        )
    assert isinstance(gate, TenantGate)
    return gate


@asynccontextmanager
async def tenant_connection(
    resources: Resources, customer_id: uuid.UUID
) -> AsyncIterator[AsyncConnection]:
    """A pooled connection for one of the tenant's writers, once the gate admits it."""
    async with gate_of(resources).admitted(customer_id), resources.engine.connect() as connection:
        yield connection
