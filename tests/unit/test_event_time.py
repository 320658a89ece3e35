"""Event time is bounded by the record's own timestamp: one bad timestamp cannot poison a
partition clock (decode, settings, and the monitor's per-record path)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from consumer.decode import REASONS, TimeBounds, decode
from consumer.monitor.batch import BatchProcessor, Tally
from consumer.monitor.dlq import DLQ_DETAIL, DLQ_REASON
from consumer.monitor.metrics import MonitorMetrics
from consumer.monitor.settings import MonitorSettings
from consumer.partition import PartitionState
from consumer.state import to_ms
from consumer.thresholds import RulesConfig
from schemas.events import DealCreated, Tick, encode_event
from vectoros.batch_produce import OutRecord
from vectoros.errors import EventRejected

RECORD_AT = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
RECORD_MS = to_ms(RECORD_AT)
BOUNDS = TimeBounds.of_seconds(3600, 400 * 86400)  # the defaults
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
MS = dt.timedelta(milliseconds=1)


def event_at(when: str | dt.datetime, deal_id: str = "d1") -> bytes:
    text = when if isinstance(when, str) else when.isoformat()
    return (
        b'{"type":"deal.created","event_id":"e-' + text.encode() + b'","workspace_id":"w",'
        b'"deal_id":"' + deal_id.encode() + b'","occurred_at":"' + text.encode() + b'",'
        b'"title":"t","value":5000,"currency":"USD","stage":"lead","probability":50,'
        b'"close_date":"2026-12-31","owner_id":"o"}'
    )


def tick_at(when: str | dt.datetime) -> bytes:
    text = when if isinstance(when, str) else when.isoformat()
    return b'{"type":"tick","event_id":"t-' + text.encode() + b'","at":"' + text.encode() + b'"}'


def decoded(value: bytes, key: bytes | None = b"d1", record_ms: int | None = RECORD_MS) -> Any:
    return decode(value, key, max_bytes=4096, record_ms=record_ms, bounds=BOUNDS)


@pytest.mark.parametrize(
    ("value", "key", "detail_has"),
    [
        (event_at("2999-01-01T00:00:00Z"), b"d1", "ahead of"),
        (tick_at("2100-01-01T00:00:00Z"), None, "ahead of"),
        (event_at("0001-01-01T00:00:00Z"), b"d1", "behind"),
        (event_at("1970-01-01T00:00:00Z"), b"d1", "behind"),
        (event_at(RECORD_AT - 401 * DAY), b"d1", "behind"),
        (event_at(RECORD_AT - 400 * DAY - MS), b"d1", "behind"),
        (event_at(RECORD_AT + HOUR + MS), b"d1", "ahead of"),
        (tick_at(RECORD_AT + HOUR + MS), None, "ahead of"),
        (tick_at(RECORD_AT - 401 * DAY), None, "behind"),  # the age bound applies to ticks too
    ],
)
def test_implausible_times_are_rejected(value: bytes, key: bytes | None, detail_has: str) -> None:
    with pytest.raises(EventRejected) as info:
        decoded(value, key)
    assert info.value.reason == "implausible_time"
    assert "implausible_time" in REASONS
    assert detail_has in info.value.detail
    assert "its record timestamp 2026-11-25T12:00:00.000+00:00" in info.value.detail


def test_the_detail_says_how_far_and_the_limit() -> None:
    with pytest.raises(EventRejected) as info:
        decoded(event_at("2999-01-01T00:00:00Z"))
    assert "355" in info.value.detail
    assert "days ahead of" in info.value.detail
    assert "(the limit is 1.0 hours)" in info.value.detail


@pytest.mark.parametrize(
    ("value", "key"),
    [
        (event_at(RECORD_AT + 59 * dt.timedelta(minutes=1)), b"d1"),
        (event_at(RECORD_AT + HOUR), b"d1"),  # exactly the bound: accepted
        (event_at(RECORD_AT - 400 * DAY), b"d1"),  # exactly the bound: accepted
        (event_at(RECORD_AT - 399 * DAY), b"d1"),
        (event_at(RECORD_AT), b"d1"),
        (tick_at(RECORD_AT + HOUR), None),
        (tick_at(RECORD_AT - 30 * DAY), None),
        (event_at("2026-11-25T13:59:00+01:00"), b"d1"),  # 59 minutes ahead, with an offset
    ],
)
def test_plausible_times_are_accepted(value: bytes, key: bytes | None) -> None:
    assert isinstance(decoded(value, key), DealCreated | Tick)


@pytest.mark.parametrize("record_ms", [None, -1])
def test_a_record_without_timestamp_is_not_checked(record_ms: int | None) -> None:
    assert isinstance(decoded(event_at("2999-01-01T00:00:00Z"), record_ms=record_ms), DealCreated)


def test_without_bounds_nothing_is_checked() -> None:
    value = event_at("2999-01-01T00:00:00Z")
    assert isinstance(decode(value, b"d1", max_bytes=4096, record_ms=RECORD_MS), DealCreated)


# --- settings ----------------------------------------------------------------------------------


def test_defaults_are_one_hour_and_400_days() -> None:
    s = MonitorSettings()
    assert s.max_clock_skew == 3600
    assert s.max_event_age == 400 * 86400


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1h", 3600), ("400d", 400 * 86400), ("90", 90), ("15m", 900), ("2.5s", 2.5), ("500ms", 0.5)],
)
def test_bounds_are_read_from_the_variables_the_issue_names(
    monkeypatch: pytest.MonkeyPatch, text: str, seconds: float
) -> None:
    monkeypatch.setenv("VECTOROS_MAX_CLOCK_SKEW", text)
    monkeypatch.setenv("VECTOROS_MAX_EVENT_AGE", text)
    s = MonitorSettings()
    assert s.max_clock_skew == pytest.approx(seconds)
    assert s.max_event_age == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["soon", "-1h", "0", "1y", ""])
def test_a_bad_bound_is_an_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.setenv("VECTOROS_MAX_CLOCK_SKEW", text)
    with pytest.raises(ValidationError) as info:
        MonitorSettings()
    assert info.value.errors()[0]["loc"] == ("max_clock_skew",)


# --- the monitor's record path -----------------------------------------------------------------


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None


def test_the_monitor_parks_an_implausible_event_and_tick_and_keeps_its_clock() -> None:
    settings = MonitorSettings(kafka_bootstrap_servers="unused:9092", metrics_enabled=False)
    metrics = MonitorMetrics(CollectorRegistry())
    processor = BatchProcessor(settings)
    state = PartitionState(RulesConfig())
    good = DealCreated(
        event_id="ok",
        workspace_id="w",
        deal_id="d-ok",
        occurred_at=RECORD_AT,
        title="fine",
        value=5000,
        currency="USD",
        stage="lead",  # type: ignore[arg-type]
        probability=50,
        close_date=dt.date(2026, 12, 31),
        owner_id="o",
    )
    out: list[OutRecord] = []
    records = [
        Record("ev", 0, 0, b"d-ok", encode_event(good), RECORD_MS),
        Record("ev", 0, 1, b"d-bad", event_at("2999-01-01T00:00:00Z", "d-bad"), RECORD_MS),
        Record("ev", 0, 2, None, tick_at("2100-01-01T00:00:00Z"), RECORD_MS),
        Record("ev", 0, 3, b"d-old", event_at("1970-01-01T00:00:00Z", "d-old"), RECORD_MS),
        Record("ev", 0, 4, None, tick_at(RECORD_AT + dt.timedelta(minutes=5)), None),
    ]
    for rec in records:
        tally = Tally()
        processor.process_records(state, [rec], out, tally)
        tally.flush(metrics)
    dlq = [r for r in out if r.topic == settings.topic_dlq]
    assert [dict(r.headers or [])[DLQ_REASON] for r in dlq] == [b"implausible_time"] * 3
    assert all(dict(r.headers or [])[DLQ_DETAIL] for r in dlq)
    assert set(state.deals) == {"d-ok"}  # the implausible events changed no state
    # the clock moved only by the good event and the (unchecked, untimestamped) tick
    assert state.clock_ms == to_ms(RECORD_AT + dt.timedelta(minutes=5))
    sample = metrics.dlq_records.labels("implausible_time")._value.get()
    assert sample == 3
    assert metrics.untimed_records._value.get() == 1
