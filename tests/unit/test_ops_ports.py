"""The ops endpoint's port: a busy one is a ``PortInUse`` naming VECTOROS_METRICS_PORT, except
for ``vectoros run`` / ``demo`` whose busy *default* port is replaced by a free one."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from vectoros.errors import PortInUse
from vectoros.ops_server import Health
from vectoros.service import current_ops_server, serve, start_ops_server
from vectoros.settings import OpsSettings


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def default_port_settings(port: int) -> OpsSettings:
    """Settings whose metrics_port is ``port`` as a default, not set by the user."""
    return OpsSettings.model_construct(
        _fields_set=set(), metrics_enabled=True, metrics_host="127.0.0.1", metrics_port=port
    )


async def test_a_busy_port_names_the_variable(busy_port: int) -> None:
    with pytest.raises(PortInUse, match="VECTOROS_METRICS_PORT") as info:
        await start_ops_server("monitor", default_port_settings(busy_port), CollectorRegistry(),
                               Health())  # fmt: skip
    assert f"port {busy_port} on 127.0.0.1 is already in use" in str(info.value)


async def test_run_takes_a_free_port_when_its_default_is_busy(
    busy_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    ops = await start_ops_server(
        "run", default_port_settings(busy_port), CollectorRegistry(), Health(),
        any_port_if_busy=True,
    )  # fmt: skip
    try:
        assert ops.port not in (0, busy_port)
        assert ops.url == f"http://127.0.0.1:{ops.port}"
        assert f"serving /metrics on port {ops.port} instead" in caplog.text
    finally:
        await ops.stop()


async def test_run_keeps_a_port_set_explicitly(busy_port: int) -> None:
    settings = OpsSettings(metrics_port=busy_port)
    with pytest.raises(PortInUse):
        await start_ops_server("run", settings, CollectorRegistry(), Health(),
                               any_port_if_busy=True)  # fmt: skip


async def test_the_body_of_serve_sees_the_bound_port(busy_port: int) -> None:
    seen: list[int] = []

    async def body(registry: CollectorRegistry, health: Health, stop: asyncio.Event) -> None:
        ops = current_ops_server()
        assert ops is not None
        seen.append(ops.port)

    await serve("run", default_port_settings(busy_port), body)
    assert len(seen) == 1
    assert seen[0] != busy_port
    with pytest.raises(PortInUse):
        await serve("monitor", default_port_settings(busy_port), body)
    assert current_ops_server() is None
