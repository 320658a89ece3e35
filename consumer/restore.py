"""Reading partitions from their beginning, in bulk: the restore reader the monitor (restoring
a partition's state) and ``vectoros state reset-clock`` share. The I/O side of the pure
``consumer.changelog``: reading the topics, and pausing the process's cyclic garbage collection
while millions of small objects are made (``gc_paused``).
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

BATCH = 20_000  # records per batch at most

# Restore reads are bulk reads: large fetches; the end of a partition is its high watermark (or
# ``until``), known from the fetch answers, never from an empty fetch. A fetch that finds no data
# (a finished partition fetched once more before it is paused) is answered after
# ``FETCH_MAX_WAIT_MS``, and meanwhile no other fetch goes to that broker: keep it short.
MAX_PARTITION_FETCH_BYTES = 8 * 1024 * 1024
FETCH_MAX_BYTES = 48 * 1024 * 1024
FETCH_MAX_WAIT_MS = 10


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: restoring creates millions of small acyclic objects
    (records, keys, values), and every collection would walk all of them again (measured: the
    fold alone ~3x slower with it)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


async def read_partitions(
    bootstrap: str,
    tps: Sequence[TopicPartition],
    *,
    until: Mapping[TopicPartition, int] | None = None,
    client_id: str = "vectoros",
) -> AsyncIterator[tuple[TopicPartition, list[Any]]]:
    """``(tp, records)`` batches of the partitions ``tps``, all read together by one consumer,
    each from its beginning to ``until[tp]`` (exclusive) when given, else to its high watermark
    as seen when reading reaches it. A partition's batches come in offset order; different
    partitions' batches interleave. An empty partition yields nothing (and costs no fetch)."""
    ends = dict(until or {})
    todo = list(dict.fromkeys(tps))
    if not todo:
        return
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id=f"{client_id}-restore",
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES,
        fetch_max_bytes=FETCH_MAX_BYTES,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    await reader.start()
    try:
        first = await reader.beginning_offsets(todo)
        # Only to skip empty partitions: Tansu answers "latest" with the last batch's base
        # offset + 1, not the high watermark, so the end itself comes from the fetches.
        latest = await reader.end_offsets([tp for tp in todo if tp not in ends])
        active = [tp for tp in todo if first[tp] < ends.get(tp, latest.get(tp, 0))]
        if not active:
            return
        reader.assign(active)
        for tp in active:
            reader.seek(tp, first[tp])
        while active:
            batch = await reader.getmany(*active, timeout_ms=1000, max_records=BATCH)
            for tp, records in batch.items():
                end = ends.get(tp)
                if end is not None and records and records[-1].offset >= end:
                    records = [r for r in records if r.offset < end]
                if records:
                    yield tp, records
            finished = []
            for tp in active:
                end = ends.get(tp, reader.highwater(tp))
                if end is not None and await reader.position(tp) >= end:
                    finished.append(tp)
            if finished:
                reader.pause(*finished)  # fetch them no more
                active = [tp for tp in active if tp not in finished]
    finally:
        await reader.stop()


async def read_partition(
    bootstrap: str, tp: TopicPartition, *, until: int | None = None, client_id: str = "vectoros"
) -> AsyncIterator[list[Any]]:
    """Batches of records of one partition from its beginning to ``until`` (exclusive) or, when
    ``until`` is None, to the high watermark seen when reading reaches it."""
    ends = None if until is None else {tp: until}
    async for _, records in read_partitions(bootstrap, [tp], until=ends, client_id=client_id):
        yield records
