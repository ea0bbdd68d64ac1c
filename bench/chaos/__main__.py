"""`python -m bench.chaos --seed N --seconds S --workstations W`: exit 1 on a broken invariant."""

from __future__ import annotations

import argparse
import asyncio
import sys

from bench.chaos.run import Options, chaos_run


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=120.0, help="workload under faults")
    parser.add_argument("--workstations", type=int, default=4)
    parser.add_argument(
        "--scoped",
        type=int,
        default=None,
        help="how many of the workstations sync a scope of venues (default: half)",
    )
    parser.add_argument(
        "--heal-timeout", type=float, default=60.0, help="projection caught up by then"
    )
    parser.add_argument(
        "--reconcile-interval", type=float, default=15.0, help="RECONCILE_INTERVAL_SECONDS"
    )
    parser.add_argument(
        "--keep-stack", action="store_true", help="leave the chaos stack running afterwards"
    )
    args = parser.parse_args(argv)
    options = Options(
        seed=args.seed,
        seconds=args.seconds,
        workstations=args.workstations,
        scoped=args.scoped,
        heal_timeout=args.heal_timeout,
        reconcile_interval=args.reconcile_interval,
        keep_stack=args.keep_stack,
    )
    report = asyncio.run(chaos_run(options))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
