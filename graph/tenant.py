"""The one place a graph statement gets its tenant (DESIGN.md §2).

Neo4j Community has one database, so every node and relationship carries
`customer_id` and every statement must filter on it. `Tenant` binds
`$customer_id` to one tenant on every statement it runs, and refuses a
statement that does not use `$customer_id` before it reaches the server: a
repository function cannot forget the filter, nor pass another tenant's id by
mistake in its parameters.

The projection (graph/projection.py) is the one writer that does not go
through here: it applies journal rows, each carrying its own
`row.customer_id`. `tests/test_tenant_binding.py` checks every statement in
`graph/` and `cypher/` statically, projection included.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, LiteralString

from neo4j import AsyncManagedTransaction, AsyncResult

from graph.driver import GraphClient

TENANT_PARAMETER = "$customer_id"


class UnboundStatement(ValueError):
    """A statement run for a tenant that does not filter on `$customer_id`."""


class Tenant:
    """One tenant's view of the graph: `read`, `write` and `run` bind `$customer_id`."""

    __slots__ = ("client", "customer_id")

    def __init__(self, client: GraphClient, customer_id: str | uuid.UUID) -> None:
        self.client = client
        self.customer_id = str(customer_id)

    def bind(self, query: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """`params` with this tenant's `customer_id`; refuses a statement without the filter."""
        if TENANT_PARAMETER not in query:
            raise UnboundStatement(f"statement does not filter on {TENANT_PARAMETER}: {query[:80]}")
        if params and "customer_id" in params:
            raise UnboundStatement("customer_id is bound by the tenant, not by the caller")
        return {**(params or {}), "customer_id": self.customer_id}

    async def read(
        self,
        name: str,
        query: LiteralString,
        params: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (the server-side tx timeout)
    ) -> list[dict[str, Any]]:
        """One read statement in a managed read transaction; rows as dicts."""
        return await self.client.read(name, query, self.bind(query, params), timeout=timeout)

    async def write(
        self, name: str, query: LiteralString, params: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """One write statement in a managed write transaction; rows as dicts."""
        return await self.client.write(name, query, self.bind(query, params))

    async def run(
        self,
        tx: AsyncManagedTransaction,
        query: LiteralString,
        params: Mapping[str, Any] | None = None,
    ) -> AsyncResult:
        """One statement inside the caller's transaction (several statements, one snapshot)."""
        return await tx.run(query, self.bind(query, params))
