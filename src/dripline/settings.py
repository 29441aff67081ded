"""One typed settings object, built once and passed in.

Precedence, highest first: CLI flags (passed as keyword arguments), `DRIPLINE_*`
environment variables, `dripline.toml` (or the file named by `DRIPLINE_CONFIG`), presets,
defaults. `https_proxy` and `no_proxy` fall back to the standard `HTTPS_PROXY` and
`NO_PROXY` variables (lower-case spellings first) when nothing above sets them.
"""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from dripline.errors import ConfigError
from dripline.senders import SenderNumber, parse_senders

# A send starts only if its lease outlives the read timeout by this much (see send_one).
SEND_LEASE_MARGIN_S = 1.0

__all__ = [
    "PRESETS",
    "SEND_LEASE_MARGIN_S",
    "Delivery",
    "HttpClient",
    "Policy",
    "Preset",
    "Settings",
    "load_settings",
]

# Which HTTP stack sends: "builtin" is `whatsapp.http1.Http1Transport`, about 3x less CPU
# per request than "aiohttp" (kept as a second, independent implementation).
HttpClient = Literal["builtin", "aiohttp"]


class Policy(StrEnum):
    STATIC = "static"
    TIERS = "tiers"
    ADAPTIVE = "adaptive"
    SEED_CRON = "seed-cron"


class Preset(StrEnum):
    CONSERVATIVE = "conservative"
    MODERATE = "moderate"
    HIGH_VOLUME = "high-volume"
    TESTING = "testing"


class Delivery(StrEnum):
    AT_MOST_ONCE = "at-most-once"
    AT_LEAST_ONCE = "at-least-once"


# The tuning guide's "Recommendations by use case", as (batch_limit, concurrency).
PRESETS: dict[Preset, dict[str, int]] = {
    Preset.CONSERVATIVE: {"batch_limit": 30, "concurrency": 5},
    Preset.MODERATE: {"batch_limit": 40, "concurrency": 7},
    Preset.HIGH_VOLUME: {"batch_limit": 50, "concurrency": 10},
    Preset.TESTING: {"batch_limit": 20, "concurrency": 3},
}

SECRET_FIELDS = (
    "whatsapp_access_token",
    "whatsapp_app_secret",
    "whatsapp_verify_token",
    "api_token",
)


class Settings(BaseSettings):
    """Every knob dripline has, with units in the names."""

    model_config = SettingsConfigDict(
        env_prefix="DRIPLINE_",
        extra="forbid",
        validate_default=True,
    )
    toml_path: ClassVar[Path] = Path("dripline.toml")

    # Storage
    database_url: str = "sqlite:///./dripline.db"
    db_pooler: bool = Field(
        False,
        description="PostgreSQL behind a transaction-mode pooler: no prepared "
        "statement cache, no LISTEN (wake-ups fall back to polling).",
    )

    # Dispatch
    policy: Policy = Policy.STATIC
    preset: Preset | None = None
    batch_limit: int = Field(200, ge=1, le=10_000)
    concurrency: int = Field(64, ge=1, le=5_000)
    max_concurrency: int = Field(512, ge=1, le=5_000)
    rate_per_s: float = Field(
        80.0,
        gt=0,
        description="messages per second per number; unset: the number's throughput tier "
        "as Meta reports it (80 standard, 1,000 high), 80 until it is read",
    )
    lease_ttl_s: float = Field(
        30.0,
        gt=0,
        description="how long a claim stays leased without a heartbeat extending it; a "
        "crashed worker's claims return this long after its last heartbeat",
    )
    max_attempts: int = Field(8, ge=1, description="attempts for transient errors")
    poll_ceiling_s: float = Field(5.0, gt=0, description="longest sleep while nothing is due")
    interval_s: float = Field(300.0, gt=0, description="seed-cron policy: seconds between runs")
    heartbeat_s: float = Field(2.0, gt=0)
    shutdown_deadline_s: float = Field(30.0, ge=0)
    retry_base_s: float = Field(1.0, gt=0)
    retry_cap_s: float = Field(300.0, gt=0)
    pair_interval_s: float = Field(
        6.0, ge=0, description="min seconds between two sends to one user"
    )
    delivery: Delivery = Delivery.AT_MOST_ONCE
    unknown_after_s: float = Field(
        60.0,
        gt=0,
        description="how long statuses of later sends must have been in before they "
        "prove an unknown send was never accepted; also how often it is checked",
    )
    window_s: float = Field(
        86_400.0,
        gt=0,
        description="WhatsApp's customer-service window: free-form text only this long "
        "after the user's last message, templates otherwise (Meta: 24 h)",
    )
    window_margin_s: float = Field(
        600.0,
        ge=0,
        description="a step due this close to the window's end goes as its template, so a "
        "send delayed by pacing still arrives inside the window",
    )
    on_auth_failure: str = Field("exit", pattern="^(exit|pause)$")
    auth_probe_s: float = Field(60.0, gt=0)
    tier_thresholds: tuple[int, int, int] = (100, 50, 10)

    # WhatsApp Cloud API
    whatsapp_base_url: str = "https://graph.facebook.com"
    whatsapp_api_version: str = "v23.0"
    whatsapp_phone_number_id: str = "000000000000000"
    # More business numbers (dripline.senders): `DRIPLINE_SENDERS="1111:300,2222"` or, in
    # dripline.toml, `[[senders]]` tables with `id` and optional `rate_per_s`. The
    # default number above is always one of them.
    senders: Annotated[list[SenderNumber], NoDecode] = Field(
        default_factory=list,
        description="extra phone number ids, each with an optional rate_per_s",
    )
    whatsapp_access_token: SecretStr = SecretStr("")
    whatsapp_app_secret: SecretStr = SecretStr("")
    whatsapp_verify_token: SecretStr = SecretStr("")
    whatsapp_http_client: HttpClient = "builtin"
    http_connect_timeout_s: float = Field(5.0, gt=0)
    http_read_timeout_s: float = Field(15.0, gt=0)
    # A SecretStr: the URL may carry the proxy's password (shown redacted by `redacted()`).
    https_proxy: SecretStr | None = Field(
        None,
        description="CONNECT proxy for the Cloud API, http://[user:password@]host:port; "
        "default: HTTPS_PROXY",
    )
    no_proxy: str | None = Field(
        None, description="hosts reached without the proxy; default: NO_PROXY"
    )

    # Flows and server
    flows_dir: Path = Path("./flows")
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    api_token: SecretStr | None = None
    opt_out_keywords: tuple[str, ...] = ("STOP", "UNSUBSCRIBE", "CANCEL")
    webhook_max_body_bytes: int = Field(1_048_576, gt=0)

    # Server security (see `dripline.server.auth` and docs/deploy.md)
    api_token_file: Path | None = Field(
        None,
        description="where `serve` reads the API token when DRIPLINE_API_TOKEN is unset, "
        "and writes a generated one on first run (mode 0600); default: next to the "
        "SQLite database, else ./dripline-api-token",
    )
    public_url: str | None = Field(
        None,
        description="the server's public address (https://dripline.example.com): its "
        "host is accepted in Host and Origin headers, besides loopback",
    )
    allowed_hosts: tuple[str, ...] = Field(
        (),
        description="more host names accepted in Host and Origin headers ('.example.com' "
        "also matches subdomains, '*' any host)",
    )
    dashboard_public: bool = Field(
        False, description="serve the dashboard and /api/dashboard without the API token"
    )
    metrics_public: bool = Field(False, description="serve /metrics without the API token")
    server_max_connections: int = Field(
        1000, ge=1, description="connections and requests at once; more are answered 503"
    )
    server_header_timeout_s: float = Field(
        10.0, gt=0, description="a request's headers must arrive within this time"
    )
    server_body_timeout_s: float = Field(
        30.0, gt=0, description="longest wait for the next part of a request body (408)"
    )
    server_max_header_bytes: int = Field(
        16_384, ge=1024, description="a request line and headers larger than this: 431"
    )
    webhook_max_queued_bytes: int = Field(
        64 * 1_048_576,
        gt=0,
        description="webhook bodies waiting to be stored; above it POST /webhook answers "
        "503 with Retry-After (Meta redelivers)",
    )

    # Retention (docs/data.md)
    retention_days: int = Field(
        30,
        ge=1,
        description="processed webhook bodies and the texts of messages that answered "
        "nothing are deleted after this many days (answers are kept); `serve` prunes daily",
    )

    # Operations
    log_format: str = Field("console", pattern="^(console|json)$")
    log_level: str = "INFO"
    ready_max_inbox_lag_s: float = Field(
        300.0,
        gt=0,
        description="/readyz of `dripline serve` fails once a stored webhook has waited "
        "this long to be applied (a stuck inbox processor)",
    )

    @field_validator("database_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        # Imported here: the store imports settings' types, not the reverse at import time.
        from dripline.store.urls import MEMORY_ONLY, parse_database_url

        if parse_database_url(value).backend == "memory":
            # Every command opens the database by URL in its own process.
            raise ConfigError(f"database_url {MEMORY_ONLY}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        """A preset fills batch_limit and concurrency unless they were given explicitly."""
        if not isinstance(data, dict):
            return data
        preset = data.get("preset")
        if preset:
            try:
                values = PRESETS[Preset(preset)]
            except ValueError:
                return data  # field validation reports the bad name
            for key, value in values.items():
                data.setdefault(key, value)
        return data

    @field_validator("senders", mode="before")
    @classmethod
    def _short_senders(cls, value: Any) -> Any:
        """`1111:300,2222`, or JSON: a list of {"id", "rate_per_s"} objects."""
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                try:
                    return json.loads(value)
                except ValueError:
                    raise ValueError("senders: not valid JSON") from None
            return parse_senders(value)
        if isinstance(value, (int, float)):
            return parse_senders(str(value))
        return value

    @model_validator(mode="after")
    def _check_bounds(self) -> Settings:
        if self.concurrency > self.max_concurrency:
            self.max_concurrency = self.concurrency
        # A send starts only while its lease outlives its read timeout (see send_one),
        # and heartbeats renew leases: a shorter lease could never send anything.
        floor = self.heartbeat_s + self.http_read_timeout_s + SEND_LEASE_MARGIN_S
        if self.lease_ttl_s <= floor:
            raise ConfigError(
                f"lease_ttl_s ({self.lease_ttl_s:g}) must be longer than heartbeat_s + "
                f"http_read_timeout_s + {SEND_LEASE_MARGIN_S:g} s ({floor:g})"
            )
        return self

    @model_validator(mode="after")
    def _proxy_from_env(self) -> Settings:
        # Imported here: `dripline.whatsapp` imports settings at import time.
        from dripline.whatsapp.proxy import Proxy, proxy_env

        env_proxy, env_no_proxy = proxy_env()
        if self.https_proxy is None and env_proxy is not None:
            self.https_proxy = SecretStr(env_proxy)
        if self.no_proxy is None:
            self.no_proxy = env_no_proxy
        if self.proxy_url:
            Proxy.from_url(self.proxy_url)  # a ConfigError that never shows the password
        return self

    @property
    def proxy_url(self) -> str | None:
        """The https proxy URL in force, credentials included (None or "" for none)."""
        return self.https_proxy.get_secret_value() if self.https_proxy is not None else None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = Path(os.environ.get("DRIPLINE_CONFIG", str(cls.toml_path)))
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=path),
        )

    @property
    def rate_from_tier(self) -> bool:
        """True unless the operator set `rate_per_s` (argument, environment or file): the
        dispatcher then sends at the number's throughput tier (whatsapp/throughput.py)."""
        return "rate_per_s" not in self.model_fields_set

    @property
    def sender_ids(self) -> tuple[str, ...]:
        """Every configured phone number id, the default first, each once."""
        ids = [self.whatsapp_phone_number_id]
        ids += [n.id for n in self.senders if n.id not in ids]
        return tuple(ids)

    def sender_rate(self, number: str) -> float | None:
        """The rate the operator set for `number`: its own, else the global `rate_per_s`
        (per number) when set; None: its throughput tier decides."""
        for n in self.senders:
            if n.id == number and n.rate_per_s is not None:
                return n.rate_per_s
        return None if self.rate_from_tier else self.rate_per_s

    @property
    def messages_url(self) -> str:
        base = self.whatsapp_base_url.rstrip("/")
        return f"{base}/{self.whatsapp_api_version}/{self.whatsapp_phone_number_id}/messages"

    def redacted(self) -> dict[str, Any]:
        """Settings as plain data with every secret replaced by '***' (or None)."""
        data = self.model_dump(mode="json")
        for name in SECRET_FIELDS:
            if data.get(name):
                data[name] = "***"
        from dripline.store.urls import redact_url

        data["database_url"] = redact_url(self.database_url)
        if self.proxy_url:
            from dripline.whatsapp.proxy import redact_proxy_url

            data["https_proxy"] = redact_proxy_url(self.proxy_url)
        return data

    def secret_values(self) -> list[str]:
        """Every configured secret, for the log scrubber: tokens, and the proxy's password
        and its encoded `Proxy-Authorization` value."""
        values = []
        for name in SECRET_FIELDS:
            value = getattr(self, name)
            if value is not None and value.get_secret_value():
                values.append(value.get_secret_value())
        if self.proxy_url:
            from dripline.whatsapp.proxy import Proxy

            values.extend(Proxy.from_url(self.proxy_url).secrets())
        from dripline.store.urls import url_secrets

        values.extend(url_secrets(self.database_url))
        return values

    def preset_values(self) -> dict[str, int]:
        """What the chosen preset set (empty without a preset)."""
        return dict(PRESETS[self.preset]) if self.preset else {}


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning validation errors into one-line ConfigErrors."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    config = os.environ.get("DRIPLINE_CONFIG")
    if config and not Path(config).is_file():
        raise ConfigError(f"DRIPLINE_CONFIG names {config!r}, which is not a file")
    try:
        return Settings(**clean)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigError(f"setting {field}: {first['msg']}") from None
    except ValueError as exc:  # malformed dripline.toml
        raise ConfigError(f"configuration file: {exc}") from None
