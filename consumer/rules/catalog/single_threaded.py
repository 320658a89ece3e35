"""single_threaded: a large deal late in the funnel that engages only one person at the buyer.

Reads the deal's recently engaged external contacts (``Engagement.contacts``: the participants
of inbound emails and the attendees of held meetings, by day).
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
    money,
    name,
)
from consumer.rules.catalog.high_value_at_risk import HIGH_VALUE
from consumer.state import CONTACTS_KEPT, DAY_MS, DealState
from schemas.events import Stage
from schemas.insights import Priority, RuleName

LATE_STAGES = (Stage.PROPOSAL, Stage.NEGOTIATION)


class SingleThreadedThresholds(Thresholds):
    single_threaded_days: int = Field(default=30, gt=0)
    high_value: float = HIGH_VALUE


def _applies(deal: DealState, th: SingleThreadedThresholds) -> bool:
    return (
        deal.engagement is not None
        and deal.stage in LATE_STAGES
        and deal.value is not None
        and deal.value > th.high_value
    )


def _engaged(deal: DealState, today: int, th: SingleThreadedThresholds) -> list[int]:
    """The last days engaged of the contacts engaged in the window ending today."""
    start = today - th.single_threaded_days  # the window is (start, today]
    return [d for _, d in deal.engagement.contacts if d > start] if deal.engagement else []


def check(deal: DealState, now: int, th: SingleThreadedThresholds) -> Finding | None:
    if not _applies(deal, th) or len(_engaged(deal, now // DAY_MS, th)) != 1:
        return None
    return Finding(
        RuleName.SINGLE_THREADED,
        Priority.HIGH if deal.stage is Stage.NEGOTIATION else Priority.MEDIUM,
        {"contacts_engaged": 1, "window_days": th.single_threaded_days},
    )


def deadline(deal: DealState, now: int, th: SingleThreadedThresholds) -> int | None:
    """The next day a contact leaves the window (the count drops; only an event raises it)."""
    if not _applies(deal, th):
        return None
    engaged = _engaged(deal, now // DAY_MS, th)
    if not engaged or len(engaged) > CONTACTS_KEPT:  # pragma: no cover - bounded by the state
        return None
    return (min(engaged) + th.single_threaded_days) * DAY_MS


def text(deal: DealState, m: Metrics) -> Text:
    amount = money(deal)
    what = "deal" if amount is None else f"{amount} deal"
    stage = deal.stage.value if deal.stage else "late"
    return Text(
        f"'{name(deal)}' is single-threaded",
        f"Only one person at the buyer has replied to an email or attended a meeting in the "
        f"last {m['window_days']} days, on a {what} in {stage}. If that one contact leaves, "
        "goes quiet or lacks the authority to sign, the deal stalls.",
    )


RULE = Rule(
    name=RuleName.SINGLE_THREADED,
    code=9,
    thresholds=SingleThreadedThresholds,
    check=check,
    deadline=deadline,
    text=text,
    actions=(
        Action(
            "Ask your contact to bring the decision maker and a user to the next meeting",
            Priority.HIGH,
            "this week",
            "Multi-threads the deal before it depends on one person",
        ),
        Action(
            "Map the buying committee and who signs",
            Priority.MEDIUM,
            "within 5 days",
            "Reveals who else has to say yes",
        ),
    ),
    confidence=0.75,
    meaning="A deal in proposal or negotiation worth more than 10,000 engaged only one external "
    "contact (inbound email or held meeting) in the last 30 days.",
    fires_when="in proposal or negotiation, value > 10,000, and only one external contact "
    "engaged (replied or attended) in 30 days",
    priority_text="medium; high in negotiation",
    needs=("engagement", "value", "stage"),
)
