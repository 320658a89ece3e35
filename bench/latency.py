"""Event → insight latency at a fixed offered load, against a live monitor in its own process.

The monitor runs as ``python -m app monitor`` (default settings; its own topics and group;
ready when ``/readyz`` says so). This process produces ``deal.created`` events for new deals
with a probability below the lead-stage minimum, so each raises exactly one ``low_probability``
insight at once, paced at ``rate`` events/s with a plain producer (acks=all, no linger), and
reads ``deal-insights`` with a consumer that polls continuously (fetch wait 5 ms). The paced
load starts once one event has made the whole round trip (the group settled), then runs a
warm-up before measuring.

latency = (time the insight record is handed to this process by its consumer)
        - (time the source event was given to ``producer.send``),
both on this process's monotonic clock, for every event produced after a warm-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.data import MAX_EVENT_AGE_SECONDS
from bench.env import ROOT, Session, cache_dir, cpu_seconds, free_port
from bench.throughput import monitor_settings

logger = logging.getLogger("bench")


@dataclass
class LatencyResult:
    p50_ms: float
    p99_ms: float
    max_ms: float
    events: int
    achieved_rate: float
    monitor_cpu_share: float  # CPU seconds of the monitor per wall second while measuring
    broker_cpu_share: float | None  # the same for the broker
    bench_cpu_share: float  # and for this process (the paced producer and the insight reader)


def low_probability_events(run: str) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of deal.created events that raise low_probability immediately."""
    i = 0
    while True:
        deal_id = f"lat-{run}-{i:07d}"
        now = dt.datetime.now(dt.UTC)
        body = {
            "schema_version": 1,
            "type": "deal.created",
            "event_id": f"{deal_id}-c",
            "workspace_id": "ws-latency",
            "deal_id": deal_id,
            "occurred_at": now.isoformat(timespec="milliseconds"),
            "title": f"Latency probe {i}",
            "value": 5000.0,
            "currency": "USD",
            "stage": "lead",
            "probability": 5.0,
            "close_date": (now.date() + dt.timedelta(days=90)).isoformat(),
            "owner_id": "usr-latency",
        }
        yield deal_id.encode(), orjson.dumps(body)
        i += 1


def _spawn_monitor(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "app", "monitor"],
            cwd=ROOT,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


class _Inbox:
    """Arrival times of insights by key; ``done`` once every expected key has arrived."""

    def __init__(self) -> None:
        self.received: dict[bytes, float] = {}
        self.pending: set[bytes] = set()
        self.closed = False
        self.done = asyncio.Event()

    def expect(self, key: bytes) -> None:
        self.pending.add(key)

    def got(self, key: bytes, at: float) -> None:
        if key not in self.received:
            self.received[key] = at
            self.pending.discard(key)
            self._check()

    def close(self) -> None:
        self.closed = True
        self._check()

    def _check(self) -> None:
        if self.closed and not self.pending:
            self.done.set()


@contextlib.asynccontextmanager
async def monitor_process(
    env: dict[str, str], port: int, log_name: str
) -> AsyncIterator[subprocess.Popen[bytes]]:
    log_path = cache_dir() / log_name
    proc = _spawn_monitor(env, log_path)
    try:
        async with httpx.AsyncClient() as client:
            deadline = time.monotonic() + 120
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"monitor exited with {proc.returncode}; see {log_path}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"monitor not ready after 120 s; see {log_path}")
                with contextlib.suppress(httpx.HTTPError):
                    r = await client.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                    if r.status_code == 200:
                        break
                await asyncio.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def run_latency(
    session: Session, *, rate: float, warmup_s: float, measure_s: float
) -> LatencyResult:
    prefix = session.name("lat")
    events_topic = f"{prefix}-events"
    settings = monitor_settings(session, events_topic, prefix)
    topics = (
        events_topic,
        settings.topic_insights,
        settings.topic_dlq,
        settings.topic_state,
    )
    await session.create_topics(*topics)
    port = free_port()
    env = {
        "VECTOROS_KAFKA_BOOTSTRAP_SERVERS": session.bootstrap,
        "VECTOROS_TOPIC_EVENTS": events_topic,
        "VECTOROS_TOPIC_INSIGHTS": settings.topic_insights,
        "VECTOROS_TOPIC_DLQ": settings.topic_dlq,
        "VECTOROS_TOPIC_STATE": settings.topic_state,
        "VECTOROS_TOPIC_PARTITIONS": str(session.partitions),
        "VECTOROS_MONITOR_GROUP_ID": settings.monitor_group_id,
        "VECTOROS_METRICS_ENABLED": "true",
        "VECTOROS_METRICS_PORT": str(port),
        "VECTOROS_LOG_LEVEL": "WARNING",
        "VECTOROS_MAX_EVENT_AGE": str(MAX_EVENT_AGE_SECONDS),
    }
    sent: dict[bytes, float] = {}
    inbox = _Inbox()
    async with monitor_process(env, port, "latency-monitor.log") as proc:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=session.bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=5,
        )
        producer = AIOKafkaProducer(bootstrap_servers=session.bootstrap, acks="all", linger_ms=0)
        await consumer.start()
        await producer.start()
        try:
            tps = [TopicPartition(settings.topic_insights, p) for p in range(session.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            stop = asyncio.Event()
            reader = asyncio.create_task(_receive(consumer, inbox, stop))
            gen = low_probability_events(prefix[-8:])
            await _first_round_trip(producer, events_topic, gen, inbox)
            total_s = warmup_s + measure_s
            started = time.perf_counter()
            cpu0 = cpu1 = own0 = own1 = 0.0
            broker0 = broker1 = None
            count = int(rate * total_s)
            measured_from = int(rate * warmup_s)
            for i in range(count):
                if i == measured_from:
                    cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
                    own0, broker0 = time.process_time(), session.broker_cpu_seconds()
                due = started + i / rate
                delay = due - time.perf_counter()
                if delay > 0.0005:
                    await asyncio.sleep(delay)
                elif i % 50 == 0:
                    await asyncio.sleep(0)  # behind schedule: still let the reader run
                key, value = next(gen)
                if i >= measured_from:
                    inbox.expect(key)
                sent[key] = time.perf_counter()
                await producer.send(events_topic, value=value, key=key)
            produced_s = time.perf_counter() - started
            cpu1, t1 = cpu_seconds(proc.pid), time.perf_counter()
            own1, broker1 = time.process_time(), session.broker_cpu_seconds()
            measured = list(sent)[measured_from:]
            inbox.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(inbox.done.wait(), 120)
            stop.set()
            await reader
        finally:
            await producer.stop()
            await consumer.stop()
    await session.drop_topics(*topics)
    received = inbox.received
    missing = sum(1 for k in measured if k not in received)
    if missing:
        raise AssertionError(f"{missing} of {len(measured)} insights never arrived")
    lat = sorted((received[k] - sent[k]) * 1000 for k in measured)
    return LatencyResult(
        p50_ms=_pct(lat, 50),
        p99_ms=_pct(lat, 99),
        max_ms=lat[-1],
        events=len(lat),
        achieved_rate=count / produced_s,
        monitor_cpu_share=(cpu1 - cpu0) / (t1 - t0),
        broker_cpu_share=None
        if broker0 is None or broker1 is None
        else (broker1 - broker0) / (t1 - t0),
        bench_cpu_share=(own1 - own0) / (t1 - t0),
    )


async def _first_round_trip(
    producer: AIOKafkaProducer,
    topic: str,
    gen: Iterator[tuple[bytes, bytes]],
    inbox: _Inbox,
    limit_s: float = 120.0,
) -> None:
    """One event through the monitor before the paced load: /readyz says the partitions are
    assigned, but the broker can still be settling the group (Tansu rebalances once more
    within seconds of the first join), and a load started then measures that backlog."""
    key, value = next(gen)
    started = time.perf_counter()
    await producer.send_and_wait(topic, value=value, key=key)
    while key not in inbox.received:
        if time.perf_counter() - started > limit_s:
            raise AssertionError(f"no insight for the first event after {limit_s:.0f} s")
        await asyncio.sleep(0.01)
    logger.info("first event -> insight round trip: %.2f s", time.perf_counter() - started)


def _pct(sorted_values: list[float], pct: float) -> float:
    k = min(len(sorted_values) - 1, max(0, round(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


async def _receive(consumer: AIOKafkaConsumer, inbox: _Inbox, stop: asyncio.Event) -> None:
    while not stop.is_set():
        batch = await consumer.getmany(timeout_ms=50)
        now = time.perf_counter()
        for records in batch.values():
            for rec in records:
                if rec.key is not None:
                    inbox.got(rec.key, now)
