"""How far an event's own time may be from a reference time (the Kafka record's timestamp in the
monitor, the receive time in the gateway): beyond it the time is ``implausible_time``. Pure."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from vectoros.errors import EventRejected


def _to_ms(at: dt.datetime) -> int:
    return int(at.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class TimeBounds:
    """How far an event's own time may be from a reference time: ``ahead_ms`` after it,
    ``behind_ms`` before it (both inclusive)."""

    ahead_ms: int
    behind_ms: int

    @classmethod
    def of_seconds(cls, ahead: float, behind: float) -> TimeBounds:
        return cls(round(ahead * 1000), round(behind * 1000))

    def check(self, at: dt.datetime, reference_ms: int, against: str) -> int:
        """Raise ``implausible_time`` if ``at`` is too far from ``reference_ms`` (``against``
        names the reference in the detail, e.g. "the record timestamp"); else ``at`` in epoch
        milliseconds (the caller need not convert it again)."""
        at_ms = _to_ms(at)
        if at_ms - reference_ms > self.ahead_ms:
            gap, limit, where = at_ms - reference_ms, self.ahead_ms, "ahead of"
        elif reference_ms - at_ms > self.behind_ms:
            gap, limit, where = reference_ms - at_ms, self.behind_ms, "behind"
        else:
            return at_ms
        reference = dt.datetime.fromtimestamp(reference_ms / 1000, tz=dt.UTC)
        raise EventRejected(
            "implausible_time",
            f"{at.isoformat()} is {_span(gap)} {where} {against} "
            f"{reference.isoformat(timespec='milliseconds')} (the limit is {_span(limit)})",
        )


def _span(ms: int) -> str:
    if ms >= 86_400_000:
        return f"{ms / 86_400_000:.1f} days"
    if ms >= 3_600_000:
        return f"{ms / 3_600_000:.1f} hours"
    return f"{ms / 1000:.1f} s"
