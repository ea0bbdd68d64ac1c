"""Liveness, readiness and metrics endpoints (no authentication)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import ResourcesDep
from api.resources import Resources
from relational.database import ping as ping_postgres

router = APIRouter(tags=["health"])

READINESS_TIMEOUT_SECONDS = 3.0


@router.get("/health", summary="Liveness (alias of /healthz)")
@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _check(name: str, probe: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(probe(), timeout=READINESS_TIMEOUT_SECONDS)
    except Exception as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
        return {"name": name, "status": "fail", "error": f"{reason}: {exc}"[:300]}
    return {"name": name, "status": "ok", "ms": round((time.perf_counter() - started) * 1000, 1)}


async def readiness(resources: Resources) -> tuple[bool, dict[str, Any]]:
    """Probe Postgres, Neo4j and S3 concurrently; each gets its own verdict."""

    async def s3_probe() -> None:
        await asyncio.to_thread(resources.s3.head_bucket, Bucket=resources.settings.blob_bucket)

    results = await asyncio.gather(
        _check("postgres", lambda: ping_postgres(resources.engine)),
        _check("neo4j", resources.graph.ping),
        _check("s3", s3_probe),
    )
    checks = {r.pop("name"): r for r in results}
    ready = all(c["status"] == "ok" for c in checks.values())
    failed = [name for name, c in checks.items() if c["status"] != "ok"]
    return ready, {
        "status": "ready" if ready else "unavailable",
        "failed": failed,
        "checks": checks,
    }


@router.get(
    "/readyz",
    summary="Readiness: Postgres, Neo4j and S3 answer",
    responses={503: {"description": "A dependency failed; `failed` names it."}},
)
async def readyz(resources: ResourcesDep) -> JSONResponse:
    ready, body = await readiness(resources)
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
