"""The API token when the operator set none: read from a file, or made on first run.

`dripline serve` (and `run --serve`) never start with the enrollment API open. Without
`DRIPLINE_API_TOKEN` they use the token in `api_token_file`, by default next to the
SQLite database (`dripline-api-token` in the database's folder) or, on PostgreSQL, in
the working directory. On the first run the file does not exist: a random token is
written there (mode 0600, created exclusively, so two processes starting together agree)
and printed once on stderr with the file's path. Later starts log only the path and a
fingerprint (a hash prefix), never the token.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import structlog
from pydantic import SecretStr

from dripline.errors import ConfigError
from dripline.settings import Settings
from dripline.store.urls import parse_database_url

__all__ = ["TOKEN_FILE_NAME", "ResolvedToken", "ensure_api_token", "fingerprint", "token_path"]

log = structlog.get_logger(__name__)

TOKEN_FILE_NAME = "dripline-api-token"  # noqa: S105 (a file name, not a token)
_MIN_LENGTH = 16


@dataclass(frozen=True, slots=True)
class ResolvedToken:
    settings: Settings  # with api_token set
    source: str  # "setting", "file" or "generated"
    path: Path | None


def fingerprint(token: str) -> str:
    """A short, non-reversible name for a token, safe to log: `sha256:1a2b3c4d`."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:8]


def token_path(settings: Settings) -> Path:
    """Where the token file is (whether or not it exists yet)."""
    if settings.api_token_file is not None:
        return settings.api_token_file
    parsed = parse_database_url(settings.database_url)
    if parsed.backend == "sqlite" and parsed.sqlite_path:
        return Path(parsed.sqlite_path).expanduser().absolute().parent / TOKEN_FILE_NAME
    return Path.cwd() / TOKEN_FILE_NAME


def _read(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the API token file {path}: {exc}") from None
    if len(token) < _MIN_LENGTH:
        raise ConfigError(
            f"the API token file {path} holds no usable token (at least {_MIN_LENGTH} "
            "characters); delete it to have a new one generated"
        )
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "server.api_token_file_readable",
            path=str(path),
            mode=oct(stat.S_IMODE(mode)),
            hint=f"chmod 600 {path}",
        )
    return token


def _create(path: Path) -> str | None:
    """Write a new token to `path` exclusively; None when another process won."""
    token = secrets.token_urlsafe(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"no API token is set and {path.parent} cannot be created ({exc.strerror}): "
            "set DRIPLINE_API_TOKEN, or DRIPLINE_API_TOKEN_FILE to a writable path"
        ) from None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return None
    except OSError as exc:
        raise ConfigError(
            f"no API token is set and {path} cannot be written ({exc.strerror}): "
            "set DRIPLINE_API_TOKEN, or DRIPLINE_API_TOKEN_FILE to a writable path"
        ) from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    return token


def ensure_api_token(settings: Settings) -> ResolvedToken:
    """`settings` with an API token: the configured one, the file's, or a new one."""
    if settings.api_token is not None and settings.api_token.get_secret_value():
        return ResolvedToken(settings, "setting", None)
    path = token_path(settings)
    source = "file"
    token = _read(path) if path.exists() else None
    if token is None:
        token = _create(path)
        if token is None:  # created concurrently: use that one
            token = _read(path)
        else:
            source = "generated"
            # Once, in full, for the operator: stderr, never the structured log.
            print(
                f"dripline: no DRIPLINE_API_TOKEN set; generated one and saved it to {path} "
                f"(mode 0600):\n\n    {token}\n\nSend it as 'Authorization: Bearer <token>'. "
                "Later starts read it from that file.",
                file=sys.stderr,
                flush=True,
            )
    log.info("server.api_token", source=source, path=str(path), token=fingerprint(token))
    updated = settings.model_copy(update={"api_token": SecretStr(token)})
    return ResolvedToken(updated, source, path)
