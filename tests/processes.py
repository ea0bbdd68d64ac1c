"""Helpers for tests that run the API as real processes (crash, streams)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from api.core.settings import Settings
from bench.harness import free_port
from tests.conftest import ADMIN_KEY

ROOT = Path(__file__).resolve().parent.parent


def api_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of an API or CLI process pointed at the test servers."""
    return {
        **os.environ,
        "ENVIRONMENT": "development",
        "DATABASE_URL": settings.database_url,
        "NEO4J_URI": settings.neo4j_uri,
        "NEO4J_USER": settings.neo4j_user,
        "NEO4J_PASSWORD": settings.neo4j_password.get_secret_value(),
        "API_KEY_PEPPER": settings.api_key_pepper.get_secret_value(),
        "ADMIN_API_KEY": ADMIN_KEY,
        "BLOB_ENDPOINT_URL": settings.blob_endpoint_url or "",
        "BLOB_BUCKET": settings.blob_bucket,
        "LOG_LEVEL": "WARNING",
        "RECONCILE_INTERVAL_SECONDS": "3600",
        "EMBEDDING_WORKER": "false",
        **extra,
    }


@dataclass
class ApiProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path  # its stdout and stderr


@contextlib.asynccontextmanager
async def running_api(env: dict[str, str], log_dir: Path, name: str) -> AsyncIterator[ApiProcess]:
    """A real uvicorn process of the app, healthy, logging to `log_dir`.

    Terminated on exit unless the test already ended it (killed it, say).
    """
    port = free_port()
    log_path = log_dir / f"api-{name}-{port}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "main:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
                for _ in range(600):
                    with contextlib.suppress(httpx.HTTPError):
                        if (await c.get("/healthz")).status_code == 200:
                            break
                    assert proc.poll() is None, log_path.read_text()
                    await asyncio.sleep(0.1)
            yield ApiProcess(proc, port, log_path)
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=20)


# Raw HTTP/1.1 on one keep-alive connection, for what a client library hides:
# pipelining, header bytes sent as-is, and whether the server kept the connection.
def raw_request(
    method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> bytes:
    """One request's bytes; header values are sent exactly as given."""
    lines = [f"{method} {path} HTTP/1.1", "Host: test"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in ("POST", "PUT", "PATCH", "DELETE"):
        lines.append(f"Content-Length: {len(body)}")
        if body:
            lines.append("Content-Type: application/json")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """The next response on the connection: (status, lower-cased headers, body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body
