"""The API token: required, always.

`check_auth_settings` refuses to build a server without one: `dripline serve` resolves it
first (`dripline.server.token`: the setting, the token file, or a new token on first
run). Which routes need it, and the Host, Origin and content-type rules, are in
`dripline.server.guard` (its `PUBLIC_PATHS` lists the routes open to anyone). Tokens
are compared in constant time and never logged or echoed.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from dripline.errors import ConfigError
from dripline.server.guard import PUBLIC_PATHS, SIGNED_PATHS
from dripline.settings import Settings

# The routes anyone may call (no token, any Host): defined in guard.py, re-exported here
# so that a new public route (`/readyz`) is added in one place, next to the others.
__all__ = ["PUBLIC_PATHS", "SIGNED_PATHS", "TokenAuth", "check_auth_settings", "is_loopback"]

# Documents the scheme in OpenAPI; our own check below gives the 401 (not FastAPI's 403).
_bearer = HTTPBearer(auto_error=False, description="DRIPLINE_API_TOKEN")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`; False for 0.0.0.0, :: and names."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_auth_settings(settings: Settings) -> str:
    """The configured API token. Raises ConfigError (one line) when there is none."""
    token = settings.api_token.get_secret_value() if settings.api_token is not None else ""
    if not token:
        raise ConfigError(
            "the server needs an API token: set DRIPLINE_API_TOKEN "
            "(`dripline serve` generates one on first run)"
        )
    return token


class TokenAuth:
    """A FastAPI dependency: 401 unless `Authorization: Bearer <token>` matches."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def __call__(
        self, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> None:
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, self._token):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="missing or wrong API token (send Authorization: Bearer <token>)",
                headers={"WWW-Authenticate": "Bearer"},
            )
