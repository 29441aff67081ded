"""`python bench/cpu_profiled.py OUT.prof ARGS...`: the dripline CLI with ARGS under
cProfile on a CPU clock (process time: a thread's work shows under whatever the main
thread was doing then, usually waiting in the event loop's select)."""

from __future__ import annotations

import contextlib
import cProfile
import sys
import time

from dripline.cli import main

if __name__ == "__main__":
    out = sys.argv[1]
    sys.argv = ["dripline", *sys.argv[2:]]
    profile = cProfile.Profile(time.process_time)
    try:
        with contextlib.suppress(SystemExit):
            profile.runcall(main)
    finally:
        profile.dump_stats(out)
