"""`python -m bench [name ...]`: run the benchmarks and print a table of ratios
(`chaos` and `search_scale` only when named: see bench/chaos, bench/search_scale.py)."""

from __future__ import annotations

import gc
import importlib
import sys
import time

import uvloop

from bench.harness import Result, dispose, prepare, print_results

# Each module exposes `async def run(ctx: BenchContext) -> list[Result]`.
# `chaos` runs on a stack instance of its own and takes minutes: only by name.
# `search_scale` loads 1M nodes into the `scale` instance (`make bench-scale`): only by name.
BENCHMARKS = [
    "graph_write",
    "heartbeat",
    "sync",
    "sync_scope",
    "search",
    "streams",
    "chaos",
    "search_scale",
]
ONLY_BY_NAME = {"chaos", "search_scale"}
BY_DEFAULT = [name for name in BENCHMARKS if name not in ONLY_BY_NAME]


async def main(names: list[str]) -> None:
    selected = names or BY_DEFAULT
    unknown = [n for n in selected if n not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {unknown}; known: {BENCHMARKS}")
    ctx = await prepare()
    # Everything loaded so far lives as long as the run (the server does the
    # same, main.py): frozen, it stays out of the collector's full passes,
    # which otherwise stall whichever side of a ratio is being timed.
    gc.collect()
    gc.freeze()
    results: list[Result] = []
    try:
        for name in selected:
            started = time.perf_counter()
            print(f"[bench] {name} ...", flush=True)
            module = importlib.import_module(f"bench.{name}")
            results += await module.run(ctx)
            print(f"[bench] {name} done in {time.perf_counter() - started:.1f}s", flush=True)
    finally:
        await dispose(ctx)
    print_results(results)


if __name__ == "__main__":
    # The bench process is the client of every HTTP figure (wrk aside) and the
    # raw side of every ratio: on uvloop, as the server is, both sides read
    # their bytes through the same fast loop (a 2 MB pull page: 32 ms on
    # uvloop against 39 ms on asyncio's own loop; the raw side gains alike).
    uvloop.run(main(sys.argv[1:]))
