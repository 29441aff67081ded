"""dripline on an injected clock against the fake: a flow that takes days, in seconds.

The server (API, webhook intake, inbox) and one-pass dispatchers run on a FakeClock the
caller moves from one due time to the next (`ClockedWorld.advance`); the fake Cloud API
runs in real time and delivers its signed webhooks to the server over loopback HTTP.
Nothing waits through a flow's `after` or `reply_timeout`: the clock jumps there. The
demo's answers phase (`dripline.demo_answers`) and the e2e tests of the shipped flows
run on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from dripline.clock import FakeClock
from dripline.dispatcher.engine import Dispatcher
from dripline.fake import FakeConfig, RunningFake, running_fake
from dripline.flows import FlowSet, load_flows
from dripline.server.app import create_app
from dripline.server.testing import running_server
from dripline.settings import Settings, load_settings
from dripline.store import Store
from dripline.whatsapp import CloudApiClient

__all__ = [
    "ClockedWorld",
    "clocked_settings",
    "clocked_world",
    "midday_zone",
    "send_due",
    "settle",
]

PHONE_NUMBER_ID = "100000000000001"
ACCESS_TOKEN = "clocked-token"  # noqa: S105 - the in-process fake's credential, not a secret


def midday_zone(now: datetime) -> str:
    """A fixed-offset zone where `now` is about 12:00, so a flow with quiet hours
    (21:00-08:00 in the shipped one) starts sending at once."""
    offset = (12 - now.hour + 12) % 24 - 12  # hours east of UTC, -12..11
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"  # POSIX signs are inverted


def clocked_settings(
    base_url: str,
    *,
    flows_dir: Path,
    secret: str,
    api_token: str,
    access_token: str = ACCESS_TOKEN,
    phone_number_id: str = PHONE_NUMBER_ID,
    heartbeat_s: float = 0.2,
) -> Settings:
    """Settings for a fast clocked run of `flows_dir`, sending to `base_url` (the fake):
    no rate limit to wait for, short heartbeats and polls, replies signed with `secret`.
    A send starts only within 2.5 heartbeats of the last (`dispatcher.share`): on a
    loaded machine a longer `heartbeat_s` leaves fewer sends for the next pass."""
    return load_settings(
        database_url="sqlite:///unused.db",
        flows_dir=flows_dir,
        rate_per_s=1_000,
        concurrency=200,
        pair_interval_s=0,
        unknown_after_s=1,
        heartbeat_s=heartbeat_s,
        poll_ceiling_s=0.2,
        whatsapp_base_url=base_url,
        whatsapp_phone_number_id=phone_number_id,
        whatsapp_access_token=access_token,
        whatsapp_app_secret=secret,
        api_token=api_token,
    )


async def send_due(
    store: Store, client: CloudApiClient, flows: FlowSet, settings: Settings, clock: FakeClock
) -> None:
    """One dispatcher pass over what is due at the clock's time."""
    d = Dispatcher(store=store, client=client, flows=flows, settings=settings, clock=clock)
    await d.run(once=True)


async def settle(fake: RunningFake, app: Any, timeout_s: float = 30.0) -> None:
    """Wait until the fake delivered every webhook and the inbox applied it."""
    async with asyncio.timeout(timeout_s):
        # The sender keeps a count, not an event: poll it. `pending` counts a webhook
        # until dripline answered its POST, and dripline answers once the body is
        # committed to the inbox table: at zero, draining the inbox applies them all.
        while fake.webhooks.pending:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        await app.state.processor.drain()


@dataclass
class ClockedWorld:
    """dripline's server on the clock, the fake sending it webhooks, and clients."""

    app: Any
    base: str  # the server's URL
    fake: RunningFake
    http: aiohttp.ClientSession  # to the server, with the API token
    client: CloudApiClient  # to the fake, as the dispatcher's
    store: Store
    settings: Settings  # the dispatcher's, sending to the fake
    clock: FakeClock
    flows: FlowSet

    async def send_due(self) -> None:
        await send_due(self.store, self.client, self.flows, self.settings, self.clock)

    async def settle(self) -> None:
        await settle(self.fake, self.app)

    async def advance(self) -> bool:
        """Move the clock to the next due time (never back); False when nothing is due."""
        nxt = await self.store.next_due_at(self.clock.now() - timedelta(days=3650))
        if nxt is None:
            return False
        self.clock.set(max(nxt, self.clock.now()))
        return True


@asynccontextmanager
async def clocked_world(
    url: str,
    clock: FakeClock,
    config: FakeConfig,
    *,
    flows_dir: Path,
    api_token: str,
    heartbeat_s: float = 0.2,
) -> AsyncIterator[ClockedWorld]:
    """The server on `url`'s database and `clock`, and the fake (`config`, its webhooks
    pointed at the server), for as long as the block runs. The server checks webhooks
    against the fake's `app_secret`; the dispatcher sends with its `access_token`."""
    if not config.app_secret:
        raise ValueError("the fake needs an app_secret: dripline refuses unsigned webhooks")

    def settings_for(base_url: str) -> Settings:
        return clocked_settings(
            base_url,
            flows_dir=flows_dir,
            secret=config.app_secret,
            api_token=api_token,
            access_token=config.access_token,
            heartbeat_s=heartbeat_s,
        )

    app = create_app(
        settings_for("http://unused").model_copy(update={"database_url": url}), clock=clock
    )
    async with running_server(app) as base:
        config.webhook_url = f"{base}/webhook"
        auth = {"Authorization": f"Bearer {api_token}"}
        settings = settings_for("http://unused")
        async with (
            running_fake(config) as fake,
            aiohttp.ClientSession(headers=auth) as http,
            CloudApiClient(
                base_url=fake.base_url,
                access_token=config.access_token,
                phone_number_id=settings.whatsapp_phone_number_id,
            ) as client,
        ):
            yield ClockedWorld(
                app,
                base,
                fake,
                http,
                client,
                app.state.store,
                settings_for(fake.base_url),
                clock,
                load_flows(flows_dir),
            )
