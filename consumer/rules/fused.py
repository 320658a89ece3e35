"""The six original rules fused into one pass each for ``fired`` and ``next_deadline``: the hot
path (every event, every due deal) builds no metrics and calls no function per rule.

Not the definition of any rule: each rule's module is. ``tests/unit/test_rules.py`` proves these
equal to the modules' ``check`` and ``deadline`` on random deals (hypothesis). A rule added to
the registry needs nothing here: ``consumer.rules`` runs every rule not in ``COVERS`` through its
own functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from consumer.rules.catalog import (
    close_date_passed,
    close_date_pressure,
    high_value_at_risk,
    low_probability,
    stale_deal,
    stuck_in_stage,
)
from consumer.state import DAY_MS, DealState
from schemas.events import Stage
from schemas.insights import Priority, RuleName

if TYPE_CHECKING:  # consumer.thresholds imports the registry
    from consumer.thresholds import RuleThresholds

_STALE, _STUCK, _LOWP, _HVAR, _PRESS, _PASSED = (
    RuleName.STALE_DEAL,
    RuleName.STUCK_IN_STAGE,
    RuleName.LOW_PROBABILITY,
    RuleName.HIGH_VALUE_AT_RISK,
    RuleName.CLOSE_DATE_PRESSURE,
    RuleName.CLOSE_DATE_PASSED,
)
COVERS = frozenset((_STALE, _STUCK, _LOWP, _HVAR, _PRESS, _PASSED))
_CRIT, _HIGH, _MED = Priority.CRITICAL, Priority.HIGH, Priority.MEDIUM


class Limits(NamedTuple):
    """The six rules' thresholds in the units the fused pass compares (milliseconds).
    ``*_after`` are deadline offsets: the first millisecond past the limit."""

    stale: float
    stale_critical: float
    stale_after: int
    stale_critical_after: int
    stuck: dict[Stage, float]
    stuck_critical: dict[Stage, float]
    stuck_after: dict[Stage, int]
    stuck_critical_after: dict[Stage, int]
    min_probability: dict[Stage, float]
    low_probability_high_value: float
    high_value: float
    high_value_inactive: float
    high_value_inactive_after: int
    high_value_min_probability: float
    close_pressure_days: int
    close_pressure_max_probability: float

    @classmethod
    def of(cls, th: RuleThresholds) -> Limits:
        st = th.of(stale_deal.RULE)
        su = th.of(stuck_in_stage.RULE)
        lp = th.of(low_probability.RULE)
        hv = th.of(high_value_at_risk.RULE)
        cp = th.of(close_date_pressure.RULE)
        return cls(
            stale=st.limit_ms,
            stale_critical=st.critical_ms,
            stale_after=int(st.limit_ms) + 1,
            stale_critical_after=int(st.critical_ms) + 1,
            stuck=su.limit_ms,
            stuck_critical=su.critical_ms,
            stuck_after={s: int(v) + 1 for s, v in su.limit_ms.items()},
            stuck_critical_after={s: int(v) + 1 for s, v in su.critical_ms.items()},
            min_probability=lp.minimum,
            low_probability_high_value=lp.low_probability_high_value,
            high_value=hv.high_value,
            high_value_inactive=hv.inactive_ms,
            high_value_inactive_after=int(hv.inactive_ms) + 1,
            high_value_min_probability=hv.high_value_min_probability,
            close_pressure_days=cp.close_pressure_days,
            close_pressure_max_probability=cp.close_pressure_max_probability,
        )


assert close_date_passed.RULE.name in COVERS


def fired(deal: DealState, now: int, lim: Limits) -> dict[RuleName, Priority]:
    out: dict[RuleName, Priority] = {}
    inactive = now - deal.last_activity_at_ms
    if inactive > lim.stale:
        out[_STALE] = _CRIT if inactive > lim.stale_critical else _HIGH
    stage = deal.stage
    probability = deal.probability
    value = deal.value
    if stage is not None:
        in_stage = now - deal.stage_entered_at_ms
        if in_stage > lim.stuck[stage]:
            out[_STUCK] = _CRIT if in_stage > lim.stuck_critical[stage] else _HIGH
        if probability is not None and probability < lim.min_probability[stage]:
            high = value is not None and value > lim.low_probability_high_value
            out[_LOWP] = _HIGH if high else _MED
    if (
        value is not None
        and value > lim.high_value
        and (
            inactive > lim.high_value_inactive
            or (probability is not None and probability < lim.high_value_min_probability)
        )
    ):
        out[_HVAR] = _CRIT
    close_day = deal.close_day
    if close_day is not None:
        left = close_day - now // DAY_MS
        if left < 0:
            out[_PASSED] = _HIGH
        elif (
            left <= lim.close_pressure_days
            and probability is not None
            and probability < lim.close_pressure_max_probability
        ):
            out[_PRESS] = _HIGH
    return out


def next_deadline(deal: DealState, now: int, lim: Limits) -> int | None:
    activity = deal.last_activity_at_ms
    best: int | None = None
    for t in (activity + lim.stale_after, activity + lim.stale_critical_after):
        if t > now and (best is None or t < best):
            best = t
    value = deal.value
    if value is not None and value > lim.high_value:
        t = activity + lim.high_value_inactive_after
        if t > now and (best is None or t < best):
            best = t
    stage = deal.stage
    if stage is not None:
        entered = deal.stage_entered_at_ms
        for t in (entered + lim.stuck_after[stage], entered + lim.stuck_critical_after[stage]):
            if t > now and (best is None or t < best):
                best = t
    close_day = deal.close_day
    if close_day is not None:
        for t in ((close_day - lim.close_pressure_days) * DAY_MS, (close_day + 1) * DAY_MS):
            if t > now and (best is None or t < best):
                best = t
    return best
