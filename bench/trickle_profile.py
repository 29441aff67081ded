"""Where a trickle's CPU per message goes (issue 14, item 2): one `dripline run` against
the fake at a steady rate, measured (CPU seconds from the kernel, net of a start-up run)
and optionally under cProfile.

    python -m bench.trickle_profile --backend sqlite --rate 10 --seconds 20 \
        [--profile /tmp/trickle.prof | --pyspy /tmp/trickle.txt]

`--backlog N` measures full speed instead, as scenario 1 runs it: N conversations due
at once, sent at 1,000/s with 300 in flight (`run --once`, which exits when done).

`--profile` runs it under cProfile on a CPU clock (`bench/cpu_profiled.py`);
`--pyspy` samples it with py-spy (`pip install py-spy`; collapsed stacks of the
threads that were on a CPU, so the SQLite driver's thread shows too). Profiled runs
cost more CPU than plain ones: use them for the shares, the plain run for the number.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.context import Bench
from bench.harness import DRIPLINE, enroll, running_fake, spawn
from bench.windows import messages_in, read_at, window_usage


class _Quiet:
    def start(self, label: str, total: int) -> None: ...
    def advance(self, done: int, info: str = "") -> None: ...
    def finish(self, info: str = "") -> None: ...
    def note(self, text: str) -> None: ...


async def _main(
    backend: str,
    rate: float,
    seconds: float,
    profile: str | None,
    pyspy: str | None,
    env: dict[str, str],
    backlog: int = 0,
) -> None:
    # The sends start this long after t0 is set: enrolment and the process's start-up
    # (up to 2-3 s of wall time at a load of 10) fall before the measured window.
    lead = 6.0
    with tempfile.TemporaryDirectory(prefix="trickle-") as tmp:
        b = Bench(quick=False, workdir=Path(tmp), progress=_Quiet())
        try:
            base = await b.baseline(backend)
            async with running_fake(b.workdir, rate_per_s=1000.0) as fake:
                url = await b.dbs.fresh(backend, "trickleprof")
                t0 = datetime.now(UTC) + timedelta(seconds=lead)
                if backlog:
                    n = backlog
                    await enroll(url, [datetime.now(UTC)] * n)
                    seconds = n / 1000.0 + 30  # a budget, not the run's length
                    run = [DRIPLINE, "run", "--json", "--once", "--max-seconds", str(seconds)]
                    run += ["--rate", "1000", "--concurrency", "300", "--batch-limit", "1000"]
                else:
                    n = int(seconds * rate)
                    await enroll(url, [t0 + timedelta(seconds=i / rate) for i in range(n)])
                    run = [DRIPLINE, "run", "--json", "--max-seconds", str(lead + seconds + 4)]
                argv = run
                if profile:
                    here = Path(__file__).with_name("cpu_profiled.py")
                    argv = [sys.executable, str(here), profile, *run[1:]]
                elif pyspy:
                    spy = str(Path(sys.executable).with_name("py-spy"))
                    argv = [spy, "record", "-r", "1000", "--threads", "--nonblocking"]
                    argv += ["-f", "raw", "-o", pyspy, "--", *run]
                child = spawn("trickle", argv, b.dripline_env(url, fake, **env), b.workdir)
                # The sends' window, as scenario 13 reads it (bench/round2.py).
                due = [t0.timestamp() + i / rate for i in range(n)] if not backlog else []
                window = (due[0] - 0.5, due[-1] + 1.5) if due and not pyspy else None
                readings = await read_at(child.pid, window) if window else []
                usage = await child.wait(lead + seconds + 60)
                sent = len(await fake.messages())
            net = usage.cpu_s - base
            what = f"backlog {n}" if backlog else f"{rate:g}/s x {seconds:g} s"
            inside = ""
            if window and len(readings) == 2:
                (s0, c0, _), (s1, c1, _) = readings
                w = window_usage((s0, c0), (s1, c1), messages_in(due, *window))
                inside = (
                    f", window {w.cpu_s:.3f} s = {w.ms_per_message:.3f} ms/msg"
                    f" (cpu before it {w.cpu_before_s:.2f} s)"
                )
            print(
                f"{backend} {what}: sent {sent}/{n}, cpu {usage.cpu_s:.3f} s "
                f"(sys {usage.sys_s:.3f}), "
                f"start-up {base:.3f} s, net {net * 1000 / max(1, sent):.3f} ms/msg"
                + inside
                + (f" (profiled: {profile})" if profile else "")
            )
        finally:
            await b.dbs.drop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--profile", default=None, help="write a cProfile file here")
    parser.add_argument("--pyspy", default=None, help="write py-spy's collapsed stacks here")
    parser.add_argument(
        "--backlog", type=int, default=0, help="full speed: N due at once (scenario 1's run)"
    )
    parser.add_argument(
        "--env", action="append", default=[], help="KEY=VALUE for the dispatcher, repeatable"
    )
    args = parser.parse_args()
    env = dict(e.split("=", 1) for e in args.env)
    asyncio.run(
        _main(args.backend, args.rate, args.seconds, args.profile, args.pyspy, env, args.backlog)
    )


if __name__ == "__main__":
    main()
