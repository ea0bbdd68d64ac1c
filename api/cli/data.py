"""Data commands: seed-demo and reembed."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from api.cli.main import app, with_resources
from api.core.resources import Resources


@app.command("seed-demo")
def seed_demo(
    venues: Annotated[int, typer.Option(min=1, max=10_000, help="Venues to create.")] = 6,
    zones: Annotated[int, typer.Option(min=1, max=200, help="Zones per venue.")] = 8,
) -> None:
    """Create a demo customer with venues, world model and operations; prints its key."""
    from rich.progress import Progress

    from api.cli.demo import DemoResult
    from api.cli.demo import seed_demo as seed

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
