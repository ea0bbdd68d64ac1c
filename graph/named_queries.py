"""Named analyst queries (`cypher/queries/*.cypher`) and read-only Cypher execution.

A query file starts with a header of `//` lines:

    // name: perch_points_per_level          (must equal the file name)
    // description: What it answers, in one line.
    // param: venue_id uuid
    // param: limit int 1..500 = 50          (range and default are optional)
    // param: status string = null           (optional; null when not given)

Types: string, int, float, bool, uuid, list<string>. The caller's tenant is
bound as `$customer_id`; the loader refuses a file that does not use it, that
declares it, that uses an undeclared parameter, or that contains a write
clause. Everything runs in a READ transaction with a timeout and a row cap, so
even a query that slipped a write past the checks is refused by the server.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from functools import lru_cache
from pathlib import Path
from typing import Any

from neo4j import AsyncManagedTransaction, unit_of_work
from neo4j.graph import Node, Relationship
from neo4j.graph import Path as GraphPath
from neo4j.spatial import Point
from neo4j.time import Date, DateTime, Duration, Time

from graph.driver import GraphClient

QUERIES_DIR = Path(__file__).resolve().parent.parent / "cypher" / "queries"
TENANT_PARAM = "customer_id"
PARAM_TYPES = ("string", "int", "float", "bool", "uuid", "list<string>")
MAX_STRING = 1000
MAX_LIST = 100

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_HEADER = re.compile(r"^//\s*(name|description|param):\s*(.*?)\s*$")
_PARAM = re.compile(
    r"^(?P<name>[a-z][a-z0-9_]*)\s+(?P<type>string|int|float|bool|uuid|list<string>)"
    r"(?:\s+(?P<min>-?\d+(?:\.\d+)?)\.\.(?P<max>-?\d+(?:\.\d+)?))?"
    r"(?:\s*=\s*(?P<default>.+?))?(?:\s+--\s+(?P<help>.*))?$"
)
_PARAM_USE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


# ------------------------------------------------------------------ read-only check
_WRITE_PATTERNS = [
    (re.compile(p, re.IGNORECASE), label)
    for p, label in [
        (r"(?<![.\w$])CREATE\b", "CREATE"),
        (r"(?<![.\w$])MERGE\b", "MERGE"),
        (r"(?<![.\w$])(DETACH\s+)?DELETE\b", "DELETE"),
        (r"(?<![.\w$])SET\b", "SET"),
        (r"(?<![.\w$])REMOVE\b", "REMOVE"),
        (r"(?<![.\w$])DROP\b", "DROP"),
        (r"(?<![.\w$])FOREACH\b", "FOREACH"),
        (r"(?<![.\w$])LOAD\s+CSV\b", "LOAD CSV"),
        (r"(?<![.\w$])IN\s+TRANSACTIONS\b", "CALL { } IN TRANSACTIONS"),
        (r"(?<![.\w$])(ALTER|GRANT|DENY|REVOKE|RENAME|TERMINATE)\b", "administration command"),
        (r"(?<![.\w$])(START|STOP)\s+DATABASE\b", "administration command"),
        (
            # db.create… and db.clear… are prefixes (db.createLabel, db.clearQueryCaches)
            r"(?<![.\w$])CALL\s+(dbms\b|apoc\b|db\.create|db\.clear)",
            "procedure that writes or administers",
        ),
    ]
]
_STRIPPED = re.compile(
    r"//[^\n]*|/\*.*?\*/|'(?:\\.|[^'\\])*'|\"(?:\\.|[^\"\\])*\"|`[^`]*`", re.DOTALL
)


def write_clauses(cypher: str) -> list[str]:
    """Write or admin clauses in a statement (outside comments, strings and `names`)."""
    code = _STRIPPED.sub(" ", cypher)
    return sorted({label for pattern, label in _WRITE_PATTERNS if pattern.search(code)})


# ------------------------------------------------------------------ parameters


class ParamError(ValueError):
    """A caller's parameters do not fit the query; `errors` lists each problem."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{e['param']}: {e['msg']}" for e in errors))
        self.errors = errors


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    required: bool
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    help: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "required": self.required,
            "default": self.default,
            "min": None if self.minimum is None else _number(self.minimum),
            "max": None if self.maximum is None else _number(self.maximum),
            "description": self.help,
        }

    def convert(self, value: Any) -> Any:
        """The value as Cypher gets it; raises ValueError with a message for the caller."""
        if value is None:
            if self.required:
                raise ValueError("is required")
            return None
        if self.type == "string":
            if not isinstance(value, str):
                raise ValueError("must be a string")
            if len(value) > MAX_STRING:
                raise ValueError(f"must be at most {MAX_STRING} characters")
            return value
        if self.type == "uuid":
            if not isinstance(value, str):
                raise ValueError("must be a UUID string")
            try:
                return str(uuid.UUID(value))
            except ValueError:
                raise ValueError("must be a UUID") from None
        if self.type == "bool":
            if not isinstance(value, bool):
                raise ValueError("must be true or false")
            return value
        if self.type == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError("must be an integer")
            self._check_range(value)
            return value
        if self.type == "float":
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                raise ValueError("must be a finite number")
            self._check_range(value)
            return float(value)
        # list<string>
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError("must be a list of strings")
        if len(value) > MAX_LIST or any(len(v) > MAX_STRING for v in value):
            raise ValueError(f"at most {MAX_LIST} strings of {MAX_STRING} characters")
        return list(value)

    def _check_range(self, value: float) -> None:
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"must be at least {_number(self.minimum)}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"must be at most {_number(self.maximum)}")


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _parse_default(param_type: str, text: str) -> Any:
    if text == "null":
        return None
    if param_type == "int":
        return int(text)
    if param_type == "float":
        return float(text)
    if param_type == "bool":
        if text not in ("true", "false"):
            raise ValueError(f"bool default must be true or false, not {text!r}")
        return text == "true"
    if param_type == "list<string>":
        if text != "[]":
            raise ValueError("a list<string> default can only be [] or null")
        return []
    return text.strip('"')


def parse_param(spec: str) -> Param:
    match = _PARAM.match(spec)
    if not match:
        raise ValueError(
            f"bad param declaration {spec!r}: expected "
            f"'name type [min..max] [= default] [-- help]', types {PARAM_TYPES}"
        )
    kind = match["type"]
    bounds = (match["min"], match["max"])
    if bounds[0] is not None and kind not in ("int", "float"):
        raise ValueError(f"a range only applies to int and float: {spec!r}")
    lower, upper = (float(b) if b is not None else None for b in bounds)
    has_default = match["default"] is not None
    default = _parse_default(kind, match["default"]) if has_default else None
    param = Param(
        name=match["name"],
        type=kind,
        required=not has_default,
        default=default,
        minimum=lower,
        maximum=upper,
        help=match["help"],
    )
    if default is not None:
        param.convert(default)  # a default outside its own range is a broken file
    return param


# ------------------------------------------------------------------ queries


@dataclass(frozen=True)
class NamedQuery:
    name: str
    description: str
    params: tuple[Param, ...]
    cypher: str
    path: Path = field(compare=False)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "params": [p.describe() for p in self.params],
        }

    def bind(self, given: Mapping[str, Any], customer_id: str) -> dict[str, Any]:
        """Validated parameters plus the caller's tenant; raises ParamError."""
        errors: list[dict[str, Any]] = []
        if TENANT_PARAM in given:
            errors.append(
                {
                    "param": TENANT_PARAM,
                    "msg": "is bound to the caller's tenant and cannot be given",
                }
            )
        known = {p.name for p in self.params}
        errors += [
            {"param": name, "msg": "is not a parameter of this query"}
            for name in sorted(set(given) - known - {TENANT_PARAM})
        ]
        bound: dict[str, Any] = {}
        for param in self.params:
            raw = given.get(param.name, param.default)
            try:
                bound[param.name] = param.convert(raw)
            except ValueError as exc:
                errors.append({"param": param.name, "msg": str(exc)})
        if errors:
            raise ParamError(errors)
        bound[TENANT_PARAM] = customer_id
        return bound


def parse_query_file(path: Path) -> NamedQuery:
    """Parse and check one query file; raises ValueError saying what is wrong."""
    text = path.read_text(encoding="utf-8")
    header: dict[str, str] = {}
    params: list[Param] = []
    body: list[str] = []
    for line in text.splitlines():
        match = _HEADER.match(line.strip())
        if match and not body:
            key, value = match.groups()
            if key == "param":
                params.append(parse_param(value))
            elif key in header:
                raise ValueError(f"{path.name}: `{key}` given twice")
            else:
                header[key] = value
        elif line.strip().startswith("//") and not body:
            continue
        else:
            body.append(line)
    cypher = "\n".join(body).strip()
    where = path.name
    if header.get("name") != path.stem or not _NAME.match(path.stem):
        raise ValueError(f"{where}: `// name:` must equal the file name (lower_snake_case)")
    if not header.get("description"):
        raise ValueError(f"{where}: `// description:` is required")
    if not cypher:
        raise ValueError(f"{where}: no query")
    names = [p.name for p in params]
    if TENANT_PARAM in names:
        raise ValueError(f"{where}: `{TENANT_PARAM}` is bound by the server, not declared")
    if len(names) != len(set(names)):
        raise ValueError(f"{where}: a parameter is declared twice")
    code = _STRIPPED.sub(" ", cypher)
    used = set(_PARAM_USE.findall(code))
    if TENANT_PARAM not in used:
        raise ValueError(f"{where}: the query must filter on ${TENANT_PARAM}")
    if undeclared := used - set(names) - {TENANT_PARAM}:
        raise ValueError(f"{where}: undeclared parameters {sorted(undeclared)}")
    if unused := set(names) - used:
        raise ValueError(f"{where}: declared but unused parameters {sorted(unused)}")
    if clauses := write_clauses(cypher):
        raise ValueError(f"{where}: named queries are read-only; found {clauses}")
    return NamedQuery(
        name=path.stem,
        description=header["description"],
        params=tuple(params),
        cypher=cypher,
        path=path,
    )


@lru_cache(maxsize=8)
def load_queries(directory: Path = QUERIES_DIR) -> dict[str, NamedQuery]:
    """Every query in `directory` by name; one bad file fails the whole load, loudly."""
    return {q.name: q for q in (parse_query_file(p) for p in sorted(directory.glob("*.cypher")))}


# ------------------------------------------------------------------ execution


@dataclass
class Rows:
    columns: list[str]
    rows: list[dict[str, Any]]
    truncated: bool


def plain(value: Any) -> Any:
    """A Neo4j value as JSON-ready data (embeddings left out: 384 floats nobody asked for)."""
    if isinstance(value, Node):
        props = {k: plain(v) for k, v in value.items() if k != "embedding"}
        return props | {"_labels": sorted(value.labels)}
    if isinstance(value, Relationship):
        props = {k: plain(v) for k, v in value.items()}
        start, end = value.start_node, value.end_node
        return props | {
            "_type": value.type,
            "_start": start.get("id") if start is not None else None,
            "_end": end.get("id") if end is not None else None,
        }
    if isinstance(value, GraphPath):
        return {
            "nodes": [plain(n) for n in value.nodes],
            "relationships": [plain(r) for r in value.relationships],
        }
    if isinstance(value, DateTime | Date | Time):
        return value.iso_format()
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Duration):
        return str(value)
    if isinstance(value, Point):
        names = (
            ("longitude", "latitude", "height") if value.srid in (4326, 4979) else ("x", "y", "z")
        )
        return dict(zip(names, value, strict=False)) | {"srid": value.srid}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if k != "embedding"}
    if isinstance(value, bytes):
        return value.hex()
    return value


async def run_read_only(
    graph: GraphClient,
    name: str,
    cypher: str,
    params: Mapping[str, Any],
    *,
    timeout_seconds: float,
    max_rows: int,
) -> Rows:
    """Run one statement in a READ transaction: the server refuses any write in it.

    At most `max_rows` rows are read (`truncated` says there were more); the
    server aborts the transaction after `timeout_seconds`. `cypher` comes from
    a query file in this repository or from an admin's request, never from
    a tenant's input, which is why plain `str` is accepted here.
    """

    @unit_of_work(timeout=timeout_seconds)
    async def work(tx: AsyncManagedTransaction) -> Rows:
        result = await tx.run(cypher, dict(params))
        columns = list(result.keys())
        rows: list[dict[str, Any]] = []
        truncated = False
        async for record in result:
            if len(rows) >= max_rows:
                truncated = True
                break
            rows.append({key: plain(record[key]) for key in columns})
        return Rows(columns=columns, rows=rows, truncated=truncated)

    return await graph.read_tx(name, work)


def declared(queries: Mapping[str, NamedQuery]) -> Sequence[dict[str, Any]]:
    return [q.describe() for q in sorted(queries.values(), key=lambda q: q.name)]
