"""One simulated run: the real dispatcher and inbox processor, in virtual time, against
the in-memory store, the simulated Cloud API and the webhook channel, with the faults
the seed drew. Returns the invariant violations and the trace digest.

    report = run_seed(1234)            # draw the world from the seed and run it
    report = run_config(cfg)           # a hand-made world (regression scenarios)
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any, cast

import structlog

from dripline.dispatcher.engine import Dispatcher
from dripline.errors import DriplineError, SuppressedError
from dripline.fake.rules import wa_id_for
from dripline.inbox.intake import INTAKE_HEARTBEAT_S, INTAKE_TOLERANCE_S, IntakeHeartbeat
from dripline.inbox.processor import InboxProcessor
from dripline.settings import Settings
from dripline.sim.api import SimCloudApi, User
from dripline.sim.channel import WebhookChannel
from dripline.sim.config import SimConfig, draw
from dripline.sim.flows import sim_flows
from dripline.sim.invariants import SAMPLE_S, TERMINAL, Observer, check_final
from dripline.sim.loop import SimClock, VirtualTimeLoop, run_virtual
from dripline.sim.process import Faults, Killed, SimProcess, StoreView
from dripline.sim.trace import Trace
from dripline.store.base import Enrollment, Store
from dripline.store.memory import MemoryStore
from dripline.whatsapp.client import CloudApiClient

__all__ = ["SimReport", "run_config", "run_seed"]

NUMBER = "100000000000001"
# A second business number: the `nudge` flow's conversations send from it, so the
# window, throughput and reply routing per number run in every seed.
SECOND = "100000000000002"
SETTLE_CHECK_S = 1.0


class _SimSettings(Settings):
    """Settings from the simulator's arguments only: no environment, no dripline.toml."""

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: Any, init_settings: Any, *_: Any, **__: Any
    ) -> Any:
        return (init_settings,)


@dataclass
class SimReport:
    seed: int
    digest: str
    violations: list[str]
    virtual_s: float
    wall_s: float
    accepted: int
    conversations: int
    events: int
    trace_tail: list[str] = field(default_factory=list)
    config: SimConfig | None = None

    @property
    def ok(self) -> bool:
        return not self.violations


def settings_for(cfg: SimConfig) -> Settings:
    return _SimSettings(
        database_url="sqlite:///sim-unused.db",  # never opened: the store is in memory
        rate_per_s=cfg.rate_per_s,
        concurrency=cfg.concurrency,
        batch_limit=cfg.batch_limit,
        lease_ttl_s=cfg.lease_ttl_s,
        heartbeat_s=cfg.heartbeat_s,
        unknown_after_s=cfg.unknown_after_s,
        max_attempts=cfg.max_attempts,
        pair_interval_s=cfg.pair_interval_s,
        retry_base_s=0.2,
        retry_cap_s=5.0,
        poll_ceiling_s=2.0,
        shutdown_deadline_s=2.0,
        on_auth_failure="pause",
        auth_probe_s=5.0,
        whatsapp_phone_number_id=NUMBER,
        senders=[{"id": SECOND}],  # at rate_per_s, as NUMBER
        whatsapp_access_token="sim-token",  # noqa: S106 (a simulated credential)
        http_read_timeout_s=cfg.read_timeout_s,
        window_s=cfg.window_s,
        # Covers the time from deciding to the request's arrival (a token's wait and
        # half the latency) and the webhook timestamps' whole seconds.
        window_margin_s=2.0 + 2 * cfg.latency_mean_s,
    )


class _World:
    """Everything one run owns, and the processes' main coroutines."""

    def __init__(self, cfg: SimConfig, loop: VirtualTimeLoop, trace: Trace) -> None:
        self.cfg = cfg
        self.loop = loop
        loop.expected_exceptions = (Killed,)
        self.clock = SimClock(loop)
        self.trace = trace
        self.store = MemoryStore()
        self.flows = sim_flows()
        self.settings = settings_for(cfg)
        seed = cfg.seed
        self.rng = random.Random(f"world-{seed}")
        self.faults = Faults(
            loop,
            random.Random(f"db-{seed}"),
            latency_s=cfg.store_latency_s,
            outages=[(o.start_s, o.start_s + o.duration_s) for o in cfg.outages],
            stalls=_stalls(cfg),
            p_tx_refused=cfg.p_tx_refused,
            refusal_rng=random.Random(f"refusal-{seed}"),
        )
        self.server = SimProcess("server", loop)
        self.workers = [SimProcess(f"worker{i}", loop) for i in range(cfg.workers)]
        self.dispatchers: dict[str, Dispatcher] = {}
        self.processor: InboxProcessor | None = None
        self.channel = WebhookChannel(cfg, random.Random(f"hooks-{seed}"), self.trace, self.deliver)
        self.users = _users(cfg, random.Random(f"users-{seed}"))
        self.api = SimCloudApi(
            cfg, self.clock, random.Random(f"api-{seed}"), self.channel, self.trace, self.users
        )
        self.observer = Observer(at=lambda when: (when - self.clock.epoch).total_seconds())
        self.intake_up: list[tuple[float, float]] = []  # when the server process lived

    # ------------------------------------------------------------ processes
    def start_server(self) -> None:
        tag = self.server.start()
        self.intake_up.append((self.loop.time(), float("inf")))
        view = cast(
            Store,
            StoreView(
                self.store, self.server, self.faults, batch_delay_s=self.cfg.processor_delay_s
            ),
        )
        st = self.settings
        processor = InboxProcessor(
            view,
            self.flows,
            self.clock,
            default_sender=NUMBER,
            senders=(NUMBER, SECOND),
            batch_rows=50,
            max_attempts=st.max_attempts,
            retry_base_s=st.retry_base_s,
            retry_cap_s=st.retry_cap_s,
        )
        self.processor = processor
        self.trace.add(self.loop.time(), f"start {tag}")

        intake = IntakeHeartbeat(view, self.clock, ident=tag)

        async def main() -> None:
            processor.start()
            await intake.run()  # the processor runs in its own task

        self.server.spawn(main(), "main")

    def start_worker(self, index: int) -> None:
        proc = self.workers[index]
        tag = proc.start()
        client = CloudApiClient(
            phone_number_id=NUMBER,
            access_token="sim-token",  # noqa: S106
            base_url="http://graph.sim",
            transport=self.api.transport(proc),
        )
        dispatcher = Dispatcher(
            store=cast(Store, StoreView(self.store, proc, self.faults)),
            client=client,
            flows=self.flows,
            settings=self.settings,
            clock=self.clock,
            worker_id=tag,
            rng=random.Random(f"{tag}-{self.cfg.seed}"),
        )
        self.dispatchers[proc.name] = dispatcher
        self.trace.add(self.loop.time(), f"start {tag}")
        proc.spawn(self._run_worker(dispatcher), "main")

    async def _run_worker(self, dispatcher: Dispatcher) -> None:
        try:
            await dispatcher.run()
        except (Killed, asyncio.CancelledError):
            raise
        except DriplineError as exc:
            self.trace.add(self.loop.time(), f"worker {dispatcher.worker_id} ended: {exc}")

    async def kill(self, proc: SimProcess) -> None:
        if not proc.alive:
            return
        self.trace.add(self.loop.time(), f"kill {proc.tag}")
        if proc is self.server:
            began, _ = self.intake_up[-1]
            self.intake_up[-1] = (began, self.loop.time())
        await proc.kill()

    async def deliver(self, body: str) -> bool:
        """Meta POSTs a webhook: the server stores it in the inbox before answering."""
        server = self.server
        if not server.alive:
            return False
        view = StoreView(self.store, server, self.faults)

        async def receive() -> None:
            await view.insert_inbox([body], self.clock.now())
            if self.processor is not None:
                self.processor.notify()

        task = server.spawn(receive(), "webhook")
        await asyncio.wait([task])
        return not task.cancelled() and task.exception() is None

    # -------------------------------------------------------------- the run
    async def run(self) -> list[str]:
        cfg = self.cfg
        loop = self.loop
        world_tasks = [loop.create_task(self.channel.run(), name="channel")]
        self.start_server()
        for i in range(cfg.workers):
            self.start_worker(i)
        await self._enroll(range(cfg.conversations))
        world_tasks.append(loop.create_task(self._late_enrollments(), name="enroll"))
        world_tasks.append(loop.create_task(self._faults(), name="faults"))
        world_tasks.append(loop.create_task(self._stops(), name="stops"))
        world_tasks.append(loop.create_task(self._sampler(), name="sampler"))
        try:
            await asyncio.sleep(cfg.fault_end_s)
            await asyncio.gather(*world_tasks[1:3])
            await self._restore()
            settled = await self._settle()
        finally:
            await self._stop_all()
            for task in world_tasks:
                task.cancel()
            await asyncio.gather(*world_tasks, return_exceptions=True)
        snap = await self.store.snapshot()
        self.observer.sample(loop.time(), snap.conversations, snap.messages, self.api.accepted)
        violations = check_final(
            cfg,
            self.observer,
            self.api.accepted,
            self.api.requests,
            self.api.pair_refusals,
            _intake_up(self.intake_up, cfg),
            snap.conversations,
            snap.messages,
            snap.inbound,
            {"+" + wa_id_for(p): p for p in self.users},
            snap.inbox,
        )
        if not settled:
            violations.insert(
                0, f"settled: not settled after {cfg.max_time_s:.0f}s of virtual time"
            )
        return violations

    async def _enroll(self, indexes: range) -> None:
        now = self.clock.now()
        phones = sorted(self.users)
        items = []
        for i in indexes:
            phone = phones[i % len(phones)]
            flow = "checkin" if i % 3 else "nudge"
            sender = SECOND if flow == "nudge" else None
            items.append(Enrollment(phone=phone, flow=flow, at=now, sender=sender))
        while True:
            try:
                results = await self.store.enroll(items, now)
                break
            except SuppressedError as exc:
                # The user sent STOP before being enrolled: refused, as it must be.
                self.trace.add(self.loop.time(), f"enroll refused: {exc.phone} opted out")
                items = [i for i in items if i.phone != exc.phone]
        created = sum(r.created for r in results)
        self.trace.add(self.loop.time(), f"enrolled {created} of {len(items)}")

    async def _late_enrollments(self) -> None:
        rng = random.Random(f"late-{self.cfg.seed}")
        times = sorted(
            rng.uniform(0, self.cfg.fault_end_s) for _ in range(self.cfg.late_enrollments)
        )
        base = self.cfg.conversations
        for n, at in enumerate(times):
            await asyncio.sleep(at - self.loop.time())
            await self._enroll(range(base + n, base + n + 1))

    async def _faults(self) -> None:
        events: list[tuple[float, int, str, int]] = []
        for n, crash in enumerate(self.cfg.crashes):
            events.append((crash.at_s, n, "kill", crash.target))
            if crash.restart_after_s is not None:
                events.append((crash.at_s + crash.restart_after_s, n, "start", crash.target))
        for at, _, what, target in sorted(events):
            await asyncio.sleep(max(0.0, at - self.loop.time()))
            proc = self.server if target < 0 else self.workers[target]
            if what == "kill":
                await self.kill(proc)
            elif not proc.alive:
                self._start(target)

    def _start(self, target: int) -> None:
        if target < 0:
            self.start_server()
        else:
            self.start_worker(target)

    async def _stops(self) -> None:
        stops = sorted((u.stop_at, u.phone) for u in self.users.values() if u.stop_at is not None)
        for at, phone in stops:
            await asyncio.sleep(max(0.0, at - self.loop.time()))
            self.api.reply(NUMBER, self.users[phone], "STOP", 0.0)

    async def _sampler(self) -> None:
        while True:
            snap = await self.store.snapshot()
            self.observer.sample(
                self.loop.time(), snap.conversations, snap.messages, self.api.accepted
            )
            self.observer.sample_inbox(self.loop.time(), snap.inbox)
            await asyncio.sleep(SAMPLE_S)

    async def _restore(self) -> None:
        """Faults are over: every process that is down comes back."""
        if not self.server.alive:
            self.start_server()
        for i, proc in enumerate(self.workers):
            if not proc.alive:
                self.start_worker(i)

    async def _settle(self) -> bool:
        while self.loop.time() < self.cfg.max_time_s:
            await asyncio.sleep(SETTLE_CHECK_S)
            snap = await self.store.snapshot()
            if (
                all(c.state in TERMINAL for c in snap.conversations)
                and self.channel.idle
                and all(e.processed_at is not None for e in snap.inbox)
            ):
                return True
        return False

    async def _stop_all(self) -> None:
        for proc in self.workers:
            d = self.dispatchers.get(proc.name)
            if proc.alive and d is not None:
                d.request_stop()
        for proc in self.workers:
            tasks = self.loop.tasks_of(proc.tag)
            if tasks:
                await asyncio.wait(tasks, timeout=30.0)
            await proc.kill()
        if self.processor is not None and self.server.alive:
            await self.processor.stop()
        await self.server.kill()


def _intake_up(server_up: list[tuple[float, float]], cfg: SimConfig) -> list[tuple[float, float]]:
    """When webhooks could be stored, as the intake's own record can know it: the server
    up and the database reachable, with a heartbeat's grace after each outage (the
    record resumes at the next beat)."""
    grace = INTAKE_HEARTBEAT_S + INTAKE_TOLERANCE_S
    holes = [(o.start_s, o.start_s + o.duration_s + grace) for o in cfg.outages]
    return _minus(server_up, holes)


def _minus(
    spans: list[tuple[float, float]], holes: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    """`spans` with `holes` cut out: when the server was up and could store webhooks
    (a database outage stops the intake as surely as a crash)."""
    out = list(spans)
    for h0, h1 in holes:
        cut: list[tuple[float, float]] = []
        for a, b in out:
            if h1 <= a or b <= h0:
                cut.append((a, b))
                continue
            if a < h0:
                cut.append((a, h0))
            if h1 < b:
                cut.append((h1, b))
        out = cut
    return out


def _phone(i: int) -> str:
    """User `i`'s number: US, or one whose WhatsApp ID Meta may report differently
    (a Brazilian mobile in area 31 without its ninth digit, a Mexican one as 521), or a
    Brazilian one in area 11 (ID unchanged)."""
    kind = i % 4
    if kind == 1:
        return f"+55319{88880000 + i:08d}"
    if kind == 2:
        return f"+5255{12340000 + i:08d}"
    if kind == 3:
        return f"+55119{88880000 + i:08d}"
    return f"+1415555{i:04d}"


def _users(cfg: SimConfig, rng: random.Random) -> dict[str, User]:
    users = {}
    for i in range(cfg.phones):
        phone = _phone(i)
        stop_at = rng.uniform(0.0, cfg.fault_end_s) if rng.random() < cfg.p_stop else None
        users[phone] = User(
            phone=phone,
            replies=rng.random() < cfg.p_reply,
            undeliverable=rng.random() < cfg.p_undeliverable,
            stop_at=stop_at,
        )
    return users


def _stalls(cfg: SimConfig) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {}
    for s in cfg.stalls:
        out.setdefault(f"worker{s.worker}", []).append((s.start_s, s.start_s + s.duration_s))
    return out


def run_config(cfg: SimConfig, *, full_trace: bool = False) -> SimReport:
    """Run the world `cfg` describes; never raises for what the system under test does.

    `full_trace` keeps every trace line in the report (for replaying a failure)."""
    started = time.perf_counter()
    holder: dict[str, Any] = {}

    async def main(loop: VirtualTimeLoop) -> list[str]:
        world = _World(cfg, loop, Trace(keep=None) if full_trace else Trace())
        holder["world"] = world
        return await world.run()

    with structlog.testing.capture_logs():
        try:
            violations = run_virtual(main, max_time_s=cfg.max_time_s + 600.0)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # a crash, a deadlock, a stray cancel: all findings
            violations = [f"run: {type(exc).__name__}: {exc}"]
    world = holder.get("world")
    trace = world.trace if world else Trace()
    return SimReport(
        seed=cfg.seed,
        digest=trace.digest,
        violations=violations,
        virtual_s=world.loop.time() if world else 0.0,
        wall_s=time.perf_counter() - started,
        accepted=len(world.api.accepted) if world else 0,
        conversations=cfg.conversations + cfg.late_enrollments,
        events=trace.events,
        trace_tail=trace.tail(None if full_trace else 60) if violations or full_trace else [],
        config=cfg,
    )


def run_seed(seed: int, **overrides: Any) -> SimReport:
    cfg = draw(seed)
    if overrides:
        cfg = cfg.replace(**overrides)
    return run_config(cfg)
