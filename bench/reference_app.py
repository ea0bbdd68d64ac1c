"""The heartbeat bench's yardstick: a bare FastAPI app doing a heartbeat's work.

What any FastAPI service must do for a heartbeat, and nothing more: compare
one API key with a setting (constant time), validate the body with the API's
own `HeartbeatIn`, run one asyncpg statement that inserts the heartbeat and
stores it as the drone's latest, answer 201 with a small JSON body. No
middleware, no key table, no liveness rules, no metrics, no logging.

bench/heartbeat.py starts it under uvicorn with the API server's options
(bench.harness.UVICORN_OPTIONS): `uvicorn bench.reference_app:create_app
--factory`, configured by the environment:

REFERENCE_API_KEY      the one key it accepts
REFERENCE_CUSTOMER_ID  the tenant that key acts for
DATABASE_URL           the database (a `postgresql+asyncpg://` URL is accepted)
DATABASE_POOL_SIZE     asyncpg pool size (the API's pool size by default)
"""

from __future__ import annotations

import hmac
import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
from fastapi import FastAPI, Header, HTTPException, Request

from api.fleet.schemas import HeartbeatIn

# The drone's last-heartbeat columns and the heartbeat row, in one statement
# (and so one implicit transaction): what the API's heartbeat stores, minus
# its liveness bookkeeping.
STATEMENT = """
WITH d AS (
    UPDATE drones SET last_heartbeat_at = $3, last_heartbeat = $4::jsonb
    WHERE customer_id = $1 AND serial = $2
    RETURNING id
)
INSERT INTO heartbeats (customer_id, drone_id, received_at, cpu_percent, memory_percent,
                        disk_percent, temperature_c, battery_percent, firmware_version,
                        status, uptime_seconds, ip)
SELECT $1, d.id, $3, $5, $6, $7, $8, $9, $10, $11, $12, $13::inet FROM d
RETURNING drone_id
"""


def statement_args(
    customer_id: uuid.UUID, serial: str, beat: HeartbeatIn, now: datetime
) -> tuple[Any, ...]:
    """STATEMENT's parameters (bench/heartbeat.py's raw run uses them too)."""
    report = beat.model_dump(mode="json")
    return (
        customer_id,
        serial,
        now,
        json.dumps({"received_at": now.isoformat(), **report}),
        beat.cpu_percent,
        beat.memory_percent,
        beat.disk_percent,
        beat.temperature_c,
        beat.battery_percent,
        beat.firmware_version,
        beat.status,
        beat.uptime_seconds,
        report["ip"],
    )


def create_app() -> FastAPI:
    key = os.environ["REFERENCE_API_KEY"].encode()
    customer_id = uuid.UUID(os.environ["REFERENCE_CUSTOMER_ID"])
    dsn = os.environ["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://", 1)
    pool_size = int(os.environ.get("DATABASE_POOL_SIZE", "20"))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(dsn, min_size=pool_size, max_size=pool_size)
        try:
            yield
        finally:
            await app.state.pool.close()

    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/api/v1/drones/{serial}/heartbeat", status_code=201)
    async def heartbeat(
        serial: str,
        beat: HeartbeatIn,
        request: Request,
        x_api_key: Annotated[str, Header()] = "",
    ) -> dict[str, Any]:
        if not hmac.compare_digest(x_api_key.strip(" \t").encode(), key):
            raise HTTPException(401, "invalid key")
        now = datetime.now(UTC)
        pool: asyncpg.Pool = request.app.state.pool
        drone_id = await pool.fetchval(STATEMENT, *statement_args(customer_id, serial, beat, now))
        if drone_id is None:
            raise HTTPException(404, "no such drone")
        return {"drone_id": str(drone_id), "serial": serial, "received_at": now.isoformat()}

    return app
