"""Every Cypher statement the service sends is bound to one tenant.

Statements are read from the source, not run: Python string constants in
`graph/*.py` (concatenations and f-strings of module constants resolved), the
named queries in `cypher/queries/` and the schema migrations in
`cypher/migrations/`. Two rules, after this codebase's convention:

1. A statement binds `customer_id` to the caller's tenant: `x.customer_id =
   $customer_id`, `{customer_id: $customer_id}`, or, in the projection's
   batched writes, `x.customer_id = row.customer_id` with `UNWIND $rows AS row`
   (rows the server builds from its journal).
2. Each path of every MATCH / OPTIONAL MATCH / MERGE holds a bound variable
   (node or relationship), so no clause scans or creates across tenants; a
   node reached over relationships from a bound one is fine, since the
   projection never links two tenants' entities.

What is tenant-free by design is listed in ALLOWED, each with its reason.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from graph.named_queries import QUERIES_DIR
from graph.schema import MIGRATIONS_DIR, split_statements

ROOT = Path(__file__).resolve().parent.parent
GRAPH_DIR = ROOT / "graph"

# statement label -> why it needs no tenant binding.
ALLOWED: dict[str, str] = {
    # The graph's own schema bookkeeping: shared by all tenants, holds no tenant data.
    "graph/schema.py:_APPLIED": "reads the applied schema migrations (shared)",
    "graph/schema.py:_RECORD": "records an applied schema migration (shared)",
    # One bookkeeping node per tenant, keyed by its id under `tenant` (not
    # `customer_id`) so no tenant query ever returns it.
    "graph/projection.py:FENCE": "the tenant's apply fence, MERGEd by `tenant: $customer_id`",
    # Search sizes its over-fetch from the size of the shared vector index.
    "graph/search.py:INDEX_SIZE[venue]": "counts the shared index's nodes, returns a number",
    "graph/search.py:INDEX_SIZE[world_node]": "counts the shared index's nodes, returns a number",
    # `$customer_id IS NULL` means every tenant: `overwatch reembed` (operators' CLI)
    # re-embeds one tenant or all; no API request reaches these.
    "graph/embedding_store.py:ALL_SOURCES[venue]": "reembed CLI, one tenant or all (null)",
    "graph/embedding_store.py:ALL_SOURCES[world_node]": "reembed CLI, one tenant or all (null)",
    "graph/embedding_store.py:COUNT_ALL[venue]": "reembed CLI's progress count, one tenant or all",
    "graph/embedding_store.py:COUNT_ALL[world_node]": "reembed CLI progress count, any tenant",
    # Health check: touches no data.
    "graph/driver.py:92": "`RETURN 1` ping",
}

TENANT = r"(?:\$customer_id\b|row\.customer_id\b)"
_BOUND_VAR = re.compile(rf"\b(\w+)\.customer_id\s*=\s*{TENANT}")
_BOUND_MAP = re.compile(rf"[(\[]\s*(\w*)\s*(?::[\w:|`]+)?\s*\{{[^}}]*\bcustomer_id\s*:\s*{TENANT}")
_ROWS = re.compile(r"\bUNWIND\s+\$\w+\s+AS\s+row\b", re.IGNORECASE)
_OPTIONAL = re.compile(r"\$customer_id\s+IS\s+NULL\s+OR", re.IGNORECASE)
_CLAUSE = re.compile(r"\b(OPTIONAL\s+MATCH|MATCH|MERGE)\b", re.IGNORECASE)
_PATTERN_END = re.compile(
    r"(WHERE|WITH|RETURN|ON\s+CREATE|ON\s+MATCH|SET|USING|CALL|UNWIND|MERGE|OPTIONAL|"
    r"MATCH|DELETE|DETACH|REMOVE|ORDER|LIMIT|FOREACH)\b",
    re.IGNORECASE,
)
_VARIABLE = re.compile(r"[(\[]\s*(\w+)")
_COMMENT = re.compile(r"//[^\n]*")
_DDL = re.compile(
    r"^\s*(CREATE|DROP)\s+(\w+\s+)?(INDEX|CONSTRAINT)\b", re.IGNORECASE
)  # shared schema: indexes and constraints span every tenant by nature


@dataclass(frozen=True)
class Statement:
    label: str
    text: str


# ------------------------------------------------------------------ collecting
def _is_cypher(text: str) -> bool:
    return bool(re.match(r"\s*(OPTIONAL\s+MATCH|MATCH|MERGE|CREATE|UNWIND|CALL|RETURN)\b", text))


class _Strings:
    """String constants of one module, with module-level names resolved."""

    def __init__(self, tree: ast.Module) -> None:
        self.names: dict[str, ast.expr] = {}
        for node in tree.body:
            target, value = None, None
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                target, value = node.target, node.value
            if isinstance(target, ast.Name) and value is not None:
                self.names[target.id] = value

    def text(self, node: ast.expr, depth: int = 0) -> str | None:
        if depth > 20:
            return None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = self.text(node.left, depth + 1), self.text(node.right, depth + 1)
            return None if left is None or right is None else left + right
        if isinstance(node, ast.Name) and node.id in self.names:
            return self.text(self.names[node.id], depth + 1)
        if isinstance(node, ast.JoinedStr):
            parts = []
            for part in node.values:
                if isinstance(part, ast.FormattedValue):
                    parts.append(self.text(part.value, depth + 1) or "{?}")
                else:
                    parts.append(self.text(part, depth + 1) or "")
            return "".join(parts)
        return None


def _fragment_names(tree: ast.Module) -> set[str]:
    """Module constants used inside another string expression: parts, not statements."""
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp | ast.JoinedStr):
            used |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    return used


def python_statements(path: Path) -> list[Statement]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    strings = _Strings(tree)
    fragments = _fragment_names(tree)
    rel = path.relative_to(ROOT).as_posix()
    found: dict[str, str] = {}
    inside: set[int] = set()  # nodes already taken as part of a larger expression

    def take(label: str, node: ast.expr) -> None:
        text = strings.text(node)
        inside.update(id(n) for n in ast.walk(node))
        if text is not None and _is_cypher(text):
            found[label] = text

    for top in tree.body:  # named constants and dicts of them
        target, value = None, None
        if isinstance(top, ast.Assign) and len(top.targets) == 1:
            target, value = top.targets[0], top.value
        elif isinstance(top, ast.AnnAssign):
            target, value = top.target, top.value
        if not isinstance(target, ast.Name) or value is None or target.id in fragments:
            continue
        if isinstance(value, ast.Dict):
            for key, item in zip(value.keys, value.values, strict=True):
                name = key.value if isinstance(key, ast.Constant) else "?"
                take(f"{rel}:{target.id}[{name}]", item)
        else:
            take(f"{rel}:{target.id}", value)
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and n.body
        and isinstance(n.body[0], ast.Expr)
    }
    for node in ast.walk(tree):  # strings written inline, in calls
        if (
            isinstance(node, ast.Constant | ast.JoinedStr | ast.BinOp)
            and id(node) not in inside
            and id(node) not in docstrings
        ):
            text = strings.text(node)
            if text is not None and _is_cypher(text):
                found[f"{rel}:{node.lineno}"] = text
                inside.update(id(n) for n in ast.walk(node))
    return [Statement(label, text) for label, text in found.items()]


def all_statements() -> list[Statement]:
    out: list[Statement] = []
    for path in sorted(GRAPH_DIR.glob("*.py")):
        out += python_statements(path)
    for path in sorted(QUERIES_DIR.glob("*.cypher")):
        out.append(Statement(path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8")))
    for path in sorted(MIGRATIONS_DIR.glob("*.cypher")):
        for n, text in enumerate(split_statements(path.read_text(encoding="utf-8")), 1):
            out.append(Statement(f"{path.relative_to(ROOT).as_posix()}#{n}", text))
    return out


# ------------------------------------------------------------------ judging
def problems(statement: Statement) -> list[str]:
    """What is wrong with the statement's tenant binding (empty: nothing)."""
    text = _COMMENT.sub("", statement.text)
    if _DDL.match(text):
        return []
    bound = set(_BOUND_VAR.findall(text)) | set(_BOUND_MAP.findall(text))
    if "row.customer_id" in text and not _ROWS.search(text):
        bound = set(_BOUND_VAR.findall(text.replace("row.customer_id", "")))
    found = []
    if not bound:
        found.append("binds no customer_id to $customer_id")
    if _OPTIONAL.search(text):
        found.append("binds the tenant only optionally ($customer_id IS NULL OR …)")
    for clause in _CLAUSE.finditer(text):
        pattern = _pattern(text[clause.end() :])
        pattern = pattern.split("=", 1)[1] if re.match(r"\s*\w+\s*=", pattern) else pattern
        for path in _top_level_split(pattern):
            variables = set(_VARIABLE.findall(path))
            if path.strip() and not variables & bound and "" not in bound:
                found.append(f"{clause.group(1).upper()} {path.strip()!r} holds no bound variable")
    return found


def _pattern(rest: str) -> str:
    """The pattern a MATCH/MERGE keyword starts: up to the next clause outside any
    brackets, or the `}` closing the subquery it is in."""
    depth = 0
    for i, char in enumerate(rest):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            if depth == 0:
                return rest[:i]
            depth -= 1
        elif depth == 0 and (i == 0 or (not rest[i - 1].isalnum() and rest[i - 1] != "_")):
            if _PATTERN_END.match(rest, i):
                return rest[:i]
    return rest


def _top_level_split(pattern: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, char in enumerate(pattern):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
    parts.append(pattern[start:])
    return parts


STATEMENTS = all_statements()


def test_the_sources_hold_the_statements_we_expect():
    labels = {s.label for s in STATEMENTS}
    for expected in (
        "graph/reads.py:LIST_VENUES",
        "graph/projection.py:VENUE_UPSERT",
        "graph/projection.py:NODE_VERSIONS[venue]",
        "graph/traversal.py:NEIGHBOURS",
        "graph/search.py:FULLTEXT[venue]",
        "cypher/queries/zones_connecting.cypher",
        "cypher/migrations/0001_baseline.cypher#1",
    ):
        assert expected in labels, expected
    assert len(STATEMENTS) > 60
    # The composed statements came out whole: no fragment was left unresolved.
    assert all("{?}" not in s.text for s in STATEMENTS if s.label.startswith("graph/traversal"))


def test_the_allow_list_names_real_statements():
    labels = {s.label for s in STATEMENTS}
    assert set(ALLOWED) <= labels, set(ALLOWED) - labels


@pytest.mark.parametrize("statement", STATEMENTS, ids=lambda s: s.label)
def test_every_statement_is_bound_to_one_tenant(statement: Statement):
    if statement.label in ALLOWED:
        return
    assert problems(statement) == [], statement.text


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("MATCH (v:Venue) RETURN v", "binds no customer_id"),
        ("MATCH (v:Venue {id: $id}) RETURN v", "binds no customer_id"),
        (
            "MATCH (v:Venue) WHERE v.customer_id = $customer_id MATCH (n:WorldNode) RETURN n",
            "MATCH '(n:WorldNode)' holds no bound variable",
        ),
        (
            "MATCH (v:Venue) WHERE v.customer_id = $customer_id "
            "MATCH (a:WorldNode), (b:WorldNode) WHERE a.customer_id = $customer_id RETURN b",
            "MATCH '(b:WorldNode)' holds no bound variable",
        ),
        ("MATCH (n) WHERE n.customer_id = $other RETURN n", "binds no customer_id"),
        (
            "MATCH (n) WHERE $customer_id IS NULL OR n.customer_id = $customer_id RETURN n",
            "only optionally",
        ),
        ("MATCH (n) WHERE n.customer_id = row.customer_id RETURN n", "binds no customer_id"),
    ],
)
def test_unbound_statements_are_found(text: str, complaint: str):
    assert any(complaint in p for p in problems(Statement("example", text))), problems(
        Statement("example", text)
    )


@pytest.mark.parametrize(
    "text",
    [
        "MATCH (v:Venue {id: $id}) WHERE v.customer_id = $customer_id RETURN v",
        "MATCH (n:WorldNode {customer_id: $customer_id}) RETURN n",
        "UNWIND $rows AS row MERGE (v:Venue {id: row.id}) "
        "ON CREATE SET v.customer_id = row.customer_id",
        "MATCH (a:WorldNode)-[r]->(b:WorldNode) WHERE a.customer_id = $customer_id RETURN b",
        "CREATE INDEX x IF NOT EXISTS FOR (n:Venue) ON (n.customer_id)",
    ],
)
def test_bound_statements_pass(text: str):
    assert problems(Statement("example", text)) == []


# --- the runtime helper (graph/tenant.py) -------------------------------------


def test_the_tenant_helper_refuses_a_statement_without_the_filter() -> None:
    from graph.tenant import Tenant, UnboundStatement

    tenant = Tenant(object(), "t-1")  # type: ignore[arg-type]  # bind() never touches the client
    assert tenant.bind("MATCH (v:Venue) WHERE v.customer_id = $customer_id RETURN v", {"a": 1}) == {
        "a": 1,
        "customer_id": "t-1",
    }
    with pytest.raises(UnboundStatement):
        tenant.bind("MATCH (v:Venue) RETURN v")
    with pytest.raises(UnboundStatement):  # the caller cannot smuggle another tenant in
        tenant.bind("MATCH (v:Venue {customer_id: $customer_id}) RETURN v", {"customer_id": "t-2"})
