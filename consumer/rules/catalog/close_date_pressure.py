"""close_date_pressure: the close date is near while the win probability is still low."""

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
from consumer.state import DAY_MS, DealState
from schemas.insights import Priority, RuleName


class PressureThresholds(Thresholds):
    close_pressure_days: int = Field(default=14, ge=0)
    close_pressure_max_probability: float = Field(default=70, ge=0, le=100)


def check(deal: DealState, now: int, th: PressureThresholds) -> Finding | None:
    if deal.close_day is None or deal.probability is None:
        return None
    left = deal.close_day - now // DAY_MS
    if not (0 <= left <= th.close_pressure_days):
        return None
    if deal.probability >= th.close_pressure_max_probability:
        return None
    return Finding(
        RuleName.CLOSE_DATE_PRESSURE,
        Priority.HIGH,
        {"days_to_close": left, "probability": deal.probability},
    )


def deadline(deal: DealState, now: int, th: PressureThresholds) -> int | None:
    close_day = deal.close_day
    if close_day is None:
        return None
    best = earliest(None, (close_day - th.close_pressure_days) * DAY_MS, now)
    return earliest(best, (close_day + 1) * DAY_MS, now)


def text(deal: DealState, m: Metrics) -> Text:
    return Text(
        f"'{name(deal)}' closes in {m['days_to_close']} days at {m['probability']:g}%",
        f"The close date is {m['days_to_close']} days away but the win probability is only "
        f"{m['probability']:g}%." + value_sentence(deal),
    )


RULE = Rule(
    name=RuleName.CLOSE_DATE_PRESSURE,
    code=4,
    thresholds=PressureThresholds,
    check=check,
    deadline=deadline,
    text=text,
    actions=(
        Action(
            "Confirm the close plan and remaining steps with the buyer",
            Priority.HIGH,
            "within 2 days",
            "Shows whether the date can hold",
        ),
        Action(
            "Move the close date if it is no longer realistic",
            Priority.MEDIUM,
            "this week",
            "Keeps the forecast accurate",
        ),
    ),
    confidence=0.8,
    meaning="Close date near while the win probability is still low.",
    fires_when="closes within 14 days and probability < 70",
    priority_text="high",
    needs=("close_day", "probability"),
)
