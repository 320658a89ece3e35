"""`vectoros capture`: the email and calendar capture service."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from app.commands.common import (
    load_settings,
    run_async,
)
from vectoros.errors import VectorOSError


@click.command()
@click.option("--host", default=None, help="Address of the capture endpoints (default 127.0.0.1).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port of the capture endpoints (default 8089).",
)
def capture(host: str | None, port: int | None) -> None:
    """Capture emails and meetings (signed JSON webhook; Gmail, Google Calendar and Microsoft
    Graph mailboxes connected with OAuth), match them to deals, publish them."""
    from producer.capture.service import check_config, run_capture
    from producer.capture.settings import CaptureSettings
    from vectoros.service import serve

    settings = load_settings(CaptureSettings, capture_host=host, capture_port=port)
    try:
        check_config(settings)
    except (VectorOSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None

    async def body(registry: Any, health: Any, stop: asyncio.Event) -> None:
        await run_capture(settings, registry, health, stop)

    run_async(serve("capture", settings, body))


# --- deal history and the learned models (issue 14) ----------------------------------------------
