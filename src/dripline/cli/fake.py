"""`dripline fake-whatsapp`: serve the local Cloud API stand-in."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Annotated, TypeVar

import typer

from dripline.cli.common import fail, handle_errors, settings_from
from dripline.fake import FakeConfig, running_fake
from dripline.fake.rules import THROUGHPUT_LEVELS, THROUGHPUT_RATES, BrazilRule, WindowMode
from dripline.fake.templates import TemplateRegistry, parse_template_spec
from dripline.settings import Settings

_C = TypeVar("_C", bound=str)
_WINDOW_MODES: tuple[WindowMode, ...] = ("async", "sync", "off")
_BRAZIL_RULES: tuple[BrazilRule, ...] = ("regional", "all", "none")


def _fraction(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise fail(f"--{name} must be between 0 and 1, got {value}")
    return value


@handle_errors
def fake_whatsapp(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0 picks a free one).")] = 8089,
    rate: Annotated[
        float | None,
        typer.Option(
            help="Messages per second per phone number id (0: no limit; default: the "
            "--throughput-level's rate, 80)."
        ),
    ] = None,
    throughput_level: Annotated[
        str | None,
        typer.Option(help="Level GET /{id}?fields=throughput reports: STANDARD, HIGH."),
    ] = None,
    number_rate: Annotated[
        list[str] | None,
        typer.Option(
            "--number-rate",
            help="ID=RATE: phone number id ID has its own limit, RATE messages per second "
            "(repeatable; other numbers get --rate).",
        ),
    ] = None,
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
    window: Annotated[
        str,
        typer.Option(
            help="24 h window for free-form messages: async (accepted, then failed 131047 "
            "by webhook), sync (refused with 131047), off."
        ),
    ] = "async",
    no_window: Annotated[
        bool, typer.Option("--no-window", help="Same as --window off (raw benchmarks).")
    ] = False,
    template: Annotated[
        list[str] | None,
        typer.Option(
            help="Approved template NAME[@LANG][:BODY[:HEADER[:BUTTONS]]] (repeat); "
            "replaces the default registry (the shipped flows' templates)."
        ),
    ] = None,
    any_template: Annotated[
        bool, typer.Option("--any-template", help="Accept every template name and language.")
    ] = False,
    brazil_ninth_digit: Annotated[
        str,
        typer.Option(
            help="Drop a Brazilian mobile's ninth digit in its WhatsApp ID: "
            "regional (area codes 31+), all, none."
        ),
    ] = "regional",
    undeliverable_fraction: Annotated[
        float, typer.Option(help="Fraction of numbers that fail with 131026 by webhook.")
    ] = 0.0,
    webhook_url: Annotated[
        str | None, typer.Option(help="Where to POST status and reply webhooks.")
    ] = None,
    app_secret: Annotated[
        str | None,
        typer.Option(help="Webhook signing secret (default: DRIPLINE_WHATSAPP_APP_SECRET)."),
    ] = None,
    read_fraction: Annotated[float, typer.Option(help="Fraction of messages read.")] = 0.5,
    reply_fraction: Annotated[float, typer.Option(help="Fraction of users who reply.")] = 0.0,
    reply_context_fraction: Annotated[
        float, typer.Option(help="Fraction of replies quoting our message (context).")
    ] = 0.5,
    value_error_fraction: Annotated[
        float, typer.Option(help="Fraction of sends followed by a value.errors webhook.")
    ] = 0.0,
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
    webhook_max_attempts: Annotated[
        int,
        typer.Option(
            min=1,
            help="Attempts per webhook update before giving up (backoff 0.5 s doubling "
            "to 30 s; Meta retries for up to 7 days).",
        ),
    ] = 8,
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
    config = FakeConfig(
        access_token=token,
        rate_per_s=_rate(rate, throughput_level),
        number_rates=_number_rates(number_rate or []),
        throughput_level=throughput_level.upper() if throughput_level else None,
        burst=burst,
        pair_interval_s=pair_interval_s,
        pair_burst=pair_burst,
        window="off" if no_window else _choice("--window", window, _WINDOW_MODES),
        templates=_templates(template, any_template),
        brazil_ninth_digit=_choice("--brazil-ninth-digit", brazil_ninth_digit, _BRAZIL_RULES),
        undeliverable_fraction=_fraction("undeliverable-fraction", undeliverable_fraction),
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
        reply_fraction=_fraction("reply-fraction", reply_fraction),
        reply_context_fraction=_fraction("reply-context-fraction", reply_context_fraction),
        value_error_fraction=_fraction("value-error-fraction", value_error_fraction),
        stop_fraction=_fraction("stop-fraction", stop_fraction),
        reply_text=reply_text,
        reply_delay_s=reply_delay_s,
        duplicate_fraction=_fraction("duplicate-fraction", duplicate_fraction),
        out_of_order_fraction=_fraction("out-of-order-fraction", out_of_order_fraction),
        webhook_batch_max=webhook_batch_max,
        webhook_max_attempts=webhook_max_attempts,
        seed=seed,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config, host, port, token_hint=_token_hint(access_token, settings)))


def _number_rates(values: list[str]) -> dict[str, float]:
    """`--number-rate ID=RATE` options as {id: rate}."""
    out: dict[str, float] = {}
    for value in values:
        number, sep, rate = value.partition("=")
        try:
            parsed = float(rate)
        except ValueError:
            parsed = -1.0
        if not sep or not number.strip().isdigit() or parsed < 0:
            raise fail(f"--number-rate wants ID=RATE (digits = messages per second), got {value!r}")
        out[number.strip()] = parsed
    return out


def _rate(rate: float | None, level: str | None) -> float:
    if level is not None and level.upper() not in THROUGHPUT_LEVELS:
        raise fail(f"--throughput-level must be one of {', '.join(THROUGHPUT_LEVELS)}")
    if rate is not None:
        return rate
    return THROUGHPUT_RATES.get((level or "STANDARD").upper(), THROUGHPUT_RATES["STANDARD"])


def _choice(flag: str, value: str, choices: tuple[_C, ...]) -> _C:
    for choice in choices:
        if value == choice:
            return choice
    raise fail(f"{flag} must be one of {', '.join(choices)}, got {value!r}")


def _templates(specs: list[str] | None, any_template: bool) -> TemplateRegistry | None:
    if any_template:
        return None
    if not specs:
        return TemplateRegistry.default()
    try:
        return TemplateRegistry(parse_template_spec(spec) for spec in specs)
    except ValueError as exc:
        raise fail(f"--template: {exc}") from None


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
        templates = "any" if config.templates is None else str(len(config.templates))
        typer.echo(f"fake WhatsApp Cloud API serving on {fake.base_url}")
        typer.echo(
            f"  POST {fake.base_url}/<version>/<phone_number_id>/messages  "
            f"(throughput {limit}, latency {config.latency_ms:g} ms)"
        )
        typer.echo(
            f"  24 h window: {config.window}; templates: {templates}; "
            f"throughput level: {config.reported_throughput_level}"
        )
        typer.echo(
            f"  GET  {fake.base_url}/_fake/stats | /_fake/messages   "
            "POST /_fake/reset | /_fake/inbound | /_fake/value-error"
        )
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
