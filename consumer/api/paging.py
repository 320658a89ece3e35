"""Cursors of the insights list and ETags of list answers (pure)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib

import orjson


class BadCursor(ValueError):
    """A cursor this API did not write (or that was altered)."""


def encode_cursor(priority_rank: int, detected_at: dt.datetime, insight_id: str) -> str:
    """The position after one row of the list: opaque, URL-safe."""
    raw = orjson.dumps([priority_rank, detected_at.isoformat(), insight_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, dt.datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        rank, at, insight_id = orjson.loads(raw)
        when = dt.datetime.fromisoformat(at)
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise BadCursor("cursor is not one this API returned") from None
    if (
        not isinstance(rank, int)
        or isinstance(rank, bool)
        or not 0 <= rank <= 3
        or not isinstance(insight_id, str)
        or when.tzinfo is None
    ):
        raise BadCursor("cursor is not one this API returned")
    return rank, when, insight_id


def etag_of(body: bytes) -> str:
    """A strong ETag of a response body: equal bodies, equal tags."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (or ``*``); weak tags compare equal."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip().removeprefix("W/")
        if tag == "*" or tag == etag:
            return True
    return False
