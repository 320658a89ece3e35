"""When the forecast service forecasts (pure: the time is passed in).

Each workspace is forecast once a day at its time (UTC ``HH:MM``; a default for all, overrides
per workspace): it is due when the latest such instant at or before now is after its last
forecast. A restart therefore neither repeats a day's forecast nor skips one that was missed
(it runs at once). The periods forecast are the ones containing now (the quarter, the month).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence

from consumer.forecast.pipeline import PeriodSpec


def parse_time(text: str) -> dt.time:
    """``HH:MM`` (UTC)."""
    try:
        hours, minutes = (int(x) for x in text.strip().split(":"))
        return dt.time(hours, minutes, tzinfo=dt.UTC)
    except ValueError:
        raise ValueError(f"{text!r} is not a time of day like 06:00") from None


def last_slot(now: dt.datetime, at: dt.time) -> dt.datetime:
    """The latest instant at or before ``now`` whose time of day is ``at``."""
    today = dt.datetime.combine(now.date(), at.replace(tzinfo=None), tzinfo=dt.UTC)
    return today if today <= now else today - dt.timedelta(days=1)


def due(
    now: dt.datetime,
    workspaces: Iterable[str],
    last_run: Mapping[str, dt.datetime],
    default_at: dt.time,
    workspace_at: Mapping[str, dt.time],
) -> list[str]:
    """The workspaces whose daily time has come since their last forecast, in order."""
    out = []
    for ws in sorted(set(workspaces)):
        slot = last_slot(now, workspace_at.get(ws, default_at))
        last = last_run.get(ws)
        if last is None or last < slot:
            out.append(ws)
    return out


def current_periods(now: dt.datetime, kinds: Sequence[str]) -> list[PeriodSpec]:
    """The periods of each kind (``quarter``, ``month``) that contain ``now``."""
    out = []
    for kind in kinds:
        if kind == "quarter":
            out.append(PeriodSpec.parse(f"{now.year}-Q{(now.month - 1) // 3 + 1}"))
        elif kind == "month":
            out.append(PeriodSpec.parse(f"{now.year}-{now.month:02d}"))
        else:
            raise ValueError(f"{kind!r} is not a period kind (quarter, month)")
    return out
