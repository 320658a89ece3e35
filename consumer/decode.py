"""Bytes from ``deal-events`` to a validated event, or an ``EventRejected`` with a reason.

The reasons are a small fixed set (they label a metric and a DLQ header); the detail says what
exactly was wrong, in words a producer's developer can act on.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from schemas.events import EVENT_TYPES, DealEvent, Tick, event_adapter
from vectoros.errors import EventRejected

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
    "processing_error",
)

_KNOWN_TYPES = frozenset(EVENT_TYPES)


def _summarise(exc: ValidationError, limit: int = 5) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:limit]:
        loc = ".".join(str(x) for x in err["loc"])
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"(+{more} more)")
    return "; ".join(parts)


def decode(value: bytes | None, key: bytes | None, *, max_bytes: int) -> DealEvent | Tick:
    """Decode one message. Raises ``EventRejected`` for anything that is not a valid event."""
    if value is None:
        raise EventRejected("invalid_json", "empty message value (null)")
    if len(value) > max_bytes:
        raise EventRejected("oversized", f"{len(value)} bytes is over the {max_bytes}-byte limit")
    try:
        raw: Any = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        msg = str(exc)
        reason = "invalid_utf8" if "utf-8" in msg.lower() else "invalid_json"
        raise EventRejected(reason, msg) from None
    if not isinstance(raw, dict):
        raise EventRejected("not_an_object", f"expected a JSON object, got {type(raw).__name__}")
    kind = raw.get("type")
    if kind is None:
        raise EventRejected("missing_type", "the 'type' field is missing")
    if kind not in _KNOWN_TYPES:
        shown = repr(kind)[:80]
        raise EventRejected("unknown_type", f"type {shown} is not one of {', '.join(EVENT_TYPES)}")
    version = raw.get("schema_version", 1)
    if version != 1:
        shown = repr(version)[:40]
        raise EventRejected(
            "unsupported_schema_version", f"schema_version {shown} is not supported (only 1)"
        )
    try:
        event = event_adapter.validate_python(raw)
    except ValidationError as exc:
        raise EventRejected("schema_violation", f"{kind}: {_summarise(exc)}") from None
    if isinstance(event, Tick):
        return event
    if key is None:
        raise EventRejected("key_mismatch", "message has no key; the key must be the deal_id")
    if key != event.deal_id.encode():
        raise EventRejected(
            "key_mismatch",
            f"message key {key[:80]!r} differs from deal_id {event.deal_id[:80]!r}: events of one "
            "deal must share a partition",
        )
    return event
