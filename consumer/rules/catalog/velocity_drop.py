"""velocity_drop: a deal's activity rate over the last days fell well below its own earlier rate.

Counted in whole days of the partition clock from the deal's activity history
(``DealState.activity``): the window is the last ``velocity_window_days`` days, today included;
the baseline is the ``velocity_baseline_days`` days before it.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from consumer.rules.base import (
    Action,
    Finding,
    Metrics,
    Rule,
    Text,
    Thresholds,
    name,
    value_sentence,
)
from consumer.rules.catalog.high_value_at_risk import HIGH_VALUE
from consumer.state import DAY_MS, HISTORY_DAYS, DealState, activity_days
from schemas.insights import Priority, RuleName


class VelocityThresholds(Thresholds):
    velocity_window_days: int = Field(default=14, gt=0)
    velocity_baseline_days: int = Field(default=30, gt=0)
    velocity_drop_ratio: float = Field(default=1 / 3, gt=0, lt=1)
    velocity_min_baseline_activities: int = Field(default=4, ge=1)
    high_value: float = HIGH_VALUE

    @model_validator(mode="after")
    def _fits_history(self) -> VelocityThresholds:
        if self.velocity_window_days + self.velocity_baseline_days > HISTORY_DAYS:
            raise ValueError(
                "velocity_window_days + velocity_baseline_days must be at most "
                f"{HISTORY_DAYS} (the activity history a deal keeps)"
            )
        return self


def _counts(history: list[tuple[int, int]], day: int, th: VelocityThresholds) -> tuple[int, int]:
    """Activities in the window ending on ``day`` and in the baseline before it."""
    start = day - th.velocity_window_days  # the window is (start, day]
    first = start - th.velocity_baseline_days  # the baseline is (first, start]
    recent = baseline = 0
    for d, n in history:
        if d > day or d <= first:
            continue
        if d > start:
            recent += n
        else:
            baseline += n
    return recent, baseline


def _priority(
    deal: DealState, recent: int, baseline: int, th: VelocityThresholds
) -> Priority | None:
    if baseline < th.velocity_min_baseline_activities:
        return None
    # recent / window < ratio * baseline / baseline_days, without dividing
    if (
        recent * th.velocity_baseline_days
        >= th.velocity_drop_ratio * baseline * th.velocity_window_days
    ):
        return None
    high = deal.value is not None and deal.value > th.high_value
    return Priority.HIGH if high else Priority.MEDIUM


def check(deal: DealState, now: int, th: VelocityThresholds) -> Finding | None:
    if not deal.activity:
        return None
    recent, baseline = _counts(activity_days(deal.activity), now // DAY_MS, th)
    priority = _priority(deal, recent, baseline, th)
    if priority is None:
        return None
    window, before = th.velocity_window_days, th.velocity_baseline_days
    return Finding(
        RuleName.VELOCITY_DROP,
        priority,
        {
            "recent_activities": recent,
            "baseline_activities": baseline,
            "window_days": window,
            "baseline_days": before,
            "recent_per_week": round(recent * 7 / window, 1),
            "baseline_per_week": round(baseline * 7 / before, 1),
        },
    )


def deadline(deal: DealState, now: int, th: VelocityThresholds) -> int | None:
    """The next day boundary at which the answer changes as active days leave the window (day
    + window) or the baseline (day + window + baseline): the counts change only then, so one
    pass over those moves in day order, updating the counts, finds it."""
    if not deal.activity:
        return None
    history = activity_days(deal.activity)
    today = now // DAY_MS
    recent, baseline = _counts(history, today, th)
    current = _priority(deal, recent, baseline, th)
    if current is None and sum(n for _, n in history) < th.velocity_min_baseline_activities:
        return None  # too few activities to fire without a new one
    window = th.velocity_window_days
    span = window + th.velocity_baseline_days
    moves: list[tuple[int, int, int]] = []  # (day, change of recent, change of baseline)
    for d, n in history:
        if d > today:
            continue
        if d + window > today:
            moves.append((d + window, -n, n))
        if d + span > today:
            moves.append((d + span, 0, -n))
    moves.sort()
    last = len(moves) - 1
    for i, (day, d_recent, d_baseline) in enumerate(moves):
        recent += d_recent
        baseline += d_baseline
        if i < last and moves[i + 1][0] == day:
            continue  # the counts of that day are complete after its last move
        if _priority(deal, recent, baseline, th) is not current:
            return day * DAY_MS
    return None


def text(deal: DealState, m: Metrics) -> Text:
    return Text(
        f"'{name(deal)}' has slowed down: {m['recent_activities']} activities in "
        f"{m['window_days']} days",
        f"Activity fell to {m['recent_per_week']:g} a week over the last {m['window_days']} days, "
        f"from {m['baseline_per_week']:g} a week in the {m['baseline_days']} days before. "
        "A buyer who engages less often is often losing interest." + value_sentence(deal),
    )


RULE = Rule(
    name=RuleName.VELOCITY_DROP,
    code=6,
    thresholds=VelocityThresholds,
    check=check,
    deadline=deadline,
    text=text,
    actions=(
        Action(
            "Ask the buyer what changed and agree on the next meeting",
            Priority.HIGH,
            "within 2 days",
            "Finds out early whether the deal is cooling",
        ),
        Action(
            "Bring in a new stakeholder or a fresh piece of value",
            Priority.MEDIUM,
            "this week",
            "Restores the deal's earlier pace",
        ),
    ),
    confidence=0.7,
    meaning="Activity over the last 14 days fell below a third of the deal's own rate in the "
    "30 days before.",
    fires_when="activities/day over the last 14 days < 1/3 of the 30 days before "
    "(at least 4 activities in those 30)",
    priority_text="medium; high when value > 10,000",
)
