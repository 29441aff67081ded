"""Bearer-token auth for the `/v1` API.

The token is required whenever the server listens beyond loopback: an enrollment API
open to a network lets anyone message your users at your expense. On loopback it is
optional (a token set is still enforced). Tokens are compared in constant time and never
logged or echoed.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from dripline.errors import ConfigError
from dripline.settings import Settings

__all__ = ["TokenAuth", "check_auth_settings", "is_loopback"]

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


def check_auth_settings(settings: Settings) -> str | None:
    """The configured API token, or None on loopback without one.

    Raises ConfigError (one line) when the server would bind beyond loopback without one.
    """
    token = settings.api_token.get_secret_value() if settings.api_token is not None else ""
    if token:
        return token
    if not is_loopback(settings.host):
        raise ConfigError(
            f"serving on {settings.host} (beyond loopback) needs an API token: "
            "set DRIPLINE_API_TOKEN, or bind to 127.0.0.1"
        )
    return None


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
