"""The operations endpoint every service serves: ``/metrics``, ``/healthz``, ``/readyz``.

``/healthz`` answers 200 while the process's event loop runs. ``/readyz`` answers 200 only when
every registered component says it is ready (for the monitor: partitions assigned and state
restored), else 503 with the components that are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable, Iterator

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from vectoros.errors import ConfigError, PortInUse

logger = logging.getLogger(__name__)


class Health:
    """Readiness of the components of one process."""

    def __init__(self) -> None:
        self._checks: dict[str, Callable[[], bool]] = {}

    def register(self, name: str, check: Callable[[], bool]) -> None:
        self._checks[name] = check

    def status(self) -> dict[str, bool]:
        return {name: bool(check()) for name, check in self._checks.items()}

    def ready(self) -> bool:
        return all(self.status().values())


def build_app(registry: CollectorRegistry, health: Health) -> Starlette:
    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        status = health.status()
        ok = all(status.values())
        return JSONResponse({"ready": ok, "components": status}, status_code=200 if ok else 503)

    return Starlette(
        routes=[
            Route("/metrics", metrics),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ]
    )


class _ServerWithoutSignals(uvicorn.Server):
    """The service owns SIGINT/SIGTERM (graceful shutdown); uvicorn must not take them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class AppServer:
    """Serves an ASGI app with uvicorn inside the running event loop (ops endpoint, gateway)."""

    def __init__(
        self,
        app: ASGIApp,
        host: str,
        port: int,
        *,
        name: str = "http",
        setting: str | None = None,
    ) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=30,
        )
        self._server = _ServerWithoutSignals(config)
        self._name = name
        self._host = host
        self._requested_port = port
        self._setting = setting
        self._task: asyncio.Task[None] | None = None

    def _bind(self) -> socket.socket:
        """The listening socket, bound here so that a busy port is one clear ``PortInUse`` (uvicorn
        would log it and call ``sys.exit``)."""
        host, port = self._host, self._requested_port
        where = f"{host}:{port}"
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            raise ConfigError(f"the {self._name} server cannot listen on {where}: {exc}") from exc
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
        except OSError as exc:
            sock.close()
            fix = f"; set {self._setting} to a free port (0 = any)" if self._setting else ""
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(
                    f"port {port} on {host} is already in use (another service?){fix}"
                ) from exc
            raise ConfigError(
                f"the {self._name} server cannot listen on {where}: {exc.strerror}{fix}"
            ) from exc
        return sock

    async def start(self) -> None:
        sock = self._bind()
        self._task = asyncio.create_task(
            self._server.serve(sockets=[sock]), name=f"{self._name}-server"
        )
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises the start-up error
                raise ConfigError(f"the {self._name} HTTP server stopped during start-up")
            await asyncio.sleep(0.01)

    @property
    def port(self) -> int:
        """The bound port (useful when started with port 0)."""
        for server in self._server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        raise RuntimeError(f"the {self._name} server is not started")

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class OpsServer(AppServer):
    """``/metrics``, ``/healthz`` and ``/readyz`` of one process."""

    def __init__(self, registry: CollectorRegistry, health: Health, host: str, port: int) -> None:
        super().__init__(
            build_app(registry, health), host, port, name="ops", setting="VECTOROS_METRICS_PORT"
        )

    @property
    def url(self) -> str:
        """``http://host:port`` of the bound endpoint (for banners and logs)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"
