"""Journal and projection commands: prune, reconcile, projection, verify."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from api.cli.main import app, current_settings, with_resources
from api.core.resources import Resources


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
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Prune even if it expires the cursor of workstations that pulled within the "
            "window (they get 410 and must bootstrap again).",
        ),
    ] = False,
    show: Annotated[int, typer.Option(help="Workstations at risk listed.")] = 50,
) -> None:
    """Remove telemetry and sync history older than their retention.

    First lists the active workstations that pulled within the sync window but
    whose cursor the prune would expire; if there are any it refuses (exit 1,
    nothing removed) unless `--force`.
    """
    from datetime import UTC, datetime, timedelta

    from api.fleet.service import prune_heartbeats
    from api.streams.occupancy import prune_occupancy
    from api.sync.prune import SyncPruned, prune_sync

    settings = current_settings()
    now = datetime.now(UTC)
    heartbeat_cutoff = now - timedelta(days=heartbeat_days or settings.heartbeat_retention_days)
    sync_cutoff = now - timedelta(days=sync_days or settings.tombstone_retention_days)

    async def work(resources: Resources) -> tuple[int, SyncPruned]:
        # Sync first: when it is refused, nothing at all is removed.
        synced = await prune_sync(resources, sync_cutoff, force=force)
        if synced.refused:
            return 0, synced
        return await prune_heartbeats(resources, heartbeat_cutoff), synced

    removed, synced = with_resources(work)
    if synced.at_risk:
        typer.echo(
            f"{'warning' if force else 'refused'}: {len(synced.at_risk)} workstation(s) pulled "
            f"since {sync_cutoff:%Y-%m-%dT%H:%M:%SZ} but their cursor would fall below the new "
            "horizon: their next pull answers 410 cursor_expired and they must bootstrap again"
        )
        for ws in synced.at_risk[:show]:
            typer.echo(
                f"  tenant {ws.customer_id} workstation {ws.workstation_id} ({ws.name}): "
                f"cursor {ws.expiry_cursor} < new horizon {ws.horizon}, last pull "
                f"{ws.last_pull_at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
            )
        if len(synced.at_risk) > show:
            typer.echo(f"  ... and {len(synced.at_risk) - show} more")
    if synced.refused:
        typer.echo(
            "nothing was pruned: let them pull first (GET /api/v1/sync/workstations shows their "
            "lag), or run `overwatch prune --force`"
        )
        raise typer.Exit(1)
    occupancy_cutoff = now - timedelta(days=occupancy_days or settings.occupancy_retention_days)
    occupancy = with_resources(lambda resources: prune_occupancy(resources, occupancy_cutoff))
    typer.echo(
        f"heartbeats: removed {removed} rows received before {heartbeat_cutoff:%Y-%m-%dT%H:%M:%SZ}"
    )
    typer.echo(
        f"sync: removed {synced.tombstones} tombstones, {synced.journal_rows} applied "
        f"journal rows, {synced.outcomes} mutation outcomes, {synced.scope_exits} scope exits, "
        f"{synced.scope_removals} delivered scope removals and {synced.conflicts} conflicts "
        "older than "
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

    from api.journal.reconcile import Reconciled
    from api.journal.reconcile import reconcile as reconcile_journal
    from api.journal.status import FailedRow, failed_rows

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

    from api.journal.status import FailedRow, Projection, failed_rows, projection_overview

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
    from api.core.observability import error_text
    from api.journal.reconcile import Drift, tenants
    from api.journal.reconcile import verify as verify_tenant

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
