"""Times as an operator types them (``simulate --start``, ``insights list --since``)."""

from __future__ import annotations

import datetime as dt

import pytest

from vectoros.when import parse_when

NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", NOW - dt.timedelta(days=7)),
        ("2w", NOW - dt.timedelta(weeks=2)),
        ("12h", NOW - dt.timedelta(hours=12)),
        ("90m", NOW - dt.timedelta(minutes=90)),
        ("30s", NOW - dt.timedelta(seconds=30)),
        ("2026-03-01T08:00:00Z", dt.datetime(2026, 3, 1, 8, tzinfo=dt.UTC)),
        ("2026-03-01T08:00:00+02:00", dt.datetime(2026, 3, 1, 6, tzinfo=dt.UTC)),
        ("2026-03-01", dt.datetime(2026, 3, 1, tzinfo=dt.UTC)),  # no offset: UTC
    ],
)
def test_parse_when(text: str, expected: dt.datetime) -> None:
    assert parse_when(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "7", "-3d", "2026-13-01"])
def test_parse_when_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_when(text, NOW)
