"""dripline's benchmarks: the scenarios of issue 7 against the fake Cloud API over loopback.

    python -m bench                 # every scenario at the issue's sizes (~15 minutes)
    python -m bench --quick         # tiny sizes, a smoke run (under a minute)
    python -m bench --scenario 1 --scenario 3 --out /tmp/results

Writes `bench/results/<date>.json` and `.md` and the README's table. Not part of the
dripline package: Procrastinate (the job queue compared against) is a dev-only dependency.
"""
