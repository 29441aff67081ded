"""`dripline plan` in-process: each mode, JSON that parses, the PNG, one-line errors."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, insert
from typer.testing import CliRunner

from dripline.cli import app
from dripline.errors import ConfigError, StoreError
from dripline.store.reports import latency_samples_ms
from dripline.store.schema import conversations, messages, metadata


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_seed_table_marks_wrong_cells(runner: CliRunner) -> None:
    result = runner.invoke(app, ["plan", "--seed-table"])
    assert result.exit_code == 0, result.output
    assert "310.1 s (2 runs) ✗" in result.output
    assert "~25s → 15.1 s ✗" in result.output
    assert "8,640" in result.output
    assert "Summary Table: 30/5" in result.output


def test_seed_table_json(runner: CliRunner) -> None:
    result = runner.invoke(app, ["plan", "--seed-table", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    row = next(r for r in data["seed_cron"]["rows"] if (r["batch"], r["concurrency"]) == (30, 5))
    assert row["cells"]["30 msgs"] == {
        "stated_s": 15.0,
        "computed_s": pytest.approx(15.1),
        "computed_min_s": pytest.approx(15.1),
        "runs": 1,
        "differs": False,
    }
    assert row["cells"]["50 msgs"]["differs"] is True
    assert data["max_per_day"]["seed_cron_30_5"] == 8640
    assert len(data["continuous"]["rows"]) == 6
    assert [r["messages"] for r in data["summary_30_5"] if r["differs"]] == [50]


def test_grid_json_and_png(runner: CliRunner, tmp_path: Path) -> None:
    png = tmp_path / "plan.png"
    result = runner.invoke(
        app,
        [
            "plan",
            "--batch", "20,30,50",
            "--concurrency", "3,5,10",
            "--backlog", "30,50,5000",
            "--policy", "seed-cron,static",
            "--latency", "lognormal:150ms,p99=600ms",
            "--png", str(png),
            "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data["results"]) == 2 * 3 * 3 * 3
    assert png.stat().st_size > 10_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    seed = [r for r in data["results"] if r["settings"]["policy"] == "seed-cron"]
    assert {r["db_connections"] for r in seed} == {3, 5, 10}
    static = [r for r in data["results"] if r["settings"]["policy"] == "static"]
    assert {r["db_connections"] for r in static} == {2}


def test_grid_table_with_profiles(runner: CliRunner) -> None:
    result = runner.invoke(
        app,
        ["plan", "--profile", "spike-day", "--policy", "seed-cron,tiers,static,adaptive"],
    )
    assert result.exit_code == 0, result.output
    assert "tiers (cron)" in result.output
    assert "batch/interval" in result.output


def test_recommend(runner: CliRunner) -> None:
    result = runner.invoke(
        app,
        ["plan", "--recommend", "--target-lag", "60s", "--peak", "5000/h", "--rate", "80",
         "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["feasible"] is True
    assert data["result"]["lag_p99_s"] <= 60
    text = runner.invoke(
        app, ["plan", "--recommend", "--target-lag", "60s", "--peak", "5000/h"]
    ).output
    assert "--policy static --batch" in text
    assert "binding:" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--latency", "soon"], "--latency: 'soon' is not a latency"),
        (["--policy", "fast"], "--policy: 'fast' is not a policy"),
        (["--batch", "ten"], "--batch: 'ten'"),
        (["--rate", "lots"], "--rate: 'lots' is not a rate"),
        (["--profile", "sometimes"], "--profile: 'sometimes' is not a profile"),
        (["--recommend"], "--recommend needs a lag target"),
        (["--backlog", "5", "--profile", "5/s"], "not both"),
        (["--latency", "db:sqlite:////nonexistent/x.db"], "no SQLite database"),
    ],
)
def test_bad_input_is_one_line_exit_2(runner: CliRunner, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["plan", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def _db_with_latencies(path: Path, latencies_ms: list[float]) -> str:
    url = f"sqlite:///{path}"
    engine = create_engine(url)
    metadata.create_all(engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            insert(conversations),
            [{"id": 1, "phone": "+15550000001", "flow": "demo", "created_at": now,
              "updated_at": now}],
        )  # fmt: skip
        conn.execute(
            insert(messages),
            [
                {"conversation_id": 1, "step": i, "purpose": "question", "status": "sent",
                 "latency_ms": ms, "sent_at": now - timedelta(seconds=i), "created_at": now,
                 "updated_at": now}
                for i, ms in enumerate(latencies_ms)
            ],
        )  # fmt: skip
    engine.dispose()
    return url


def test_latency_samples_from_the_database(tmp_path: Path, runner: CliRunner) -> None:
    url = _db_with_latencies(tmp_path / "d.db", [100.0, 200.0, 300.0])
    assert sorted(asyncio.run(latency_samples_ms(url))) == [100.0, 200.0, 300.0]
    assert asyncio.run(latency_samples_ms(url, limit=1)) == [100.0]  # newest first
    result = runner.invoke(
        app, ["plan", "--latency", f"db:{url}", "--backlog", "100", "--policy", "static",
              "--json"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["latency_mean_s"] == pytest.approx(0.2)
    assert "3 samples" in data["latency"]


def test_latency_samples_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no SQLite database"):
        asyncio.run(latency_samples_ms(f"sqlite:///{tmp_path / 'missing.db'}"))
    empty = tmp_path / "empty.db"
    engine = create_engine(f"sqlite:///{empty}")
    engine.connect().close()
    engine.dispose()
    with pytest.raises(StoreError, match="no readable messages table"):
        asyncio.run(latency_samples_ms(f"sqlite:///{empty}"))


S11_ARGS = [
    "plan",
    "--policy",
    "static",
    "--batch",
    "1000",
    "--concurrency",
    "100",
    "--rate",
    "1000",
    "--latency",
    "100ms",
    "--backlog",
    "5000",
    "--json",
]


def test_cpu_options_bound_the_plan(runner: CliRunner) -> None:
    free = json.loads(runner.invoke(app, S11_ARGS).stdout)
    assert free["cpu_limit_per_s"] is None
    assert free["results"][0]["send_rate_per_s"] == pytest.approx(1000, rel=0.01)
    # 1 core at 0.9 + 0.4 + 0.3 ms a message pays for 625/s.
    args = [*S11_ARGS, "--cpu-ms", "0.9", "--db-cpu-ms", "0.4", "--api-cpu-ms", "0.3"]
    result = runner.invoke(app, [*args, "--cores", "1"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["cpu_limit_per_s"] == pytest.approx(625)
    assert data["results"][0]["send_rate_per_s"] == pytest.approx(625, rel=0.01)
    assert data["results"][0]["binding"] == "CPU (cores)"


def test_cpu_table_names_the_bound(runner: CliRunner) -> None:
    args = [a for a in S11_ARGS if a != "--json"]
    result = runner.invoke(app, [*args, "--cpu-ms", "1.6", "--cores", "1"])
    assert result.exit_code == 0, result.output
    assert "at most 625 msg/s" in result.output
    assert "CPU (cores)" in result.output


def test_cpu_shape_options_need_cpu_ms(runner: CliRunner) -> None:
    result = runner.invoke(app, ["plan", "--cores", "2"])
    assert result.exit_code == 2
    assert "--cpu-ms" in result.output


def test_recommend_honours_the_cpu_bound(runner: CliRunner) -> None:
    # 200/s at 10 ms a message on 1 core: the CPU pays for 100/s, so no setting can.
    result = runner.invoke(
        app,
        [
            "plan",
            "--recommend",
            "--target-lag",
            "60s",
            "--peak",
            "720000/h for 10m",
            "--rate",
            "1000",
            "--cpu-ms",
            "10",
            "--cores",
            "1",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["feasible"] is False
    assert data["binding"] == "CPU (cores)"
    assert "CPU pays for 100/s" in data["reasons"][0]
