"""`overwatch seed-demo`'s data goes through the write path like any other write."""

from __future__ import annotations

from api.cli.demo import seed_demo
from api.journal.reconcile import verify


async def test_seed_demo_builds_a_consistent_tenant(app, graph):
    resources = app.state.resources
    steps: list[int] = []
    result = await seed_demo(resources, venues=2, zones_per_venue=3, progress=steps.append)
    try:
        assert steps == [1, 1]
        assert (result.venues, result.nodes, result.edges, result.operations) == (2, 12, 10, 2)
        assert result.api_key.startswith("owk_")
        drift = await verify(resources, result.customer_id)
        assert drift.clean and drift.pending == 0
        rows = await graph.read(
            "t",
            "MATCH (n:WorldNode) WHERE n.customer_id = $c RETURN count(n) AS n",
            {"c": str(result.customer_id)},
        )
        assert rows[0]["n"] == 12
    finally:
        await graph.write(
            "t",
            "MATCH (n) WHERE n.customer_id = $c DETACH DELETE n",
            {"c": str(result.customer_id)},
        )
