"""Real-time streams (DESIGN.md §7): perception ingest and the live change feed.

`Streams` is what one API process runs for them: the hub (subscribers and
the LISTEN loop), the camera → zone resolver and the occupancy writer. The
app lifespan starts it (main.py) and keeps it in `resources.extras`.

May import: `api.core`, `api.journal`, `api.auth`, `api.sync` (its synced types).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI

from api.core.resources import Resources
from api.streams.hub import StreamHub
from api.streams.ingest import Ingest
from api.streams.occupancy import OccupancyWriter, ZoneResolver


@dataclass
class Streams:
    hub: StreamHub
    ingest: Ingest

    @classmethod
    def start(cls, resources: Resources) -> Streams:
        """Start this process's stream machinery (no I/O before it returns)."""
        hub = StreamHub(resources)
        writer = OccupancyWriter(resources)
        hub.start()
        writer.start()
        streams = cls(hub=hub, ingest=Ingest(hub, ZoneResolver(resources), writer))
        resources.extras["streams"] = streams
        return streams

    async def stop(self) -> None:
        await self.ingest.writer.stop()
        await self.hub.stop()


def streams_of(app: FastAPI) -> Streams:
    streams: Streams = app.state.resources.extras["streams"]
    return streams
