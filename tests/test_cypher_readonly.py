"""Read-only Cypher is what Neo4j's EXPLAIN types `r` (api/graphs/readonly.py).

Writes a text check misses (a backticked procedure name, a schema procedure,
a write inside `CALL (x) { … }` or `FOREACH`) are refused before they run, with
the same 400 `write_refused` as obvious ones; reads a text check mistook for
writes (a label `:Set`, a column `AS create`) run. Verdicts are cached by text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from neo4j.exceptions import ClientError

from api.graphs import readonly, service
from graph.driver import GraphClient
from graph.named_queries import NamedQuery
from tests.conftest import Tenant
from tests.test_graph import make_venue

V1 = "/api/v1"
CYPHER = f"{V1}/graph/cypher"

# Writes that look like reads, or that no text pattern names.
HIDDEN_WRITES = [
    "CALL `db`.`createLabel`('Evil')",
    "CALL db.index.vector.createNodeIndex('evil_index', 'Evil', 'e', 3, 'cosine')",
    "CALL tx.setMetaData({evil: true})",
    "CALL dbms.killConnection('bolt-1')",
    "MATCH (v:Venue) WITH v LIMIT 1 CALL (v) { SET v.name = 'hacked' } RETURN 1 AS one",
    "UNWIND [1] AS x CALL (x) { MERGE (:Evil {id: 'x'}) } RETURN x",
    "FOREACH (x IN [1] | CREATE (:Evil {id: 'y'}))",
    "CALL { LOAD CSV FROM 'file:///etc/passwd' AS line RETURN line } RETURN line",
    "TERMINATE TRANSACTIONS 'neo4j-transaction-1'",
    "SHOW USERS",
    # Neo4j's planner fails on this one (a DatabaseError): still a 400, not a 500.
    "MATCH (v:Venue) WITH v LIMIT 1 CALL (v) { WITH v WHERE false MERGE (v)-[:EVIL]->(:Evil) } "
    "RETURN 0 AS n",
    "GRANT ROLE reader TO neo4j",
    "STOP DATABASE neo4j",
]
# Reads that a pattern over the text refused.
READS = [
    "MATCH (n:Set) RETURN count(n) AS n",
    "RETURN 1 AS create",
    "MATCH (n) WHERE n.name = 'CREATE (x)' RETURN count(n) AS n",
    "CALL db.labels() YIELD label RETURN count(label) AS n",
    "SHOW INDEXES YIELD name RETURN count(name) AS n",
]


@pytest.mark.parametrize(
    ("query_type", "operators", "found"),
    [
        ("r", ["ProduceResults", "NodeByLabelScan"], ()),
        ("r", ["ProduceResults", "LoadCSV"], ("LOAD CSV",)),
        ("r", ["TerminateTransactions"], ("administration command",)),
        ("rw", ["ProduceResults"], ("read and write",)),
        ("w", [], ("write",)),
        ("s", ["ProcedureCall"], ("schema or administration",)),
        ("s", ["AdministrationCommand"], ("administration command",)),
        (None, [], ("administration command",)),
    ],
)
def test_verdict_from_query_type_and_plan(query_type, operators, found):
    verdict = readonly.judge("CALL `x`.`y`()", query_type, operators)
    assert verdict.found == found and verdict.read_only == (not found)


def test_a_write_names_its_clauses_when_the_text_shows_them():
    verdict = readonly.judge("MATCH (n) DETACH DELETE n", "w", [])
    assert verdict.found == ("DELETE",)


async def test_hidden_writes_are_refused_before_they_run(
    client, admin_headers, tenant: Tenant, graph: GraphClient
):
    venue = await make_venue(client, tenant, name="Untouched")
    for query in HIDDEN_WRITES:
        response = await client.post(CYPHER, headers=admin_headers, json={"query": query})
        assert response.status_code == 400, (query, response.text)
        error = response.json()["error"]
        assert error["code"] == "write_refused", (query, error)
        assert error["message"].startswith("read-only Cypher only; found "), error
    got = (await client.get(f"{V1}/venues/{venue['id']}", headers=tenant.headers)).json()
    assert got["name"] == "Untouched"
    evil = await graph.read(
        "test.evil", "MATCH (n) WHERE n:Evil OR n.id IN ['x', 'y'] RETURN count(n) AS n"
    )
    assert evil[0]["n"] == 0
    indexes = await graph.read(
        "test.indexes", "SHOW INDEXES YIELD name WHERE name = 'evil_index' RETURN name"
    )
    assert indexes == []
    labels = await graph.read("test.labels", "CALL db.labels() YIELD label RETURN label")
    assert "Evil" not in {r["label"] for r in labels}


async def test_reads_a_text_check_mistook_for_writes_run(client, admin_headers):
    for query in READS:
        response = await client.post(CYPHER, headers=admin_headers, json={"query": query})
        assert response.status_code == 200, (query, response.text)


async def test_a_named_query_that_writes_is_refused(client, tenant: Tenant, graph, monkeypatch):
    """A query file cannot hold a write past the loader; were one there, it is refused
    at run time all the same."""
    sneaky = NamedQuery(
        name="sneaky",
        description="looks like a read",
        params=(),
        cypher="MATCH (v:Venue) WHERE v.customer_id = $customer_id "
        "CALL (v) { SET v.name = 'hacked' } RETURN count(v) AS n",
        path=Path(readonly.__file__),
    )
    monkeypatch.setattr(service, "query_catalogue", lambda: {"sneaky": sneaky})
    venue = await make_venue(client, tenant, name="Untouched")
    key = await client.post(
        f"{V1}/auth/keys", headers=tenant.headers, json={"name": "a", "scope": "analyst"}
    )
    analyst = {"X-API-Key": key.json()["api_key"]}
    response = await client.post(f"{V1}/graph/queries/sneaky", headers=analyst, json={})
    assert response.status_code == 400 and response.json()["error"]["code"] == "write_refused"
    got = (await client.get(f"{V1}/venues/{venue['id']}", headers=tenant.headers)).json()
    assert got["name"] == "Untouched"


class Unreachable:
    """A graph that fails every call: a cached verdict must not need one."""

    async def read_tx(self, *args: Any) -> Any:
        raise AssertionError("EXPLAIN ran again")


async def test_verdicts_are_cached_by_statement_text(graph: GraphClient):
    readonly.forget_verdicts()
    query = "MATCH (n:Venue) WHERE n.customer_id = $customer_id RETURN count(n) AS n"
    first = await readonly.classify(graph, query)
    assert first.read_only and first.query_type == "r" and readonly.cached_verdicts() == 1
    assert await readonly.classify(Unreachable(), query) is first  # type: ignore[arg-type]
    with pytest.raises(AssertionError):
        await readonly.classify(Unreachable(), query + " ")  # type: ignore[arg-type]


# Generated writes in disguise: a read prefix, a write, a wrapper; each must be refused.
_PREFIXES = st.sampled_from(
    ["MATCH (v:Venue) WITH v LIMIT 1", "UNWIND [1, 2] AS i MATCH (v:Venue) WITH v, i LIMIT 1"]
)
_WRITES = st.sampled_from(
    [
        "SET v.name = 'hacked'",
        "SET v += {name: 'hacked'}",
        "REMOVE v.name",
        "REMOVE v:Venue",
        "DETACH DELETE v",
        "CREATE (:Evil)",
        "MERGE (v)-[:EVIL]->(:Evil)",
        "CALL `db`.`createLabel`('Evil')",
        "CALL db.create.setNodeVectorProperty(v, 'e', [1.0])",
    ]
)


def _disguise(prefix: str, write: str, wrapper: int, lower: bool) -> str:
    if wrapper == 0:
        text = f"{prefix} {write}"
    elif wrapper == 1:
        text = f"{prefix} CALL (v) {{ {write} }} RETURN 1 AS one"
    elif wrapper == 2:
        text = f"{prefix} FOREACH (x IN [v] | {write.replace('(v', '(x').replace(' v', ' x')})"
    else:
        # (not `WHERE false`: the planner drops a write that can never run, and types it `r`)
        inner = f"WITH v WHERE v.id IS NULL {write}"
        text = f"{prefix} /* read only */ CALL (v) {{ {inner} }} RETURN 0 AS n"
    procedure = "db" in write  # procedure names are case-sensitive; keywords are not
    return text.lower() if lower and not procedure else text


@hypothesis_settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(prefix=_PREFIXES, write=_WRITES, wrapper=st.integers(0, 3), lower=st.booleans())
async def test_generated_disguised_writes_are_never_typed_read_only(
    graph: GraphClient, prefix: str, write: str, wrapper: int, lower: bool
):
    query = _disguise(prefix, write, wrapper, lower)
    try:
        verdict = await readonly.classify(graph, query)
    except ClientError as exc:  # a combination Cypher does not allow (FOREACH + CALL)
        assert exc.code == "Neo.ClientError.Statement.SyntaxError", (query, exc)
        return
    assert not verdict.read_only and verdict.query_type != "r", (query, verdict)
