"""The state changelog (``deal-monitor-state``): how per-deal state is written and read back.

One record per deal that changed in a checkpoint (coalesced), on the changelog partition with the
same number as its source partition, key ``deal_id``. Every value carries the source offset the
checkpoint commits (the offset after the batch), so a restore can ignore what a batch wrote
before it crashed without committing. A per-partition meta record (key ``META_KEY``) carries the
partition clock. Pure: bytes in, state out.

Value layout (version 3, binary): a 10-byte prefix ``<Bcq`` = version 3, kind, offset; then
- open deal (kind ``S``):   the packed deal (``consumer.deal_codec``, itself versioned: the
  state, its next deadline, its recent event-id digests, its activity history), exactly as the
  monitor holds it in memory;
- closed deal (kind ``X``): ``<q`` closed_at_ms (remembered so late events are ignored), then
  the digests of its last event ids (so a copy of one is still recognised as a duplicate);
- meta (kind ``M``):        ``<q`` the partition clock, then the digests of its last tick ids
  (so a copy of a tick is still recognised after a restore);
- forgotten:                ``null`` (a Kafka tombstone; compaction drops the key).

Older records are still read, so a changelog written by an older monitor restores: version 2
(the same layout with a format 1 packed deal, which has no version byte: upgraded on restore)
and version 1 (JSON ``{"v":1,"o":..,"s":[..]}``, written before the packed form).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from consumer.deal_codec import FORMAT, HEADER_SIZE, READABLE, pack, upgrade, upgrade_v1
from consumer.partition import PartitionState
from consumer.state import DealState, OpenInsight
from schemas.events import Stage
from schemas.insights import Priority, RuleName

VERSION = 3
META_KEY = b"\x00meta"
_PREFIX = struct.Struct("<Bcq")
_INT = struct.Struct("<q")
_DEAL, _CLOSED, _META = b"S", b"X", b"M"
_V3 = VERSION.to_bytes(1, "little")
_V2 = b"\x02"
_BINARY = (_V2, _V3)
_MIN_BINARY = _PREFIX.size + 8
"""The shortest readable binary record (``record_offset``)."""


def encode_deal(deal: DealState, offset: int, deadline: int | None = None) -> bytes:
    return _PREFIX.pack(VERSION, _DEAL, offset) + pack(deal, deadline)


def encode_closed(closed_at_ms: int, offset: int, seen: bytes = b"") -> bytes:
    return _PREFIX.pack(VERSION, _CLOSED, offset) + _INT.pack(closed_at_ms) + seen


def encode_meta(clock_ms: int, offset: int, tick_digests: bytes = b"") -> bytes:
    return _PREFIX.pack(VERSION, _META, offset) + _INT.pack(clock_ms) + tick_digests


def decode_deal(deal_id: str, s: list[Any]) -> DealState:
    """A version 1 (JSON) deal state."""
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
    """What a changelog partition says the state was at the committed source offset: the deals
    in packed form (``PartitionState.load`` takes them as they are)."""

    deals: dict[str, bytes] = field(default_factory=dict)
    closed: dict[str, int] = field(default_factory=dict)
    closed_seen: dict[str, bytes] = field(default_factory=dict)
    clock_ms: int = 0
    tick_digests: bytes = b""
    has_checkpoint: bool = False
    without_deadline: set[str] = field(default_factory=set)
    records: int = 0
    skipped_uncommitted: int = 0
    unreadable: int = 0


def load_into(state: PartitionState, restored: Restored) -> None:
    """Give ``state`` everything a changelog restore found."""
    state.load(
        restored.deals,
        restored.closed,
        restored.clock_ms,
        closed_seen=restored.closed_seen,
        tick_digests=restored.tick_digests,
        without_deadline=frozenset(restored.without_deadline),
    )


def restore(records: Iterable[tuple[bytes | None, bytes | None]], committed: int) -> Restored:
    """Fold changelog records (key, value) in offset order into the state as of ``committed``.

    Entries written for offsets beyond ``committed`` belong to a batch that never committed: the
    source records will be processed again, so those entries are ignored.
    """
    out = Restored()
    latest: dict[bytes, bytes | None] = {}
    _fold(records, committed, out, latest)
    for key, value in latest.items():
        if value is not None:
            _restore_one(key, value, out)
    return out


def record_offset(value: bytes) -> int | None:
    """The source offset a changelog value was checkpointed at (None if unreadable)."""
    if value[:1] in _BINARY:
        return int(_PREFIX.unpack_from(value)[2]) if len(value) >= _MIN_BINARY else None
    if value[:1] == b"{":  # version 1
        try:
            return int(orjson.loads(value)["o"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
    return None


def _fold(
    records: Iterable[tuple[bytes | None, bytes | None]],
    committed: int,
    out: Restored,
    latest: dict[bytes, bytes | None],
) -> None:
    for key, value in records:
        out.records += 1
        if key is None:
            out.unreadable += 1
            continue
        if value is None:
            latest[key] = None  # tombstone: forget the key whatever came before
            continue
        if value[:1] == _V3 and len(value) >= _MIN_BINARY:  # the current version, inline
            offset: int | None = _PREFIX.unpack_from(value)[2]
        else:
            offset = record_offset(value)
        if offset is None:
            out.unreadable += 1
        elif offset > committed:
            out.skipped_uncommitted += 1
        else:
            latest[key] = value


def _restore_one(key: bytes, value: bytes, out: Restored) -> None:
    if key == META_KEY:
        clock = _INT.unpack_from(value, _PREFIX.size)[0] if value[:1] in _BINARY else None
        if clock is not None:
            out.tick_digests = value[_PREFIX.size + 8 :]
        if clock is None:
            clock = _v1_body(value).get("c")
        if clock is not None:
            out.clock_ms = max(out.clock_ms, int(clock))
            out.has_checkpoint = True
        return
    try:
        deal_id = key.decode()
        version = value[:1]
        if version in _BINARY:
            kind = value[1:2]
            packed = value[_PREFIX.size :]
            if kind == _DEAL:
                if version == _V2:
                    out.deals[deal_id] = upgrade_v1(deal_id, packed)
                elif len(packed) < HEADER_SIZE or packed[0] not in READABLE:
                    out.unreadable += 1
                elif packed[0] == FORMAT:  # the common case: the bytes are the state
                    out.deals[deal_id] = packed
                else:
                    out.deals[deal_id] = upgrade(deal_id, packed)
            elif kind == _CLOSED:
                out.closed[deal_id] = _INT.unpack_from(value, _PREFIX.size)[0]
                seen = value[_PREFIX.size + 8 :]
                if seen:
                    out.closed_seen[deal_id] = seen
            else:
                out.unreadable += 1
            return
        body = _v1_body(value)
        if "s" in body:
            due = body.get("d")
            out.deals[deal_id] = pack(decode_deal(deal_id, body["s"]), due)
            if due is None:
                out.without_deadline.add(deal_id)
        elif "x" in body:
            out.closed[deal_id] = int(body["x"])
        else:
            out.unreadable += 1
    except (ValueError, TypeError, KeyError, struct.error):
        out.unreadable += 1


def _v1_body(value: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def checkpoint_records(state: PartitionState, offset: int) -> list[tuple[bytes, bytes | None]]:
    """The coalesced changelog records of one checkpoint: the latest state of every deal that
    changed since the last one, plus the partition's meta record. Clears the dirty set."""
    out: list[tuple[bytes, bytes | None]] = []
    prefix = _PREFIX.pack(VERSION, _DEAL, offset)
    packed = state.packed
    for deal_id in state.dirty:
        data = packed.get(deal_id)
        if data is not None:
            value: bytes | None = prefix + data
        elif deal_id in state.closed:
            value = encode_closed(
                state.closed[deal_id], offset, state.closed_seen.get(deal_id, b"")
            )
        else:
            value = None
        out.append((deal_id.encode(), value))
    state.dirty.clear()
    out.append((META_KEY, encode_meta(state.clock_ms, offset, state.tick_digests)))
    return out
