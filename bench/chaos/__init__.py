"""A seeded chaos run: nothing acknowledged is ever stuck (issue 13).

`python -m bench.chaos --seed N --seconds S --workstations W` (or `make
chaos`) starts the `chaos` stack instance (.local/chaos-stack; postgres 55452,
bolt 7707, s3 9020) and two API processes of its own, registers a fresh
customer, and lets W workstations built on the reference client
(api/client/sync.py) edit, push and pull while a seeded schedule kills and
hangs Neo4j, kills an API process, restarts Postgres mid-push and sends
values Neo4j cannot store. Then it checks the protocol's invariants and
prints them as a table; the exit code is 1 if any failed.

Layout: stack.py (servers and faults on them), workload.py (workstations),
faults.py (the schedule, poison), checks.py (invariants, report), run.py.
"""

from __future__ import annotations

from typing import Any

from bench.chaos.run import Options, Report, chaos_run

__all__ = ["Options", "Report", "chaos_run", "run"]


async def run(ctx: Any) -> list[Any]:
    """The `python -m bench chaos` entry: a 60 s run, seed 1, on its own stack
    (the bench stack in `ctx` is not used: faults must never touch it)."""
    from bench.harness import Result

    report = await chaos_run(Options(seed=1, seconds=60, workstations=4, keep_stack=True))
    failed = [c.name for c in report.checks if not c.ok]
    return [
        Result(
            "chaos: time to heal after the last fault",
            "s",
            report.numbers.get("heal_seconds") or -1.0,
            notes={"ok": report.ok, "failed": ",".join(failed) or "-"},
        )
    ]
