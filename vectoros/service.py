"""Running one long-lived service: ops endpoint, signal handling, clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator

from prometheus_client import CollectorRegistry

from vectoros.ops_server import Health, OpsServer
from vectoros.settings import OpsSettings

logger = logging.getLogger(__name__)

Body = Callable[[CollectorRegistry, Health, asyncio.Event], Awaitable[None]]


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def serve(name: str, settings: OpsSettings, body: Body) -> None:
    """Run ``body`` until it returns or SIGINT/SIGTERM asks it to stop."""
    registry = CollectorRegistry()
    health = Health()
    stop = asyncio.Event()
    ops: OpsServer | None = None
    if settings.metrics_enabled:
        ops = OpsServer(registry, health, settings.metrics_host, settings.metrics_port)
        await ops.start()
        logger.info(
            "%s: /metrics, /healthz, /readyz on http://%s:%d",
            name,
            settings.metrics_host,
            ops.port,
        )
    try:
        with stop_on_signals(stop):
            await body(registry, health, stop)
    finally:
        if ops is not None:
            await ops.stop()
