"""Background loops an API process runs (reconciler, key-usage flush, workers).

Each loop is registered with a name and an interval; failures are logged and
the loop goes on, so a Neo4j outage never kills the process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from api.core.resources import Resources

log = structlog.get_logger("api.core.background")

Job = Callable[[Resources], Awaitable[object]]


@dataclass
class BackgroundLoops:
    resources: Resources
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self, name: str, job: Job, interval: float, *, run_at_start: bool = True) -> None:
        async def loop() -> None:
            if not run_at_start:
                await asyncio.sleep(interval)
            while True:
                try:
                    await job(self.resources)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("background.failed", job=name, error=str(exc)[:300])
                await asyncio.sleep(interval)

        self.tasks.append(asyncio.create_task(loop(), name=f"overwatch:{name}"))

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.tasks.clear()
