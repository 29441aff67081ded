"""The soak's verdict (bench/soak.py): the fit skips the statistics reservoirs' filling.

A regression test for a misreading: with the warm-up at a tenth of the run, a
150,000-message run fitted the reservoirs' first 50,000 floats as 2.5 MB of growth per
100,000 messages while RSS was flat after them.
"""

from __future__ import annotations

from bench.soak import RESERVOIR_FILL, Sample, slope_mb_per_100k, warmup_messages


def _sample(accepted: int, rss: float) -> Sample:
    return Sample(
        t=0.0,
        accepted=accepted,
        worker_rss_mb=rss,
        worker_fds=0,
        worker_db=0,
        serve_rss_mb=rss * 2,
        serve_fds=0,
        serve_db=0,
        inbox_waiting=0,
        inbox_oldest_s=None,
    )


def _filling_then_flat() -> list[Sample]:
    """RSS grows 4 MB while the reservoirs fill (to 50,000), then stays flat."""
    out = []
    for accepted in range(0, 150_001, 5_000):
        filling = min(accepted, 50_000) / 50_000 * 4.0
        out.append(_sample(accepted, 90.0 + filling))
    return out


def test_long_runs_skip_the_reservoirs_filling() -> None:
    assert warmup_messages(150_000) == RESERVOIR_FILL
    assert warmup_messages(2_000_000) == 200_000
    slope, used = slope_mb_per_100k(_filling_then_flat(), 150_000)
    assert slope is not None and abs(slope) < 1e-9
    assert used == len(range(RESERVOIR_FILL, 150_001, 5_000))


def test_a_smoke_run_keeps_a_tenth_so_it_still_fits_something() -> None:
    assert warmup_messages(6_000) == 600
    samples = [_sample(n, 90.0 + n / 1_000) for n in range(0, 6_001, 1_000)]
    slope, _ = slope_mb_per_100k(samples, 6_000)
    assert slope is not None and round(slope) == 100


def test_the_fit_reads_the_field_it_is_given() -> None:
    samples = [_sample(n, 90.0 + n / 100_000) for n in range(0, 300_001, 10_000)]
    worker, _ = slope_mb_per_100k(samples, 300_000)
    serve, _ = slope_mb_per_100k(samples, 300_000, field="serve_rss_mb")
    assert worker is not None and serve is not None
    assert round(worker, 6) == 1.0 and round(serve, 6) == 2.0
