"""Changelog encoding and restore: round trips, coalescing, uncommitted entries, tombstones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson

from consumer.changelog import (
    META_KEY,
    Restored,
    checkpoint_records,
    decode_deal,
    encode_closed,
    encode_deal,
    encode_meta,
    restore,
)
from consumer.deal_codec import deadline_of, unpack
from consumer.partition import PartitionState
from consumer.state import DealState, OpenInsight
from consumer.thresholds import RulesConfig
from producer.simulator import SimTick, SimulationSpec, generate
from schemas.events import Stage, Tick
from schemas.insights import Priority, RuleName


def sample() -> DealState:
    return DealState(
        workspace_id="ws",
        deal_id="d1",
        title="Ünïcode deal",
        value=12_500.5,
        currency="EUR",
        stage=Stage.PROPOSAL,
        probability=35.0,
        close_day=20_500,
        owner_id="u1",
        owner_name=None,
        company="Acme",
        created_at_ms=1,
        last_activity_at_ms=2,
        stage_entered_at_ms=3,
        activity_count=4,
        open=(OpenInsight(RuleName.STALE_DEAL, Priority.HIGH, 99),),
    )


def test_deal_round_trip() -> None:
    value = encode_deal(sample(), 10, deadline=1234)
    out = restore([(b"d1", value), (META_KEY, encode_meta(5, 10))], committed=10)
    assert unpack("d1", out.deals["d1"]) == sample()
    assert deadline_of(out.deals["d1"]) == 1234
    assert out.clock_ms == 5


def test_version_1_records_still_restore() -> None:
    """A changelog written before the packed form (JSON values) restores."""
    deal = sample()
    s = [
        deal.workspace_id, deal.title, deal.value, deal.currency, "proposal", deal.probability,
        deal.close_day, deal.owner_id, deal.owner_name, deal.company, deal.created_at_ms,
        deal.last_activity_at_ms, deal.stage_entered_at_ms, deal.activity_count,
        [["stale_deal", "high", 99]],
    ]  # fmt: skip
    records = [
        (b"d1", orjson.dumps({"v": 1, "o": 10, "s": s, "d": 777})),
        (b"d2", orjson.dumps({"v": 1, "o": 10, "s": s})),
        (b"d3", orjson.dumps({"v": 1, "o": 10, "x": 55})),
        (META_KEY, orjson.dumps({"v": 1, "o": 10, "c": 900})),
    ]
    out = restore(records, committed=10)
    assert unpack("d1", out.deals["d1"]) == deal
    assert decode_deal("d1", s) == deal
    assert deadline_of(out.deals["d1"]) == 777
    assert out.without_deadline == {"d2"}
    assert out.closed == {"d3": 55}
    assert (out.clock_ms, out.has_checkpoint) == (900, True)
    state = PartitionState(RulesConfig())
    state.load(
        out.deals, out.closed, out.clock_ms, without_deadline=frozenset(out.without_deadline)
    )
    assert state.deadlines["d2"] > 900  # given its next deadline after the clock


def test_corrupt_values_are_counted_not_fatal() -> None:
    good = encode_deal(sample(), 10)
    records = [
        (b"a", b"\x02S"),  # truncated prefix
        (b"b", good[:20]),  # truncated packed deal
        (b"c", b"\x07whatever"),  # unknown version
        (None, good),
        (b"d1", good),
    ]
    out = restore(records, committed=10)
    assert list(out.deals) == ["d1"]
    assert out.unreadable == 4


def test_restore_ignores_uncommitted_entries_and_honours_tombstones() -> None:
    older = sample()
    newer = DealState(workspace_id="ws", deal_id="d1", title="newer")
    records = [
        (b"d1", encode_deal(older, 10)),
        (b"d2", encode_closed(5, 10)),
        (META_KEY, encode_meta(1000, 10)),
        (b"d1", encode_deal(newer, 20)),  # written by a batch that did not commit
        (b"d3", encode_deal(newer, 20)),
        (META_KEY, encode_meta(2000, 20)),
        (b"d2", None),  # tombstone: forgotten
        (b"bad", b"{not json"),
    ]
    out = restore(records, committed=10)
    assert {k: unpack(k, v) for k, v in out.deals.items()} == {"d1": older}
    assert out.closed == {}
    assert out.clock_ms == 1000
    assert out.skipped_uncommitted == 3
    assert out.unreadable == 1
    assert unpack("d1", restore(records, committed=20).deals["d1"]) == newer


def test_checkpoint_coalesces_and_restore_reproduces_the_partition() -> None:
    """Process a scenario in chunks, checkpointing after each; a partition restored from the
    changelog behaves exactly like the one that never stopped."""
    rules = RulesConfig()
    live = PartitionState(rules)
    log: list[tuple[bytes, bytes | None]] = []
    items = list(generate(SimulationSpec(deals=80, days=60, seed=5)))
    half = len(items) // 2
    changed_per_checkpoint = []
    for offset, item in enumerate(items[:half], start=1):
        if isinstance(item, SimTick):
            live.tick(Tick(at=item.at))
        else:
            live.apply(item)
        if offset % 100 == 0 or offset == half:
            records = checkpoint_records(live, offset)
            changed_per_checkpoint.append(len(records))
            log.extend(records)
    assert max(changed_per_checkpoint) <= 101  # at most one record per deal + meta
    restored = restore(log, committed=half)
    copy = PartitionState(rules)
    copy.load(restored.deals, restored.closed, restored.clock_ms, closed_seen=restored.closed_seen)
    assert copy.deals == live.deals
    assert copy.closed_seen == live.closed_seen
    assert copy.clock_ms == live.clock_ms
    assert copy.deadlines == live.deadlines
    for item in items[half:]:
        if isinstance(item, SimTick):
            a, b = live.tick(Tick(at=item.at)), copy.tick(Tick(at=item.at))
        else:
            a, b = live.apply(item), copy.apply(item)
        assert a.insights == b.insights
    assert copy.deals == live.deals


PREVIOUS_FORMAT = Path(__file__).resolve().parents[1] / "fixtures/changelog-v2.json"
"""Records written by the encoder of main at 4e0dea1 (record version 2, packed form 1), with
the state they hold."""


def previous_format() -> tuple[list[tuple[bytes, bytes]], dict[str, Any]]:
    """``PREVIOUS_FORMAT``'s records (key, value) and the whole fixture."""
    fixture: dict[str, Any] = json.loads(PREVIOUS_FORMAT.read_text("utf-8"))
    return [(bytes.fromhex(k), bytes.fromhex(v)) for k, v in fixture["records"]], fixture


def check_previous_format_restored(out: Restored, fixture: dict[str, Any]) -> None:
    """``out`` holds, deal for deal, the state the fixture's records were written from."""
    assert out.unreadable == 0
    assert out.clock_ms == fixture["clock_ms"]
    assert out.tick_digests.hex() == fixture["tick_digests"]
    assert {d: [at, out.closed_seen[d].hex()] for d, at in out.closed.items()} == fixture["closed"]
    assert set(out.deals) == set(fixture["deals"])
    for deal_id, expected in fixture["deals"].items():
        want = dict(expected)
        deal = unpack(deal_id, out.deals[deal_id])
        assert deadline_of(out.deals[deal_id]) == want.pop("deadline")
        got = {k: getattr(deal, k) for k in want}
        got["open"] = [[o.rule, o.priority, o.raised_at_ms] for o in deal.open]
        got["seen"] = deal.seen.hex()
        assert got == want


def test_a_changelog_written_by_the_previous_format_restores() -> None:
    """Records written by the encoder of main at 4e0dea1 (tests/fixtures/changelog-v2.json)
    restore into the current code, deal for deal (through the real broker too:
    tests/integration/test_restore_reader.py)."""
    records, fixture = previous_format()
    check_previous_format_restored(restore(records, fixture["committed"]), fixture)
