"""The embedded broker and database answer, and the Kafka helpers work against a real broker."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from tests.kafka_utils import WAIT_LIMIT
from vectoros import embedded, kafka
from vectoros.embedded import EmbeddedBroker, EmbeddedPostgres
from vectoros.errors import BrokerUnavailable, ConfigError, EmbeddedStartError
from vectoros.kafka import ensure_topics, partition_count, standard_topics, start_producer
from vectoros.settings import KafkaSettings

pytestmark = pytest.mark.integration

EXTERNAL_BROKER = bool(os.environ.get("VECTOROS_KAFKA_BOOTSTRAP_SERVERS"))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _metadata_partitions(bootstrap: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return await partition_count(admin, topic)
    finally:
        await admin.close()


async def test_ensure_topics_creates_with_partition_counts(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    events, state = unique_name("events"), unique_name("state")
    wanted = {events: 3, state: 2}
    await ensure_topics(kafka_bootstrap, wanted, compacted={state})
    await ensure_topics(kafka_bootstrap, wanted, compacted={state})  # existing: a no-op

    assert await _metadata_partitions(kafka_bootstrap, events) == 3
    assert await _metadata_partitions(kafka_bootstrap, state) == 2


async def test_standard_topics_follow_settings(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    settings = KafkaSettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_events=unique_name("ev"),
        topic_insights=unique_name("in"),
        topic_dlq=unique_name("dlq"),
        topic_state=unique_name("st"),
        topic_partitions=4,
    )
    topics = standard_topics(settings)
    assert set(topics.values()) == {4}
    assert set(topics) == {
        settings.topic_events,
        settings.topic_insights,
        settings.topic_dlq,
        settings.topic_state,
    }
    assert kafka.compacted_topics(settings) == {settings.topic_state}

    await kafka.ensure_standard_topics(settings)

    assert await _metadata_partitions(kafka_bootstrap, settings.topic_state) == 4


async def test_ensure_topics_gives_up_when_no_broker() -> None:
    with pytest.raises(BrokerUnavailable, match="cannot reach the broker"):
        await ensure_topics(f"127.0.0.1:{_closed_port()}", {"x": 1}, retry_for=1.0)


async def test_produce_and_consume(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> None:
    topic = unique_name("events")
    await ensure_topics(kafka_bootstrap, {topic: 2})
    producer = await start_producer(KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap))
    try:
        assert await partition_count(producer, topic) == 2
        sent = await producer.send_and_wait(topic, b"hello", key=b"deal-1")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=unique_name("group"),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), timeout=20)
    finally:
        await consumer.stop()
    assert (record.key, record.value) == (b"deal-1", b"hello")
    assert (record.partition, record.offset) == (sent.partition, sent.offset)


@pytest.mark.skipif(EXTERNAL_BROKER, reason="checks the embedded Tansu broker's known gap")
async def test_idempotence_auto_falls_back_once_and_on_fails(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kafka, "_no_idempotence", set())
    auto = KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap, kafka_idempotence="auto")
    with caplog.at_level(logging.INFO, logger="vectoros.kafka"):
        for _ in range(2):
            producer = await start_producer(auto)
            await producer.stop()
    said = [r for r in caplog.records if "idempotent" in r.getMessage()]
    assert len(said) == 1
    assert said[0].levelname == "INFO"

    on = KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap, kafka_idempotence="on")
    with pytest.raises(ConfigError, match="refused an idempotent producer"):
        await start_producer(on)
    gc.collect()  # an unclosed producer would warn here, and warnings are errors


async def test_start_producer_without_broker() -> None:
    settings = KafkaSettings(
        kafka_bootstrap_servers=f"127.0.0.1:{_closed_port()}",
        kafka_idempotence="off",
        kafka_connect_timeout_seconds=1,
    )
    with pytest.raises(BrokerUnavailable, match="cannot reach the broker"):
        await start_producer(settings)
    gc.collect()


async def test_broker_kill_and_restart_on_same_port() -> None:
    broker = EmbeddedBroker()
    try:
        await asyncio.to_thread(broker.start)
        address = broker.bootstrap_servers
        await ensure_topics(address, {"before-crash": 1})
        broker.kill()
        assert not broker.running
        await asyncio.to_thread(broker.start)
        assert broker.bootstrap_servers == address
        admin = AIOKafkaAdminClient(bootstrap_servers=address)
        await admin.start()
        try:
            assert "before-crash" not in await admin.list_topics()  # memory storage
        finally:
            await admin.close()
    finally:
        broker.close()
    assert not broker.running


def test_broker_start_failure_reports_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALF_TANSU_BIN", "/bin/false")
    broker = EmbeddedBroker()
    with pytest.raises(EmbeddedStartError, match="exited with 1"):
        broker.start(timeout=5)
    broker.close()


async def test_postgres_answers(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("select 1") == 1
    finally:
        await conn.close()


async def test_postgres_pause_and_resume_keep_data_and_dsn() -> None:
    postgres = EmbeddedPostgres()
    try:
        await asyncio.to_thread(postgres.start)
        dsn = postgres.dsn
        conn = await asyncpg.connect(dsn)
        await conn.execute("create table t (v int); insert into t values (7)")

        await asyncio.to_thread(postgres.pause)
        assert not postgres.running
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
            await conn.fetchval("select v from t")  # open connections are cut
        with pytest.raises(OSError, match=r"No such file|refused"):
            await asyncpg.connect(dsn)  # and new ones refused (the socket is gone)

        await asyncio.to_thread(postgres.resume)
        assert postgres.running
        assert postgres.dsn == dsn
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("select v from t") == 7
            await conn.execute("insert into t values (8)")
        finally:
            await conn.close()

        await asyncio.to_thread(postgres.pause, "immediate")  # a crash: recovery on resume
        await asyncio.to_thread(postgres.resume)
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("select sum(v) from t") == 15
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(postgres.stop)
    assert not postgres.running


_STARTER = """
import json, sys
from vectoros import embedded
broker, postgres = embedded.EmbeddedBroker(), embedded.EmbeddedPostgres()
broker.start()
postgres.start()
print(json.dumps({
    "pids": [broker.pid, postgres.pid],
    "dirs": [str(broker.directory), str(postgres.directory)],
    "watchdog": embedded._Watchdog.pid(),
}), flush=True)
sys.stdin.read()
"""
NEEDS_PROC = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")


def _descendants(pid: int) -> set[int]:
    """``pid`` and every process below it (by /proc ppid)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
    found, todo = {pid}, [pid]
    while todo:
        current = todo.pop()
        for child, parent in parents.items():
            if parent == current and child not in found:
                found.add(child)
                todo.append(child)
    return found


def _live(pids: set[int]) -> set[int]:
    return {pid for pid in pids if embedded._stamp(pid) is not None}


def _wait_gone(pids: set[int]) -> None:
    deadline = time.monotonic() + WAIT_LIMIT  # a bound for "never", not a timing goal
    while _live(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _live(pids), f"still running: {_live(pids)}"


def _start_servers_in_a_child() -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """A process that starts the embedded broker and PostgreSQL, then waits on its stdin."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VECTOROS_")}
    proc = subprocess.Popen(
        [sys.executable, "-c", _STARTER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"the child exited with {proc.wait()}"
    info = json.loads(line)
    servers: set[int] = set()
    for pid in info["pids"]:
        servers |= _descendants(pid)  # the postmaster's backends too
    info["servers"] = servers
    assert _live(set(info["pids"])) == set(info["pids"])
    assert all(Path(d).is_dir() for d in info["dirs"])
    return proc, info


def _reap(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            pipe.close()


@NEEDS_PROC
def test_servers_die_with_a_killed_parent() -> None:
    proc, info = _start_servers_in_a_child()
    _reap(proc)  # SIGKILL: no finalizer, no atexit

    _wait_gone(info["servers"] | {info["watchdog"]})
    assert not any(Path(d).exists() for d in info["dirs"])


@NEEDS_PROC
def test_next_start_removes_what_a_dead_run_left() -> None:
    proc, info = _start_servers_in_a_child()
    try:
        os.kill(info["watchdog"], signal.SIGKILL)  # everything killed, the watchdog first
        _wait_gone({info["watchdog"]})
    finally:
        _reap(proc)
    assert _live(set(info["pids"])), "the servers outlived their parent (the watchdog was dead)"
    assert all(Path(d).is_dir() for d in info["dirs"])

    broker = EmbeddedBroker()  # the next start
    broker.close()

    _wait_gone(info["servers"])
    assert not any(Path(d).exists() for d in info["dirs"])
