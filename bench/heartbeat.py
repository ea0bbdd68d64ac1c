"""Heartbeat ingest and authentication, measured with wrk against yardsticks.

The load comes from wrk (an external C load generator: scripts/install-system-
deps.sh installs it), not from Python: an in-process httpx client saturated
before the server did (290 req/s where wrk measured 475). Every HTTP figure
below is one wrk load (WRK_THREADS threads, CONNECTIONS keep-alive
connections, DURATION seconds per round, `--latency` for p50/p99), the API
and its yardstick alternated for ROUNDS rounds after a short warm-up of each;
req/s is all rounds' responses over all rounds' seconds, p50/p99 the mean of
the rounds'. wrk, the server(s), the bench process and PostgreSQL all share
this machine's cores (2 on the reference machine), so wrk's own CPU is taken
from the server: the ratios, not the absolute numbers, are the result.

1. heartbeat vs bare FastAPI: `POST /api/v1/drones/{serial}/heartbeat`, the
   requests spread over DRONES drones each with its own device key, against
   bench/reference_app.py (one key compared with a setting, the same
   `HeartbeatIn` body, one asyncpg statement inserting the heartbeat and
   updating the drone's last heartbeat, an asyncpg pool the API's size), both
   under uvicorn with the same options (bench.harness.UVICORN_OPTIONS).
   Target ratio >= 0.6.
2. heartbeat vs raw asyncpg: the reference app's statement run by CONNECTIONS
   concurrent tasks over an asyncpg pool of the API's size, for the same
   duration, no HTTP at all: the database's own ceiling. Reported only.
3. authenticated GET vs /healthz: `GET /api/v1/drones` with a device key,
   which authenticates and is then refused 403 (device keys may not read), so
   the request path runs authentication and nothing else; against `GET
   /healthz` (no key) on the same server. Target ratio >= 0.5.

Status codes are checked: a probe before each load, then wrk's count of
non-2xx answers (none, or all of them for the 403 GET); the heartbeats the API
stored during its rounds are counted and must cover what wrk saw answered.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shutil
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx

from bench.harness import ROOT, BenchContext, Result, percentile
from bench.reference_app import STATEMENT, statement_args

DRONES = 32
CONNECTIONS = 32
WRK_THREADS = 1
DURATION = 10  # seconds per round
WARMUP = 2  # seconds, once per target before the rounds
ROUNDS = 2
POOL_SIZE = 20  # the bench API's DATABASE_POOL_SIZE (bench.harness)
LUA = ROOT / "bench" / "wrk" / "requests.lua"

BEAT = {
    "cpu_percent": 23.5,
    "memory_percent": 41.0,
    "disk_percent": 62.0,
    "temperature_c": 48.0,
    "battery_percent": 87.0,
    "firmware_version": "2.4.1",
    "status": "healthy",
    "uptime_seconds": 3600,
    "ip": "10.20.0.14",
}


# ------------------------------------------------------------------ wrk
_UNIT_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = r"([\d.]+)\s*(us|ms|s|m|h)\b"


@dataclass
class WrkRun:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _seconds(value: str, unit: str) -> float:
    return float(value) * _UNIT_SECONDS[unit]


def parse_wrk(output: str) -> WrkRun:
    """wrk's report (with `--latency`) as numbers; raises if a part is missing."""
    done = re.search(r"(\d+)\s+requests in\s+" + _DURATION, output)
    if done is None:
        raise ValueError(f"no request count in wrk's output:\n{output}")
    latency: dict[str, float] = {}
    distribution = output.split("Latency Distribution", 1)
    if len(distribution) == 2:
        for pct, value, unit in re.findall(
            r"^\s*(\d+(?:\.\d+)?)%\s+" + _DURATION, distribution[1], re.MULTILINE
        ):
            latency[str(float(pct))] = _seconds(value, unit) * 1000
    if "50.0" not in latency or "99.0" not in latency:
        raise ValueError(f"no latency distribution in wrk's output (--latency):\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", output)
    sockets = re.search(
        r"Socket errors:\s*connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return WrkRun(
        requests=int(done.group(1)),
        seconds=_seconds(done.group(2), done.group(3)),
        p50_ms=latency["50.0"],
        p99_ms=latency["99.0"],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in sockets.groups()) if sockets else 0,
    )


async def wrk(base: str, requests_file: Path, seconds: int) -> WrkRun:
    process = await asyncio.create_subprocess_exec(
        "wrk",
        "--threads",
        str(WRK_THREADS),
        "--connections",
        str(CONNECTIONS),
        "--duration",
        f"{seconds}s",
        "--timeout",
        "30s",
        "--latency",
        "--script",
        str(LUA),
        base,
        "--",
        str(requests_file),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    text = out.decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"wrk failed ({process.returncode}):\n{text}")
    return parse_wrk(text)


def requests_file(directory: Path, name: str, lines: list[tuple[str, str, str, str]]) -> Path:
    """bench/wrk/requests.lua's input: METHOD, PATH, X-API-Key, body per line."""
    path = directory / f"{name}.tsv"
    path.write_text("".join("\t".join(fields) + "\n" for fields in lines))
    return path


@dataclass
class Target:
    """One thing wrk loads: a server, its requests, the status they must get."""

    name: str
    base: str
    file: Path
    expect: int

    async def probe(self) -> None:
        method, path, key, body = self.file.read_text().splitlines()[0].split("\t")
        headers = {"X-API-Key": key} if key else {}
        if body:
            headers["Content-Type"] = "application/json"
        async with httpx.AsyncClient(base_url=self.base, timeout=30) as client:
            r = await client.request(method, path, headers=headers, content=body or None)
        if r.status_code != self.expect:
            raise RuntimeError(f"{self.name}: {r.status_code} (expected {self.expect}): {r.text}")

    async def run(self, seconds: int) -> WrkRun:
        result = await wrk(self.base, self.file, seconds)
        refused = result.requests if self.expect >= 300 else 0
        if result.non_2xx != refused or result.socket_errors:
            raise RuntimeError(
                f"{self.name}: {result.non_2xx} non-2xx answers (expected {refused}), "
                f"{result.socket_errors} socket errors"
            )
        return result


# ------------------------------------------------------------------ raw
async def raw_run(
    ctx: BenchContext, customer_id: uuid.UUID, serials: list[str], seconds: float
) -> WrkRun:
    """The reference statement from CONNECTIONS tasks over a POOL_SIZE pool."""
    from api.fleet.schemas import HeartbeatIn

    beat = HeartbeatIn.model_validate(BEAT)
    dsn = ctx.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    latencies: list[float] = []
    pool = await asyncpg.create_pool(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE)
    try:
        deadline = time.perf_counter() + seconds

        async def client(index: int) -> None:
            i = index
            while time.perf_counter() < deadline:
                serial = serials[i % len(serials)]
                i += 1
                started = time.perf_counter()
                args = statement_args(customer_id, serial, beat, datetime.now(UTC))
                if await pool.fetchval(STATEMENT, *args) is None:
                    raise RuntimeError(f"raw: no drone {serial}")
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(CONNECTIONS)))
        elapsed = time.perf_counter() - started
    finally:
        await pool.close()
    return WrkRun(
        requests=len(latencies),
        seconds=elapsed,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        non_2xx=0,
        socket_errors=0,
    )


# ------------------------------------------------------------------ setup
async def _fleet(ctx: BenchContext, base: str, key: str) -> list[tuple[str, str]]:
    """A claimed kit of DRONES drones; returns (serial, device key) per drone."""
    kit = f"BENCH-K-{uuid.uuid4().hex[:8]}"
    serials = [f"BENCH-D-{uuid.uuid4().hex[:10]}" for _ in range(DRONES)]
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        r = await client.post(
            "/api/v1/admin/kits",
            headers={"X-API-Key": ctx.admin_key},
            json={"serial": kit, "drones": [{"serial": s} for s in serials]},
        )
        r.raise_for_status()
        (
            await client.post(f"/api/v1/kits/{kit}/claim", headers={"X-API-Key": key})
        ).raise_for_status()
        keys = []
        for serial in serials:
            r = await client.post(
                "/api/v1/auth/keys",
                headers={"X-API-Key": key},
                json={"name": f"drone {serial}", "scope": "device", "device_serial": serial},
            )
            r.raise_for_status()
            keys.append(r.json()["api_key"])
    return list(zip(serials, keys, strict=True))


async def _stored(ctx: BenchContext, customer_id: str) -> int:
    conn = await ctx.pg()
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM heartbeats WHERE customer_id = $1::uuid", customer_id
        )
        return count
    finally:
        await conn.close()


def _summary(runs: list[WrkRun]) -> tuple[float, float, float]:
    """req/s over all rounds, mean p50 and mean p99 (ms)."""
    rps = sum(r.requests for r in runs) / sum(r.seconds for r in runs)
    return (
        rps,
        round(statistics.fmean(r.p50_ms for r in runs), 2),
        round(statistics.fmean(r.p99_ms for r in runs), 2),
    )


def _result(name: str, api: list[WrkRun], ref: list[WrkRun], ref_label: str) -> Result:
    api_rps, api_p50, api_p99 = _summary(api)
    ref_rps, ref_p50, ref_p99 = _summary(ref)
    return Result(
        name,
        "requests/s (higher is better)",
        api=api_rps,
        raw=ref_rps,
        notes={
            "api_p50_ms": api_p50,
            "api_p99_ms": api_p99,
            f"{ref_label}_p50_ms": ref_p50,
            f"{ref_label}_p99_ms": ref_p99,
            "api_rounds": "/".join(f"{r.rps:.0f}" for r in api),
            f"{ref_label}_rounds": "/".join(f"{r.rps:.0f}" for r in ref),
        },
    )


async def run(ctx: BenchContext) -> list[Result]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: run scripts/install-system-deps.sh (make deps)")
    body = json.dumps(BEAT, separators=(",", ":"))
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        work = Path(tmp)
        async with ctx.server() as api_base:
            customer_id, customer_key = await ctx.new_tenant(api_base, "heartbeat-bench")
            fleet = await _fleet(ctx, api_base, customer_key)
            serials = [serial for serial, _ in fleet]
            reference_key = "ow_reference_" + secrets.token_hex(16)
            reference_env = {
                "REFERENCE_API_KEY": reference_key,
                "REFERENCE_CUSTOMER_ID": customer_id,
                "DATABASE_POOL_SIZE": str(POOL_SIZE),
            }
            async with ctx.server(app="bench.reference_app:create_app", env=reference_env) as ref:
                beats = [
                    ("POST", f"/api/v1/drones/{serial}/heartbeat", key, body)
                    for serial, key in fleet
                ]
                reference_beats = [(m, p, reference_key, b) for m, p, _, b in beats]
                targets = {
                    "api": Target("heartbeat", api_base, requests_file(work, "api", beats), 201),
                    "ref": Target(
                        "reference heartbeat", ref, requests_file(work, "ref", reference_beats), 201
                    ),
                    "get": Target(
                        "authenticated GET (device key, 403)",
                        api_base,
                        requests_file(
                            work, "get", [("GET", "/api/v1/drones", key, "") for _, key in fleet]
                        ),
                        403,
                    ),
                    "healthz": Target(
                        "healthz",
                        api_base,
                        requests_file(work, "healthz", [("GET", "/healthz", "", "")]),
                        200,
                    ),
                }
                for target in targets.values():
                    await target.probe()
                    await target.run(WARMUP)
                runs: dict[str, list[WrkRun]] = {name: [] for name in [*targets, "raw"]}
                api_stored = 0
                for _ in range(ROUNDS):
                    before = await _stored(ctx, customer_id)
                    runs["api"].append(await targets["api"].run(DURATION))
                    api_stored += await _stored(ctx, customer_id) - before
                    runs["ref"].append(await targets["ref"].run(DURATION))
                    runs["raw"].append(
                        await raw_run(ctx, uuid.UUID(customer_id), serials, DURATION)
                    )
                    runs["get"].append(await targets["get"].run(DURATION))
                    runs["healthz"].append(await targets["healthz"].run(DURATION))
        answered = sum(r.requests for r in runs["api"])
        # wrk stops counting at its deadline; requests then in flight may still commit.
        assert answered <= api_stored <= answered + ROUNDS * CONNECTIONS, (
            f"{api_stored} heartbeats stored during the API rounds, {answered} answered 201"
        )

    graph = ctx.graph()
    try:
        await ctx.clear_graph(graph, customer_id)
    finally:
        await graph.close()

    load = f"wrk {WRK_THREADS}t/{CONNECTIONS}c, {ROUNDS}x{DURATION}s"
    return [
        _result(f"heartbeat vs bare FastAPI ({load})", runs["api"], runs["ref"], "ref"),
        _result(f"heartbeat vs raw asyncpg ({CONNECTIONS} tasks)", runs["api"], runs["raw"], "raw"),
        _result(
            f"authenticated GET (device key, 403) vs /healthz ({load})",
            runs["get"],
            runs["healthz"],
            "healthz",
        ),
    ]
