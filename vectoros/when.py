"""Points in time as an operator types them: RFC 3339 (``2026-03-01T08:00:00Z``, a date alone
``2026-03-01``; no offset means UTC) or an age before ``now`` (``90m``, ``12h``, ``7d``, ``2w``)."""

from __future__ import annotations

import datetime as dt
import re

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}


def parse_when(text: str, now: dt.datetime) -> dt.datetime:
    """An aware datetime, or ``ValueError`` saying what is accepted."""
    match = _AGE.match(text)
    if match:
        return now - dt.timedelta(seconds=float(match.group(1)) * _UNIT[match.group(2)])
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an RFC 3339 time (2026-03-01T08:00:00Z) nor an age like "
            "90m, 12h, 7d or 2w"
        ) from None
    return value if value.utcoffset() is not None else value.replace(tzinfo=dt.UTC)
