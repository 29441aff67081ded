"""`dripline serve`: the enrollment API and the Cloud API webhook (uvicorn)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from dripline.cli.common import handle_errors, settings_from


def register(app: typer.Typer) -> None:
    @app.command("serve")
    @handle_errors
    def serve(
        host: Annotated[
            str | None,
            typer.Option(help="Address to bind (127.0.0.1; put a TLS proxy in front)."),
        ] = None,
        port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
        database_url: Annotated[
            str | None,
            typer.Option("--database-url", help="sqlite:///file.db or postgresql://user@host/db."),
        ] = None,
        flows_dir: Annotated[
            Path | None, typer.Option(help="Directory of flow YAML files.")
        ] = None,
    ) -> None:
        """Serve POST/GET /v1/conversations and the WhatsApp webhook at /webhook.

        Webhook bodies are stored before the 200 and applied in the background; run
        `dripline run` (or `dripline run --serve`) for the dispatcher that sends.
        """
        from dripline.runtime import configure_from_settings
        from dripline.server.app import create_app, serve_app
        from dripline.server.token import ensure_api_token

        settings = settings_from(
            host=host, port=port, database_url=database_url, flows_dir=flows_dir
        )
        configure_from_settings(settings)
        settings = ensure_api_token(settings).settings  # the setting, its file, or a new one
        app = create_app(settings)  # ConfigError (one line) before binding anything
        asyncio.run(serve_app(app, settings))
