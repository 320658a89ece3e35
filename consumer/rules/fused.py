"""The ten rules of ``COVERS`` fused into one pass (``assess``) that says what fires and the
next deadline at once (stale_deal with its hold-off by a scheduled meeting, the three model
rules on a scored deal): the hot path (every event, every due deal) builds no metrics and calls
no function per rule.

Not the definition of any rule: each rule's module is. ``tests/unit/test_rules_registry.py``
proves this pass equal to the modules' ``check`` and ``deadline`` on random deals and thresholds
(hypothesis). A rule added to the registry needs nothing here: every rule not in ``COVERS`` runs
at the end of the pass through its own ``check`` and ``deadline`` (``Limits.rest``, built by
``consumer.rules.limits``), a group of them skipped at once on a deal missing the field they need.

velocity_drop reads the activity history once: a deal with fewer activities kept than the
baseline minimum costs one byte sum; otherwise the window and baseline counts are taken in one
pass and the next change is found by walking the days at which activity days leave the window or
the baseline (at most two per history entry), in order, stopping as soon as the rule can no
longer fire.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from consumer.rules.base import Rule
from consumer.rules.catalog import (
    close_date_passed,
    close_date_pressure,
    close_date_unrealistic,
    forecast_risk,
    high_value_at_risk,
    low_probability,
    stale_deal,
    stuck_in_stage,
    velocity_drop,
    win_probability_drop,
)
from consumer.state import DAY_MS, DealState, hold_until, iter_activity, scored_days
from schemas.events import Stage
from schemas.insights import Priority, RuleName

if TYPE_CHECKING:  # consumer.thresholds imports the registry
    from consumer.thresholds import RuleThresholds

Rest = tuple[tuple[str | None, tuple[tuple[Rule[Any], Any], ...]], ...]
"""The registered rules the fused pass does not cover, with their thresholds, grouped by the
first field they need (``Rule.needs``): a group is skipped at once on a deal without it."""

_STALE, _STUCK, _LOWP, _HVAR, _PRESS, _PASSED, _VELOCITY = (
    RuleName.STALE_DEAL,
    RuleName.STUCK_IN_STAGE,
    RuleName.LOW_PROBABILITY,
    RuleName.HIGH_VALUE_AT_RISK,
    RuleName.CLOSE_DATE_PRESSURE,
    RuleName.CLOSE_DATE_PASSED,
    RuleName.VELOCITY_DROP,
)
_FORECAST, _WIN_DROP, _UNREALISTIC = (
    RuleName.FORECAST_RISK,
    RuleName.WIN_PROBABILITY_DROP,
    RuleName.CLOSE_DATE_UNREALISTIC,
)
COVERS = frozenset(
    (_STALE, _STUCK, _LOWP, _HVAR, _PRESS, _PASSED, _VELOCITY, _FORECAST, _WIN_DROP, _UNREALISTIC)
)
_CRIT, _HIGH, _MED = Priority.CRITICAL, Priority.HIGH, Priority.MEDIUM
_LATE = forecast_risk.LATE_STAGES


class Limits(NamedTuple):
    """The rules' thresholds in the units the fused pass compares (milliseconds; days for
    velocity_drop). ``*_after`` are deadline offsets: the first millisecond past the limit."""

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
    velocity_window: int
    velocity_baseline: int
    velocity_ratio: float
    velocity_min: int
    velocity_high_value: float
    forecast_gap: float
    forecast_gap_critical: float
    win_drop: float
    win_drop_high: float
    win_drop_window: int
    unrealistic_high_days: int
    rest: Rest = ()
    """The registered rules this pass does not cover, run at its end (``consumer.rules``)."""

    @classmethod
    def of(cls, th: RuleThresholds, rest: Rest = ()) -> Limits:
        st = th.of(stale_deal.RULE)
        su = th.of(stuck_in_stage.RULE)
        lp = th.of(low_probability.RULE)
        hv = th.of(high_value_at_risk.RULE)
        cp = th.of(close_date_pressure.RULE)
        vd = th.of(velocity_drop.RULE)
        fr = th.of(forecast_risk.RULE)
        wd = th.of(win_probability_drop.RULE)
        cu = th.of(close_date_unrealistic.RULE)
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
            velocity_window=vd.velocity_window_days,
            velocity_baseline=vd.velocity_baseline_days,
            velocity_ratio=vd.velocity_drop_ratio,
            velocity_min=vd.velocity_min_baseline_activities,
            velocity_high_value=vd.high_value,
            forecast_gap=fr.forecast_gap_points,
            forecast_gap_critical=fr.forecast_gap_critical_points,
            win_drop=wd.win_drop_points,
            win_drop_high=wd.win_drop_high_points,
            win_drop_window=wd.win_drop_window_days,
            unrealistic_high_days=cu.close_unrealistic_high_days,
            rest=rest,
        )


assert close_date_passed.RULE.name in COVERS


def fired(deal: DealState, now: int, lim: Limits) -> dict[RuleName, Priority]:
    """What fires and how badly (``assess`` without the deadline)."""
    return assess(deal, now, lim)[0]


def next_deadline(deal: DealState, now: int, lim: Limits) -> int | None:
    """The earliest instant after ``now`` at which an answer may change by time alone."""
    return assess(deal, now, lim)[1]


def assess(deal: DealState, now: int, lim: Limits) -> tuple[dict[RuleName, Priority], int | None]:
    """What fires at ``now`` and how badly, and the next deadline, in one pass. None of these
    rules reads the deal's open insights, so both hold before and after ``reconcile``."""
    out: dict[RuleName, Priority] = {}
    activity = deal.last_activity_at_ms
    inactive = now - activity
    best: int | None = None
    hold = 0 if deal.engagement is None else hold_until(deal.engagement)
    if inactive > lim.stale and hold <= now:
        out[_STALE] = _CRIT if inactive > lim.stale_critical else _HIGH
    for t in (activity + lim.stale_after, activity + lim.stale_critical_after, hold):
        if t > now and (best is None or t < best):
            best = t
    stage = deal.stage
    probability = deal.probability
    value = deal.value
    if stage is not None:
        entered = deal.stage_entered_at_ms
        in_stage = now - entered
        if in_stage > lim.stuck[stage]:
            out[_STUCK] = _CRIT if in_stage > lim.stuck_critical[stage] else _HIGH
        for t in (entered + lim.stuck_after[stage], entered + lim.stuck_critical_after[stage]):
            if t > now and (best is None or t < best):
                best = t
        if probability is not None and probability < lim.min_probability[stage]:
            high = value is not None and value > lim.low_probability_high_value
            out[_LOWP] = _HIGH if high else _MED
    if value is not None and value > lim.high_value:
        if inactive > lim.high_value_inactive or (
            probability is not None and probability < lim.high_value_min_probability
        ):
            out[_HVAR] = _CRIT
        t = activity + lim.high_value_inactive_after
        if t > now and (best is None or t < best):
            best = t
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
        for t in ((close_day - lim.close_pressure_days) * DAY_MS, (close_day + 1) * DAY_MS):
            if t > now and (best is None or t < best):
                best = t
    history = deal.activity
    if history and sum(history[2::3]) >= lim.velocity_min:  # else it cannot fire (the counts)
        # a change on or after the day of ``best`` cannot lower it: the walk stops there
        until = _NEVER if best is None else -(-best // DAY_MS)
        today = now // DAY_MS
        oldest = history[0] | history[1] << 8
        # else every day is in the window (nothing in the baseline: it does not fire) and none
        # leaves it before the oldest does, not before ``until``: nothing to read
        if oldest <= today - lim.velocity_window or oldest + lim.velocity_window < until:
            fires, day = _velocity(history, today, until, lim)
            if fires:
                high = value is not None and value > lim.velocity_high_value
                out[_VELOCITY] = _HIGH if high else _MED
            if day is not None and (best is None or day * DAY_MS < best):
                best = day * DAY_MS
    score = deal.score
    if score is not None:  # the model rules
        p = score.probability
        if probability is not None and stage in _LATE:
            gap = probability - p
            if gap >= lim.forecast_gap:
                out[_FORECAST] = _CRIT if gap >= lim.forecast_gap_critical else _HIGH
        p10 = score.p10_day
        if close_day is not None and p10 is not None and p10 > close_day:
            out[_UNREALISTIC] = _HIGH if p10 - close_day >= lim.unrealistic_high_days else _MED
        if score.daily:  # else the peak is the latest score: no drop
            days = scored_days(score.daily)
            window = lim.win_drop_window
            first = now // DAY_MS - window
            peak = p
            for d, q in days:
                if d >= first and q > peak:
                    peak = q
            drop = peak - p
            if drop >= lim.win_drop:
                out[_WIN_DROP] = _HIGH if drop >= lim.win_drop_high else _MED
                for d, _q in days:  # the peak may fall when a scored day leaves the window
                    t = (d + window + 1) * DAY_MS
                    if t > now and (best is None or t < best):
                        best = t
    for field, rules in lim.rest:
        if field is None or getattr(deal, field) is not None:  # else none fires (``Rule.needs``)
            for rule, settings in rules:
                finding = rule.check(deal, now, settings)
                if finding is not None:
                    out[rule.name] = finding.priority
                due = rule.deadline(deal, now, settings)
                if due is not None and (best is None or due < best):
                    best = due
    return out, best


_NEVER = 1 << 62


def _velocity(history: bytes, today: int, until: int, lim: Limits) -> tuple[bool, int | None]:
    """Whether velocity_drop fires on ``today``, and the next day before ``until`` on which that
    changes by time alone (``None``: none before ``until`` without a new activity). The history
    is in day order (``consumer.state.record_activity``)."""
    window, before, ratio, least = (
        lim.velocity_window,
        lim.velocity_baseline,
        lim.velocity_ratio,
        lim.velocity_min,
    )
    start = today - window  # the window is (start, today]
    first = start - before  # the baseline is (first, start]
    days: list[int] = []
    counts: list[int] = []
    recent = baseline = 0
    in_window = 0  # index of the first day in the window
    for d, n in iter_activity(history):
        if d <= first:
            continue
        if d > today:
            break
        days.append(d)
        counts.append(n)
        if d > start:
            recent += n
        else:
            baseline += n
            in_window += 1
    # recent / window < ratio * baseline / before, without dividing (as velocity_drop.check)
    fires = baseline >= least and recent * before < ratio * baseline * window
    if not fires and recent + baseline < least:
        return False, None  # the baseline can only take from these: never enough
    # Walk the days on which counts move: day d leaves the window on d + window (recent -> the
    # baseline) and the baseline on d + window + before; both lists are in day order.
    span = window + before
    k = len(days)
    i, j = in_window, 0
    while j < k:  # every day leaves the baseline last
        day = days[j] + span  # the next day leaving the baseline, unless one leaves the window
        if i < k and days[i] + window < day:
            day = days[i] + window
        if day >= until:
            return fires, None
        while i < k and days[i] + window == day:
            recent -= counts[i]
            baseline += counts[i]
            i += 1
        while j < k and days[j] + span == day:
            baseline -= counts[j]
            j += 1
        now_fires = baseline >= least and recent * before < ratio * baseline * window
        if now_fires is not fires:
            return fires, day
        if not fires and recent + baseline < least:
            return False, None
    return fires, None
