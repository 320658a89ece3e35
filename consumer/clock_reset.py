"""``vectoros state reset-clock``: repair a partition whose clock a bad timestamp advanced.

Before event time was bounded by the record timestamp, one event or tick far in the future moved
a partition clock for good: the clock is checkpointed in the changelog's meta record, a restore
keeps it, and a clock never goes backwards. The repair goes through the changelog, the only place
a monitor takes its state from: new records written at the group's committed source offset, so
the next restore (which folds the changelog as of that offset, the latest record per key
winning) takes them:

- the meta record with the new clock (the recent tick ids kept);
- every open deal again, due at the new clock: their next deadlines were computed from the bad
  clock (far ahead, or none once every rule had fired), so each is evaluated again at the next
  tick, which resolves or de-escalates what the bad clock raised and schedules it afresh;
- every closed-deal tombstone stamped after the new clock, moved back to it (else it would be
  kept until the bad clock plus the tombstone period).

A running monitor would overwrite the meta record at its next checkpoint, so the command refuses
while the monitor's consumer group has members (``--force`` skips the check). What a deal's own
events carried (e.g. a deal created "in 2999") is its data and stays as it is.

``plan_reset`` is pure (changelog records in, records to write out); ``reset_clock`` does the
Kafka I/O.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from consumer.changelog import (
    META_KEY,
    encode_closed,
    encode_deal,
    encode_meta,
    restore,
)
from consumer.deal_codec import unpack
from consumer.restore import read_partition
from vectoros.errors import VectorOSError
from vectoros.kafka import start_client, start_producer

if TYPE_CHECKING:  # the monitor's settings say which group and topics; no import at run time
    from consumer.monitor.settings import MonitorSettings

logger = logging.getLogger(__name__)


class ClockResetRefused(VectorOSError):
    """The clock cannot (or must not) be reset now; the message says why and what to do."""


@dataclass(slots=True)
class ResetPlan:
    """What a reset writes to one changelog partition, and what it changes."""

    partition: int
    committed: int
    old_clock_ms: int
    new_clock_ms: int
    records: list[tuple[bytes, bytes]] = field(default_factory=list)  # the meta record last
    deals_due: int = 0
    tombstones_moved: int = 0


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="milliseconds")


def plan_reset(
    changelog: Iterable[tuple[bytes | None, bytes | None]],
    *,
    partition: int,
    committed: int,
    new_clock_ms: int,
) -> ResetPlan:
    """The records that set ``partition``'s clock to ``new_clock_ms`` as of source offset
    ``committed``, from that changelog partition's records (key, value) in offset order."""
    if committed <= 0:
        raise ClockResetRefused(
            f"partition {partition} has no committed offset: a monitor restoring it starts "
            "empty, there is no clock to repair"
        )
    restored = restore(changelog, committed)
    if not restored.has_checkpoint:
        raise ClockResetRefused(
            f"partition {partition} has no checkpoint in the changelog as of offset "
            f"{committed}: its state is rebuilt by replaying the source, nothing to repair here"
        )
    old = restored.clock_ms
    if new_clock_ms > old:
        raise ClockResetRefused(
            f"partition {partition}: the clock is {iso(old)}, earlier than {iso(new_clock_ms)}; "
            "a clock moves forward by itself (with the next tick), reset-clock only moves it back"
        )
    plan = ResetPlan(partition, committed, old, new_clock_ms)
    for deal_id, data in restored.deals.items():
        deal = unpack(deal_id, data)
        plan.records.append((deal_id.encode(), encode_deal(deal, committed, new_clock_ms)))
        plan.deals_due += 1
    for deal_id, closed_at in restored.closed.items():
        if closed_at > new_clock_ms:
            seen = restored.closed_seen.get(deal_id, b"")
            plan.records.append((deal_id.encode(), encode_closed(new_clock_ms, committed, seen)))
            plan.tombstones_moved += 1
    plan.records.append((META_KEY, encode_meta(new_clock_ms, committed, restored.tick_digests)))
    return plan


def describe(plan: ResetPlan, topic: str) -> str:
    """One line saying what was done."""
    return (
        f"{topic} partition {plan.partition} at committed offset {plan.committed}: clock "
        f"{iso(plan.old_clock_ms)} -> {iso(plan.new_clock_ms)}; {plan.deals_due} deals due "
        f"again at the next tick, {plan.tombstones_moved} closed-deal tombstones moved back"
    )


# -- Kafka I/O ----------------------------------------------------------------------------------


async def active_members(
    bootstrap: str, group: str, client_id: str, *, wait_seconds: float = 30.0
) -> int:
    """How many members the consumer group has now (0 for an empty or unknown group)."""
    admin = await start_client(
        lambda: AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id=f"{client_id}-admin"),
        bootstrap,
        wait_seconds=wait_seconds,
        what="admin client",
    )
    try:
        responses: list[Any] = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    members = 0
    for response in responses:
        for described in response.to_object()["groups"]:
            if described["group"] == group:
                members += len(described["members"])
    return members


async def committed_offset(settings: MonitorSettings, partition: int) -> int:
    """The monitor group's committed offset of ``partition`` of the events topic (0: none).
    Reading it does not join the group."""
    consumer = await start_client(
        lambda: AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap(),
            group_id=settings.monitor_group_id,
            client_id=f"{settings.kafka_client_id}-state",
            enable_auto_commit=False,
        ),
        settings.bootstrap(),
        wait_seconds=settings.kafka_connect_timeout_seconds,
        what="consumer",
    )
    try:
        tp = TopicPartition(settings.topic_events, partition)
        partitions = consumer.partitions_for_topic(settings.topic_events)
        if partitions is None:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(settings.topic_events)
        if not partitions or partition not in partitions:
            raise ClockResetRefused(
                f"{settings.topic_events} has no partition {partition} "
                f"(partitions: {sorted(partitions or [])})"
            )
        return int(await consumer.committed(tp) or 0)
    finally:
        await consumer.stop()


async def reset_clock(
    settings: MonitorSettings, partition: int, to: dt.datetime, *, force: bool = False
) -> ResetPlan:
    """Set ``partition``'s clock to ``to`` through the changelog; returns what was written."""
    bootstrap = settings.bootstrap()
    group = settings.monitor_group_id
    members = await active_members(
        bootstrap,
        group,
        settings.kafka_client_id,
        wait_seconds=settings.kafka_connect_timeout_seconds,
    )
    if members and not force:
        raise ClockResetRefused(
            f"consumer group {group} has {members} active member(s): a running monitor would "
            "overwrite the clock at its next checkpoint; stop every monitor first (after a "
            "crash, wait for VECTOROS_SESSION_TIMEOUT_MS), or pass --force"
        )
    if members:
        logger.warning(
            "group %s has %d active member(s); resetting anyway (--force)", group, members
        )
    committed = await committed_offset(settings, partition)
    changelog: list[tuple[bytes | None, bytes | None]] = []
    tp = TopicPartition(settings.topic_state, partition)
    async for batch in read_partition(bootstrap, tp, client_id=settings.kafka_client_id):
        changelog.extend((r.key, r.value) for r in batch)
    plan = plan_reset(
        changelog,
        partition=partition,
        committed=committed,
        new_clock_ms=int(to.timestamp() * 1000),
    )
    producer = await start_producer(settings, max_batch_size=512 * 1024)
    try:
        pending = [
            await producer.send(settings.topic_state, value, key=key, partition=partition)
            for key, value in plan.records
        ]
        for future in pending:
            await future
    finally:
        await producer.stop()
    logger.info("%s", describe(plan, settings.topic_state))
    return plan
