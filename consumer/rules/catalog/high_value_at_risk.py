"""high_value_at_risk: a large deal that is inactive or unlikely to close."""

from __future__ import annotations

from functools import cached_property

from pydantic import Field

from consumer.rules.base import (
    Action,
    Finding,
    Metrics,
    Rule,
    Text,
    Thresholds,
    days,
    earliest,
    money,
    name,
)
from consumer.state import DAY_MS, DealState
from schemas.insights import Priority, RuleName

HIGH_VALUE = Field(default=10_000, ge=0)
"""The ``high_value`` key: other rules that grade by deal size declare it with this."""


class HighValueThresholds(Thresholds):
    high_value: float = HIGH_VALUE
    high_value_inactive_days: float = Field(default=5, gt=0)
    high_value_min_probability: float = Field(default=30, ge=0, le=100)

    @cached_property
    def inactive_ms(self) -> float:
        return self.high_value_inactive_days * DAY_MS


def check(deal: DealState, now: int, th: HighValueThresholds) -> Finding | None:
    if deal.value is None or deal.value <= th.high_value:
        return None
    inactive = now - deal.last_activity_at_ms
    cold = inactive > th.inactive_ms
    unlikely = deal.probability is not None and deal.probability < th.high_value_min_probability
    if not (cold or unlikely):
        return None
    return Finding(
        RuleName.HIGH_VALUE_AT_RISK,
        Priority.CRITICAL,
        {
            "deal_value": deal.value,
            "days_inactive": round(days(inactive), 1),
            "probability": deal.probability,
            "reason": "inactive and unlikely"
            if cold and unlikely
            else ("inactive" if cold else "unlikely"),
        },
    )


def deadline(deal: DealState, now: int, th: HighValueThresholds) -> int | None:
    if deal.value is None or deal.value <= th.high_value:
        return None
    return earliest(None, deal.last_activity_at_ms + int(th.inactive_ms) + 1, now)


def text(deal: DealState, m: Metrics) -> Text:
    prob = m["probability"]
    chance = "" if prob is None else f" and a win probability of {prob:g}%"
    return Text(
        f"High-value deal '{name(deal)}' is at risk",
        f"{money(deal)} is at stake: {m['days_inactive']} days since the last activity"
        f"{chance} ({m['reason']}).",
    )


RULE = Rule(
    name=RuleName.HIGH_VALUE_AT_RISK,
    code=3,
    thresholds=HighValueThresholds,
    check=check,
    deadline=deadline,
    text=text,
    actions=(
        Action(
            "Escalate to the account executive's manager",
            Priority.CRITICAL,
            "today",
            "Senior attention on the largest risks in the pipeline",
        ),
        Action(
            "Schedule an executive-level call with the buyer",
            Priority.HIGH,
            "within 3 days",
            "Restores momentum on a deal that matters",
        ),
        Action(
            "Prepare a recovery plan with concrete concessions or value proof",
            Priority.MEDIUM,
            "this week",
            "Raises the chance of saving the deal",
        ),
    ),
    confidence=0.85,
    meaning="A large deal that is inactive or unlikely to close.",
    fires_when="value > 10,000 and (inactive > 5 days or probability < 30)",
    priority_text="critical",
    needs=("value",),
)
