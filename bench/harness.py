"""Shared pieces of the benchmarks: a fresh database, a real API server, results."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from api.core.migrate import migrate_postgres
from api.core.settings import Settings
from graph.driver import GraphClient
from graph.schema import migrate_graph

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    name: str
    unit: str
    api: float
    raw: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return None if not self.raw else self.api / self.raw


def print_results(results: list[Result]) -> None:
    width = max(len(r.name) for r in results) if results else 10
    print(f"\n{'benchmark':<{width}}  {'api':>12}  {'raw driver':>12}  {'ratio':>6}  unit / notes")
    for r in results:
        raw = f"{r.raw:12.1f}" if r.raw is not None else f"{'-':>12}"
        ratio = f"{r.ratio:6.2f}" if r.ratio is not None else f"{'-':>6}"
        notes = " ".join(f"{k}={v}" for k, v in r.notes.items())
        print(f"{r.name:<{width}}  {r.api:12.1f}  {raw}  {ratio}  {r.unit} {notes}")


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux /proc), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def quiet_collector() -> Iterator[None]:
    """One timed sample without the bench process's cyclic collector.

    The bench process is the client of the API side and the whole of the raw
    side. Decoding a 2 MB page allocates tens of thousands of dicts, and the
    collector's passes over them landed on whichever side happened to cross a
    threshold: 20-130 ms stalls in samples of 30-70 ms, charged to the server
    or to the reference at random (pull's ratio read 0.79 with them and 0.52
    without, on the same server). Collected before each sample, held off
    during it: neither side pays for the other's garbage."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# uvicorn's options for every bench server (the API's and any reference app's).
UVICORN_OPTIONS = ("--no-access-log", "--log-level", "warning")


@dataclass
class BenchContext:
    settings: Settings
    admin_key: str
    database_url: str
    server_pid: int | None = None

    def env(self) -> dict[str, str]:
        s = self.settings
        return {
            **os.environ,
            "ENVIRONMENT": "development",
            "DATABASE_URL": self.database_url,
            "NEO4J_URI": s.neo4j_uri,
            "NEO4J_PASSWORD": s.neo4j_password.get_secret_value(),
            "API_KEY_PEPPER": s.api_key_pepper.get_secret_value(),
            "ADMIN_API_KEY": self.admin_key,
            "LOG_LEVEL": "WARNING",
            "BLOB_BUCKET": s.blob_bucket,
            "DB_AUTO_MIGRATE": "false",
            "DATABASE_POOL_SIZE": "20",
            # Each benchmark measures one path; the embedding worker would otherwise
            # embed everything a benchmark writes and compete with it for the CPU.
            "EMBEDDING_WORKER": os.environ.get("EMBEDDING_WORKER", "false"),
        }

    @contextlib.asynccontextmanager
    async def server(
        self, workers: int = 1, app: str = "main:create_app", env: dict[str, str] | None = None
    ) -> AsyncIterator[str]:
        """A real uvicorn server on loopback; yields its base URL. `app` (a
        factory) and `env` serve a benchmark's reference app the same way."""
        port = free_port()
        log = open(ROOT / ".local" / f"bench-server-{port}.log", "w")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                app,
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
                *UVICORN_OPTIONS,
            ],
            cwd=ROOT,
            env={**self.env(), **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        self.server_pid = proc.pid
        try:
            deadline = time.monotonic() + 60
            async with httpx.AsyncClient() as client:
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(base + "/readyz")).status_code == 200:
                            break
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"bench server did not start; see {log.name}")
                    await asyncio.sleep(0.3)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()

    async def new_tenant(self, base: str, name: str = "bench") -> tuple[str, str]:
        async with httpx.AsyncClient() as client:
            r = await client.post(
                base + "/api/v1/auth/customers",
                json={"name": name},
                headers={"X-API-Key": self.admin_key},
            )
            r.raise_for_status()
            body = r.json()
            return body["id"], body["api_key"]

    def graph(self) -> GraphClient:
        s = self.settings
        return GraphClient.connect(
            s.neo4j_uri, s.neo4j_user, s.neo4j_password.get_secret_value(), s.neo4j_database
        )

    async def clear_graph(self, graph: GraphClient, *customer_ids: str) -> None:
        """Remove the benchmark tenants' nodes from Neo4j (the bench database is
        dropped afterwards; Neo4j has only the one shared database)."""
        for customer_id in customer_ids:
            await graph.write(
                "bench.cleanup",
                "MATCH (n) WHERE n.customer_id = $c DETACH DELETE n",
                {"c": customer_id},
            )

    async def pg(self) -> asyncpg.Connection:
        return await asyncpg.connect(
            self.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        )


async def prepare() -> BenchContext:
    """A fresh `<db>_bench` database at head and the Neo4j schema applied."""
    # The bench stack runs on the repository's development secrets: say so.
    settings = Settings(environment="development")
    admin = make_url(settings.database_url)
    name = f"{admin.database}_bench_{os.getpid()}"  # concurrent runs never collide
    conn = await asyncpg.connect(settings.sync_database_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = admin.set(database=name).render_as_string(hide_password=False)
    await migrate_postgres(url)
    graph = GraphClient.connect(
        settings.neo4j_uri,
        settings.neo4j_user,
        settings.neo4j_password.get_secret_value(),
        settings.neo4j_database,
    )
    try:
        await migrate_graph(graph)
    finally:
        await graph.close()
    (ROOT / ".local").mkdir(exist_ok=True)
    return BenchContext(
        settings=settings, admin_key="ow_admin_bench_" + secrets.token_hex(16), database_url=url
    )


async def dispose(ctx: BenchContext) -> None:
    """Drop the run's database."""
    name = make_url(ctx.database_url).database
    conn = await asyncpg.connect(ctx.settings.sync_database_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
