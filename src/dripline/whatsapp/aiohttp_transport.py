"""The aiohttp transport: the second, independent HTTP stack for the Cloud API client.

The builtin `Http1Transport` (`http1.py`) is the default, at about a third of this
one's CPU per request; this one stays selectable (`DRIPLINE_WHATSAPP_HTTP_CLIENT=aiohttp`)
to rule the builtin one out, and takes the same `ProxyConfig`. Its errors follow the
client's contract (`client.py`).
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from dripline.errors import TransportError, WhatsAppError
from dripline.whatsapp.http1 import RawResponse
from dripline.whatsapp.proxy import ProxyConfig

__all__ = ["AiohttpTransport"]


class AiohttpTransport:
    """POSTs JSON over one shared aiohttp session with keep-alive pooling.

    `connector_limit=0` means no pool cap: concurrency is the dispatcher's job, and a cap
    here would queue requests invisibly behind the semaphore it already has.
    """

    def __init__(
        self,
        *,
        access_token: str,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 15.0,
        connector_limit: int = 0,
        session: aiohttp.ClientSession | None = None,
        proxy: ProxyConfig | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._proxy = proxy or ProxyConfig()
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        # Per URL: the proxy arguments for aiohttp (none when the URL goes direct).
        self._routes: dict[str, dict[str, Any]] = {}
        self._headers = {
            "Authorization": f"Bearer {access_token}",
            "Content-Type": "application/json",
        }
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._connector_limit = connector_limit
        self._session = session
        self._owns_session = session is None
        # Our own session carries the headers as defaults (cheaper per request) only
        # when no proxy is configured: aiohttp copies a session's defaults into the
        # CONNECT request to a proxy and turns `Authorization` there into
        # `Proxy-Authorization`, which would hand the access token to the proxy in clear
        # (aio-libs/aiohttp#9368: "default headers apply to proxy as well").
        self._default_headers = self._owns_session and self._proxy.https is None
        self._call_headers = None if self._default_headers else self._headers

    def __repr__(self) -> str:
        return (
            f"AiohttpTransport(connector_limit={self._connector_limit}, proxy={self._proxy.https})"
        )

    def _route(self, url: str) -> dict[str, Any]:
        route = self._routes.get(url)
        if route is None:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            proxy = self._proxy.for_target(parts.scheme, parts.hostname or "", port)
            route = {}
            if proxy is not None:
                route["proxy"] = proxy.url
                if proxy.authorization is not None:
                    route["proxy_headers"] = {"Proxy-Authorization": proxy.authorization}
            self._routes[url] = route
        return route

    def _open(self) -> aiohttp.ClientSession:
        # Created lazily: an aiohttp session must be born inside the running loop.
        connector = aiohttp.TCPConnector(
            limit=self._connector_limit, limit_per_host=0, ttl_dns_cache=300, ssl=self._ssl
        )
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self._connect_timeout_s,
            sock_read=self._read_timeout_s,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            headers=self._headers if self._default_headers else None,
            raise_for_status=False,
        )
        return self._session

    async def __call__(self, url: str, body: bytes) -> RawResponse:
        session = self._session or self._open()
        try:
            async with session.post(
                url, data=body, headers=self._call_headers, **self._route(url)
            ) as resp:
                raw = await resp.read()
                return resp.status, raw, resp.headers.get("Retry-After")
        except aiohttp.ClientHttpProxyError as exc:
            raise _proxy_refused(exc.status, exc.message, self._proxy, url) from None
        except aiohttp.ConnectionTimeoutError:
            raise TransportError(
                f"connect timeout after {self._connect_timeout_s}s", maybe_sent=False
            ) from None
        except aiohttp.SocketTimeoutError:
            raise TransportError(
                f"read timeout after {self._read_timeout_s}s; the message may have been sent",
                maybe_sent=True,
            ) from None
        except aiohttp.ClientConnectorError as exc:
            raise TransportError(
                f"cannot connect to the Cloud API: {exc.os_error or exc}", maybe_sent=False
            ) from None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransportError(
                f"connection lost before the response ({type(exc).__name__}); "
                "the message may have been sent",
                maybe_sent=True,
            ) from None

    async def get(self, url: str) -> RawResponse:
        """A GET on the same session and route (the phone number node's fields). Read-only,
        so a lost answer is simply an error: nothing may have been sent."""
        session = self._session or self._open()
        try:
            async with session.get(url, headers=self._call_headers, **self._route(url)) as resp:
                return resp.status, await resp.read(), resp.headers.get("Retry-After")
        except aiohttp.ClientHttpProxyError as exc:
            raise _proxy_refused(exc.status, exc.message, self._proxy, url) from None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransportError(
                f"GET {urlsplit(url).path} failed: {type(exc).__name__}", maybe_sent=False
            ) from None

    async def close(self) -> None:
        """Close the session if this transport created it."""
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None


def _proxy_refused(status: int, reason: str, proxy: ProxyConfig, url: str) -> WhatsAppError:
    """aiohttp's CONNECT failure as `http1.py` reports it: nothing reached the API."""
    shown = proxy.https.display if proxy.https is not None else "(none)"
    if status in (401, 407):
        return WhatsAppError(
            f"the proxy at {shown} wants credentials (HTTP {status} {reason}); "
            "put them in HTTPS_PROXY as http://user:password@host:port",
            code=None,
            error_class="auth",
            http_status=status,
        )
    return TransportError(
        f"the proxy at {shown} did not open a tunnel to {urlsplit(url).hostname}: "
        f"HTTP {status} {reason}",
        maybe_sent=False,
    )
