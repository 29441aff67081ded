"""`dripline demo`'s answers phase: simulated users through the shipped free-trial flow.

The flow waits about a day between questions and keeps quiet at night, so dripline runs
here on a moved clock (`dripline.clocked`): its server (webhook intake, inbox, API) and
a one-pass dispatcher see a FakeClock that jumps to the next due time whenever nothing
else happens; time is compressed, nothing else is simulated. The fake Cloud API accepts
the questions over loopback HTTP, and each user's replies (`dripline.demo_users`) go
through its `/_fake/inbound` endpoint, which delivers them to dripline's `/webhook` as
signed webhooks, a minute to two hours (on the clock) after the message they answer. The inbox
stores the typed answers and moves each conversation along its branch. The results are
`dripline results free-trial`'s, read from the database at the end.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from dripline.clock import FakeClock, utcnow
from dripline.clocked import ClockedWorld, clocked_world, midday_zone
from dripline.demo_users import SimulatedUser
from dripline.errors import ConfigError
from dripline.fake import FakeConfig
from dripline.flows import load_flows
from dripline.results import FlowResults, flow_results, to_json
from dripline.store import Enrollment

__all__ = [
    "ANSWERS_FLOW",
    "AnswersOptions",
    "AnswersReport",
    "answers_phone",
    "is_answers_phone",
    "run_answers",
]

ANSWERS_FLOW = "free-trial"
PHONE_BASE = 5_900_000  # +1 415 59x xxxx, apart from the throughput phase's 55x
MAX_USERS = 99_999
# How long after a message its user answers (minutes, on the clock).
REPLY_AFTER_MIN = (1, 2, 4, 7, 12, 20, 35, 60, 120)
MAX_ROUNDS = 2_000  # a stuck flow ends the phase instead of looping


@dataclass(frozen=True)
class AnswersOptions:
    users: int = 300
    seed: int = 15
    flow: str = ANSWERS_FLOW


@dataclass
class AnswersReport:
    """What happened in the answers phase, and the flow's results from the database."""

    flow: str
    users: int
    started_at: datetime  # on the clock: the wall time the phase started
    ended_at: datetime  # on the clock, once nothing more was due
    elapsed_s: float  # wall time
    rounds: int
    messages: int  # accepted by the fake
    replies_by_kind: dict[str, int]
    results: FlowResults
    people: list[SimulatedUser]

    @property
    def simulated_s(self) -> float:
        return (self.ended_at - self.started_at).total_seconds()

    def as_dict(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "users": self.users,
            "time_compressed": True,
            "simulated_start": self.started_at.isoformat(),
            "simulated_end": self.ended_at.isoformat(),
            "simulated_days": round(self.simulated_s / 86_400, 2),
            "elapsed_s": round(self.elapsed_s, 1),
            "rounds": self.rounds,
            "messages": self.messages,
            "replies_by_kind": self.replies_by_kind,
            "results": to_json(self.results),
        }


def answers_phone(n: int) -> str:
    return f"+1415{PHONE_BASE + n:07d}"


def is_answers_phone(phone: str) -> bool:
    """A number the answers phase enrolls (how the demo tells its data from anyone's)."""
    digits = phone.removeprefix("+1415")
    return (
        phone.startswith("+1415")
        and digits.isdigit()
        and PHONE_BASE <= int(digits) <= PHONE_BASE + MAX_USERS
    )


async def _replies(
    w: ClockedWorld, users: dict[str, SimulatedUser], new: list[Any]
) -> list[dict[str, Any]]:
    """The users' replies to the messages the fake just accepted."""
    if not new:
        return []
    rows = {m.id: m for m in (await w.store.snapshot()).messages}
    bodies = []
    for m in new:
        row = rows.get(int(m.callback_data or 0))
        user = users.get("+" + m.to.lstrip("+"))
        if row is None or user is None:
            continue
        body = user.reply(row.step, row.purpose, m)
        if body is not None:
            bodies.append(body)
    return bodies


async def _post_all(http: aiohttp.ClientSession, url: str, bodies: list[dict[str, Any]]) -> None:
    """The users write, a few at a time (each reply is its own user's; order between
    users does not matter)."""

    async def post(body: dict[str, Any]) -> None:
        async with http.post(url, json=body) as resp:
            resp.raise_for_status()

    for i in range(0, len(bodies), 20):
        await asyncio.gather(*(post(b) for b in bodies[i : i + 20]))


async def run_answers(
    database_url: str,
    flows_dir: Path,
    opts: AnswersOptions,
    on_progress: Callable[[datetime, int, int], None] | None = None,
) -> AnswersReport:
    """Put `opts.users` simulated users through `opts.flow` on `database_url`, and read
    the flow's results. `on_progress(clock time, messages, replies)` after each round."""
    if not 0 <= opts.users <= MAX_USERS:
        raise ConfigError(f"the answers phase takes 0 to {MAX_USERS:,} users, not {opts.users}")
    flow = load_flows(flows_dir).get(opts.flow)  # FlowError before any I/O
    questions = flow.questions()
    rng = random.Random(opts.seed)
    users = {
        answers_phone(n): SimulatedUser.scripted(answers_phone(n), questions, rng)
        for n in range(opts.users)
    }
    start = utcnow().replace(microsecond=0)
    clock = FakeClock(start)
    config = FakeConfig(
        access_token=secrets.token_urlsafe(16),
        app_secret=secrets.token_urlsafe(24),
        rate_per_s=0,
        pair_interval_s=0,
        sent_delay_s=0.01,
        delivered_delay_s=0.02,
        read_fraction=0.8,
        read_delay_s=0.03,
        seed=opts.seed,
    )
    kinds: Counter[str] = Counter()
    started = time.monotonic()
    rounds = 0
    async with (
        clocked_world(
            database_url,
            clock,
            config,
            flows_dir=flows_dir,
            api_token=secrets.token_urlsafe(24),
            # The demo shares 2 cores with its users and the fake: time to start a
            # round's sends in one pass.
            heartbeat_s=1.0,
        ) as w,
        aiohttp.ClientSession() as users_http,
    ):
        zone = midday_zone(start)  # quiet hours (21:00-08:00) start after the first day
        items = [
            Enrollment(phone=p, flow=opts.flow, name=f"user {i}", timezone=zone)
            for i, p in enumerate(users)
        ]
        await w.store.enroll(items, clock.now())
        seen = 0
        while rounds < MAX_ROUNDS:
            rounds += 1
            await w.send_due()
            await w.settle()
            new = w.fake.state.messages[seen:]
            seen += len(new)
            bodies = await _replies(w, users, new)
            if on_progress is not None:
                on_progress(clock.now(), seen, sum(kinds.values()))
            if bodies:
                now = clock.now()
                latest = now
                for body in bodies:
                    at = now + timedelta(minutes=rng.choice(REPLY_AFTER_MIN))
                    latest = max(latest, at)
                    body["timestamp"] = int(at.timestamp())
                # Every reply of the round has happened by the clock's new time.
                clock.set(latest)
                for body in bodies:
                    kinds[body["kind"]] += 1
                await _post_all(users_http, f"{w.fake.base_url}/_fake/inbound", bodies)
                await w.settle()
                continue
            if not await w.advance():
                break
        ended = clock.now()
        results = await flow_results(w.store, flow)
        messages = len(w.fake.state.messages)
    return AnswersReport(
        flow=opts.flow,
        users=len(users),
        started_at=start,
        ended_at=ended,
        elapsed_s=time.monotonic() - started,
        rounds=rounds,
        messages=messages,
        replies_by_kind=dict(kinds),
        results=results,
        people=list(users.values()),
    )
