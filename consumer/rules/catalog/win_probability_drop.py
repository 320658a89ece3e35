"""win_probability_drop: the model's win probability for a deal fell sharply within days.

The drop is from the highest probability scored in the last ``win_drop_window_days`` days of the
partition clock (``Score.daily``: the highest score of each day) to the latest score. As days
pass the earlier scores leave the window, so a firing rule can clear by time alone; it cannot
start firing by time alone.
"""

from __future__ import annotations

from pydantic import Field

from consumer.rules.base import (
    Action,
    Finding,
    Metrics,
    Rule,
    Text,
    Thresholds,
    earliest,
    name,
    value_sentence,
)
from consumer.rules.catalog.forecast_risk import factors_sentence, score_metrics
from consumer.state import DAY_MS, SCORE_WINDOW_DAYS, DealState, Score, scored_days
from schemas.insights import Priority, RuleName


class WinDropThresholds(Thresholds):
    win_drop_points: float = Field(default=20, gt=0, le=100)
    win_drop_high_points: float = Field(default=35, gt=0, le=100)
    win_drop_window_days: int = Field(default=7, ge=1, le=SCORE_WINDOW_DAYS)


def _peak(score: Score, today: int, window: int) -> tuple[float, int]:
    """The highest probability scored on a day in the window ending ``today`` and that day
    (the latest score itself when none)."""
    best, day = score.probability, score.as_of_ms // DAY_MS
    if score.daily:
        first = today - window
        for d, p in scored_days(score.daily):
            if d >= first and p > best:
                best, day = p, d
    return best, day


def check(deal: DealState, now: int, th: WinDropThresholds) -> Finding | None:
    score = deal.score
    if score is None:
        return None
    peak, day = _peak(score, now // DAY_MS, th.win_drop_window_days)
    drop = peak - score.probability
    if drop < th.win_drop_points:
        return None
    metrics = score_metrics(score)
    metrics.update(
        {
            "previous_win_probability": peak,
            "drop_points": round(drop, 1),
            "days_since_peak": now // DAY_MS - day,
            "window_days": th.win_drop_window_days,
        }
    )
    high = drop >= th.win_drop_high_points
    return Finding(
        RuleName.WIN_PROBABILITY_DROP, Priority.HIGH if high else Priority.MEDIUM, metrics
    )


def deadline(deal: DealState, now: int, th: WinDropThresholds) -> int | None:
    """While it fires: the next day an earlier score leaves the window (the peak may fall)."""
    score = deal.score
    if score is None:
        return None
    peak = _peak(score, now // DAY_MS, th.win_drop_window_days)[0]
    if peak - score.probability < th.win_drop_points:
        return None
    best = None
    for d, _ in scored_days(score.daily):
        best = earliest(best, (d + th.win_drop_window_days + 1) * DAY_MS, now)
    return best


def text(deal: DealState, m: Metrics) -> Text:
    days = m["days_since_peak"]
    when = "earlier today" if days == 0 else f"{days} day{'s' if days != 1 else ''} ago"
    return Text(
        f"'{name(deal)}': the model's win probability fell {m['drop_points']:g} points",
        f"The model puts the deal at {m['model_win_probability']:g}%, down from "
        f"{m['previous_win_probability']:g}% {when}." + factors_sentence(m) + value_sentence(deal),
    )


RULE = Rule(
    name=RuleName.WIN_PROBABILITY_DROP,
    code=21,
    thresholds=WinDropThresholds,
    check=check,
    deadline=deadline,
    text=text,
    actions=(
        Action(
            "Find out what changed on the deal this week and talk to the buyer",
            Priority.HIGH,
            "within 2 days",
            "Catches a deal turning before it is lost",
        ),
        Action(
            "Address the factor that weighs most against the deal",
            Priority.MEDIUM,
            "this week",
            "Moves the deal's probability back up",
        ),
    ),
    confidence=0.65,
    meaning="The model's win probability for the deal fell by 20 points or more within 7 days.",
    fires_when="the model's win probability fell >= 20 points from its highest in the last 7 days",
    priority_text="medium; high when it fell >= 35 points",
    needs=("score",),
)
