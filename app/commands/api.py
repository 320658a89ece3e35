"""`vectoros api`: the read API, the live stream and the dashboard page."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from app.commands.common import load_settings, run_async


@click.command()
@click.option("--host", default=None, help="Address of the API and page (default 127.0.0.1).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port of the API and page (default 8090).",
)
def api(host: str | None, port: int | None) -> None:
    """Serve the read API, the live stream and the dashboard page (docs/api.md)."""
    from consumer.api.service import run_api
    from consumer.api.settings import ApiSettings
    from vectoros.service import serve

    settings = load_settings(ApiSettings, api_host=host, api_port=port)
    settings.dsn()
    if settings.api_live:
        settings.bootstrap()

    async def body(registry: Any, health: Any, stop: asyncio.Event) -> None:
        await run_api(settings, registry, health, stop)

    run_async(serve("api", settings, body))
