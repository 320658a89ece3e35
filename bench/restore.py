"""Restore time of many deal states from the changelog, as the monitor does on assignment.

Setup (once): ``deals`` plausible open deal states are encoded with ``consumer.changelog``
(``encode_deal``, one record per deal, key ``deal_id``, on the partition its key hashes to, plus
one ``encode_meta`` record per partition), all stamped with source offset ``COMMITTED``, and
loaded into a changelog topic. That is a compacted changelog's content; the embedded broker
does not compact, so a real one would hold more records per deal.

Each run restores every partition as ``Monitor.restore_partitions`` does on an assignment of all
of them: fresh ``PartitionState``s and ``consumer.monitor.restore.restore_partitions`` (one consumer
reads every changelog partition to its end, then each is folded and ``PartitionState.load``
rebuilds its deadline index).
The breakdown (once, partition 0) times the broker read, the pure fold and the load apart.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass, field

from aiokafka import TopicPartition

from bench.data import START_MS, deal_states, partition_for
from bench.env import Record, Session, cache_dir, load
from consumer.changelog import META_KEY, VERSION, encode_deal, encode_meta, restore
from consumer.deal_codec import FORMAT
from consumer.monitor.restore import restore_partitions
from consumer.partition import PartitionState
from consumer.restore import gc_paused, read_partition
from consumer.state import DAY_MS
from consumer.thresholds import RulesConfig

COMMITTED = 1_000_000_000


@dataclass
class RestoreSetup:
    topic: str
    source_topic: str
    deals: int
    records: int
    clock_ms: int
    encode_s: float
    load_s: float


def changelog_records(deals: int, partitions: int, clock: int) -> dict[int, list[Record]]:
    """The encoded changelog, per partition (cached on disk: encoding is not what is measured)."""
    # named after the changelog's and the packed deal's formats: a cache of another format would
    # measure its upgrade on restore, not the restore
    path = cache_dir() / f"changelog-v{VERSION}-d{FORMAT}-{deals}-p{partitions}.pickle"
    if path.exists():
        with path.open("rb") as f:
            cached: dict[int, list[Record]] = pickle.load(f)  # our own cache file
            return cached
    parts: dict[int, list[Record]] = {p: [] for p in range(partitions)}
    for deal in deal_states(deals, clock):
        key = deal.deal_id.encode()
        parts[partition_for(key, partitions)].append((key, encode_deal(deal, COMMITTED), None))
    for recs in parts.values():
        recs.append((META_KEY, encode_meta(clock, COMMITTED), None))
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        pickle.dump(parts, f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)
    return parts


async def setup(session: Session, deals: int) -> RestoreSetup:
    clock = START_MS + 60 * DAY_MS
    started = time.perf_counter()
    parts = changelog_records(deals, session.partitions, clock)
    encode_s = time.perf_counter() - started
    topic = session.name("changelog")
    source = session.name("source")
    await session.create_topics(topic, source)
    load_s = await load(session.bootstrap, topic, parts)
    return RestoreSetup(
        topic, source, deals, sum(len(r) for r in parts.values()), clock, encode_s, load_s
    )


@dataclass
class RestoreResult:
    seconds: float
    deals: int
    records: int
    breakdown: dict[str, float] = field(default_factory=dict)


def _no_replay(state: PartitionState, rec: object) -> None:
    raise AssertionError("the changelog has a checkpoint: nothing should be replayed")


async def run_restore(session: Session, s: RestoreSetup) -> RestoreResult:
    rules = RulesConfig()
    deals = records = 0
    started = time.perf_counter()
    states = {p: PartitionState(rules) for p in range(session.partitions)}
    reports = await restore_partitions(
        states,
        bootstrap=session.bootstrap,
        changelog_topic=s.topic,
        source_topic=s.source_topic,
        committed=dict.fromkeys(states, COMMITTED),
        replay=_no_replay,
        client_id="bench",
    )
    for p, report in reports.items():
        if report.source != "changelog":
            raise AssertionError(f"partition {p} restored from {report.source}")
        deals += len(states[p].deals)
        records += report.records
    elapsed = time.perf_counter() - started
    if deals != s.deals:
        raise AssertionError(f"restored {deals} deals, expected {s.deals}")
    return RestoreResult(elapsed, deals, records)


async def breakdown(session: Session, s: RestoreSetup, partition: int) -> dict[str, float]:
    """Seconds one partition's restore spends reading the changelog from the broker
    (``read_partition``), folding it (``changelog.restore``) and loading the state."""
    t0 = time.perf_counter()
    pairs: list[tuple[bytes | None, bytes | None]] = []
    async for batch in read_partition(session.bootstrap, TopicPartition(s.topic, partition)):
        pairs.extend((r.key, r.value) for r in batch)
    t1 = time.perf_counter()
    with gc_paused():  # as the monitor folds (consumer.monitor.restore)
        restored = restore(pairs, COMMITTED)
    t2 = time.perf_counter()
    PartitionState(RulesConfig()).load(
        restored.deals, restored.closed, restored.clock_ms, closed_seen=restored.closed_seen
    )
    t3 = time.perf_counter()
    return {"deals": len(restored.deals), "read": t1 - t0, "fold": t2 - t1, "load": t3 - t2}
