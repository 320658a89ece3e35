"""The packed form of a deal's state: exact round trips, the deadline in place, corrupt input."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.deal_codec import NO_DEADLINE, deadline_of, pack, unpack
from consumer.state import DealState, OpenInsight
from schemas.events import Stage
from schemas.insights import DEAL_RULES, Priority

TEXT = st.none() | st.text(max_size=300)
MS = st.integers(-(2**62), 2**62)
OPEN = st.lists(
    st.builds(OpenInsight, st.sampled_from(DEAL_RULES), st.sampled_from(Priority), MS),
    max_size=6,
    unique_by=lambda o: o.rule,
).map(tuple)
DEALS = st.builds(
    DealState,
    workspace_id=st.text(min_size=1, max_size=200),
    deal_id=st.just("deal-1"),
    title=TEXT,
    value=st.none() | st.floats(min_value=0, max_value=1e15, allow_nan=False),
    currency=st.none() | st.sampled_from(["USD", "EUR"]),
    stage=st.none() | st.sampled_from(Stage),
    probability=st.none() | st.floats(min_value=0, max_value=100),
    close_day=st.none() | st.integers(-(2**31), 2**31 - 1),
    owner_id=TEXT,
    owner_name=TEXT,
    company=TEXT,
    created_at_ms=MS,
    last_activity_at_ms=MS,
    stage_entered_at_ms=MS,
    activity_count=st.integers(0, 2**32 - 1),
    open=OPEN,
    seen=st.binary(max_size=16).map(lambda b: b * 8),
)


@settings(max_examples=300, derandomize=True, database=None)
@given(deal=DEALS, deadline=st.none() | MS)
def test_round_trip(deal: DealState, deadline: int | None) -> None:
    data = pack(deal, deadline)
    assert unpack("deal-1", data) == deal
    assert deadline_of(data) == deadline


def test_unknown_and_zero_are_different() -> None:
    zero = DealState("ws", "d", value=0.0, probability=0.0, close_day=0)
    unknown = DealState("ws", "d")
    assert unpack("d", pack(zero, None)) == zero
    assert unpack("d", pack(unknown, None)) == unknown
    assert deadline_of(pack(unknown, None)) is None
    assert NO_DEADLINE < -(2**62)


def test_a_typical_deal_is_small() -> None:
    deal = DealState(
        "ws-acme",
        "deal-00012345",
        title="Enterprise Plan - Summitwave Capital",
        value=48_000.0,
        currency="USD",
        stage=Stage.PROPOSAL,
        probability=40.0,
        close_day=20_600,
        owner_id="u-17",
        owner_name="Dana Smith",
        company="Summitwave Capital",
        created_at_ms=1_767_000_000_000,
        last_activity_at_ms=1_767_100_000_000,
        stage_entered_at_ms=1_767_050_000_000,
        activity_count=12,
        seen=b"12345678" * 4,
    )
    assert len(pack(deal, 1_767_700_000_000)) < 200


@pytest.mark.parametrize("cut", [0, 10, 71, 80])
def test_corrupt_data_raises(cut: int) -> None:
    data = pack(DealState("ws", "d", title="some title", seen=b"x" * 8), None)
    with pytest.raises((ValueError, struct.error)):
        unpack("d", data[:cut])
    with pytest.raises(ValueError, match="do not add up"):
        unpack("d", data + b"junk")
