"""Who may call what: the server's access rules, in one place, before any route runs.

Every request passes `check_request` (pure, table-tested) in `AccessGuard`, an ASGI
middleware, in this order:

1. **Public routes** (`PUBLIC_PATHS`: `/healthz`, `/readyz`) pass untouched: load
   balancers and orchestrators probe them with any Host and no token. Add a route to
   this set, nowhere else, to make it public.
2. **Signed routes** (`SIGNED_PATHS`: `/webhook`) pass to their own check: Meta signs
   every POST with the app secret (X-Hub-Signature-256) and answers the verification
   GET with the verify token. Refusing them here would only make Meta redeliver.
3. **Host** must be loopback, the host of `public_url`, or in `allowed_hosts` (421
   otherwise): a DNS-rebinding page reaches the server under its own name.
4. **Origin**, when a browser sends one, must name an allowed host too (403): no web
   page elsewhere can make a browser write here (CSRF).
5. **Token**: `Authorization: Bearer <token>` for everything else (401). A browser may
   show the dashboard with HTTP Basic auth (any user name, the token as password), for
   reads only: a browser replays Basic credentials on its own, a bearer header never.
   `dashboard_public` / `metrics_public` open those reads without the token.
6. **JSON only**: a write with a body must say `Content-Type: application/json` (415):
   HTML forms cannot send that cross-origin. An empty body (`/cancel`) needs none.

The middleware also bounds the wait for each part of a request body
(`server_body_timeout_s`, 408): a client that stops sending mid-body holds nothing long.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dripline.settings import Settings

__all__ = [
    "DASHBOARD_PATHS",
    "METRICS_PATHS",
    "PUBLIC_PATHS",
    "SIGNED_PATHS",
    "AccessGuard",
    "AccessPolicy",
    "HostRule",
    "Refusal",
    "check_request",
]

# Anyone may call these, with any Host and without a token. Keep them free of data.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
# Authenticated by Meta's signature or verify token, not by the API token.
SIGNED_PATHS = frozenset({"/webhook"})
DASHBOARD_PATHS = frozenset({"/", "/api/dashboard"})
METRICS_PATHS = frozenset({"/metrics"})

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class HostRule:
    """Host names a request may be addressed to (and a browser's Origin may name)."""

    names: frozenset[str]
    suffixes: tuple[str, ...] = ()  # ".example.com" matches a.example.com
    any_host: bool = False

    def allows(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        if self.any_host or host in self.names:
            return True
        if any(host.endswith(s) for s in self.suffixes):
            return True
        try:
            return ipaddress.ip_address(host.strip("[]")).is_loopback
        except ValueError:
            return False

    @classmethod
    def from_settings(cls, settings: Settings) -> HostRule:
        names = {"localhost"}
        suffixes: list[str] = []
        entries = list(settings.allowed_hosts)
        if settings.public_url:
            entries.append(urlsplit(_with_scheme(settings.public_url)).hostname or "")
        for raw in entries:
            entry = raw.strip().lower().rstrip(".")
            if entry == "*":
                return cls(frozenset(), (), any_host=True)
            if entry.startswith("*."):
                entry = entry[1:]
            if entry.startswith("."):
                suffixes.append(entry)
                names.add(entry[1:])
            elif entry:
                names.add(entry)
        return cls(frozenset(names), tuple(suffixes))


def _with_scheme(url: str) -> str:
    return url if "://" in url else f"https://{url}"


def host_of(authority: str) -> str | None:
    """The host name of a Host header value (`example.com:8080`, `[::1]:80`)."""
    try:
        parts = urlsplit(f"//{authority}")
        host = parts.hostname
        _ = parts.port  # a malformed port raises ValueError
    except ValueError:
        return None
    return host or None


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    token: str
    hosts: HostRule
    open_reads: frozenset[str] = frozenset()  # paths readable without the token

    @classmethod
    def from_settings(cls, settings: Settings, token: str) -> AccessPolicy:
        open_reads: set[str] = set()
        if settings.dashboard_public:
            open_reads |= DASHBOARD_PATHS
        if settings.metrics_public:
            open_reads |= METRICS_PATHS
        return cls(token, HostRule.from_settings(settings), frozenset(open_reads))


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    detail: str
    headers: tuple[tuple[str, str], ...] = ()


def _token_matches(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def _credentials(authorization: str, token: str) -> str | None:
    """'bearer' or 'basic' when the Authorization header carries the token, else None."""
    scheme, _, value = authorization.strip().partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer" and value and _token_matches(value, token):
        return "bearer"
    if scheme == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _, _, password = decoded.partition(":")
        if password and _token_matches(password, token):
            return "basic"
    return None


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def check_request(
    method: str, path: str, headers: Mapping[str, str], policy: AccessPolicy
) -> Refusal | None:
    """None when the request may proceed, else why not (see the module docstring).
    `headers`: lower-case names."""
    if path in PUBLIC_PATHS or path in SIGNED_PATHS:
        return None
    host = host_of(headers.get("host", ""))
    if host is None or not policy.hosts.allows(host):
        return Refusal(
            421,
            "this server does not answer to that Host; add it to DRIPLINE_PUBLIC_URL or "
            "DRIPLINE_ALLOWED_HOSTS",
        )
    origin = headers.get("origin")
    if origin is not None:
        origin_host = urlsplit(origin).hostname if origin != "null" else None
        if origin_host is None or not policy.hosts.allows(origin_host):
            return Refusal(403, "cross-origin requests are not allowed")
    how = _credentials(headers.get("authorization", ""), policy.token)
    safe = method in _SAFE_METHODS
    allowed = how == "bearer" or (how == "basic" and safe) or (safe and path in policy.open_reads)
    if not allowed:
        browser = safe and "text/html" in headers.get("accept", "")
        challenge = 'Basic realm="dripline", charset="UTF-8"' if browser else "Bearer"
        return Refusal(
            401,
            "missing or wrong API token (send Authorization: Bearer <token>)",
            (("www-authenticate", challenge),),
        )
    has_body = headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in headers
    if not safe and has_body and not _is_json(headers.get("content-type", "")):
        return Refusal(415, "send the body as JSON, with Content-Type: application/json")
    return None


class AccessGuard:
    """ASGI middleware: `check_request` on every HTTP request, and body-read timeouts."""

    def __init__(self, app: ASGIApp, *, policy: AccessPolicy, body_timeout_s: float = 30.0) -> None:
        self.app = app
        self.policy = policy
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = check_request(scope["method"], scope["path"], headers, self.policy)
        if refusal is not None:
            await _answer(send, refusal)
            return
        timed_out = False
        started = False
        body_done = False

        async def timed_receive() -> Message:
            # Only the body is timed: waiting for a disconnect afterwards is not.
            nonlocal timed_out, body_done
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout(self.body_timeout_s):
                    message = await receive()
            except TimeoutError:
                timed_out = True
                raise _BodyTimeout from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed_receive, tracked_send)
        except _BodyTimeout:
            if not started:
                await _answer(send, Refusal(408, "the request body stopped arriving"))
        except Exception:
            if not timed_out:
                raise
            if not started:
                await _answer(send, Refusal(408, "the request body stopped arriving"))


class _BodyTimeout(Exception):
    """The client stopped sending its body."""


async def _answer(send: Send, refusal: Refusal) -> None:
    body = json.dumps({"detail": refusal.detail}).encode()
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += [(k.encode(), v.encode()) for k, v in refusal.headers]
    if refusal.status == 408:
        headers.append((b"connection", b"close"))
    start: dict[str, Any] = {"type": "http.response.start", "status": refusal.status}
    start["headers"] = headers
    await send(start)
    await send({"type": "http.response.body", "body": body})
