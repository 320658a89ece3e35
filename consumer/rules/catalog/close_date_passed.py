"""close_date_passed: the expected close date has passed and the deal is still open."""

from __future__ import annotations

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
from consumer.state import DAY_MS, DealState, from_day
from schemas.insights import Priority, RuleName


class PassedThresholds(Thresholds):
    """No keys: the close date is the threshold."""


def check(deal: DealState, now: int, th: PassedThresholds) -> Finding | None:
    if deal.close_day is None:
        return None
    left = deal.close_day - now // DAY_MS
    if left >= 0:
        return None
    return Finding(RuleName.CLOSE_DATE_PASSED, Priority.HIGH, {"days_overdue": -left})


def deadline(deal: DealState, now: int, th: PassedThresholds) -> int | None:
    if deal.close_day is None:
        return None
    return earliest(None, (deal.close_day + 1) * DAY_MS, now)


def text(deal: DealState, m: Metrics) -> Text:
    close = "" if deal.close_day is None else f" {from_day(deal.close_day).isoformat()}"
    return Text(
        f"'{name(deal)}' is past its close date",
        f"The expected close date{close} passed {m['days_overdue']} days ago and the deal is "
        "still open." + value_sentence(deal),
    )


RULE = Rule(
    name=RuleName.CLOSE_DATE_PASSED,
    code=5,
    thresholds=PassedThresholds,
    check=check,
    deadline=deadline,
    text=text,
    actions=(
        Action(
            "Set a new, realistic close date with the buyer",
            Priority.HIGH,
            "today",
            "Restores an accurate forecast",
        ),
        Action(
            "Close the deal as lost if the buyer has moved on",
            Priority.MEDIUM,
            "this week",
            "Removes a phantom deal from the pipeline",
        ),
    ),
    confidence=0.95,
    meaning="The expected close date has passed; the deal is still open.",
    fires_when="close date is in the past and the deal is still open",
    priority_text="high",
    needs=("close_day",),
)
