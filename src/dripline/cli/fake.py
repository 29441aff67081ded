"""`dripline fake-whatsapp`: serve the local Cloud API stand-in."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Annotated

import typer

from dripline.cli.common import fail, handle_errors, settings_from
from dripline.fake import FakeConfig, running_fake
from dripline.settings import Settings


def _fraction(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise fail(f"--{name} must be between 0 and 1, got {value}")
    return value


@handle_errors
def fake_whatsapp(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0 picks a free one).")] = 8089,
    rate: Annotated[
        float, typer.Option(help="Messages per second per phone number id (0: no limit).")
    ] = 80.0,
    burst: Annotated[
        float | None, typer.Option(help="Throughput bucket size (default: one second).")
    ] = None,
    latency_ms: Annotated[float, typer.Option(help="Mean answer latency in ms.")] = 0.0,
    latency_p99_ms: Annotated[
        float | None, typer.Option(help="p99 latency in ms; makes latency lognormal.")
    ] = None,
    access_token: Annotated[
        str | None,
        typer.Option(help="Bearer token to accept (default: DRIPLINE_WHATSAPP_ACCESS_TOKEN)."),
    ] = None,
    pair_interval_s: Annotated[
        float, typer.Option(help="Pair limit: seconds per message to one user (0: off).")
    ] = 6.0,
    pair_burst: Annotated[int, typer.Option(help="Pair limit burst.")] = 45,
    enforce_window: Annotated[
        bool, typer.Option(help="Refuse free-form text outside the 24 h window (131047).")
    ] = False,
    template: Annotated[
        list[str] | None,
        typer.Option(help="Known template as NAME or NAME:PARAMS (repeat); default: any."),
    ] = None,
    webhook_url: Annotated[
        str | None, typer.Option(help="Where to POST status and reply webhooks.")
    ] = None,
    app_secret: Annotated[
        str | None,
        typer.Option(help="Webhook signing secret (default: DRIPLINE_WHATSAPP_APP_SECRET)."),
    ] = None,
    read_fraction: Annotated[float, typer.Option(help="Fraction of messages read.")] = 0.5,
    failed_fraction: Annotated[float, typer.Option(help="Fraction failing (131026).")] = 0.0,
    reply_fraction: Annotated[float, typer.Option(help="Fraction of users who reply.")] = 0.0,
    stop_fraction: Annotated[float, typer.Option(help="Fraction of users replying STOP.")] = 0.0,
    reply_text: Annotated[str, typer.Option(help="What replying users write.")] = "yes",
    reply_delay_s: Annotated[float, typer.Option(help="Seconds before a reply.")] = 1.0,
    duplicate_fraction: Annotated[
        float, typer.Option(help="Fraction of webhook updates sent twice.")
    ] = 0.0,
    out_of_order_fraction: Annotated[
        float, typer.Option(help="Fraction of webhook updates held back.")
    ] = 0.0,
    webhook_batch_max: Annotated[int, typer.Option(help="Updates per webhook POST.")] = 100,
    fail_500: Annotated[float, typer.Option(help="Fraction of HTTP 500 with a body.")] = 0.0,
    fail_500_bare: Annotated[float, typer.Option(help="Fraction of bare HTTP 500.")] = 0.0,
    hang: Annotated[float, typer.Option(help="Fraction of requests never answered.")] = 0.0,
    hang_s: Annotated[float, typer.Option(help="How long a hung request hangs.")] = 60.0,
    reset: Annotated[float, typer.Option(help="Fraction of connection resets.")] = 0.0,
    lost_response: Annotated[
        float, typer.Option(help="Fraction accepted, then reset before the answer.")
    ] = 0.0,
    outage_start_s: Annotated[
        float | None, typer.Option(help="Outage starts this many seconds after start.")
    ] = None,
    outage_duration_s: Annotated[float, typer.Option(help="Outage length in seconds.")] = 0.0,
    outage_mode: Annotated[str, typer.Option(help="Outage answer: 503 or reset.")] = "503",
    token_expires_after: Annotated[
        int | None, typer.Option(help="Answer 190 after this many accepted messages.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed for repeatable runs.")] = None,
) -> None:
    """Serve a local WhatsApp Cloud API with Meta's limits, faults and webhooks."""
    settings = settings_from()
    token = access_token or settings.whatsapp_access_token.get_secret_value() or "test-token"
    secret = app_secret if app_secret is not None else settings.whatsapp_app_secret
    secret_text = secret if isinstance(secret, str) else secret.get_secret_value()
    if outage_mode not in ("503", "reset"):
        raise fail("--outage-mode must be 503 or reset")
    templates: dict[str, int] | None = None
    if template:
        templates = {}
        for item in template:
            name, _, params = item.partition(":")
            templates[name] = int(params) if params.isdigit() else 0
    config = FakeConfig(
        access_token=token,
        rate_per_s=rate,
        burst=burst,
        pair_interval_s=pair_interval_s,
        pair_burst=pair_burst,
        enforce_window=enforce_window,
        templates=templates,
        latency_ms=latency_ms,
        latency_p99_ms=latency_p99_ms,
        fail_500_fraction=_fraction("fail-500", fail_500),
        fail_500_bare_fraction=_fraction("fail-500-bare", fail_500_bare),
        hang_fraction=_fraction("hang", hang),
        hang_s=hang_s,
        reset_fraction=_fraction("reset", reset),
        lost_response_fraction=_fraction("lost-response", lost_response),
        outage_start_s=outage_start_s,
        outage_duration_s=outage_duration_s,
        outage_mode=outage_mode,
        token_expires_after=token_expires_after,
        webhook_url=webhook_url,
        app_secret=secret_text,
        read_fraction=_fraction("read-fraction", read_fraction),
        failed_fraction=_fraction("failed-fraction", failed_fraction),
        reply_fraction=_fraction("reply-fraction", reply_fraction),
        stop_fraction=_fraction("stop-fraction", stop_fraction),
        reply_text=reply_text,
        reply_delay_s=reply_delay_s,
        duplicate_fraction=_fraction("duplicate-fraction", duplicate_fraction),
        out_of_order_fraction=_fraction("out-of-order-fraction", out_of_order_fraction),
        webhook_batch_max=webhook_batch_max,
        seed=seed,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config, host, port, token_hint=_token_hint(access_token, settings)))


def _token_hint(flag: str | None, settings: Settings) -> str:
    # Never echo a real token: only the built-in fake one is printed.
    if flag is not None:
        return "<the --access-token value>"
    if settings.whatsapp_access_token.get_secret_value():
        return "<unchanged: the fake accepts your current token>"
    return "test-token"


async def _serve(config: FakeConfig, host: str, port: int, *, token_hint: str) -> None:
    async with running_fake(config, host=host, port=port) as fake:
        limit = f"{config.rate_per_s:g}/s per number" if config.rate_per_s > 0 else "no limit"
        typer.echo(f"fake WhatsApp Cloud API serving on {fake.base_url}")
        typer.echo(
            f"  POST {fake.base_url}/<version>/<phone_number_id>/messages  "
            f"(throughput {limit}, latency {config.latency_ms:g} ms)"
        )
        typer.echo(f"  GET  {fake.base_url}/_fake/stats | /_fake/messages   POST /_fake/reset")
        if config.webhook_url:
            typer.echo(f"  webhooks -> {config.webhook_url}")
        typer.echo(
            "point dripline at it:\n"
            f"  export DRIPLINE_WHATSAPP_BASE_URL={fake.base_url}\n"
            f"  export DRIPLINE_WHATSAPP_ACCESS_TOKEN={token_hint}"
        )
        typer.echo("ready; Ctrl-C or SIGTERM stops it")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def register(app: typer.Typer) -> None:
    app.command("fake-whatsapp")(fake_whatsapp)
