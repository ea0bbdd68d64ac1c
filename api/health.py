"""Liveness, readiness and metrics endpoints (no authentication)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.core.deps import ResourcesDep
from api.core.resources import Resources
from api.journal.status import projection_overview
from api.sync.health import fleet_health
from relational.database import ping as ping_postgres

router = APIRouter(tags=["health"])

READINESS_TIMEOUT_SECONDS = 3.0
# Without these the API cannot serve. Neo4j only degrades it: sync, the system
# of record's whole contract, reads Postgres alone (DESIGN.md §4).
REQUIRED = ("postgres", "s3")


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


# Journal rows pending longer than this mean the projection lags (a write's
# rows are pending for milliseconds normally; a failed apply waits for the
# reconciler, RECONCILE_INTERVAL_SECONDS, 15 s by default).
PROJECTION_LAG_TOLERANCE_SECONDS = 30.0


async def _projection_summary(resources: Resources) -> dict[str, Any] | None:
    """Counts over every tenant (never tenant ids: /readyz is unauthenticated);
    None when Postgres cannot answer (its own check says so)."""
    try:
        async with resources.sessions() as session:
            lagging = await asyncio.wait_for(
                projection_overview(session), timeout=READINESS_TIMEOUT_SECONDS
            )
    except Exception:
        return None
    return {
        "lagging_tenants": sum(
            1 for p in lagging if p.lag_seconds > PROJECTION_LAG_TOLERANCE_SECONDS
        ),
        "failed_rows": sum(p.failed for p in lagging),
        "pending_rows": sum(p.pending for p in lagging),
        "max_lag_versions": max((p.lag_versions for p in lagging), default=0),
        "max_lag_seconds": max((p.lag_seconds for p in lagging), default=0.0),
        "lag_tolerance_seconds": PROJECTION_LAG_TOLERANCE_SECONDS,
    }


async def readiness(resources: Resources) -> tuple[bool, dict[str, Any]]:
    """Probe Postgres, Neo4j and S3 concurrently; each gets its own verdict.

    Not ready (`failed`): Postgres or S3 cannot answer. Ready but `degraded`:
    Neo4j cannot answer (sync keeps working: it reads Postgres only; graph
    reads and search fail), or the projection lags (rows pending longer than
    the tolerance) or holds failed rows (`overwatch projection` names them).
    """

    async def s3_probe() -> None:
        await asyncio.to_thread(resources.s3.head_bucket, Bucket=resources.settings.blob_bucket)

    *results, projection = await asyncio.gather(
        _check("postgres", lambda: ping_postgres(resources.engine)),
        _check("neo4j", resources.graph.ping),
        _check("s3", s3_probe),
        _projection_summary(resources),
    )
    checks = {r.pop("name"): r for r in results}
    failed = [name for name in REQUIRED if checks[name]["status"] != "ok"]
    degraded = [name for name in checks if name not in REQUIRED and checks[name]["status"] != "ok"]
    if projection is not None and (projection["lagging_tenants"] or projection["failed_rows"]):
        degraded.append("projection")
    ready = not failed
    return ready, {
        "status": "unavailable" if failed else "degraded" if degraded else "ready",
        "failed": failed,
        "degraded": degraded,
        "checks": checks,
        "projection": projection,
    }


@router.get(
    "/readyz",
    summary="Readiness: Postgres and S3 answer; Neo4j and the projection may degrade it",
    responses={
        200: {"description": "`status` is `ready`, or `degraded` (`degraded` says why)."},
        503: {"description": "Postgres or S3 failed; `failed` names it."},
    },
)
async def readyz(resources: ResourcesDep) -> JSONResponse:
    ready, body = await readiness(resources)
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics(resources: ResourcesDep) -> Response:
    # The sync health gauges are read from Postgres at scrape time (one
    # aggregate over the workstations); if it cannot answer, they keep their
    # last values and the rest of the metrics are still served.
    try:
        await asyncio.wait_for(fleet_health(resources), timeout=READINESS_TIMEOUT_SECONDS)
    except Exception as exc:
        structlog.get_logger("api.health").warning("metrics.sync_health_failed", error=str(exc))
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
