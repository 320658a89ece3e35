"""The insight renderer's timestamp: RFC 3339 UTC with milliseconds, equal to ``datetime``'s."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from consumer.templates import _utc

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MIN_MS = int((dt.datetime(1, 1, 1, tzinfo=dt.UTC) - EPOCH).total_seconds() * 1000)
MAX_MS = int(
    (dt.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=dt.UTC) - EPOCH)
    / dt.timedelta(milliseconds=1)
)


def expected(ms: int) -> str:
    at = EPOCH + dt.timedelta(milliseconds=ms)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@given(st.integers(min_value=MIN_MS, max_value=MAX_MS))
def test_utc_equals_datetime(ms: int) -> None:
    assert _utc(ms) == expected(ms)


def test_utc_edges() -> None:
    assert _utc(0) == "1970-01-01T00:00:00.000Z"
    assert _utc(-1) == "1969-12-31T23:59:59.999Z"
    assert _utc(86_399_999) == "1970-01-01T23:59:59.999Z"
    assert _utc(1_772_442_000_123) == "2026-03-02T09:00:00.123Z"
