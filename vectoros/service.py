"""Running one long-lived service: ops endpoint, signal handling, clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator

from prometheus_client import CollectorRegistry

from vectoros.errors import PortInUse
from vectoros.ops_server import Health, OpsServer
from vectoros.settings import OpsSettings

logger = logging.getLogger(__name__)

Body = Callable[[CollectorRegistry, Health, asyncio.Event], Awaitable[None]]

_current_ops: contextvars.ContextVar[OpsServer | None] = contextvars.ContextVar(
    "vectoros_ops_server", default=None
)


def current_ops_server() -> OpsServer | None:
    """The ops server of the service running in this context (inside ``serve``'s body), or None
    when metrics are off. Its ``port`` / ``url`` are the bound ones (for a ready banner)."""
    return _current_ops.get()


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


async def start_ops_server(
    name: str,
    settings: OpsSettings,
    registry: CollectorRegistry,
    health: Health,
    *,
    any_port_if_busy: bool = False,
) -> OpsServer:
    """The started ops endpoint. A busy port raises ``PortInUse`` naming VECTOROS_METRICS_PORT;
    with ``any_port_if_busy`` (``run``, ``demo``) a busy *default* port is replaced by a free one
    (a port set explicitly is never replaced)."""
    ops = OpsServer(registry, health, settings.metrics_host, settings.metrics_port)
    try:
        await ops.start()
    except PortInUse:
        if not any_port_if_busy or "metrics_port" in settings.model_fields_set:
            raise
        ops = OpsServer(registry, health, settings.metrics_host, 0)
        await ops.start()
        logger.warning(
            "%s: metrics port %d is busy; serving /metrics on port %d instead "
            "(set VECTOROS_METRICS_PORT to choose)",
            name,
            settings.metrics_port,
            ops.port,
        )
    return ops


# Services that take any free metrics port when their default one is busy (they are started by
# hand, often beside others); the single services say the port is busy and stop.
ANY_PORT_IF_BUSY = frozenset({"run", "demo"})


async def serve(
    name: str, settings: OpsSettings, body: Body, *, any_port_if_busy: bool | None = None
) -> None:
    """Run ``body`` until it returns or SIGINT/SIGTERM asks it to stop. ``any_port_if_busy``
    defaults to whether ``name`` is in ``ANY_PORT_IF_BUSY``."""
    if any_port_if_busy is None:
        any_port_if_busy = name in ANY_PORT_IF_BUSY
    registry = CollectorRegistry()
    health = Health()
    stop = asyncio.Event()
    ops: OpsServer | None = None
    if settings.metrics_enabled:
        ops = await start_ops_server(
            name, settings, registry, health, any_port_if_busy=any_port_if_busy
        )
        logger.info("%s: /metrics, /healthz, /readyz on %s", name, ops.url)
    token = _current_ops.set(ops)
    try:
        with stop_on_signals(stop):
            await body(registry, health, stop)
    finally:
        _current_ops.reset(token)
        if ops is not None:
            await ops.stop()
