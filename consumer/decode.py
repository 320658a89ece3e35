"""Bytes from ``deal-events`` to a validated event, or an ``EventRejected`` with a reason.

The reasons are a small fixed set (they label a metric and a DLQ header); the detail says what
exactly was wrong, in words a producer's developer can act on.

Event time is bounded by the Kafka record's own timestamp (deterministic on replay, unlike the wall
clock): an event or tick more than ``TimeBounds.ahead_ms`` ahead of it, or more than
``TimeBounds.behind_ms`` behind it, is ``implausible_time``, so one bad timestamp cannot move a
partition clock. A record without a timestamp (None, or Kafka's -1) is not checked.
"""

from __future__ import annotations

import datetime as dt

from pydantic import ValidationError

from consumer.state import to_ms
from schemas.events import EVENT_TYPES, DealEvent, Tick, event_adapter
from vectoros.errors import EventRejected
from vectoros.event_time import TimeBounds

__all__ = ["REASONS", "TimeBounds", "decode"]

_MIN_MS = to_ms(dt.datetime(1, 1, 1, tzinfo=dt.UTC))
_MAX_MS = to_ms(dt.datetime(9999, 12, 31, 23, 59, 59, 999_000, tzinfo=dt.UTC))

REASONS = (
    "oversized",
    "invalid_utf8",
    "invalid_json",
    "not_an_object",
    "missing_type",
    "unknown_type",
    "unsupported_schema_version",
    "schema_violation",
    "key_mismatch",
    "implausible_time",
    "processing_error",
)


def _summarise(exc: ValidationError, limit: int = 5) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:limit]:
        loc = ".".join(str(x) for x in err["loc"])
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"(+{more} more)")
    return "; ".join(parts)


def _classify(exc: ValidationError, value: bytes) -> EventRejected:
    """Map pydantic's first error onto one of ``REASONS`` with a readable detail."""
    first = exc.errors(include_url=False)[0]
    kind = first["type"]
    if kind == "json_invalid":
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as bad:
            return EventRejected("invalid_utf8", f"not UTF-8: {bad}")
        return EventRejected("invalid_json", first["msg"])
    if kind in ("dict_type", "model_type") and len(first["loc"]) <= 1:
        return EventRejected("not_an_object", "expected a JSON object")
    if kind == "union_tag_not_found":
        return EventRejected("missing_type", "the 'type' field is missing")
    if kind == "union_tag_invalid":
        tag = str((first.get("ctx") or {}).get("tag", "?"))[:80]
        return EventRejected("unknown_type", f"type {tag!r} is not one of {', '.join(EVENT_TYPES)}")
    for err in exc.errors(include_url=False):
        if err["loc"][-1:] == ("schema_version",):
            shown = repr(err.get("input"))[:40]
            return EventRejected(
                "unsupported_schema_version", f"schema_version {shown} is not supported (only 1)"
            )
    return EventRejected("schema_violation", _summarise(exc))


def _check_range(at: dt.datetime) -> None:
    """Aware but outside what UTC epoch milliseconds can hold (e.g. 9999-12-31T23:59-14:00)."""
    try:
        ms = to_ms(at)
    except (OverflowError, ValueError, OSError) as exc:
        raise EventRejected("schema_violation", f"timestamp out of range: {exc}") from None
    if not _MIN_MS <= ms <= _MAX_MS:
        raise EventRejected(
            "schema_violation", f"timestamp out of range: {ms} ms is not in years 1-9999 UTC"
        )


def decode(
    value: bytes | None,
    key: bytes | None,
    *,
    max_bytes: int,
    record_ms: int | None = None,
    bounds: TimeBounds | None = None,
) -> DealEvent | Tick:
    """Decode one message (one strict JSON parse). Raises ``EventRejected`` if it is unusable.

    With ``bounds``, the event's time is checked against ``record_ms`` (the record's broker
    timestamp); a record without one (None or negative) is not checked."""
    return decode_timed(value, key, max_bytes=max_bytes, record_ms=record_ms, bounds=bounds)[0]


def decode_timed(
    value: bytes | None,
    key: bytes | None,
    *,
    max_bytes: int,
    record_ms: int | None = None,
    bounds: TimeBounds | None = None,
) -> tuple[DealEvent | Tick, int]:
    """``decode``, and the event's time in epoch milliseconds (converted once: the monitor's
    hot path hands it to ``PartitionState`` instead of converting it again)."""
    if value is None:
        raise EventRejected("invalid_json", "empty message value (null)")
    if len(value) > max_bytes:
        raise EventRejected("oversized", f"{len(value)} bytes is over the {max_bytes}-byte limit")
    try:
        event = event_adapter.validate_json(value, strict=True)
    except ValidationError as exc:
        raise _classify(exc, value) from None
    at = event.at if isinstance(event, Tick) else event.occurred_at
    if not 1 < at.year < 9999:  # offsets are under a day: only these years can leave 1-9999 UTC
        _check_range(at)
    at_ms = int(at.timestamp() * 1000)  # ``to_ms``, inline: once per record
    if (
        bounds is not None
        and record_ms is not None
        and record_ms >= 0
        and not -bounds.behind_ms <= at_ms - record_ms <= bounds.ahead_ms
    ):
        bounds.check(at, record_ms, "its record timestamp")  # raises, saying why
    if isinstance(event, Tick):
        return event, at_ms
    if key is None:
        raise EventRejected("key_mismatch", "message has no key; the key must be the deal_id")
    if key != event.deal_id.encode():
        raise EventRejected(
            "key_mismatch",
            f"message key {key[:80]!r} differs from deal_id {event.deal_id[:80]!r}: events of one "
            "deal must share a partition",
        )
    return event, at_ms
