"""meeting_cadence_drop: no meeting held for much longer than the deal's own rhythm.

Reads the starts of the deal's last held meetings (``Engagement.held``): their median interval
is the deal's cadence; the rule fires when the time since the last held meeting exceeds
``meeting_cadence_ratio`` times it (at least ``meeting_cadence_min_meetings`` held meetings).
"""

from __future__ import annotations

from itertools import pairwise
from statistics import median

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
from consumer.state import HELD_KEPT, DealState
from schemas.insights import Priority, RuleName


class CadenceThresholds(Thresholds):
    meeting_cadence_min_meetings: int = Field(default=3, ge=2, le=HELD_KEPT)
    meeting_cadence_ratio: float = Field(default=2, gt=1)
    meeting_cadence_high_ratio: float = Field(default=4, gt=1)

    @model_validator(mode="after")
    def _ordered(self) -> CadenceThresholds:
        if self.meeting_cadence_high_ratio <= self.meeting_cadence_ratio:
            raise ValueError(
                "meeting_cadence_high_ratio must be greater than meeting_cadence_ratio"
            )
        return self


def _cadence(deal: DealState, th: CadenceThresholds) -> tuple[int, float] | None:
    """The last held meeting's start and the median interval, when there are enough."""
    e = deal.engagement
    if e is None or len(e.held) < th.meeting_cadence_min_meetings:
        return None
    held = e.held
    return held[-1], median(b - a for a, b in pairwise(held))


def check(deal: DealState, now: int, th: CadenceThresholds) -> Finding | None:
    cadence = _cadence(deal, th)
    if cadence is None:
        return None
    last, typical = cadence
    gap = now - last
    if gap <= th.meeting_cadence_ratio * typical:
        return None
    high = gap > th.meeting_cadence_high_ratio * typical
    return Finding(
        RuleName.MEETING_CADENCE_DROP,
        Priority.HIGH if high else Priority.MEDIUM,
        {
            "days_since_meeting": round(days(gap), 1),
            "median_interval_days": round(days(int(typical)), 1),
            "ratio": th.meeting_cadence_high_ratio if high else th.meeting_cadence_ratio,
            "meetings": len(deal.engagement.held) if deal.engagement else 0,
        },
    )


def deadline(deal: DealState, now: int, th: CadenceThresholds) -> int | None:
    cadence = _cadence(deal, th)
    if cadence is None:
        return None
    last, typical = cadence
    best = earliest(None, last + int(th.meeting_cadence_ratio * typical) + 1, now)
    return earliest(best, last + int(th.meeting_cadence_high_ratio * typical) + 1, now)


def text(deal: DealState, m: Metrics) -> Text:
    return Text(
        f"'{name(deal)}': no meeting for {m['days_since_meeting']} days",
        f"The last {m['meetings']} meetings on this deal were {m['median_interval_days']:g} "
        f"days apart (median), but the last one was {m['days_since_meeting']} days ago, "
        f"more than {m['ratio']:g} times that rhythm. A deal whose meetings stop has usually "
        "lost its momentum." + value_sentence(deal),
    )


RULE = Rule(
    name=RuleName.MEETING_CADENCE_DROP,
    code=8,
    thresholds=CadenceThresholds,
    check=check,
    deadline=deadline,
    text=text,
    actions=(
        Action(
            "Book the next meeting with the buyer, with an agenda",
            Priority.HIGH,
            "this week",
            "Restores the deal's rhythm",
        ),
        Action(
            "Ask the champion what changed on their side",
            Priority.MEDIUM,
            "within 3 days",
            "Finds out early whether the deal is cooling",
        ),
    ),
    confidence=0.7,
    meaning="No meeting held for more than twice the deal's own median interval between its "
    "meetings (at least 3 held before).",
    fires_when="time since the last held meeting > 2 x the median interval between the deal's "
    "held meetings (at least 3)",
    priority_text="medium; high > 4 x the median",
    needs=("engagement",),
)
