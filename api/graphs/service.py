"""Graph queries for analysts, with Neo4j's refusals turned into clear 4xx errors."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, TypeVar

from neo4j.exceptions import ClientError, Neo4jError, ServiceUnavailable, SessionExpired

from api.core.errors import DependencyUnavailable, Invalid, NotFound, OverwatchError
from api.core.resources import Resources
from api.graphs import readonly
from graph import named_queries, traversal
from graph.named_queries import NamedQuery, ParamError, Rows
from graph.reads import entity

T = TypeVar("T")

NAMED_QUERY_TIMEOUT_SECONDS = 10.0
NAMED_QUERY_MAX_ROWS = 1000


class QueryRefused(OverwatchError):
    status_code = 400
    code = "query_refused"


def checked_types(requested: str | None, allowed: Sequence[str]) -> list[str]:
    """Relationship types from `A,B` text, each checked against the ontology allowlist."""
    if requested is None or not requested.strip():
        return list(allowed)
    types = [t.strip() for t in requested.split(",") if t.strip()]
    unknown = [t for t in types if t not in allowed]
    if unknown:
        raise Invalid(
            f"unknown relationship types: {', '.join(unknown)}",
            code="unknown_relationship_type",
            details={"unknown": unknown, "allowed": list(allowed)},
        )
    return types


async def guarded(work: Awaitable[T]) -> T:
    """Await a graph call; Neo4j's verdicts on the statement become 4xx, outages 503."""
    try:
        return await work
    except (ServiceUnavailable, SessionExpired) as exc:
        raise DependencyUnavailable(
            "neo4j is unavailable", details={"dependency": "neo4j"}
        ) from exc
    except ClientError as exc:
        code = exc.code or ""
        if "AccessMode" in code or "ForbiddenOnReadOnlyDatabase" in code:
            raise QueryRefused(
                "writes are refused: queries run in a read-only transaction", code="write_refused"
            ) from exc
        if "TransactionTimedOut" in code or "Terminated" in code:
            raise QueryRefused(
                "the query ran past its time limit; narrow it or raise the timeout",
                code="query_timeout",
            ) from exc
        raise QueryRefused(
            f"Neo4j refused the query: {exc.message}",
            code="cypher_error",
            details={"neo4j_code": code},
        ) from exc
    except Neo4jError as exc:
        if "TransactionTimedOut" in (exc.code or ""):
            raise QueryRefused("the query ran past its time limit", code="query_timeout") from exc
        raise


async def refuse_writes(resources: Resources, cypher: str) -> None:
    """Refuse (400 `write_refused`) a statement Neo4j's EXPLAIN does not type read-only."""
    verdict = await guarded(readonly.classify(resources.graph, cypher))
    if not verdict.read_only:
        clauses = list(verdict.found)
        raise QueryRefused(
            f"read-only Cypher only; found {', '.join(clauses)}",
            code="write_refused",
            details={"clauses": clauses, "query_type": verdict.query_type},
        )


def _rows_body(rows: Rows, started: float) -> dict[str, Any]:
    return {
        "columns": rows.columns,
        "rows": rows.rows,
        "row_count": len(rows.rows),
        "truncated": rows.truncated,
        "ms": round((time.perf_counter() - started) * 1000, 1),
    }


def query_catalogue() -> dict[str, NamedQuery]:
    return named_queries.load_queries()


async def run_named(
    resources: Resources, customer_id: uuid.UUID, name: str, given: Mapping[str, Any]
) -> dict[str, Any]:
    """Run a named query for the caller's tenant with validated parameters."""
    query = query_catalogue().get(name)
    if query is None:
        raise NotFound(
            f"no named query {name!r}",
            code="unknown_query",
            details={"known": sorted(query_catalogue())},
        )
    try:
        params = query.bind(given, str(customer_id))
    except ParamError as exc:
        raise Invalid(
            f"parameters of {name} do not fit: {exc}", code="invalid_parameters", details=exc.errors
        ) from exc
    started = time.perf_counter()
    await refuse_writes(resources, query.cypher)
    rows = await guarded(
        named_queries.run_read_only(
            resources.graph,
            f"named.{name}",
            query.cypher,
            params,
            timeout_seconds=NAMED_QUERY_TIMEOUT_SECONDS,
            max_rows=NAMED_QUERY_MAX_ROWS,
        )
    )
    return {"name": name, **_rows_body(rows, started)}


async def run_admin_cypher(
    resources: Resources,
    cypher: str,
    params: Mapping[str, Any],
    *,
    timeout_seconds: float,
    max_rows: int,
) -> dict[str, Any]:
    """An admin's read-only Cypher: anything Neo4j does not plan as a read is refused."""
    started = time.perf_counter()
    await refuse_writes(resources, cypher)
    rows = await guarded(
        named_queries.run_read_only(
            resources.graph,
            "admin.cypher",
            cypher,
            params,
            timeout_seconds=timeout_seconds,
            max_rows=max_rows,
        )
    )
    return _rows_body(rows, started)


async def neighbourhood(
    resources: Resources,
    customer_id: uuid.UUID,
    node_id: uuid.UUID,
    *,
    hops: int,
    types: Sequence[str],
    max_nodes: int,
    current_only: bool,
) -> dict[str, Any]:
    sub = await guarded(
        traversal.neighbourhood(
            resources.graph,
            str(customer_id),
            str(node_id),
            hops=hops,
            types=types,
            max_nodes=max_nodes,
            current_only=current_only,
        )
    )
    if sub is None:
        raise NotFound("world node not found")
    return {
        "node_id": node_id,
        "hops": hops,
        "nodes": sub.nodes,
        "edges": sub.edges,
        "truncated": sub.truncated,
    }


async def path(
    resources: Resources,
    customer_id: uuid.UUID,
    from_id: uuid.UUID,
    to_id: uuid.UUID,
    *,
    types: Sequence[str],
    current_only: bool,
) -> dict[str, Any]:
    tenant = str(customer_id)
    found = await guarded(
        traversal.existing_nodes(resources.graph, tenant, [str(from_id), str(to_id)])
    )
    missing = [
        name for name, value in (("from_id", from_id), ("to_id", to_id)) if str(value) not in found
    ]
    if missing:
        raise NotFound(f"world node not found: {', '.join(missing)}", details={"missing": missing})
    if from_id == to_id:
        return {
            "found": True,
            "length": 0,
            "nodes": [entity("world_node", found[str(from_id)])],
            "edges": [],
        }
    sub = await guarded(
        traversal.shortest_path(
            resources.graph,
            tenant,
            str(from_id),
            str(to_id),
            types=types,
            current_only=current_only,
        )
    )
    if sub is None:
        return {"found": False, "length": None, "nodes": [], "edges": []}
    return {"found": True, "length": len(sub.edges), "nodes": sub.nodes, "edges": sub.edges}


async def export(
    resources: Resources, customer_id: uuid.UUID, venue_id: uuid.UUID, *, max_nodes: int
) -> dict[str, Any]:
    body = await guarded(
        traversal.export_venue(
            resources.graph,
            str(customer_id),
            str(venue_id),
            max_nodes=max_nodes,
            max_edges=resources.settings.graph_export_max_edges,
        )
    )
    if body is None:
        raise NotFound("venue not found")
    return {"format": "overwatch.venue-export/1", **body}
