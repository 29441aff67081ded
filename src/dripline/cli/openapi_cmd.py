"""`dripline openapi [FILE]`: the HTTP API's OpenAPI document, without starting a server."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from dripline.cli.common import err_console, handle_errors

# The document describes the API as deployed, where the bearer token is always required
# (`serve` refuses to bind beyond loopback without one). Its value never appears in the
# document, so a placeholder gives the same output as the real token, and the caller's
# token is never read.
_PLACEHOLDER_TOKEN = "openapi-document"  # noqa: S105 - not a credential


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of `dripline serve`, built from the app without running it.

    Independent of the caller's settings and flow files: nothing in the document depends
    on them except the auth scheme, fixed here to the deployed one.
    """
    from pydantic import SecretStr

    from dripline.flows import load_flows
    from dripline.server.app import create_app
    from dripline.settings import Settings

    # model_construct: the defaults, without reading DRIPLINE_* or dripline.toml.
    settings = Settings.model_construct(api_token=SecretStr(_PLACEHOLDER_TOKEN))
    app = create_app(settings, flows=load_flows(None))  # opens no store until started
    return app.openapi()


def register(app: typer.Typer) -> None:
    @app.command("openapi")
    @handle_errors
    def openapi(
        file: Annotated[
            Path | None,
            typer.Argument(help="Where to write the JSON document (default: stdout, or -)."),
        ] = None,
    ) -> None:
        """Write the OpenAPI document of `dripline serve` (JSON), for generating clients.

        The same document the server answers at /openapi.json, without starting it or
        opening a database. Generate TypeScript types from it with, for example,
        `npx openapi-typescript openapi.json -o dripline-api.d.ts`.
        """
        text = json.dumps(openapi_document(), indent=2, sort_keys=False) + "\n"
        if file is None or str(file) == "-":
            sys.stdout.write(text)
            return
        file.write_text(text, encoding="utf-8")
        err_console.print(f"wrote {file}", highlight=False)
