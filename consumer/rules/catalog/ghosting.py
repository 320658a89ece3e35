"""ghosting: the buyer stopped answering: outbound emails to the deal's contacts and no reply.

Reads the deal's captured email (``DealState.engagement``): the number of outbound emails since
the last inbound one and when the first of them was sent. A meeting on the calendar with the
buyer (``consumer.state.hold_until``) holds it off until the meeting has started.
"""

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
    name,
    value_sentence,
)
from consumer.state import DAY_MS, DealState, hold_until
from schemas.insights import Priority, RuleName


class GhostingThresholds(Thresholds):
    ghosting_days: float = Field(default=7, gt=0)
    ghosting_critical_days: float = Field(default=14, gt=0)
    ghosting_min_unanswered: int = Field(default=2, ge=1, le=255)

    @model_validator(mode="after")
    def _ordered(self) -> GhostingThresholds:
        if self.ghosting_critical_days <= self.ghosting_days:
            raise ValueError("ghosting_critical_days must be greater than ghosting_days")
        return self

    @cached_property
    def limit_ms(self) -> float:
        return self.ghosting_days * DAY_MS

    @cached_property
    def critical_ms(self) -> float:
        return self.ghosting_critical_days * DAY_MS


def check(deal: DealState, now: int, th: GhostingThresholds) -> Finding | None:
    e = deal.engagement
    if e is None or e.unanswered < th.ghosting_min_unanswered or hold_until(e) > now:
        return None
    silent = now - e.unanswered_since_ms
    if silent <= th.limit_ms:
        return None
    critical = silent > th.critical_ms
    return Finding(
        RuleName.GHOSTING,
        Priority.CRITICAL if critical else Priority.HIGH,
        {
            "unanswered_emails": e.unanswered,
            "days_without_reply": round(days(silent), 1),
            "threshold_days": th.ghosting_critical_days if critical else th.ghosting_days,
        },
    )


def deadline(deal: DealState, now: int, th: GhostingThresholds) -> int | None:
    e = deal.engagement
    if e is None or e.unanswered < th.ghosting_min_unanswered:
        return None  # only a new email changes that
    since = e.unanswered_since_ms
    best = earliest(None, since + int(th.limit_ms) + 1, now)
    best = earliest(best, since + int(th.critical_ms) + 1, now)
    return earliest(best, hold_until(e), now)


def text(deal: DealState, m: Metrics) -> Text:
    n, d = m["unanswered_emails"], m["days_without_reply"]
    return Text(
        f"'{name(deal)}': {n} emails without a reply in {d} days",
        f"{n} emails were sent to the buyer's contacts over the last {d} days without a "
        f"single reply (threshold {m['threshold_days']:g} days), and no meeting is on the "
        "calendar. A buyer who stops replying is often evaluating an alternative or has lost "
        "the budget." + value_sentence(deal),
    )


RULE = Rule(
    name=RuleName.GHOSTING,
    code=7,
    thresholds=GhostingThresholds,
    check=check,
    deadline=deadline,
    text=text,
    actions=(
        Action(
            "Try another channel: call the contact or ask a colleague of theirs",
            Priority.HIGH,
            "within 24 hours",
            "Finds out whether the silence is absence or a lost deal",
        ),
        Action(
            "Send a short break-up email asking whether to close the file",
            Priority.MEDIUM,
            "this week",
            "Often gets a reply that more follow-ups would not",
        ),
        Action(
            "Ask the champion whether priorities or budget changed",
            Priority.MEDIUM,
            "this week",
            "Reveals whether the close date is still real",
        ),
    ),
    confidence=0.8,
    meaning="At least 2 outbound emails to the deal's contacts and no inbound reply for more "
    "than 7 days, with no meeting scheduled.",
    fires_when="≥ 2 outbound emails and no inbound reply for > 7 days since the first of them "
    "(a scheduled meeting holds it off)",
    priority_text="high; critical > 14 days",
    needs=("engagement",),
)
