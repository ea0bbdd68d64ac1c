"""`overwatch` command line: serve, migrate, stack, export-openapi and ops commands."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from api.migrate import PROJECT_ROOT, migrate_all
from api.settings import get_settings

app = typer.Typer(help="Overwatch Cloud: the system of record for autonomous drone fleets.",
                  no_args_is_help=True)
stack_app = typer.Typer(help="Local real servers (PostgreSQL, Neo4j, S3) without Docker.",
                        no_args_is_help=True)
app.add_typer(stack_app, name="stack")

T = TypeVar("T")


def run_async(factory: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await factory()

    return asyncio.run(main())


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    reload: Annotated[bool, typer.Option(help="Reload on code change (development).")] = False,
) -> None:
    """Run the API with uvicorn (docs at /docs)."""
    import uvicorn

    uvicorn.run("main:create_app", factory=True, host=host, port=port, workers=workers,
                reload=reload, log_config=None, access_log=False, proxy_headers=True)


@app.command()
def migrate() -> None:
    """Apply Postgres (Alembic) and Neo4j (cypher/migrations) migrations."""
    applied = run_async(lambda: migrate_all(get_settings()))
    typer.echo(f"postgres: at head; neo4j: applied {applied or 'nothing new'}")


def _stack(action: str, services: list[str]) -> None:
    script = PROJECT_ROOT / "scripts" / "stack.sh"
    code = subprocess.call(["bash", str(script), action, *services])  # noqa: S603,S607
    raise typer.Exit(code)


@stack_app.command("up")
def stack_up(services: Annotated[list[str] | None, typer.Argument()] = None) -> None:
    """Start (or reuse) PostgreSQL, Neo4j with Browser, and the S3 endpoint."""
    _stack("up", services or [])


@stack_app.command("down")
def stack_down(services: Annotated[list[str] | None, typer.Argument()] = None) -> None:
    """Stop every server the project started."""
    _stack("down", services or [])


@stack_app.command("status")
def stack_status(services: Annotated[list[str] | None, typer.Argument()] = None) -> None:
    """Say which local servers are running."""
    _stack("status", services or [])


@app.command()
def prune(
    heartbeat_days: Annotated[int | None, typer.Option(
        min=1, help="Keep this many days of heartbeats (default HEARTBEAT_RETENTION_DAYS).")
    ] = None,
) -> None:
    """Remove telemetry older than its retention."""
    from datetime import UTC, datetime, timedelta

    from api.fleet.service import prune_heartbeats
    from api.resources import Resources

    settings = get_settings()
    cutoff = datetime.now(UTC) - timedelta(days=heartbeat_days or
                                           settings.heartbeat_retention_days)

    async def heartbeats() -> int:
        resources = Resources.open(settings)
        try:
            return await prune_heartbeats(resources, cutoff)
        finally:
            await resources.close()

    removed = run_async(heartbeats)
    typer.echo(f"heartbeats: removed {removed} rows received before {cutoff:%Y-%m-%dT%H:%M:%SZ}")


@app.command("export-openapi")
def export_openapi(
    path: Annotated[Path | None, typer.Argument(help="Output file (stdout if omitted).")] = None,
) -> None:
    """Write the OpenAPI schema as JSON."""
    from main import create_app

    schema: dict[str, Any] = create_app().openapi()
    text = json.dumps(schema, indent=2, sort_keys=False)
    if path is None:
        sys.stdout.write(text + "\n")
    else:
        path.write_text(text + "\n", encoding="utf-8")
        typer.echo(f"wrote {path}")


if __name__ == "__main__":
    app()
