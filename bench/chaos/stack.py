"""The chaos run's own servers: the `chaos` stack instance and two API processes.

Everything here acts on `.local/chaos-stack` (ports 55452, 7707, 9020) and on
API processes this module started, never on the developer's or the test
servers. Faults are signals to the pids recorded by `scripts/stack.sh` and a
fast `pg_ctl restart`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.harness import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
SCRIPT = str(ROOT / "scripts" / "stack.sh")


# Knobs that would point the chaos instance at another instance's directory or
# ports (left in a shell by `eval "$(stack.sh env)"`, say): the faults below
# must only ever reach the chaos instance's own servers.
FOREIGN_KNOBS = (
    "OVERWATCH_STACK_DIR",
    "OVERWATCH_PG_PORT",
    "OVERWATCH_NEO4J_BOLT_PORT",
    "OVERWATCH_NEO4J_HTTP_PORT",
    "OVERWATCH_S3_PORT",
)


def _stack_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_KNOBS}
    return {**env, "OVERWATCH_STACK_INSTANCE": "chaos"}


async def stack_command(*args: str) -> str:
    """`scripts/stack.sh ARGS` on the chaos instance; raises if it fails."""
    proc = await asyncio.create_subprocess_exec(
        "bash",
        SCRIPT,
        *args,
        env=_stack_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"stack.sh {' '.join(args)} failed: {text[-2000:]}")
    return text


@dataclass
class Api:
    name: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None


@dataclass
class ChaosStack:
    """The chaos instance's URLs and the API processes running on it."""

    values: dict[str, str]
    log_dir: Path
    reconcile_interval: float
    admin_key: str = field(default_factory=lambda: "ow_admin_chaos_" + secrets.token_urlsafe(18))
    pepper: str = field(default_factory=lambda: "chaos-pepper-" + secrets.token_urlsafe(12))
    apis: list[Api] = field(default_factory=list)

    @property
    def stack_dir(self) -> Path:
        return Path(self.values["OVERWATCH_STACK_DIR"])

    @property
    def dsn(self) -> str:
        return self.values["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://", 1)

    def env(self) -> dict[str, str]:
        """The environment of an API or CLI process on the chaos instance."""
        return {
            **os.environ,
            "ENVIRONMENT": "development",  # explicit: production is becoming the default
            "DATABASE_URL": self.values["DATABASE_URL"],
            "NEO4J_URI": self.values["NEO4J_URI"],
            "NEO4J_USER": "neo4j",
            "NEO4J_PASSWORD": self.values["NEO4J_PASSWORD"],
            "BLOB_ENDPOINT_URL": self.values["BLOB_ENDPOINT_URL"],
            "BLOB_BUCKET": "chaos-blobs",
            "API_KEY_PEPPER": self.pepper,
            "ADMIN_API_KEY": self.admin_key,
            "LOG_LEVEL": "WARNING",
            "EMBEDDING_WORKER": "false",
            "RECONCILE_INTERVAL_SECONDS": str(self.reconcile_interval),
        }

    # ------------------------------------------------------------ processes
    async def cli(self, *args: str, timeout: float = 180) -> tuple[int, str]:
        """`overwatch ARGS` against the chaos instance: (exit code, output)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "api.cli",
            *args,
            cwd=ROOT,
            env=self.env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return -1, f"overwatch {' '.join(args)} timed out after {timeout:.0f}s"
        return proc.returncode or 0, out.decode(errors="replace")

    async def start_api(self, api: Api) -> None:
        """Start (or restart on its port) one API process and wait until healthy."""
        log = api.log.open("a")
        api.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "main:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(api.port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 120
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api.port}", timeout=5) as c:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if (await c.get("/healthz")).status_code == 200:
                        return
                if api.proc.poll() is not None:
                    raise RuntimeError(f"API {api.name} exited; see {api.log}")
                await asyncio.sleep(0.2)
        raise RuntimeError(f"API {api.name} not healthy within 120 s; see {api.log}")

    async def start_apis(self, count: int = 2) -> None:
        for n in range(count):
            api = Api(f"api{n + 1}", free_port(), self.log_dir / f"api{n + 1}.log")
            self.apis.append(api)
            await self.start_api(api)

    def kill_api(self, api: Api) -> None:
        if api.proc and api.proc.poll() is None:
            api.proc.send_signal(signal.SIGKILL)
            api.proc.wait(timeout=10)

    def stop_apis(self) -> None:
        for api in self.apis:
            if api.proc and api.proc.poll() is None:
                api.proc.terminate()
                try:
                    api.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    api.proc.kill()
                    api.proc.wait(timeout=10)

    # ---------------------------------------------------------------- Neo4j
    def neo4j_pid(self) -> int:
        return int((self.stack_dir / "neo4j" / "neo4j.pid").read_text().strip())

    def signal_neo4j(self, sig: signal.Signals) -> None:
        os.kill(self.neo4j_pid(), sig)

    async def neo4j_up(self) -> None:
        """Restart Neo4j after a SIGKILL (the pid file's process is gone)."""
        pid = self.neo4j_pid()
        for _ in range(100):  # the kernel reaps it quickly; stack.sh checks the pid
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            await asyncio.sleep(0.1)
        await stack_command("up", "neo4j")

    # ------------------------------------------------------------- Postgres
    async def postgres_restart(self) -> None:
        """`pg_ctl -m fast restart`: running transactions are cut off."""
        data = self.stack_dir / "postgres" / "data"
        log = self.stack_dir / "postgres" / "postgres.log"
        bindir = _pg_bindir()
        command = [f"{bindir}/pg_ctl", "-D", str(data), "-l", str(log), "-m", "fast", "-w"]
        command += ["-t", "60", "restart"]
        if os.geteuid() == 0:  # the stack runs Postgres as its own OS user
            command = ["runuser", "-u", "overwatch", "--", *command]
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"pg_ctl restart failed: {out.decode(errors='replace')[-1000:]}")


def _pg_bindir() -> str:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        found = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if Path(found, "pg_ctl").exists():
            return found
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not candidates:
        raise RuntimeError("pg_ctl not found")
    return str(candidates[-1].parent)


async def start_stack(log_dir: Path, reconcile_interval: float) -> ChaosStack:
    """`stack.sh up` on the chaos instance, then migrate it; no API yet."""
    # A run killed while Neo4j was SIGSTOPped leaves it stopped: `up` would
    # reuse the hung process (its pid lives, its port is open).
    pidfile = ROOT / ".local" / "chaos-stack" / "neo4j" / "neo4j.pid"
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(pidfile.read_text().strip()), signal.SIGCONT)
    await stack_command("up")
    printed = await stack_command("env")
    values = {
        k.removeprefix("export "): v.strip("'")
        for k, v in (line.split("=", 1) for line in printed.splitlines() if "=" in line)
    }
    stack = ChaosStack(values, log_dir, reconcile_interval)
    code, out = await stack.cli("migrate")
    if code != 0:
        raise RuntimeError(f"overwatch migrate failed on the chaos stack: {out[-2000:]}")
    return stack
