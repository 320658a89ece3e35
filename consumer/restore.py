"""Rebuilding one partition's state when it is assigned: from the changelog, or (when there is no
changelog checkpoint yet but the group has committed offsets) by replaying the source partition.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from consumer.changelog import restore
from consumer.partition import PartitionState

logger = logging.getLogger(__name__)

BATCH = 20_000


async def read_partition(
    bootstrap: str, tp: TopicPartition, *, until: int | None = None, client_id: str = "vectoros"
) -> AsyncIterator[list[Any]]:
    """Batches of records of one partition from its beginning to ``until`` (exclusive) or, when
    ``until`` is None, to the high watermark seen when reading reaches it."""
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id=f"{client_id}-restore",
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
    )
    await reader.start()
    try:
        reader.assign([tp])
        await reader.seek_to_beginning(tp)
        while True:
            batch = await reader.getmany(tp, timeout_ms=500, max_records=BATCH)
            records = batch.get(tp, [])
            if until is not None and records and records[-1].offset >= until:
                yield [r for r in records if r.offset < until]
                return
            if records:
                yield records
                end = until if until is not None else reader.highwater(tp)
                if end is not None and records[-1].offset + 1 >= end:
                    return  # at the end already: no need to wait for an empty fetch
                continue
            position = await reader.position(tp)
            end = until if until is not None else reader.highwater(tp)
            if end is None:
                continue  # no fetch answered yet
            if position >= end:
                return
    finally:
        await reader.stop()


@dataclass(slots=True)
class RestoreReport:
    source: str  # "changelog", "replay" or "empty"
    records: int
    deals: int
    seconds: float
    skipped_uncommitted: int = 0


async def restore_partition(
    state: PartitionState,
    *,
    bootstrap: str,
    changelog: TopicPartition,
    source: TopicPartition,
    committed: int,
    replay: Callable[[PartitionState, Any], None],
    client_id: str = "vectoros",
) -> RestoreReport:
    """Load ``state`` as it was at source offset ``committed``."""
    started = time.perf_counter()
    if committed <= 0:
        return RestoreReport("empty", 0, 0, 0.0)
    pairs: list[tuple[bytes | None, bytes | None]] = []
    async for batch in read_partition(bootstrap, changelog, client_id=client_id):
        pairs.extend((r.key, r.value) for r in batch)
    restored = restore(pairs, committed)
    if restored.unreadable:
        logger.warning(
            "changelog %s/%d: %d unreadable records ignored",
            changelog.topic,
            changelog.partition,
            restored.unreadable,
        )
    if restored.has_checkpoint:
        state.load(restored.deals, restored.closed, restored.clock_ms, restored.deadlines)
        return RestoreReport(
            "changelog",
            restored.records,
            len(restored.deals),
            time.perf_counter() - started,
            restored.skipped_uncommitted,
        )
    # Committed offsets but no checkpoint (a group that predates the changelog): replay.
    count = 0
    async for batch in read_partition(bootstrap, source, until=committed, client_id=client_id):
        for rec in batch:
            replay(state, rec)
        count += len(batch)
    state.dirty = set(state.deals) | set(state.closed)  # the first checkpoint writes them all
    return RestoreReport("replay", count, len(state.deals), time.perf_counter() - started)
