"""The forecast service's schedule: daily per workspace, restarts neither repeat nor skip."""

from __future__ import annotations

import datetime as dt

import pytest

from consumer.forecast.schedule import current_periods, due, last_slot, parse_time


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


SIX, EIGHT = parse_time("06:00"), parse_time("08:00")


def test_times_of_day_and_the_last_slot() -> None:
    assert parse_time(" 7:30 ") == dt.time(7, 30, tzinfo=dt.UTC)
    for bad in ("7", "25:00", "ab:cd", "06:00:00"):
        with pytest.raises(ValueError, match="time of day"):
            parse_time(bad)
    assert last_slot(at("2026-02-01T07:00"), SIX) == at("2026-02-01T06:00")
    assert last_slot(at("2026-02-01T06:00"), SIX) == at("2026-02-01T06:00")
    assert last_slot(at("2026-02-01T05:59"), SIX) == at("2026-01-31T06:00")


def test_each_workspace_is_due_once_a_day_at_its_own_time() -> None:
    workspaces = ["beta", "acme", "gamma"]
    per_ws = {"beta": EIGHT}
    last = {"acme": at("2026-01-31T06:00:05"), "beta": at("2026-01-31T08:00:05")}
    # gamma never ran: due at once; acme and beta ran yesterday
    assert due(at("2026-02-01T05:00"), workspaces, last, SIX, per_ws) == ["gamma"]
    assert due(at("2026-02-01T07:00"), workspaces, last, SIX, per_ws) == ["acme", "gamma"]
    last |= {"acme": at("2026-02-01T07:00"), "gamma": at("2026-02-01T07:00")}
    assert due(at("2026-02-01T07:30"), workspaces, last, SIX, per_ws) == []
    assert due(at("2026-02-01T08:00"), workspaces, last, SIX, per_ws) == ["beta"]
    # down for two days: one forecast on return, not one per missed day
    assert due(at("2026-02-04T09:00"), workspaces, last, SIX, per_ws) == ["acme", "beta", "gamma"]


def test_the_current_periods() -> None:
    names = [p.name for p in current_periods(at("2026-11-30T23:00"), ["quarter", "month"])]
    assert names == ["2026-Q4", "2026-11"]
    with pytest.raises(ValueError, match="period kind"):
        current_periods(at("2026-11-30T23:00"), ["week"])
