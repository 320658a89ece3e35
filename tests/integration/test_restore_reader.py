"""The restore reader against the real broker: every record once, in order, to the high
watermark or to ``until``; empty partitions end at once."""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from consumer import deal_codec
from consumer.changelog import restore
from consumer.deal_codec import rule_codes, unpack
from consumer.restore import read_partition, read_partitions
from tests.unit.test_changelog import check_previous_format_restored, previous_format
from tests.unit.test_rules_registry import _inserted
from vectoros.batch_produce import BatchProducer, OutRecord
from vectoros.kafka import ensure_topics

pytestmark = pytest.mark.integration

PARTITIONS = 4
COUNTS = {0: 0, 1: 1, 2: 2_500, 3: 30_000}  # partition -> records (more than one fetch)


async def load(bootstrap: str, topic: str) -> None:
    await ensure_topics(bootstrap, {topic: PARTITIONS})
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=256 * 1024, linger_ms=0)
    await producer.start()
    try:
        await BatchProducer(producer).send_all(
            [
                OutRecord(topic, f"k{p}-{i}".encode(), b"v" * 200 + str(i).encode(), None, p)
                for p, count in COUNTS.items()
                for i in range(count)
            ]
        )
    finally:
        await producer.stop()


def check_partition(partition: int, records: list[Any], count: int) -> None:
    assert [r.offset for r in records] == list(range(count))
    assert [r.key for r in records] == [f"k{partition}-{i}".encode() for i in range(count)]
    assert all(r.partition == partition for r in records)


async def test_read_partitions_reads_every_partition_to_its_end(
    kafka_bootstrap: str, unique_name: Any
) -> None:
    topic = unique_name("changelog")
    await load(kafka_bootstrap, topic)
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    got: dict[int, list[Any]] = {p: [] for p in range(PARTITIONS)}
    started = time.perf_counter()
    async for tp, batch in read_partitions(kafka_bootstrap, tps, client_id="test"):
        assert batch
        got[tp.partition].extend(batch)
    elapsed = time.perf_counter() - started
    for partition, count in COUNTS.items():
        check_partition(partition, got[partition], count)
    # No empty fetch waited for at the end (the old reader took ~1 s per empty partition).
    assert elapsed < 5


async def test_read_partitions_stops_at_until(kafka_bootstrap: str, unique_name: Any) -> None:
    topic = unique_name("source")
    await load(kafka_bootstrap, topic)
    until = {
        TopicPartition(topic, 1): 1,
        TopicPartition(topic, 2): 1_234,
        TopicPartition(topic, 3): 25_001,
    }
    got: dict[int, list[Any]] = {}
    async for tp, batch in read_partitions(kafka_bootstrap, list(until), until=until):
        got.setdefault(tp.partition, []).extend(batch)
    for tp, end in until.items():
        check_partition(tp.partition, got[tp.partition], end)


async def test_read_partition_one_partition(kafka_bootstrap: str, unique_name: Any) -> None:
    topic = unique_name("changelog")
    await load(kafka_bootstrap, topic)
    for partition, count in COUNTS.items():
        records: list[Any] = []
        async for batch in read_partition(kafka_bootstrap, TopicPartition(topic, partition)):
            records.extend(batch)
        check_partition(partition, records, count)
    records = []
    async for batch in read_partition(kafka_bootstrap, TopicPartition(topic, 3), until=777):
        records.extend(batch)
    check_partition(3, records, 777)


async def test_read_partitions_of_nothing(kafka_bootstrap: str) -> None:
    assert [b async for b in read_partitions(kafka_bootstrap, [])] == []


async def through_broker(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> Any:
    """``records`` written to a one-partition changelog topic and read back as a restore reads
    them: (key, value) in offset order."""
    await ensure_topics(bootstrap, {topic: 1})
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    try:
        await BatchProducer(producer).send_all(
            [OutRecord(topic, key, value, None, 0) for key, value in records]
        )
    finally:
        await producer.stop()
    return [
        (r.key, r.value)
        async for batch in read_partition(bootstrap, TopicPartition(topic, 0))
        for r in batch
    ]


async def test_a_changelog_of_the_previous_format_restores_through_the_broker(
    kafka_bootstrap: str, unique_name: Any
) -> None:
    """The changelog records main wrote at 4e0dea1 (tests/fixtures/changelog-v2.json), on a
    changelog topic of the real broker, read back as a restore reads them and folded into the
    current code's state, deal for deal."""
    records, fixture = previous_format()
    read = await through_broker(kafka_bootstrap, unique_name("changelog-v2"), records)
    assert read == records
    check_previous_format_restored(restore(read, fixture["committed"]), fixture)


async def test_a_rule_inserted_mid_registry_changes_no_insight_restored_from_the_broker(
    kafka_bootstrap: str, unique_name: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same records restored from the broker with a rule inserted in the middle of the
    registry: every deal's open insights are those restored without it (wire codes are written
    down per rule, never taken from the registry's order)."""
    records, fixture = previous_format()
    read = await through_broker(kafka_bootstrap, unique_name("changelog-v2"), records)
    before = restore(read, fixture["committed"])
    opened = {d: unpack(d, v).open for d, v in before.deals.items()}
    assert sum(len(o) for o in opened.values()) >= 6
    codes = rule_codes(_inserted())
    monkeypatch.setattr(deal_codec, "_RULE_BY_CODE", codes[0])
    monkeypatch.setattr(deal_codec, "_RULE_CODE", codes[1])
    after = restore(read, fixture["committed"])
    assert {d: unpack(d, v).open for d, v in after.deals.items()} == opened
