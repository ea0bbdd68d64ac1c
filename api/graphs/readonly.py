"""Is a Cypher statement read-only? Neo4j's planner says so, not a pattern.

`EXPLAIN` plans a statement without running it, and the result summary's
`query_type` is Neo4j's own classification: `r` read-only, `rw` read and
write, `w` write-only, `s` schema or administration (DBMS-mode procedures
such as `dbms.killConnection` and `db.clearQueryCaches` included). Writes
hidden from any text check (`CALL (x) { CREATE … }`, `FOREACH`, a procedure
that writes) are typed `rw` or `w` all the same.

Refused besides: two plan operators Neo4j types `r` that reach past the
graph (`LoadCSV` fetches files and URLs; `TerminateTransactions` ends other
sessions' work), and administration commands Neo4j will not even plan outside
the system database (GRANT, CREATE ROLE, STOP DATABASE…).

A statement's verdict depends on its text only, so verdicts are kept in a
bounded LRU: a named query asked again costs no EXPLAIN round trip. The READ
transaction every statement then runs in stays as the server-side backstop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache
from neo4j import AsyncManagedTransaction
from neo4j.exceptions import ClientError, DatabaseError

from graph.driver import GraphClient
from graph.named_queries import write_clauses

# Neo4j's `query_type` values that are not read-only, in words for the error.
QUERY_TYPES = {"rw": "read and write", "w": "write", "s": "schema or administration"}
# Operators of plans Neo4j types `r` that are refused anyway.
REFUSED_OPERATORS = {
    "LoadCSV": "LOAD CSV",
    "TerminateTransactions": "administration command",
    "AdministrationCommand": "administration command",
}
VERDICT_CACHE_SIZE = 1024


@dataclass(frozen=True)
class Verdict:
    query_type: str | None  # Neo4j's; None for a statement it would not plan here
    found: tuple[str, ...]  # what makes it not read-only; empty when it is

    @property
    def read_only(self) -> bool:
        return not self.found


# Keyed by a digest of the text: an admin statement may be 20,000 characters.
_verdicts: LRUCache[bytes, Verdict] = LRUCache(maxsize=VERDICT_CACHE_SIZE)


def _operators(plan: dict[str, Any] | None) -> Iterator[str]:
    if not plan:
        return
    yield str(plan.get("operatorType", "")).split("@", 1)[0]
    for child in plan.get("children", []):
        yield from _operators(child)


def judge(cypher: str, query_type: str | None, operators: list[str]) -> Verdict:
    """The verdict from what EXPLAIN said (None: not plannable as an administration
    command). Clauses the text shows are named, so the caller hears what to remove."""
    found = {REFUSED_OPERATORS[op] for op in operators if op in REFUSED_OPERATORS}
    if query_type is None:
        found.add("administration command")
    elif query_type != "r":
        found.update(write_clauses(cypher))
        if not found:
            found.add(QUERY_TYPES.get(query_type, query_type))
    return Verdict(query_type, tuple(sorted(found)))


async def classify(graph: GraphClient, cypher: str) -> Verdict:
    """Neo4j's verdict on `cypher` (cached by text). Raises Neo4j's errors for a
    statement it cannot plan (a syntax error, an unknown procedure)."""
    key = hashlib.sha256(cypher.encode()).digest()
    cached = _verdicts.get(key)
    if cached is not None:
        return cached

    async def explain(tx: AsyncManagedTransaction) -> tuple[str | None, list[str]]:
        result = await tx.run("EXPLAIN " + cypher)
        summary = await result.consume()
        return summary.query_type, list(_operators(summary.plan))

    try:
        query_type, operators = await graph.read_tx("cypher.explain", explain)
        verdict = judge(cypher, query_type, operators)
    except ClientError as exc:
        if not (exc.code or "").endswith("UnsupportedAdministrationCommand"):
            raise
        verdict = judge(cypher, None, [])
    except DatabaseError:
        # Neo4j 5.26's planner fails on some writes behind a constant-false filter
        # (`CALL (v) { WITH v WHERE false MERGE … }`): refused if the text shows a write.
        if not (clauses := write_clauses(cypher)):
            raise
        verdict = Verdict(None, tuple(clauses))
    _verdicts[key] = verdict
    return verdict


def forget_verdicts() -> None:
    """Empty the cache (tests)."""
    _verdicts.clear()


def cached_verdicts() -> int:
    return len(_verdicts)
