"""The six risk rules of DESIGN.md: pure functions of ``(deal, now, thresholds)``.

Each rule returns a ``Finding`` (the priority and the numbers behind it) or ``None``. Each also
knows the future instants at which its answer can change without any new event
(``deadlines``): the monitor's deadline index uses them so that a tick only touches deals that
are due.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from consumer.state import DAY_MS, DealState
from consumer.thresholds import RuleThresholds
from schemas.insights import Priority, RuleName


class Finding(NamedTuple):
    rule: RuleName
    priority: Priority
    metrics: dict[str, float | int | str | None]


def _days(ms: int) -> float:
    return ms / DAY_MS


def _after(start_ms: int, days: float) -> int:
    """The first millisecond at which more than ``days`` days have passed since ``start_ms``."""
    return start_ms + int(days * DAY_MS) + 1


def stale_deal(deal: DealState, now: int, th: RuleThresholds) -> Finding | None:
    inactive = now - deal.last_activity_at_ms
    if inactive <= th.stale_days * DAY_MS:
        return None
    critical = inactive > th.stale_critical_days * DAY_MS
    return Finding(
        RuleName.STALE_DEAL,
        Priority.CRITICAL if critical else Priority.HIGH,
        {
            "days_inactive": round(_days(inactive), 1),
            "threshold_days": th.stale_critical_days if critical else th.stale_days,
        },
    )


def stuck_in_stage(deal: DealState, now: int, th: RuleThresholds) -> Finding | None:
    if deal.stage is None:
        return None
    limit = th.stuck_days.for_stage(deal.stage)
    in_stage = now - deal.stage_entered_at_ms
    if in_stage <= limit * DAY_MS:
        return None
    critical = in_stage > limit * th.stuck_critical_factor * DAY_MS
    return Finding(
        RuleName.STUCK_IN_STAGE,
        Priority.CRITICAL if critical else Priority.HIGH,
        {
            "stage": deal.stage.value,
            "days_in_stage": round(_days(in_stage), 1),
            "threshold_days": limit,
        },
    )


def low_probability(deal: DealState, now: int, th: RuleThresholds) -> Finding | None:
    if deal.stage is None or deal.probability is None:
        return None
    minimum = th.min_probability.for_stage(deal.stage)
    if deal.probability >= minimum:
        return None
    high = deal.value is not None and deal.value > th.low_probability_high_value
    return Finding(
        RuleName.LOW_PROBABILITY,
        Priority.HIGH if high else Priority.MEDIUM,
        {
            "probability": deal.probability,
            "stage_min_probability": minimum,
            "stage": deal.stage.value,
        },
    )


def high_value_at_risk(deal: DealState, now: int, th: RuleThresholds) -> Finding | None:
    if deal.value is None or deal.value <= th.high_value:
        return None
    inactive = now - deal.last_activity_at_ms
    cold = inactive > th.high_value_inactive_days * DAY_MS
    unlikely = deal.probability is not None and deal.probability < th.high_value_min_probability
    if not (cold or unlikely):
        return None
    return Finding(
        RuleName.HIGH_VALUE_AT_RISK,
        Priority.CRITICAL,
        {
            "deal_value": deal.value,
            "days_inactive": round(_days(inactive), 1),
            "probability": deal.probability,
            "reason": "inactive and unlikely"
            if cold and unlikely
            else ("inactive" if cold else "unlikely"),
        },
    )


def _days_to_close(deal: DealState, now: int) -> int | None:
    if deal.close_day is None:
        return None
    return deal.close_day - now // DAY_MS


def close_date_pressure(deal: DealState, now: int, th: RuleThresholds) -> Finding | None:
    left = _days_to_close(deal, now)
    if left is None or deal.probability is None:
        return None
    if not (0 <= left <= th.close_pressure_days):
        return None
    if deal.probability >= th.close_pressure_max_probability:
        return None
    return Finding(
        RuleName.CLOSE_DATE_PRESSURE,
        Priority.HIGH,
        {"days_to_close": left, "probability": deal.probability},
    )


def close_date_passed(deal: DealState, now: int, th: RuleThresholds) -> Finding | None:
    left = _days_to_close(deal, now)
    if left is None or left >= 0:
        return None
    return Finding(RuleName.CLOSE_DATE_PASSED, Priority.HIGH, {"days_overdue": -left})


Rule = Callable[[DealState, int, RuleThresholds], Finding | None]

RULES: tuple[Rule, ...] = (
    stale_deal,
    stuck_in_stage,
    low_probability,
    high_value_at_risk,
    close_date_pressure,
    close_date_passed,
)


RULE_BY_NAME: dict[RuleName, Rule] = {
    RuleName.STALE_DEAL: stale_deal,
    RuleName.STUCK_IN_STAGE: stuck_in_stage,
    RuleName.LOW_PROBABILITY: low_probability,
    RuleName.HIGH_VALUE_AT_RISK: high_value_at_risk,
    RuleName.CLOSE_DATE_PRESSURE: close_date_pressure,
    RuleName.CLOSE_DATE_PASSED: close_date_passed,
}

_STALE, _STUCK, _LOWP, _HVAR, _PRESS, _PASSED = (
    RuleName.STALE_DEAL,
    RuleName.STUCK_IN_STAGE,
    RuleName.LOW_PROBABILITY,
    RuleName.HIGH_VALUE_AT_RISK,
    RuleName.CLOSE_DATE_PRESSURE,
    RuleName.CLOSE_DATE_PASSED,
)
_CRIT, _HIGH, _MED = Priority.CRITICAL, Priority.HIGH, Priority.MEDIUM


def fired(deal: DealState, now: int, th: RuleThresholds) -> dict[RuleName, Priority]:
    """What fires, and how badly: the six rules fused into one pass that builds no metrics.

    This is the hot path (every event and every due deal); it must agree with the rule functions
    above, which the renderer calls for the numbers when an insight is raised or escalated
    (``tests/unit/test_rules.py`` checks the agreement on random deals)."""
    out: dict[RuleName, Priority] = {}
    lim = th.limits
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
            high = value is not None and value > th.low_probability_high_value
            out[_LOWP] = _HIGH if high else _MED
    if (
        value is not None
        and value > th.high_value
        and (
            inactive > lim.high_value_inactive
            or (probability is not None and probability < th.high_value_min_probability)
        )
    ):
        out[_HVAR] = _CRIT
    close_day = deal.close_day
    if close_day is not None:
        left = close_day - now // DAY_MS
        if left < 0:
            out[_PASSED] = _HIGH
        elif (
            left <= th.close_pressure_days
            and probability is not None
            and probability < th.close_pressure_max_probability
        ):
            out[_PRESS] = _HIGH
    return out


def evaluate(deal: DealState, now: int, th: RuleThresholds) -> dict[RuleName, Finding]:
    """Every rule that fires for ``deal`` at ``now``, with its numbers."""
    out: dict[RuleName, Finding] = {}
    for rule in RULES:
        finding = rule(deal, now, th)
        if finding is not None:
            out[finding.rule] = finding
    return out


def next_deadline(deal: DealState, now: int, th: RuleThresholds) -> int | None:
    """The earliest instant after ``now`` at which a rule's answer may change by time alone."""
    lim = th.limits
    activity = deal.last_activity_at_ms
    best: int | None = None
    for t in (activity + lim.stale_after, activity + lim.stale_critical_after):
        if t > now and (best is None or t < best):
            best = t
    value = deal.value
    if value is not None and value > th.high_value:
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
        for t in ((close_day - th.close_pressure_days) * DAY_MS, (close_day + 1) * DAY_MS):
            if t > now and (best is None or t < best):
                best = t
    return best
