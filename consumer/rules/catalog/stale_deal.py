"""stale_deal: no activity for longer than a threshold.

A meeting on the calendar with the buyer (``consumer.state.hold_until``: a captured
``meeting.logged`` scheduled in the future) holds it off until the meeting has started."""

from __future__ import annotations

from functools import cached_property

from pydantic import Field, model_validator

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
from consumer.state import DAY_MS, DealState, hold_until
from schemas.insights import Priority, RuleName


class StaleThresholds(Thresholds):
    stale_days: float = Field(default=7, gt=0)
    stale_critical_days: float = Field(default=14, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> StaleThresholds:
        if self.stale_critical_days <= self.stale_days:
            raise ValueError("stale_critical_days must be greater than stale_days")
        return self

    @cached_property
    def limit_ms(self) -> float:
        return self.stale_days * DAY_MS

    @cached_property
    def critical_ms(self) -> float:
        return self.stale_critical_days * DAY_MS


def check(deal: DealState, now: int, th: StaleThresholds) -> Finding | None:
    inactive = now - deal.last_activity_at_ms
    if inactive <= th.limit_ms or hold_until(deal.engagement) > now:
        return None
    critical = inactive > th.critical_ms
    return Finding(
        RuleName.STALE_DEAL,
        Priority.CRITICAL if critical else Priority.HIGH,
        {
            "days_inactive": round(days(inactive), 1),
            "threshold_days": th.stale_critical_days if critical else th.stale_days,
        },
    )


def deadline(deal: DealState, now: int, th: StaleThresholds) -> int | None:
    activity = deal.last_activity_at_ms
    best = earliest(None, activity + int(th.limit_ms) + 1, now)
    best = earliest(best, activity + int(th.critical_ms) + 1, now)
    return earliest(best, hold_until(deal.engagement), now)


def text(deal: DealState, m: Metrics) -> Text:
    d = m["days_inactive"]
    amount = money(deal)
    what = "deal" if amount is None else f"{amount} deal"
    return Text(
        f"'{name(deal)}' has gone quiet for {d} days",
        f"No calls, emails, meetings or notes have been logged on this {what} for "
        f"{d} days (threshold {m['threshold_days']:g}). Deals that stay silent this long "
        "rarely close on schedule.",
    )


RULE = Rule(
    name=RuleName.STALE_DEAL,
    code=0,
    thresholds=StaleThresholds,
    check=check,
    deadline=deadline,
    text=text,
    actions=(
        Action(
            "Contact the main stakeholder with a concrete next step",
            Priority.HIGH,
            "within 24 hours",
            "Re-engages the buyer before the deal goes cold",
        ),
        Action(
            "Confirm the decision timeline and who signs",
            Priority.MEDIUM,
            "this week",
            "Reveals whether the close date is still real",
        ),
        Action(
            "Log every touchpoint in the CRM",
            Priority.LOW,
            "ongoing",
            "Keeps the activity signal accurate",
        ),
    ),
    confidence=0.9,
    meaning="No activity (call, email, meeting, note) for longer than the threshold.",
    fires_when="no activity for > 7 days (a scheduled meeting holds it off)",
    priority_text="high; critical > 14 days",
)
