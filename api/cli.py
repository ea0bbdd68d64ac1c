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
from api.resources import Resources
from api.settings import get_settings

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
    from api.observability import configure_logging

    if ctx.invoked_subcommand in _WITHOUT_SETTINGS:
        configure_logging("INFO", json=False)
        return
    try:
        settings = get_settings()
    except Exception as exc:  # invalid settings: say so, plainly, once
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from exc
    configure_logging(settings.log_level, json=False)


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


@app.command()
def prune(
    heartbeat_days: Annotated[
        int | None,
        typer.Option(
            min=1, help="Keep this many days of heartbeats (default HEARTBEAT_RETENTION_DAYS)."
        ),
    ] = None,
    sync_days: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Keep this many days of sync history and tombstones "
            "(default TOMBSTONE_RETENTION_DAYS).",
        ),
    ] = None,
    occupancy_days: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Keep this many days of occupancy history (default OCCUPANCY_RETENTION_DAYS).",
        ),
    ] = None,
) -> None:
    """Remove telemetry and sync history older than their retention."""
    from datetime import UTC, datetime, timedelta

    from api.fleet.service import prune_heartbeats
    from api.streams.occupancy import prune_occupancy
    from api.sync.prune import SyncPruned, prune_sync

    settings = get_settings()
    now = datetime.now(UTC)
    heartbeat_cutoff = now - timedelta(days=heartbeat_days or settings.heartbeat_retention_days)
    sync_cutoff = now - timedelta(days=sync_days or settings.tombstone_retention_days)

    async def work(resources: Resources) -> tuple[int, SyncPruned]:
        return (
            await prune_heartbeats(resources, heartbeat_cutoff),
            await prune_sync(resources, sync_cutoff),
        )

    removed, synced = with_resources(work)
    occupancy_cutoff = now - timedelta(days=occupancy_days or settings.occupancy_retention_days)
    occupancy = with_resources(lambda resources: prune_occupancy(resources, occupancy_cutoff))
    typer.echo(
        f"heartbeats: removed {removed} rows received before {heartbeat_cutoff:%Y-%m-%dT%H:%M:%SZ}"
    )
    typer.echo(
        f"sync: removed {synced.tombstones} tombstones, {synced.journal_rows} applied "
        f"journal rows and {synced.outcomes} mutation outcomes older than "
        f"{sync_cutoff:%Y-%m-%dT%H:%M:%SZ}; cursors below the pruned versions of "
        f"{synced.tenants} tenant(s) now answer 410"
    )
    typer.echo(
        f"occupancy: removed {occupancy} rows received before {occupancy_cutoff:%Y-%m-%dT%H:%M:%SZ}"
    )


def _customer_ids(customer: list[str] | None) -> list[Any] | None:
    import uuid as uuid_module

    try:
        return [uuid_module.UUID(c) for c in customer] if customer else None
    except ValueError as exc:
        raise typer.BadParameter("not a customer id (UUID)", param_hint="--customer") from exc


def _echo_failed_rows(rows: list[Any], show: int) -> None:
    for row in rows[:show]:
        typer.echo(
            f"  failed: version {row.version} {row.entity_type} {row.entity_id} ({row.op}) "
            f"at {row.failed_at}: {row.error[:300]}"
        )
    if len(rows) > show:
        typer.echo(f"  ... and {len(rows) - show} more failed row(s)")


@app.command()
def reconcile(
    retry_failed: Annotated[
        bool,
        typer.Option(
            "--retry-failed",
            help="First put rows Neo4j refused back to pending (after a fix); rows a later "
            "change superseded are settled without being replayed.",
        ),
    ] = False,
    customer: Annotated[
        list[str] | None,
        typer.Option(help="Only these customer ids (repeatable); default: every tenant."),
    ] = None,
    show: Annotated[int, typer.Option(help="Failed rows listed per tenant.")] = 10,
) -> None:
    """Apply every pending journal row to Neo4j, in version order per tenant.

    Exits 1 when a tenant could not be applied (Neo4j unavailable) or holds
    failed rows (Neo4j refused them; `overwatch verify` lists them too).
    """
    import uuid as uuid_module

    from api.journal import FailedRow, Reconciled, failed_rows
    from api.journal import reconcile as reconcile_journal

    ids = _customer_ids(customer)

    async def work(resources: Resources) -> tuple[Reconciled, list[FailedRow]]:
        report = await reconcile_journal(resources, retry=retry_failed, customers=ids)
        async with resources.sessions() as session:
            failed = [
                row
                for p in report.projection
                if p.failed
                for row in await failed_rows(session, uuid_module.UUID(p.customer_id), show + 1)
            ]
        return report, failed

    report, failed = with_resources(work)
    if retry_failed:
        typer.echo(
            f"retried {report.retried} failed row(s); {report.superseded} were superseded by "
            "later changes and settled without replay"
        )
    total = sum(report.applied.values())
    typer.echo(f"reconciled {total} pending change(s) across {len(report.applied)} tenant(s)")
    for tenant, error in report.unavailable.items():
        typer.echo(f"tenant {tenant}: could not apply its pending rows: {error}")
    for p in report.projection:
        typer.echo(
            f"tenant {p.customer_id}: {p.pending} pending (lag {p.lag_versions} version(s), "
            f"{p.lag_seconds:.1f} s), {p.failed} failed"
        )
        _echo_failed_rows([r for r in failed if r.customer_id == p.customer_id], show)
    if report.unavailable or report.failed_rows:
        typer.echo(
            f"not reconciled: {len(report.unavailable)} tenant(s) could not be applied, "
            f"{report.failed_rows} row(s) failed (fix, then `overwatch reconcile --retry-failed`)"
        )
        raise typer.Exit(1)


@app.command()
def projection(
    show: Annotated[int, typer.Option(help="Failed rows listed per tenant.")] = 10,
) -> None:
    """List tenants whose Neo4j projection lags or holds failed rows; exit 1 if any."""
    import uuid as uuid_module

    from api.journal import FailedRow, Projection, failed_rows, projection_overview

    async def work(resources: Resources) -> tuple[list[Projection], list[FailedRow]]:
        async with resources.sessions() as session:
            found = await projection_overview(session)
            failed = [
                row
                for p in found
                if p.failed
                for row in await failed_rows(session, uuid_module.UUID(p.customer_id), show + 1)
            ]
        return found, failed

    found, failed = with_resources(work)
    for p in found:
        typer.echo(
            f"tenant {p.customer_id}: head {p.head}, applied through {p.applied_through} "
            f"(lag {p.lag_versions} version(s), {p.lag_seconds:.1f} s, {p.pending} pending), "
            f"{p.failed} failed"
        )
        _echo_failed_rows([r for r in failed if r.customer_id == p.customer_id], show)
    lagging = sum(1 for p in found if p.pending)
    with_failed = sum(1 for p in found if p.failed)
    typer.echo(
        f"projection: {lagging} tenant(s) lagging, {with_failed} with failed rows"
        if found
        else "projection: every tenant is applied through its head, no failed rows"
    )
    if found:
        raise typer.Exit(1)


@app.command()
def verify(
    customer: Annotated[
        list[str] | None,
        typer.Option(help="Only these customer ids (repeatable); default: every tenant."),
    ] = None,
    show: Annotated[int, typer.Option(help="Entities listed per kind of drift.")] = 10,
) -> None:
    """Compare Neo4j with the state the journal implies.

    Exit 1 on drift (or when a tenant could not be verified), 3 when the only
    findings are failed rows (Neo4j refused them; they are listed).
    """
    from api.journal import Drift, tenants
    from api.journal import verify as verify_tenant
    from api.observability import error_text

    ids = _customer_ids(customer)

    async def work(resources: Resources) -> tuple[list[Drift], dict[str, str]]:
        reports: list[Drift] = []
        errors: dict[str, str] = {}
        for c in ids or await tenants(resources):
            try:
                reports.append(await verify_tenant(resources, c))
            except Exception as exc:  # Neo4j down: say so per tenant, not as a traceback
                errors[str(c)] = error_text(exc)
        return reports, errors

    reports, errors = with_resources(work)
    drifted = [r for r in reports if not r.clean]
    failed = [r for r in reports if r.failed]
    for report in reports:
        if report.clean and not report.failed:
            continue
        typer.echo(
            f"tenant {report.customer_id}: {len(report.missing)} missing in Neo4j, "
            f"{len(report.unexpected)} unexpected, {len(report.stale)} stale, "
            f"{report.pending} pending, {len(report.failed)} failed"
        )
        for label, items in (
            ("missing", report.missing),
            ("unexpected", report.unexpected),
            ("stale", report.stale),
        ):
            for item in items[:show]:
                typer.echo(f"  {label}: {item}")
        _echo_failed_rows(report.failed, show)
    for tenant, error in errors.items():
        typer.echo(f"tenant {tenant}: could not verify: {error}")
    typer.echo(
        f"verified {len(reports)} tenant(s): "
        f"{'no drift' if not drifted else f'{len(drifted)} with drift'}, "
        f"{sum(len(r.failed) for r in failed)} failed row(s) in {len(failed)} tenant(s)"
        + (f", {len(errors)} not verified" if errors else "")
    )
    if drifted or errors:
        raise typer.Exit(1)
    if failed:
        raise typer.Exit(3)


@app.command("seed-demo")
def seed_demo(
    venues: Annotated[int, typer.Option(min=1, max=10_000, help="Venues to create.")] = 6,
    zones: Annotated[int, typer.Option(min=1, max=200, help="Zones per venue.")] = 8,
) -> None:
    """Create a demo customer with venues, world model and operations; prints its key."""
    from rich.progress import Progress

    from api.demo import DemoResult
    from api.demo import seed_demo as seed

    async def work(resources: Resources) -> DemoResult:
        with Progress() as bar:
            task = bar.add_task("seeding venues", total=venues)
            return await seed(
                resources,
                venues=venues,
                zones_per_venue=zones,
                progress=lambda n: bar.advance(task, n),
            )

    result = with_resources(work)
    typer.echo(
        f"customer {result.customer_id}: {result.venues} venues, {result.nodes} world "
        f"nodes, {result.edges} edges, {result.operations} operations"
    )
    typer.echo(f"API key (shown once): {result.api_key}")


@app.command()
def reembed(
    entity_type: Annotated[
        str | None, typer.Option("--type", help="venue or world_node (default: both).")
    ] = None,
    customer: Annotated[
        str | None, typer.Option(help="Only this customer id (default: every tenant).")
    ] = None,
    force: Annotated[
        bool,
        typer.Option(help="Re-encode even nodes whose embedding already matches model and text."),
    ] = False,
) -> None:
    """Bring every embedding up to date with EMBEDDING_MODEL (run after changing the model).

    Nodes already embedded from their current text by the current model are
    skipped, so an interrupted run continues where it stopped.
    """
    import uuid as uuid_module

    from rich.progress import Progress

    from api.search.embedding_worker import TARGETS, Refreshed
    from api.search.embedding_worker import reembed as reembed_all

    if entity_type is not None and entity_type not in TARGETS:
        raise typer.BadParameter(f"must be one of {', '.join(TARGETS)}", param_hint="--type")
    try:
        tenant = uuid_module.UUID(customer) if customer else None
    except ValueError as exc:
        raise typer.BadParameter("not a customer id (UUID)", param_hint="--customer") from exc
    targets = [t for t in TARGETS if entity_type in (None, t)]

    async def work(resources: Resources) -> Refreshed:
        with Progress() as bar:
            tasks: dict[str, Any] = {}

            def progress(target: str, done: int, total: int) -> None:
                if target not in tasks:
                    tasks[target] = bar.add_task(f"embedding {target}s", total=total)
                bar.update(tasks[target], completed=done, total=total)

            return await reembed_all(
                resources, targets, customer_id=tenant, force=force, progress=progress
            )

    outcome = with_resources(work)
    typer.echo(f"re-embedded {outcome.written} node(s); {outcome.unchanged} already up to date")


@app.command("export-openapi")
def export_openapi(
    path: Annotated[Path | None, typer.Argument(help="Output file (stdout if omitted).")] = None,
) -> None:
    """Write the OpenAPI schema as JSON."""
    from api.settings import Settings
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


if __name__ == "__main__":
    app()
