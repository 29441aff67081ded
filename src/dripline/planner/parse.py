"""Parsing the planner's command-line values: durations, rates, latency models, grids
and arrival profiles. Every error is an `InputError` naming the option and the forms it
accepts, so the CLI prints one line and exits 2."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from dripline.errors import InputError
from dripline.planner.model import Arrivals, LatencyModel

__all__ = [
    "DbLatency",
    "parse_duration",
    "parse_int_list",
    "parse_latency",
    "parse_profile",
    "parse_rate",
]

_UNITS_S = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86_400.0,
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|sec|s|min|m|h|d)?\s*$", re.IGNORECASE)
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|m|min|h|d))?\s*$", re.IGNORECASE)
_PROFILE = re.compile(
    r"^\s*(?P<rate>\d+(?:\.\d+)?\s*/\s*(?:s|sec|m|min|h|d))"
    r"(?:\s+for\s+(?P<for>\S+))?"
    r"(?:\s+spike\s+(?P<factor>\d+(?:\.\d+)?)x(?:\s+(?P<spike>\S+))?(?:\s+at\s+(?P<at>\S+))?)?\s*$",
    re.IGNORECASE,
)
_LATENCY_FORMS = "150ms, 2.5s, lognormal:150ms,p99=600ms or db:sqlite:///./dripline.db"
_PROFILE_FORMS = (
    'typical-day, spike-day, "5000/h", "5000/h for 2h", "5000/h spike 10x 10m [at 30m]"'
)


@dataclass(frozen=True, slots=True)
class DbLatency:
    """Latency to be measured from a database's `messages.latency_ms` (read by the CLI)."""

    url: str


def parse_duration(text: str, option: str) -> float:
    """`150ms`, `2.5s`, `5m`, `1h`, `1d`, or a bare number of seconds -> seconds (> 0)."""
    m = _DURATION.match(text)
    if not m:
        raise InputError(f"{text!r} is not a duration; use e.g. 150ms, 2.5s, 5m, 1h", where=option)
    value = float(m.group(1)) * _UNITS_S[(m.group(2) or "s").lower()]
    if not value > 0:
        raise InputError(f"{text!r} must be more than zero", where=option)
    return value


def parse_rate(text: str, option: str) -> float:
    """`80`, `80/s`, `5000/h`, `120000/d` -> messages per second (> 0)."""
    m = _RATE.match(text)
    if not m:
        raise InputError(
            f"{text!r} is not a rate; use messages per second (80) or N/s, N/m, N/h, N/d",
            where=option,
        )
    value = float(m.group(1)) / _UNITS_S[(m.group(2) or "s").lower()]
    if not value > 0:
        raise InputError(f"{text!r} must be more than zero", where=option)
    return value


def parse_int_list(text: str, option: str, *, minimum: int = 1) -> tuple[int, ...]:
    """`20,30,50` -> (20, 30, 50); each at least `minimum`."""
    out = []
    for part in text.split(","):
        part = part.strip().replace("_", "")
        if not part.isdigit() or int(part) < minimum:
            raise InputError(
                f"{part!r} in {text!r} is not a whole number >= {minimum}; "
                "use a comma-separated list like 20,30,50",
                where=option,
            )
        out.append(int(part))
    return tuple(dict.fromkeys(out))


def parse_latency(text: str, option: str = "--latency") -> LatencyModel | DbLatency:
    """A latency model: a duration (constant), `lognormal:<mean>,p99=<p99>`, or
    `db:<database url>` (samples from `messages.latency_ms`, read by the caller)."""
    raw = text.strip()
    if raw.lower().startswith("db:"):
        url = raw[3:].strip()
        if not url:
            raise InputError(f"db: needs a database URL; accepted: {_LATENCY_FORMS}", where=option)
        return DbLatency(url)
    if raw.lower().startswith("lognormal:"):
        parts = [p.strip() for p in raw[len("lognormal:") :].split(",")]
        if len(parts) != 2 or not parts[1].lower().startswith("p99="):
            raise InputError(f"{text!r}: accepted forms are {_LATENCY_FORMS}", where=option)
        mean = parse_duration(parts[0], option)
        p99 = parse_duration(parts[1][4:], option)
        try:
            return LatencyModel.lognormal(mean, p99)
        except ValueError as exc:
            raise InputError(f"{text!r}: {exc}", where=option) from None
    if not _DURATION.match(raw):
        raise InputError(f"{text!r} is not a latency; accepted: {_LATENCY_FORMS}", where=option)
    return LatencyModel.constant(parse_duration(raw, option))


def parse_profile(text: str, option: str = "--profile") -> Arrivals:
    """An arrival profile: `typical-day`, `spike-day`, or `<rate> [for <duration>]
    [spike <F>x [<duration>] [at <time>]]`, e.g. `5000/h spike 10x 10m`."""
    raw = text.strip()
    if raw.lower() in ("typical-day", "spike-day"):
        if raw.lower() == "typical-day":
            return Arrivals("typical-day", duration_s=86_400.0, label="typical-day")
        return Arrivals("spike-day", duration_s=86_400.0, label="spike-day")
    m = _PROFILE.match(raw)
    if not m:
        raise InputError(f"{text!r} is not a profile; accepted: {_PROFILE_FORMS}", where=option)
    rate = parse_rate(m.group("rate"), option)
    duration = parse_duration(m.group("for"), option) if m.group("for") else 3600.0
    factor = float(m.group("factor")) if m.group("factor") else 1.0
    spike_s = 0.0
    at_s: float | None = None
    if m.group("factor"):
        if not factor > 0:
            raise InputError(f"{text!r}: the spike factor must be more than 0", where=option)
        spike_s = parse_duration(m.group("spike"), option) if m.group("spike") else 600.0
        if m.group("at"):
            at_s = parse_duration(m.group("at"), option)
        if spike_s >= duration:
            raise InputError(f"{text!r}: the spike must be shorter than the profile", where=option)
    if rate * max(factor, 1.0) * duration > 5_000_000:
        raise InputError(
            f"{text!r} makes {math.ceil(rate * duration):,}+ messages; "
            "keep a profile under 5 million",
            where=option,
        )
    return Arrivals(
        "rate",
        rate_per_s=rate,
        duration_s=duration,
        spike_factor=factor,
        spike_s=spike_s,
        spike_at_s=at_s,
        label=raw,
    )
