"""The console commands as an operator runs them: separate processes, configured only through
``VECTOROS_KAFKA_BOOTSTRAP_SERVERS`` (an external broker from their point of view)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from schemas.insights import RuleName
from tests.kafka_utils import WAIT_LIMIT, read_all, read_insights

pytestmark = pytest.mark.integration

VECTOROS = [sys.executable, "-m", "app"]


def env_for(bootstrap: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VECTOROS_")}
    env.update(
        VECTOROS_KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        VECTOROS_TOPIC_EVENTS=f"{prefix}-events",
        VECTOROS_TOPIC_INSIGHTS=f"{prefix}-insights",
        VECTOROS_TOPIC_DLQ=f"{prefix}-dlq",
        VECTOROS_TOPIC_STATE=f"{prefix}-state",
        VECTOROS_TOPIC_PARTITIONS="3",
        VECTOROS_MONITOR_GROUP_ID=f"{prefix}-monitor",
        VECTOROS_METRICS_PORT="0",
    )
    env.update(extra)
    return env


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        VECTOROS + args, env=env, capture_output=True, text=True, timeout=WAIT_LIMIT, check=False
    )


async def test_topics_simulate_tick_and_monitor_processes(
    kafka_bootstrap: str, unique_name: Any, tmp_path: Path
) -> None:
    prefix = unique_name("cli")
    env = env_for(kafka_bootstrap, prefix)

    created = run(["topics", "create"], env)
    assert created.returncode == 0, created.stderr
    assert f"{prefix}-events: 3 partitions" in created.stdout
    assert f"{prefix}-state: 3 partitions (compacted)" in created.stdout

    sim = run(["simulate", "--deals", "30", "--days", "30", "--seed", "3"], env)
    assert sim.returncode == 0, sim.stderr
    assert "published" in sim.stdout

    ticked = run(["tick", "--once"], env)
    assert ticked.returncode == 0, ticked.stderr
    assert "sent 3 ticks" in ticked.stdout

    log_path = tmp_path / "monitor.log"
    with log_path.open("w") as log:
        monitor = await asyncio.create_subprocess_exec(
            *VECTOROS, "monitor", env=env, stdout=log, stderr=log
        )
        try:
            deadline = time.monotonic() + WAIT_LIMIT
            insights: list[Any] = []
            while time.monotonic() < deadline and not insights:
                insights = await read_insights(kafka_bootstrap, f"{prefix}-insights")
            assert insights, log_path.read_text()
            assert {i.rule for i in insights} <= set(RuleName)
        finally:
            monitor.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(monitor.wait(), WAIT_LIMIT)
    output = log_path.read_text()
    assert code == 0, output
    assert "monitor stopped" in output
    assert await read_all(kafka_bootstrap, f"{prefix}-dlq") == []


def test_monitor_without_a_broker_says_what_to_do() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VECTOROS_")}
    result = run(["monitor"], env)
    assert result.returncode == 1
    assert "VECTOROS_KAFKA_BOOTSTRAP_SERVERS is not set" in result.stderr


def test_bad_configuration_is_a_clear_error() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VECTOROS_")}
    env["VECTOROS_TOPIC_PARTITIONS"] = "zero"
    result = run(["topics", "create"], env)
    assert result.returncode == 1
    assert "VECTOROS_TOPIC_PARTITIONS" in result.stderr
