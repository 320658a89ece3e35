"""Plumbing of the reliability tests: services as real child processes, and what the tests read
back from Kafka and PostgreSQL to compare a disturbed run with an undisturbed one.

Services run as ``python -m app <command>`` with a clean environment (only the
``VECTOROS_*`` variables a test gives), one log file per start, and are killed (SIGKILL), stopped
(SIGTERM) and restarted on purpose. ``ServiceGroup`` reaps every child on exit, whatever
happened, and prints where their logs are (shown by pytest when a test fails): no process
outlives its test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry

from consumer.monitor.settings import MonitorSettings
from consumer.sink.service import run_sink
from consumer.sink.settings import SinkSettings
from producer.publisher import DealEventPublisher
from producer.simulator import SimTick
from schemas.events import DealEvent
from schemas.insights import insight_adapter
from tests.kafka_utils import read_all
from vectoros.ops_server import Health

WAIT_LIMIT = 60.0  # a bound for "never happens", not a timing goal
SESSION_TIMEOUT_MS = 1000
"""Group session timeout of the monitors started here (``VECTOROS_SESSION_TIMEOUT_MS``). On the
embedded broker a restart on the same group after a SIGKILL is assigned ~2.5 session timeouts
after its start (measured: 1.8 s at 1000 ms, 5 s at 2000 ms, 7.8 s at 3000 ms, ~19 s with the
10 s default; static membership: ~9 s), so the kill-and-restart tests use the smallest allowed."""


# --- child processes ---------------------------------------------------------------------------


def service_env(**settings: object) -> dict[str, str]:
    """This process's environment without any ``VECTOROS_*`` variable, plus ``settings``
    (``topic_events="x"`` becomes ``VECTOROS_TOPIC_EVENTS=x``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VECTOROS_")}
    env.update({f"VECTOROS_{name.upper()}": str(value) for name, value in settings.items()})
    return env


def monitor_env(settings: MonitorSettings, **extra: object) -> dict[str, str]:
    """The environment of a ``vectoros monitor`` child equivalent to ``settings``."""
    values: dict[str, object] = {
        "kafka_bootstrap_servers": settings.bootstrap(),
        "kafka_idempotence": "off",  # the embedded broker refuses it; skip the noisy attempt
        "topic_events": settings.topic_events,
        "topic_insights": settings.topic_insights,
        "topic_dlq": settings.topic_dlq,
        "topic_state": settings.topic_state,
        "topic_partitions": settings.topic_partitions,
        "monitor_group_id": settings.monitor_group_id,
        "metrics_enabled": "false",
        "fetch_timeout_ms": settings.fetch_timeout_ms,
        "session_timeout_ms": SESSION_TIMEOUT_MS,
    }
    values.update(extra)
    return service_env(**values)


class Service:
    """One started child process and its log file."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log_path: Path) -> None:
        self.name = name
        self.proc = proc
        self.log_path = log_path
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, chars: int = 4000) -> str:
        return self.log()[-chars:]

    async def wait_for_log(self, pattern: str, *, within: float = WAIT_LIMIT) -> re.Match[str]:
        """The first match of ``pattern`` in the log; fails early if the process exits."""
        regex = re.compile(pattern)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            match = regex.search(self.log())
            if match is not None:
                return match
            if not self.running:
                raise AssertionError(
                    f"{self.name} exited ({self.proc.returncode}) before logging {pattern!r}; "
                    f"log {self.log_path}:\n{self.tail()}"
                )
            if loop.time() > deadline:
                raise AssertionError(
                    f"{self.name} did not log {pattern!r} within {within:.0f} s; "
                    f"log {self.log_path}:\n{self.tail()}"
                )
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: a crash, no chance to checkpoint or leave the group."""
        if self.running:
            self.proc.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        """SIGTERM: the clean shutdown a deployment does."""
        if self.running:
            self.proc.send_signal(signal.SIGTERM)

    async def wait(self, within: float = WAIT_LIMIT) -> int:
        return await asyncio.wait_for(self.proc.wait(), within)

    async def stop(self, within: float = WAIT_LIMIT) -> tuple[int, float]:
        """SIGTERM and wait: (exit code, seconds from the signal to the exit)."""
        started = time.monotonic()
        self.terminate()
        code = await self.wait(within)
        return code, time.monotonic() - started


class ServiceGroup:
    """Starts services; on exit kills and reaps whichever still run (async context manager)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.services: list[Service] = []

    async def start(self, name: str, command: str, env: Mapping[str, str]) -> Service:
        """``python -m app <command>`` with ``env``; its log is ``<name>-<n>.log``."""
        n = 1 + sum(1 for s in self.services if s.name == name)
        log_path = self.directory / f"{name}-{n}.log"
        with log_path.open("ab") as log:  # the child keeps its own descriptor
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "app",
                command,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        service = Service(name, proc, log_path)
        self.services.append(service)
        return service

    async def __aenter__(self) -> ServiceGroup:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for service in self.services:
            service.kill()
        for service in self.services:
            await service.wait()
        for service in self.services:
            code = service.proc.returncode
            print(f"{service.name} pid {service.pid} exit {code}: {service.log_path}")


# --- Kafka -------------------------------------------------------------------------------------


async def stream_items(
    publisher: DealEventPublisher, items: Sequence[DealEvent | SimTick], seconds: float
) -> None:
    """Publish a simulated scenario evenly over ``seconds`` (ticks go to every partition), each
    step acknowledged before the next: a steady stream, unlike a burst."""
    if not items:
        return
    partitions = await publisher.partitions(refresh=True)
    loop = asyncio.get_running_loop()
    started = loop.time()
    step = max(1, len(items) // max(1, int(seconds * 20)))  # ~20 flushes per second
    for n in range(0, len(items), step):
        for item in items[n : n + step]:
            if isinstance(item, SimTick):
                await publisher.publish_tick(item.at, partitions)
            else:
                await publisher.publish(item)
        await publisher.flush()
        due = started + seconds * (n + step) / len(items)
        await asyncio.sleep(max(0.0, due - loop.time()))


async def committed_offsets(
    bootstrap: str, group: str, topic: str, partitions: int
) -> dict[int, int]:
    """The group's committed offset of each partition (0 when none)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        return {
            p: await consumer.committed(TopicPartition(topic, p)) or 0 for p in range(partitions)
        }
    finally:
        await consumer.stop()


async def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """The log end of each partition, read through (``ListOffsets`` is wrong on Tansu)."""
    ends = dict.fromkeys(range(partitions), 0)
    for record in await read_all(bootstrap, topic):
        ends[record.partition] = max(ends[record.partition], record.offset + 1)
    return ends


async def wait_committed(
    bootstrap: str,
    group: str,
    topic: str,
    ends: Mapping[int, int],
    *,
    alive: Iterable[Service] = (),
    within: float = WAIT_LIMIT,
) -> None:
    """Until ``group`` has committed ``ends`` on every partition; the ``alive`` services must not
    exit meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    watched = list(alive)
    while True:
        committed = await committed_offsets(bootstrap, group, topic, len(ends))
        if all(committed[p] >= end for p, end in ends.items()):
            return
        for service in watched:
            assert service.running, f"{service.name} exited:\n{service.tail()}"
        if loop.time() > deadline:
            raise AssertionError(f"group {group} committed {committed}, expected {dict(ends)}")
        await asyncio.sleep(0.2)


StepKey = tuple[str, str, str]


@dataclass
class InsightSteps:
    """An insight stream as the sink sees it: per partition, one step per (insight_id,
    lifecycle, detected_at) with its payload; how many records repeated a step (a redelivery),
    and which repeated it with another payload (never legitimate: ids are deterministic)."""

    by_partition: dict[int, dict[StepKey, bytes]] = field(default_factory=dict)
    keys: set[StepKey] = field(default_factory=set)
    repeated: int = 0
    conflicting: list[StepKey] = field(default_factory=list)
    records: int = 0


def insight_steps(records: Iterable[Any]) -> InsightSteps:
    out = InsightSteps()
    for record in records:
        out.records += 1
        insight = insight_adapter.validate_json(record.value)
        key = (insight.insight_id, insight.lifecycle.value, insight.detected_at.isoformat())
        steps = out.by_partition.setdefault(record.partition, {})
        if key in steps:
            out.repeated += 1
            if steps[key] != record.value:
                out.conflicting.append(key)
            continue
        out.keys.add(key)
        steps[key] = record.value
    return out


# --- PostgreSQL --------------------------------------------------------------------------------


def dsn_for_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


@contextlib.asynccontextmanager
async def fresh_database(dsn: str) -> AsyncIterator[str]:
    """A new, empty database on the server of ``dsn``; dropped afterwards."""
    name = f"rel_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield dsn_for_database(dsn, name)
    finally:
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def sink_settings(
    bootstrap: str, dsn: str, topic: str, group: str, partitions: int
) -> SinkSettings:
    return SinkSettings(
        kafka_bootstrap_servers=bootstrap,
        kafka_idempotence="off",
        database_url=dsn,  # type: ignore[arg-type]
        topic_insights=topic,
        topic_partitions=partitions,
        sink_group_id=group,
        sink_flush_ms=20,
        metrics_enabled=False,
        db_connect_deadline_seconds=20,
    )


async def sink_everything(settings: SinkSettings) -> None:
    """Run the sink in-process until it has committed the whole insights topic."""
    bootstrap = settings.bootstrap()
    ends = await end_offsets(bootstrap, settings.topic_insights, settings.topic_partitions)
    stop = asyncio.Event()
    task = asyncio.create_task(run_sink(settings, CollectorRegistry(), Health(), stop))
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_LIMIT
        while True:
            committed = await committed_offsets(
                bootstrap, settings.sink_group_id, settings.topic_insights, len(ends)
            )
            if all(committed[p] >= end for p, end in ends.items()):
                break
            if task.done():
                task.result()  # raises what stopped it
                raise AssertionError("the sink stopped by itself")
            assert loop.time() < deadline, f"sink committed {committed}, expected {ends}"
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_LIMIT)


VOLATILE_COLUMNS = frozenset(
    {"created_at", "updated_at", "recorded_at", "kafka_topic", "kafka_partition", "kafka_offset"}
)


@dataclass
class Tables:
    """The sink's tables without the columns that differ between two equal runs (row times and
    the Kafka position a row was first read from)."""

    insights: dict[str, dict[str, Any]]
    insight_events: dict[tuple[str, str, Any], dict[str, Any]]


async def read_tables(dsn: str, *, topic: str | None = None) -> Tables:
    """``insights`` and ``insight_events``; with ``topic``, only the rows of insights read from
    that topic (for a database that other tests share)."""
    conn = await asyncpg.connect(dsn)
    try:
        if topic is None:
            rows = await conn.fetch("SELECT * FROM insights")
            events = await conn.fetch("SELECT * FROM insight_events")
        else:
            events = await conn.fetch("SELECT * FROM insight_events WHERE kafka_topic = $1", topic)
            ids = sorted({e["insight_id"] for e in events})
            rows = await conn.fetch("SELECT * FROM insights WHERE insight_id = ANY($1)", ids)
    finally:
        await conn.close()

    def clean(row: Any) -> dict[str, Any]:
        return {k: v for k, v in dict(row).items() if k not in VOLATILE_COLUMNS}

    return Tables(
        insights={r["insight_id"]: clean(r) for r in rows},
        insight_events={
            (r["insight_id"], r["lifecycle"], r["detected_at"]): clean(r) for r in events
        },
    )


def describe_difference(actual: InsightSteps, expected: InsightSteps, limit: int = 5) -> str:
    """Which insight steps one run has and the other lacks, readably (for assertion messages)."""

    def summary(value: bytes) -> str:
        i = insight_adapter.validate_json(value)
        return f"{i.deal_id} {i.rule.value} {i.lifecycle.value} {i.priority.value} @{i.detected_at}"

    lines = []
    for partition in sorted(set(actual.by_partition) | set(expected.by_partition)):
        got = actual.by_partition.get(partition, {})
        want = expected.by_partition.get(partition, {})
        if got == want:
            continue
        missing = [summary(v) for k, v in want.items() if k not in got][:limit]
        extra = [summary(v) for k, v in got.items() if k not in want][:limit]
        changed = [summary(v) for k, v in got.items() if k in want and want[k] != v][:limit]
        lines.append(
            f"partition {partition}: {len(got)} steps, expected {len(want)}; "
            f"missing {missing}; unexpected {extra}; with other content {changed}"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class Restore:
    """One partition restore a monitor logged."""

    partition: int
    source: str  # changelog, replay or empty
    committed: int
    records: int
    seconds: float
    ignored_uncommitted: int


def restore_lines(log: str) -> list[Restore]:
    """Every restore a monitor logged, in order."""
    pattern = re.compile(
        r"partition (\d+) restored from (\w+) at offset (\d+): \d+ deals from (\d+) records "
        r"in ([\d.]+)s \((\d+) uncommitted entries ignored\)"
    )
    return [
        Restore(int(p), source, int(offset), int(records), float(seconds), int(skipped))
        for p, source, offset, records, seconds, skipped in pattern.findall(log)
    ]


def ops_port(service: Service) -> int:
    """The port of a service's /metrics, /healthz, /readyz (started with port 0)."""
    match = re.search(r"/readyz on http://[^:]+:(\d+)", service.log())
    assert match is not None, f"{service.name} has not logged its ops port:\n{service.tail()}"
    return int(match.group(1))


async def http_get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of ``GET http://127.0.0.1:<port><path>``."""
    async with httpx.AsyncClient(timeout=5.0) as client:
        response = await client.get(f"http://127.0.0.1:{port}{path}")
        return response.status_code, response.text


def metric_total(exposition: str, name: str) -> float:
    """The sum of every sample of ``name`` in a Prometheus text exposition."""
    total = 0.0
    for line in exposition.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            head, _, value = line.rpartition(" ")
            if head == name or head.startswith(name + "{"):
                total += float(value)
    return total
