"""Every way a message can be unusable maps to one bounded reason with a readable detail."""

from __future__ import annotations

import pytest

from consumer.decode import REASONS, decode
from consumer.monitor.dlq import MAX_KEY_BYTES, ORIGINAL_KEY_SIZE, ORIGINAL_SIZE, dlq_record
from schemas.events import DealDeleted, Tick
from vectoros.errors import EventRejected

GOOD = (
    b'{"type":"deal.deleted","event_id":"e1","workspace_id":"w","deal_id":"d1",'
    b'"occurred_at":"2026-01-01T00:00:00+02:00"}'
)


@pytest.mark.parametrize(
    ("key", "value", "reason", "detail_has"),
    [
        (b"d1", None, "invalid_json", "null"),
        (b"d1", b"{nope", "invalid_json", "Invalid JSON"),
        (b"d1", b"\xff\xfe{}", "invalid_utf8", "UTF-8"),
        (b"d1", b"42", "not_an_object", "object"),
        (b"d1", b'{"deal_id":"d1"}', "missing_type", "type"),
        (b"d1", b'{"type":"deal.won"}', "unknown_type", "deal.won"),
        (
            b"d1",
            GOOD.replace(b'"type"', b'"schema_version":3,"type"'),
            "unsupported_schema_version",
            "3",
        ),
        (b"d1", GOOD.replace(b"+02:00", b""), "schema_violation", "occurred_at"),
        (b"d1", GOOD.replace(b'"event_id":"e1",', b""), "schema_violation", "event_id"),
        (b"d1", GOOD.replace(b'"d1"', b'"d1","extra":1'), "schema_violation", "extra"),
        (b"other", GOOD, "key_mismatch", "deal_id"),
        (None, GOOD, "key_mismatch", "no key"),
        (b"d1", b"{" + b" " * 5000 + b"}", "oversized", "5002 bytes"),
    ],
)
def test_rejections(key: bytes | None, value: bytes | None, reason: str, detail_has: str) -> None:
    with pytest.raises(EventRejected) as info:
        decode(value, key, max_bytes=4096)
    assert info.value.reason == reason
    assert reason in REASONS
    assert detail_has in info.value.detail


def test_valid_event_and_tick() -> None:
    event = decode(GOOD, b"d1", max_bytes=4096)
    assert isinstance(event, DealDeleted)
    tick = decode(b'{"type":"tick","at":"2026-01-01T00:00:00Z"}', None, max_bytes=4096)
    assert isinstance(tick, Tick)


@pytest.mark.parametrize(
    ("when", "ok"),
    [
        ("0001-01-01T00:00:00+01:00", False),  # 31 December of year 0 in UTC
        ("0001-01-01T00:00:00-01:00", True),
        ("0002-01-01T00:30:00+01:00", True),
        ("9998-12-31T23:59:59-14:00", True),
        ("9999-12-31T23:59:59+14:00", True),
        ("9999-12-31T23:59:59.999+00:00", True),
        ("9999-12-31T23:59:59-14:00", False),  # the year 10000 in UTC
    ],
)
def test_timestamps_must_be_in_years_1_to_9999_utc(when: str, ok: bool) -> None:
    """Only the first and the last year can leave the range in UTC; both edges are checked."""
    value = GOOD.replace(b"2026-01-01T00:00:00+02:00", when.encode())
    if ok:
        assert isinstance(decode(value, b"d1", max_bytes=4096), DealDeleted)
    else:
        with pytest.raises(EventRejected) as info:
            decode(value, b"d1", max_bytes=4096)
        assert info.value.reason == "schema_violation"
        assert "out of range" in info.value.detail


def test_strict_types_no_coercion() -> None:
    value = (
        b'{"type":"deal.created","event_id":"e","workspace_id":"w","deal_id":"d",'
        b'"occurred_at":"2026-01-01T00:00:00Z","title":"t","value":"5000","currency":"USD",'
        b'"stage":"lead","probability":50,"close_date":"2026-03-01","owner_id":"o"}'
    )
    with pytest.raises(EventRejected, match="value"):
        decode(value, b"d", max_bytes=4096)


def test_dlq_record_carries_reason_source_and_truncates() -> None:
    rec = dlq_record(
        dlq_topic="dlq",
        reason="oversized",
        detail="too big",
        topic="events",
        partition=2,
        offset=17,
        key=b"k",
        value=b"x" * 100,
        max_value_bytes=10,
    )
    headers = dict(rec.headers or [])
    assert headers["vectoros-dlq-reason"] == b"oversized"
    assert headers["vectoros-source-partition"] == b"2"
    assert headers["vectoros-source-offset"] == b"17"
    assert headers[ORIGINAL_SIZE] == b"100"
    assert rec.value == b"x" * 10


def test_dlq_record_truncates_a_huge_key() -> None:
    rec = dlq_record(
        dlq_topic="dlq",
        reason="key_mismatch",
        detail="wrong key",
        topic="events",
        partition=0,
        offset=1,
        key=b"k" * 5000,
        value=b"{}",
        max_value_bytes=10,
    )
    headers = dict(rec.headers or [])
    assert rec.key == b"k" * MAX_KEY_BYTES
    assert headers[ORIGINAL_KEY_SIZE] == b"5000"
