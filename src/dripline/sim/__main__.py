"""`python -m dripline.sim`: run seeds of the deterministic simulator.

    python -m dripline.sim --seeds 2000            # seeds 0..1999, every core
    python -m dripline.sim --seed 1234 -v          # one seed, with its trace tail
    python -m dripline.sim --seeds 500 --start 10000 --json

Exit status 0 when every run kept every invariant, 1 otherwise. A failing seed prints
the command that replays it exactly.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor

from dripline.sim.runner import SimReport, run_seed

__all__ = ["main"]


def _reports(seeds: list[int], jobs: int) -> Iterable[SimReport]:
    if jobs <= 1 or len(seeds) < 2:
        yield from map(run_seed, seeds)
        return
    # A process pool that reports a dead worker (BrokenProcessPool) instead of hanging.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context) as pool:
        yield from pool.map(run_seed, seeds, chunksize=8)


def _kind(violation: str) -> str:
    return violation.split(":", 1)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dripline.sim",
        description="Run dripline's dispatcher and inbox processor in deterministic "
        "simulation: virtual time, an in-memory store, a simulated Cloud API and webhook "
        "channel, faults drawn from each seed. Invariants are checked after every run.",
    )
    parser.add_argument("--seed", type=int, help="run this one seed")
    parser.add_argument("--seeds", type=int, default=200, help="how many seeds (default 200)")
    parser.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="processes (default: every core)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON summary on stdout")
    parser.add_argument("-v", "--verbose", action="store_true", help="print trace tails")
    args = parser.parse_args(argv)

    seeds = (
        [args.seed] if args.seed is not None else list(range(args.start, args.start + args.seeds))
    )
    started = time.perf_counter()
    failed: list[SimReport] = []
    kinds: Counter[str] = Counter()
    runs = virtual = 0.0
    for report in _reports(seeds, 1 if args.seed is not None else args.jobs):
        runs += 1
        virtual += report.virtual_s
        if not report.ok:
            failed.append(report)
            kinds.update({_kind(v) for v in report.violations})
            if not args.json:
                print(
                    f"seed {report.seed} FAILED ({len(report.violations)} violations, "
                    f"digest {report.digest}):"
                )
                for v in report.violations[:8]:
                    print(f"  - {v}")
                if args.verbose:
                    print("  trace tail:")
                    for line in report.trace_tail:
                        print(f"    {line}")
                print(f"  replay: python -m dripline.sim --seed {report.seed} -v")
        elif args.seed is not None and not args.json:
            print(
                f"seed {report.seed} ok: {report.accepted} messages accepted, "
                f"{report.virtual_s:.0f}s virtual in {report.wall_s:.2f}s, digest {report.digest}"
            )
    wall = time.perf_counter() - started
    summary = {
        "seeds": int(runs),
        "failed": len(failed),
        "failed_seeds": sorted(r.seed for r in failed),
        "violations_by_invariant": dict(kinds),
        "wall_s": round(wall, 2),
        "seeds_per_s": round(runs / wall, 1) if wall else None,
        "virtual_s": round(virtual, 1),
    }
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
    else:
        print(
            f"{int(runs)} seeds, {len(failed)} failed, {wall:.1f}s "
            f"({summary['seeds_per_s']} seeds/s, {virtual / 3600:.1f} h virtual)"
        )
        if kinds:
            print(
                "violations by invariant: " + ", ".join(f"{k} {n}" for k, n in kinds.most_common())
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
