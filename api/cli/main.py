"""The `overwatch` Typer app, its shared helpers, and the server and stack commands."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from api.core.migrate import PROJECT_ROOT, migrate_all
from api.core.resources import Resources
from api.core.settings import Settings, get_settings

app = typer.Typer(
    help="Overwatch Cloud: the system of record for autonomous drone fleets.", no_args_is_help=True
)


stack_app = typer.Typer(
    help="Local real servers (PostgreSQL, Neo4j, S3) without Docker.", no_args_is_help=True
)


app.add_typer(stack_app, name="stack")


T = TypeVar("T")


# Commands that reach no store run without valid service settings; every other
# command (migrate, reconcile, prune, ...) obeys the server's rule: production
# unless ENVIRONMENT says otherwise, so the default secrets are refused.
_WITHOUT_SETTINGS = frozenset({"stack", "export-openapi"})


@app.callback()
def _configure(ctx: typer.Context) -> None:
    """Readable log lines at LOG_LEVEL for commands (the server logs JSON)."""
    from api.core.observability import configure_logging

    if ctx.invoked_subcommand in _WITHOUT_SETTINGS:
        configure_logging("INFO", json=False)
        return
    try:
        settings = get_settings()
    except Exception as exc:  # invalid settings: say so, plainly, once
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from exc
    configure_logging(settings.log_level, json=False)


def current_settings() -> Settings:
    """The settings commands run with (tests replace `get_settings` in this module)."""
    return get_settings()


def with_resources(work: Callable[[Resources], Awaitable[T]]) -> T:
    """Run `work` with the service's clients open, then close them."""

    async def main() -> T:
        resources = Resources.open(get_settings())
        try:
            return await work(resources)
        finally:
            await resources.close()

    return asyncio.run(main())


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

    uvicorn.run(
        "main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        reload=reload,
        log_config=None,
        access_log=False,
        proxy_headers=True,
    )


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


@app.command("export-openapi")
def export_openapi(
    path: Annotated[Path | None, typer.Argument(help="Output file (stdout if omitted).")] = None,
) -> None:
    """Write the OpenAPI schema as JSON."""
    from api.core.settings import Settings
    from main import create_app

    # The schema serves nothing and opens no store: the environment's settings
    # shape it (the ontology), but no secret has to be real for that.
    settings = Settings(environment="development")
    schema: dict[str, Any] = create_app(settings).openapi()
    text = json.dumps(schema, indent=2, sort_keys=False)
    if path is None:
        sys.stdout.write(text + "\n")
    else:
        path.write_text(text + "\n", encoding="utf-8")
        typer.echo(f"wrote {path}")
