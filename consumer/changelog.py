"""The state changelog (``deal-monitor-state``): how per-deal state is written and read back.

One record per deal that changed in a checkpoint (coalesced), on the changelog partition with the
same number as its source partition, key ``deal_id``. Every value carries ``o``, the source offset
the checkpoint commits (the offset after the batch), so a restore can ignore what a batch wrote
before it crashed without committing. A per-partition meta record (key ``META_KEY``) carries the
partition clock. Pure: bytes in, state out.

Value layout (JSON, compact):
- open deal:   ``{"v":1,"o":<offset>,"s":[<DealState fields>]}``
- closed deal: ``{"v":1,"o":<offset>,"x":<closed_at_ms>}`` (remembered so late events are ignored)
- forgotten:   ``null`` (a Kafka tombstone; compaction drops the key)
- meta:        ``{"v":1,"o":<offset>,"c":<clock_ms>}``
"""

from __future__ import annotations

import gc
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from consumer.partition import PartitionState
from consumer.state import DealState, OpenInsight
from schemas.events import Stage
from schemas.insights import Priority, RuleName

VERSION = 1
META_KEY = b"\x00meta"


def encode_deal(deal: DealState, offset: int, deadline: int | None = None) -> bytes:
    s = [
        deal.workspace_id,
        deal.title,
        deal.value,
        deal.currency,
        deal.stage.value if deal.stage is not None else None,
        deal.probability,
        deal.close_day,
        deal.owner_id,
        deal.owner_name,
        deal.company,
        deal.created_at_ms,
        deal.last_activity_at_ms,
        deal.stage_entered_at_ms,
        deal.activity_count,
        [[o.rule.value, o.priority.value, o.raised_at_ms] for o in deal.open],
    ]
    body: dict[str, Any] = {"v": VERSION, "o": offset, "s": s}
    if deadline is not None:
        body["d"] = deadline  # the deal's place in the deadline index (may already be due)
    return orjson.dumps(body)


def encode_closed(closed_at_ms: int, offset: int) -> bytes:
    return orjson.dumps({"v": VERSION, "o": offset, "x": closed_at_ms})


def encode_meta(clock_ms: int, offset: int) -> bytes:
    return orjson.dumps({"v": VERSION, "o": offset, "c": clock_ms})


def decode_deal(deal_id: str, s: list[Any]) -> DealState:
    (ws, title, value, currency, stage, prob, close_day, owner_id, owner_name, company,
     created, last_activity, stage_entered, activities, open_) = s  # fmt: skip
    return DealState(
        workspace_id=ws,
        deal_id=deal_id,
        title=title,
        value=value,
        currency=currency,
        stage=Stage(stage) if stage is not None else None,
        probability=prob,
        close_day=close_day,
        owner_id=owner_id,
        owner_name=owner_name,
        company=company,
        created_at_ms=created,
        last_activity_at_ms=last_activity,
        stage_entered_at_ms=stage_entered,
        activity_count=activities,
        open=tuple(OpenInsight(RuleName(r), Priority(p), t) for r, p, t in open_),
    )


@dataclass(slots=True)
class Restored:
    """What a changelog partition says the state was at the committed source offset."""

    deals: dict[str, DealState] = field(default_factory=dict)
    deadlines: dict[str, int] = field(default_factory=dict)
    closed: dict[str, int] = field(default_factory=dict)
    clock_ms: int = 0
    has_checkpoint: bool = False
    records: int = 0
    skipped_uncommitted: int = 0
    unreadable: int = 0


def restore(records: Iterable[tuple[bytes | None, bytes | None]], committed: int) -> Restored:
    """Fold changelog records (key, value) in offset order into the state as of ``committed``.

    Entries written for offsets beyond ``committed`` belong to a batch that never committed: the
    source records will be processed again, so those entries are ignored.
    """
    out = Restored()
    latest: dict[bytes, tuple[int, Any]] = {}
    gc_was_enabled = gc.isenabled()
    gc.disable()  # millions of small acyclic objects: the cyclic GC would cost ~3x the fold
    try:
        _fold(records, committed, out, latest)
    finally:
        if gc_was_enabled:
            gc.enable()
    return out


def _fold(
    records: Iterable[tuple[bytes | None, bytes | None]],
    committed: int,
    out: Restored,
    latest: dict[bytes, tuple[int, Any]],
) -> None:
    for key, value in records:
        out.records += 1
        if key is None:
            out.unreadable += 1
            continue
        if value is None:
            latest[key] = (-1, None)  # tombstone: forget the key whatever came before
            continue
        try:
            body = orjson.loads(value)
            offset = int(body["o"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            out.unreadable += 1
            continue
        if offset > committed:
            out.skipped_uncommitted += 1
            continue
        latest[key] = (offset, body)
    for key, (_, body) in latest.items():
        if body is None:
            continue
        if key == META_KEY:
            out.clock_ms = max(out.clock_ms, int(body["c"]))
            out.has_checkpoint = True
            continue
        deal_id = key.decode()
        try:
            if "s" in body:
                out.deals[deal_id] = decode_deal(deal_id, body["s"])
                if "d" in body:
                    out.deadlines[deal_id] = int(body["d"])
            elif "x" in body:
                out.closed[deal_id] = int(body["x"])
        except (ValueError, TypeError, KeyError):
            out.unreadable += 1


def checkpoint_records(state: PartitionState, offset: int) -> list[tuple[bytes, bytes | None]]:
    """The coalesced changelog records of one checkpoint: the latest state of every deal that
    changed since the last one, plus the partition's meta record. Clears the dirty set."""
    out: list[tuple[bytes, bytes | None]] = []
    for deal_id in state.dirty:
        deal = state.deals.get(deal_id)
        if deal is not None:
            value: bytes | None = encode_deal(deal, offset, state.deadline_of.get(deal_id))
        elif deal_id in state.closed:
            value = encode_closed(state.closed[deal_id], offset)
        else:
            value = None
        out.append((deal_id.encode(), value))
    state.dirty.clear()
    out.append((META_KEY, encode_meta(state.clock_ms, offset)))
    return out
