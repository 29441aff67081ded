"""Which proxy, if any, carries a Cloud API call: `HTTPS_PROXY` and `NO_PROXY`, parsed once.

    https_proxy = "http://user:password@proxy.internal:3128"   (HTTPS_PROXY / https_proxy)
    no_proxy    = "localhost,.internal,10.0.0.5:8443"          (NO_PROXY / no_proxy)

Only https targets go through the proxy, by a CONNECT tunnel with TLS to the Cloud API
inside it, so the proxy sees a host name and encrypted bytes, never the token. A plain
http target (the local fake) is always reached directly: `HTTP_PROXY` is not read.
`NO_PROXY` follows the common convention (curl, Go, Python's urllib): comma-separated
entries; a host name matches itself and its subdomains (a leading `.` or `*.` changes
nothing); an IP address or a CIDR range matches those addresses; `:port` limits an entry
to that port; `*` alone sends everything direct.

The proxy URL's user and password become a `Proxy-Authorization: Basic` header (RFC
9110 section 11.7.1). They are secrets: `display` and `repr` never show them, and
`secrets()` lists what logs must scrub.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from dripline.errors import ConfigError

__all__ = ["Proxy", "ProxyConfig", "proxy_env", "redact_proxy_url"]

_DEFAULT_PORT = 80  # what urllib3 and aiohttp assume for an http:// proxy without a port


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def redact_proxy_url(url: str) -> str:
    """The proxy URL with any user and password replaced by '***'."""
    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        host = parts.hostname
        port = parts.port
    except ValueError:
        return "<unparseable proxy url>"
    if host is None:
        return "<unparseable proxy url>"
    userinfo = "***:***@" if parts.username is not None or parts.password is not None else ""
    where = _authority(host, port) if port else (f"[{host}]" if ":" in host else host)
    return f"{parts.scheme}://{userinfo}{where}"


@dataclass(frozen=True, slots=True)
class Proxy:
    """One HTTP proxy that tunnels with CONNECT; credentials kept out of `repr`."""

    host: str
    port: int
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_url(cls, url: str, *, where: str = "https_proxy") -> Proxy:
        """Parse `http://[user[:password]@]host[:port]`; a URL without a scheme is http."""
        shown = redact_proxy_url(url)
        try:
            parts = urlsplit(url if "://" in url else f"http://{url}")
            port = parts.port
        except ValueError:
            raise ConfigError(f"{where}: {shown!r} is not a proxy URL") from None
        if parts.scheme.lower() != "http":
            raise ConfigError(
                f"{where}: {shown!r} uses {parts.scheme}://; only http:// proxies are supported "
                "(the call to the Cloud API is TLS end to end inside the tunnel either way)"
            )
        if not parts.hostname:
            raise ConfigError(f"{where}: {shown!r} names no host; use http://host:port")
        user = unquote(parts.username) if parts.username is not None else None
        password = unquote(parts.password) if parts.password is not None else None
        return cls(parts.hostname, port or _DEFAULT_PORT, user, password)

    @property
    def display(self) -> str:
        """`http://host:port`, with `***:***@` when credentials are set."""
        userinfo = "***:***@" if self.username is not None else ""
        return f"http://{userinfo}{_authority(self.host, self.port)}"

    @property
    def url(self) -> str:
        """The proxy URL without credentials (for clients that take them separately)."""
        return f"http://{_authority(self.host, self.port)}"

    @property
    def authorization(self) -> str | None:
        """The `Proxy-Authorization` value, or None without credentials."""
        if self.username is None:
            return None
        pair = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")

    def secrets(self) -> list[str]:
        """Values a log line must never show: the password and the encoded header."""
        found = [self.password] if self.password else []
        if self.authorization is not None:
            found.append(self.authorization.removeprefix("Basic "))
        return found

    def __str__(self) -> str:
        return self.display


@dataclass(frozen=True, slots=True)
class _Bypass:
    """One `NO_PROXY` entry."""

    name: str  # lower case, no leading dots; "" for a CIDR entry
    port: int | None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None

    @classmethod
    def parse(cls, entry: str) -> _Bypass | None:
        text = entry.strip().lower()
        port: int | None = None
        if text.startswith("["):  # [v6] or [v6]:port
            host, _, rest = text[1:].partition("]")
            if rest.startswith(":") and rest[1:].isdigit():
                port = int(rest[1:])
            text = host
        elif text.count(":") == 1:  # host:port (a bare IPv6 address has more colons)
            host, _, digits = text.partition(":")
            if not digits.isdigit():
                return None
            text, port = host, int(digits)
        text = text.removeprefix("*.").lstrip(".")
        if not text:
            return None
        if "/" in text:
            try:
                return cls("", port, ipaddress.ip_network(text, strict=False))
            except ValueError:
                return None
        return cls(text, port, None)

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            try:
                return ipaddress.ip_address(host) in self.network
            except ValueError:
                return False
        return host == self.name or host.endswith("." + self.name)


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """The https proxy and the hosts that bypass it (`NO_PROXY`)."""

    https: Proxy | None = None
    no_proxy: str = ""
    _bypass: tuple[_Bypass, ...] = field(default=(), init=False, repr=False)
    _bypass_all: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        entries = [e for e in self.no_proxy.split(",") if e.strip()]
        parsed = tuple(b for b in map(_Bypass.parse, entries) if b is not None)
        object.__setattr__(self, "_bypass", parsed)
        object.__setattr__(self, "_bypass_all", any(e.strip() == "*" for e in entries))

    @classmethod
    def from_strings(cls, https_proxy: str | None, no_proxy: str | None) -> ProxyConfig:
        """From settings values (empty or None: no proxy)."""
        proxy = Proxy.from_url(https_proxy) if https_proxy else None
        return cls(proxy, (no_proxy or "").strip())

    def for_target(self, scheme: str, host: str, port: int) -> Proxy | None:
        """The proxy for a request to `scheme://host:port`, or None to connect directly."""
        if self.https is None or scheme != "https" or self._bypass_all:
            return None
        name = host.lower().strip("[]").rstrip(".")
        if any(b.matches(name, port) for b in self._bypass):
            return None
        return self.https


def proxy_env(environ: Mapping[str, str] | None = None) -> tuple[str | None, str | None]:
    """`(https_proxy, no_proxy)` from the standard variables, the lower-case name winning
    as in curl and Python's urllib; `environ` defaults to the process environment."""
    env = os.environ if environ is None else environ

    def read(name: str) -> str | None:
        value = env.get(name)
        if value is None:
            value = env.get(name.upper())
        if value is None or not value.strip():
            return None
        return value.strip()

    return read("https_proxy"), read("no_proxy")
