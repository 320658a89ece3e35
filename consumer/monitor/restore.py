"""Rebuilding the state of assigned partitions: from the changelog, or (when there is no
changelog checkpoint yet but the group has committed offsets) by replaying the source partition.
The topics are read with the shared restore reader (``consumer.restore``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition

from consumer.changelog import load_into, restore
from consumer.partition import PartitionState
from consumer.restore import gc_paused, read_partitions

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class RestoreReport:
    source: str  # "changelog", "replay" or "empty"
    records: int
    deals: int
    seconds: float
    skipped_uncommitted: int = 0


async def restore_partitions(
    states: Mapping[int, PartitionState],
    *,
    bootstrap: str,
    changelog_topic: str,
    source_topic: str,
    committed: Mapping[int, int],
    replay: Callable[[PartitionState, Any], None],
    client_id: str = "vectoros",
) -> dict[int, RestoreReport]:
    """Load each ``states[p]`` as it was at source offset ``committed[p]``: every changelog
    partition is read by one consumer at once, then folded and loaded; partitions without a
    checkpoint are rebuilt by replaying their source partitions (also together)."""
    started = time.perf_counter()
    reports: dict[int, RestoreReport] = {}
    todo = [p for p in states if committed.get(p, 0) > 0]
    for p in states:
        if p not in todo:
            reports[p] = RestoreReport("empty", 0, 0, 0.0)
    pairs: dict[int, list[tuple[bytes | None, bytes | None]]] = {p: [] for p in todo}
    tps = [TopicPartition(changelog_topic, p) for p in todo]
    with gc_paused():
        async for tp, batch in read_partitions(bootstrap, tps, client_id=client_id):
            pairs[tp.partition].extend([(r.key, r.value) for r in batch])
    without_checkpoint = []
    for p in todo:
        with gc_paused():
            restored = restore(pairs.pop(p), committed[p])
        if restored.unreadable:
            logger.warning(
                "changelog %s/%d: %d unreadable records ignored",
                changelog_topic,
                p,
                restored.unreadable,
            )
        if not restored.has_checkpoint:
            without_checkpoint.append(p)
            continue
        load_into(states[p], restored)
        reports[p] = RestoreReport(
            "changelog",
            restored.records,
            len(restored.deals),
            time.perf_counter() - started,
            restored.skipped_uncommitted,
        )
    if without_checkpoint:
        # Committed offsets but no checkpoint (a group that predates the changelog): replay.
        sources = {TopicPartition(source_topic, p): committed[p] for p in without_checkpoint}
        counts = dict.fromkeys(without_checkpoint, 0)
        async for tp, batch in read_partitions(
            bootstrap, list(sources), until=sources, client_id=client_id
        ):
            state = states[tp.partition]
            for rec in batch:
                replay(state, rec)
            counts[tp.partition] += len(batch)
        for p in without_checkpoint:
            state = states[p]
            state.dirty = set(state.packed) | set(state.closed)  # the first checkpoint writes all
            reports[p] = RestoreReport(
                "replay", counts[p], len(state.packed), time.perf_counter() - started
            )
    return reports
