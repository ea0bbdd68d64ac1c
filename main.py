"""Overwatch Cloud API: the app factory.

`uvicorn main:app` or `overwatch serve`. Tests call `create_app(settings)`.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from api import health
from api.auth.service import flush_key_usage
from api.core.background import BackgroundLoops, Job
from api.core.blobstore import ensure_bucket
from api.core.body_limit import RequestBodyLimit
from api.core.docs_assets import install_offline_docs
from api.core.errors import install_error_handlers
from api.core.migrate import migrate_all
from api.core.observability import RequestContextMiddleware, configure_logging
from api.core.resources import Resources
from api.core.settings import Settings, get_settings
from api.fleet.liveness import liveness_sweep
from api.journal.reconcile import reconcile_all
from api.openapi import install_openapi
from api.router import include_v1
from api.search.embedding_worker import EMBEDDING_INTERVAL_SECONDS, embedding_job
from api.streams import Streams

log = structlog.get_logger("main")


def process_loops(settings: Settings) -> list[tuple[str, Job, float]]:
    """Loops every API process runs: (name, job, interval in seconds).

    The reconciler runs in every replica; the per-tenant advisory lock makes
    concurrent runs safe, and its first run at startup re-applies whatever a
    killed process left pending.
    """
    loops: list[tuple[str, Job, float]] = [
        ("reconciler", reconcile_all, settings.reconcile_interval_seconds),
        ("key_usage_flush", flush_key_usage, 30.0),
        ("liveness_sweep", liveness_sweep, settings.heartbeat_interval_seconds / 2),
    ]
    if settings.embedding_worker:
        loops.append(("embedding_worker", embedding_job, EMBEDDING_INTERVAL_SECONDS))
    return loops


# Run once at shutdown, after the loops stop (final flushes).
SHUTDOWN_HOOKS: list[Job] = [flush_key_usage]

DESCRIPTION = """
The system of record behind a mesh of autonomous perching drones.

* **Venue intelligence** lives in a Neo4j knowledge graph.
* **The registry** (customers, keys, workstations, kits, drones, telemetry,
  the sync journal) lives in PostgreSQL.
* Every call under `/api/v1` carries an `X-API-Key` header (use **Authorize**).
* Errors always have the shape `{"error": {"code", "message", "details"}}`.
"""


def create_app(settings: Settings | None = None, *, background: bool = True) -> FastAPI:
    """Build the API. `background=False` skips the timer loops (used by tests)."""
    settings = settings or get_settings()
    configure_logging(settings.log_level, json=settings.log_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resources = Resources.open(settings)
        app.state.resources = resources
        if settings.db_auto_migrate:
            applied = await migrate_all(settings, resources.graph)
            log.info("startup.migrated", neo4j_applied=applied)
        if settings.environment == "development":
            await ensure_bucket(resources)
        # Streams serve sockets rather than run on a timer: on even without `background`.
        streams = Streams.start(resources)
        loops = BackgroundLoops(resources)
        if background:
            for name, job, interval in process_loops(settings):
                loops.start(name, job, interval)
        # Everything loaded so far lives as long as the process. Freezing it keeps
        # it out of the collector's full scans, which otherwise stall a request
        # for ~50 ms whenever a large batch triggers one.
        gc.freeze()
        # The collector keeps its default thresholds (700, 10, 10). A 500-node
        # batch spends 2-5 ms in it, but at (50000, 50, 100) the heartbeats'
        # p99 under wrk doubled (43-50 -> 94-110 ms: rarer, longer pauses), and
        # at (5000, 10, 10) the batch saved nothing measurable.
        log.info("startup.ready", environment=settings.environment)
        try:
            yield
        finally:
            gc.unfreeze()
            await streams.stop()
            await loops.stop()
            for hook in SHUTDOWN_HOOKS:
                try:
                    await hook(resources)
                except Exception as exc:  # shutdown must finish
                    log.warning("shutdown.hook_failed", error=str(exc)[:300])
            await resources.close()

    app = FastAPI(
        title="Overwatch Cloud",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.settings = settings
    install_error_handlers(app)
    # Middleware added later wraps what was added before: the request context is
    # outermost, so the body cap's 413 and every 500 carry X-Request-ID (and CORS).
    app.add_middleware(RequestBodyLimit, settings=settings)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID"],
        )
    app.add_middleware(RequestContextMiddleware)
    app.include_router(health.router)
    include_v1(app)
    install_offline_docs(app)  # /docs and /redoc without a CDN
    install_openapi(app)
    return app


def __getattr__(name: str) -> FastAPI:
    # `uvicorn main:app` builds the app lazily, so importing main (tests, CLI)
    # never reads the environment as a side effect.
    if name == "app":
        return create_app()
    raise AttributeError(name)
