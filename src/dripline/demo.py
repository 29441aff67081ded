"""`dripline demo`: the main job on the embedded default, against a local Cloud API.

First the answers phase (`dripline.demo_answers`): a few hundred simulated users go
through the shipped free-trial flow, time compressed, and answer by signed webhooks; it
runs first so that its conversations are all finished before the backlog is sent. Then
the throughput phase: it enrolls a backlog due now plus a stream that falls due over the
minute after the backlog should have drained, runs the dispatcher against the fake Cloud API in this
process, shows live progress, and ends with a summary measured at the fake (when each
message arrived there, against when it was due) next to what the seed's design would
have taken for the same load. The last screen is the free-trial flow's results table,
read from the database as `dripline results` reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

from dripline.clock import utcnow
from dripline.demo_answers import (
    ANSWERS_FLOW,
    AnswersOptions,
    AnswersReport,
    is_answers_phone,
    run_answers,
)
from dripline.dispatcher.engine import Dispatcher
from dripline.dispatcher.policies import concurrency_for_rate
from dripline.dispatcher.stats import percentile
from dripline.errors import ConfigError
from dripline.fake.app import running_fake
from dripline.fake.config import FakeConfig
from dripline.flows import FlowSet, load_flows
from dripline.planner import LatencyModel, PlanSettings, simulate
from dripline.settings import Policy, Settings
from dripline.store import Enrollment, open_store
from dripline.store.urls import parse_database_url
from dripline.whatsapp.client import CloudApiClient

__all__ = ["DemoOptions", "DemoReport", "run_demo"]

DEMO_FLOW = "demo"
DEMO_TOKEN = "demo-token"  # noqa: S105 - the in-process fake's credential, not a secret
ENROLL_CHUNK = 2_000


@dataclass(frozen=True)
class DemoOptions:
    conversations: int = 10_000
    stream: int = 1_200
    stream_window_s: float = 60.0
    rate_per_s: float = 80.0
    latency_ms: float = 150.0
    latency_p99_ms: float = 450.0
    max_seconds: float = 900.0
    live: bool = True
    answers: int = 300  # simulated users through the free-trial flow; 0: no answers phase


@dataclass
class DemoReport:
    """What the demo measured; every figure comes from the fake's record of arrivals
    (lag = when a request reached the API minus when its message was due)."""

    conversations: int
    stream: int
    rate_per_s: float
    concurrency: int
    policy: str
    sent: int
    delivered_unique: int
    duplicates: int
    missing: int
    failed_by_class: dict[str, int]
    retries: int
    throttled_responses: int
    backlog_drain_s: float
    backlog_throughput_per_s: float
    backlog_lag_s: dict[str, float]
    stream_lag_s: dict[str, float]
    elapsed_s: float
    seed_drain_s: float
    seed_runs: int
    seed_lag_p99_s: float
    follow_ups_scheduled: int
    next_follow_up_at: datetime | None
    database: str
    extra: dict[str, Any] = field(default_factory=dict)
    answers: AnswersReport | None = None
    answers_skipped: str | None = None  # why there is no answers phase

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["next_follow_up_at"] = (
            self.next_follow_up_at.isoformat() if self.next_follow_up_at else None
        )
        data["answers"] = self.answers.as_dict() if self.answers else None
        return data


def _lag_summary(lags: list[float]) -> dict[str, float]:
    lags.sort()
    return {
        "p50": round(percentile(lags, 0.50), 4),
        "p95": round(percentile(lags, 0.95), 4),
        "p99": round(percentile(lags, 0.99), 4),
        "max": round(lags[-1], 4) if lags else 0.0,
    }


def _exists(path: Path) -> bool:
    return path.exists()


def _remove_sqlite_files(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()


async def _prepare_database(settings: Settings, console: Console) -> None:
    """Start from an empty embedded database, but never wipe someone's real data."""
    url = parse_database_url(settings.database_url)
    if url.backend != "sqlite" or url.sqlite_path is None:
        raise ConfigError("the demo runs on the embedded SQLite default; give a sqlite:/// URL")
    path = Path(url.sqlite_path)
    if not _exists(path):
        return
    store = await open_store(settings.database_url, pool_size=1)
    try:
        other = await store.flows_in_use() - {DEMO_FLOW}
        if ANSWERS_FLOW in other and await _only_demo_users(store):
            other.discard(ANSWERS_FLOW)
    finally:
        await store.close()
    if other:
        raise ConfigError(
            f"{path} holds conversations of other flows ({', '.join(sorted(other))}); "
            "the demo starts from an empty database: pass --database-url sqlite:///demo.db"
        )
    _remove_sqlite_files(path)
    console.print(f"[dim]recreating {path} (it held only earlier demo data)[/]")


async def _only_demo_users(store: Any) -> bool:
    """True when every conversation of the answers phase's flow has a demo user's number."""
    after = 0
    while page := await store.list_conversations(flow=ANSWERS_FLOW, limit=1_000, after_id=after):
        if not all(is_answers_phone(c.phone) for c in page):
            return False
        after = page[-1].id
    return True


async def _answers(
    settings: Settings, opts: DemoOptions, flows: FlowSet, console: Console
) -> tuple[AnswersReport | None, str | None]:
    """The answers phase, or why it did not run."""
    if opts.answers <= 0:
        return None, "--answers 0"
    if ANSWERS_FLOW not in flows.names():
        return None, (
            f"no {ANSWERS_FLOW} flow in {settings.flows_dir} (run the demo from the "
            "repository, or set DRIPLINE_FLOWS_DIR to its flows/ folder)"
        )
    console.print(
        f"answers: {opts.answers:,} simulated users through the {ANSWERS_FLOW} flow, "
        "[bold]time compressed[/] (dripline runs on a clock that jumps to the next due time)"
    )
    with console.status("", spinner="dots") as status:

        def progress(now: datetime, messages: int, replies: int) -> None:
            if opts.live:
                status.update(
                    f"answers: {now:%a %H:%M} on the demo's clock, "
                    f"{messages:,} messages sent, {replies:,} replies"
                )

        report = await run_answers(
            settings.database_url,
            settings.flows_dir,
            AnswersOptions(users=opts.answers),
            progress,
        )
    return report, None


def _phone(i: int) -> str:
    # +1 415 55x xxxx: valid North American numbers, distinct per conversation.
    return f"+1415{5500000 + i:07d}"


async def _enroll(
    store: Any, opts: DemoOptions, start: datetime, console: Console
) -> dict[str, datetime]:
    """Enroll the backlog (due now) and the stream (due after the expected drain)."""
    drain_est_s = opts.conversations / opts.rate_per_s
    due: dict[str, datetime] = {}
    items: list[Enrollment] = []
    for i in range(opts.conversations):
        due[_phone(i)] = start
        items.append(Enrollment(phone=_phone(i), flow=DEMO_FLOW, at=start, name=f"user {i}"))
    for j in range(opts.stream):
        offset = drain_est_s + 5.0 + opts.stream_window_s * j / max(1, opts.stream)
        at = start + timedelta(seconds=offset)
        phone = _phone(opts.conversations + j)
        due[phone] = at
        items.append(Enrollment(phone=phone, flow=DEMO_FLOW, at=at, name=f"user {j}"))
    progress = Progress(
        TextColumn("enrolling"),
        BarColumn(),
        TaskProgressColumn(),
        console=console,
        transient=True,
    )
    with progress:
        task = progress.add_task("enroll", total=len(items))
        for k in range(0, len(items), ENROLL_CHUNK):
            chunk = items[k : k + ENROLL_CHUNK]
            await store.enroll(chunk, utcnow())
            progress.advance(task, len(chunk))
    return due


def _live_view(
    d: Dispatcher,
    total: int,
    started: float,
    fake_state: Any,
    rate: float,
    window: list[tuple[float, int]],
) -> Group:
    s = d.stats
    now = time.monotonic()
    window.append((now, s.sent))
    while len(window) > 2 and now - window[0][0] > 2.0:
        window.pop(0)
    (t0, n0), (t1, n1) = window[0], window[-1]
    current = (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0
    recent = s.lag.values[-500:]
    lag50, lag99 = (percentile(sorted(recent), q) for q in (0.5, 0.99))
    table = Table.grid(padding=(0, 2))
    table.add_row(
        "sent",
        f"{s.sent:,} / {total:,}",
        "rate now",
        f"{current:6.1f} msg/s",
        "limit",
        f"{rate:g} msg/s",
    )
    table.add_row(
        "in flight",
        f"{s.in_flight}",
        "throttled (130429)",
        f"{fake_state.errors_by_code.get(130429, 0)}",
        "retries",
        f"{s.retries}",
    )
    table.add_row(
        "lag p50",
        f"{lag50:7.3f} s",
        "lag p99",
        f"{lag99:7.3f} s",
        "elapsed",
        f"{now - started:5.1f} s",
    )
    bar = Progress(BarColumn(bar_width=60), TaskProgressColumn())
    bar.add_task("", total=total, completed=s.sent)
    return Group(bar, table)


async def run_demo(settings: Settings, opts: DemoOptions, console: Console) -> DemoReport:
    """Run the demo end to end and return what it measured."""
    await _prepare_database(settings, console)
    flows = load_flows(settings.flows_dir)
    answers, skipped = await _answers(settings, opts, flows, console)
    mean_s = opts.latency_ms / 1000.0
    concurrency = max(settings.concurrency, concurrency_for_rate(opts.rate_per_s, mean_s, 2.0))
    run_settings = settings.model_copy(
        update={
            "rate_per_s": opts.rate_per_s,
            "concurrency": concurrency,
            "max_concurrency": max(settings.max_concurrency, concurrency),
            "whatsapp_access_token": settings.whatsapp_access_token.__class__(DEMO_TOKEN),
        }
    )
    fake_config = FakeConfig(
        access_token=DEMO_TOKEN,
        rate_per_s=opts.rate_per_s,
        latency_ms=opts.latency_ms,
        latency_p99_ms=opts.latency_p99_ms,
        seed=7,
    )
    total = opts.conversations + opts.stream
    store = await open_store(run_settings.database_url, pool_size=1)
    try:
        start = utcnow()
        due = await _enroll(store, opts, start, console)
        console.print(
            f"enrolled {opts.conversations:,} conversations due now and {opts.stream:,} "
            f"falling due over {opts.stream_window_s:g} s after the backlog; sending at "
            f"{opts.rate_per_s:g} msg/s with up to {concurrency} in flight"
        )
        async with running_fake(fake_config) as fake:
            client = CloudApiClient(
                phone_number_id=run_settings.whatsapp_phone_number_id,
                access_token=DEMO_TOKEN,
                base_url=fake.base_url,
                api_version=run_settings.whatsapp_api_version,
            )
            dispatcher = Dispatcher(
                store=store,
                client=client,
                flows=flows,
                settings=run_settings,
            )
            started = time.monotonic()
            run = asyncio.ensure_future(dispatcher.run(max_seconds=opts.max_seconds))
            # Let run() start before anything may stop it: it clears earlier stop
            # requests, so with nothing to send (--conversations 0 --stream 0) the
            # request_stop below would be lost and the run last max_seconds.
            await asyncio.sleep(0)
            window: list[tuple[float, int]] = []
            try:
                with Live(console=console, refresh_per_second=4, transient=not opts.live) as live:
                    while not run.done() and dispatcher.stats.sent < total:
                        if opts.live:
                            live.update(
                                _live_view(
                                    dispatcher, total, started, fake.state, opts.rate_per_s, window
                                )
                            )
                        await asyncio.sleep(0.25)
                    if opts.live:
                        live.update(
                            _live_view(
                                dispatcher, total, started, fake.state, opts.rate_per_s, window
                            )
                        )
            finally:
                dispatcher.request_stop()
                summary = await run
                await client.close()
            elapsed = time.monotonic() - started
            accepted = list(fake.state.messages)
            throttled = fake.state.errors_by_code.get(130429, 0)
        backlog = await store.backlog(utcnow())
        next_due = await store.next_due_at(utcnow() - timedelta(days=3650))
    finally:
        await store.close()

    first: dict[str, datetime] = {}
    per_recipient: Counter[str] = Counter()
    for msg in accepted:
        phone = "+" + msg.to.lstrip("+")
        per_recipient[phone] += 1
        if phone not in first:
            # Send start as the API saw it: arrival, before the simulated latency.
            first[phone] = datetime.fromtimestamp(msg.arrived_wall, UTC)
    backlog_lags: list[float] = []
    stream_lags: list[float] = []
    last_backlog = start
    for phone, arrived in first.items():
        when = due.get(phone)
        if when is None:
            continue
        lag = (arrived - when).total_seconds()
        if when <= start:
            backlog_lags.append(lag)
            last_backlog = max(last_backlog, arrived)
        else:
            stream_lags.append(lag)
    drain_s = max(1e-9, (last_backlog - start).total_seconds())
    seed = simulate(
        PlanSettings(policy=Policy.SEED_CRON, batch_limit=30, concurrency=5, rate_per_s=None),
        LatencyModel.lognormal(mean_s, opts.latency_p99_ms / 1000.0),
        sorted((t - start).total_seconds() for t in due.values()),
    )
    stats = summary.stats
    return DemoReport(
        conversations=opts.conversations,
        stream=opts.stream,
        rate_per_s=opts.rate_per_s,
        concurrency=concurrency,
        policy=run_settings.policy.value,
        sent=len(accepted),
        delivered_unique=len(first),
        duplicates=sum(n - 1 for n in per_recipient.values() if n > 1),
        missing=total - len(first),
        failed_by_class=dict(stats.failures_by_class),
        retries=stats.retries,
        throttled_responses=throttled,
        backlog_drain_s=round(drain_s, 2),
        backlog_throughput_per_s=round(len(backlog_lags) / drain_s, 1),
        backlog_lag_s=_lag_summary(backlog_lags),
        stream_lag_s=_lag_summary(stream_lags),
        elapsed_s=round(elapsed, 1),
        seed_drain_s=round(seed.drain_s, 1),
        seed_runs=seed.runs,
        seed_lag_p99_s=round(seed.lag_p99_s, 1),
        follow_ups_scheduled=backlog.by_state.get("in_progress", 0),
        next_follow_up_at=next_due,
        database=run_settings.database_url,
        answers=answers,
        answers_skipped=skipped,
    )
