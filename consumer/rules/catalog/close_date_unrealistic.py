"""close_date_unrealistic: the rep's expected close date is earlier than the model thinks even
plausible (its 10th-percentile close date)."""

from __future__ import annotations

from pydantic import Field

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
from consumer.rules.catalog.forecast_risk import factors_sentence, score_metrics
from consumer.state import DealState, from_day
from schemas.insights import Priority, RuleName


class UnrealisticThresholds(Thresholds):
    close_unrealistic_high_days: int = Field(default=30, ge=1)


def check(deal: DealState, now: int, th: UnrealisticThresholds) -> Finding | None:
    score, close_day = deal.score, deal.close_day
    if score is None or close_day is None or score.p10_day is None:
        return None
    early = score.p10_day - close_day
    if early <= 0:
        return None
    metrics = score_metrics(score)
    metrics.update(
        {
            "close_date": from_day(close_day).isoformat(),
            "model_close_p10": from_day(score.p10_day).isoformat(),
            "days_before_p10": early,
        }
    )
    high = early >= th.close_unrealistic_high_days
    return Finding(
        RuleName.CLOSE_DATE_UNREALISTIC, Priority.HIGH if high else Priority.MEDIUM, metrics
    )


def deadline(deal: DealState, now: int, th: UnrealisticThresholds) -> int | None:
    return None  # depends on the close date and the score only


def text(deal: DealState, m: Metrics) -> Text:
    return Text(
        f"'{name(deal)}' is unlikely to close by {m['close_date']}",
        f"The expected close date {m['close_date']} is {m['days_before_p10']} days before the "
        f"earliest the model finds plausible: 9 in 10 deals like it close on or after "
        f"{m['model_close_p10']}." + factors_sentence(m) + value_sentence(deal),
    )


RULE = Rule(
    name=RuleName.CLOSE_DATE_UNREALISTIC,
    code=22,
    thresholds=UnrealisticThresholds,
    check=check,
    deadline=deadline,
    text=text,
    actions=(
        Action(
            "Confirm the close plan and its dates with the buyer",
            Priority.HIGH,
            "this week",
            "Either confirms the date with evidence or moves it",
        ),
        Action(
            "Move the close date to a realistic one",
            Priority.MEDIUM,
            "before the next forecast call",
            "Keeps the period's forecast accurate",
        ),
    ),
    confidence=0.6,
    meaning="The rep's expected close date is before the model's 10th-percentile close date.",
    fires_when="the expected close date is before the model's P10 close date",
    priority_text="medium; high when >= 30 days before it",
    needs=("score", "close_day"),
)
