"""stuck_in_stage: in the current stage for longer than the norm for that stage."""

from __future__ import annotations

from functools import cached_property

from pydantic import Field

from consumer.rules.base import (
    Action,
    Finding,
    Metrics,
    PerStage,
    Rule,
    Text,
    Thresholds,
    days,
    earliest,
    name,
    value_sentence,
)
from consumer.state import DAY_MS, DealState
from schemas.events import Stage
from schemas.insights import Priority, RuleName


class StuckThresholds(Thresholds):
    stuck_days: PerStage = PerStage(lead=14, qualified=21, proposal=30, negotiation=21)
    stuck_critical_factor: float = Field(default=2.0, gt=1)

    @cached_property
    def limit_ms(self) -> dict[Stage, float]:
        return {s: self.stuck_days.for_stage(s) * DAY_MS for s in Stage}

    @cached_property
    def critical_ms(self) -> dict[Stage, float]:
        factor = self.stuck_critical_factor
        return {s: self.stuck_days.for_stage(s) * factor * DAY_MS for s in Stage}


def check(deal: DealState, now: int, th: StuckThresholds) -> Finding | None:
    stage = deal.stage
    if stage is None:
        return None
    in_stage = now - deal.stage_entered_at_ms
    if in_stage <= th.limit_ms[stage]:
        return None
    critical = in_stage > th.critical_ms[stage]
    return Finding(
        RuleName.STUCK_IN_STAGE,
        Priority.CRITICAL if critical else Priority.HIGH,
        {
            "stage": stage.value,
            "days_in_stage": round(days(in_stage), 1),
            "threshold_days": th.stuck_days.for_stage(stage),
        },
    )


def deadline(deal: DealState, now: int, th: StuckThresholds) -> int | None:
    stage = deal.stage
    if stage is None:
        return None
    entered = deal.stage_entered_at_ms
    best = earliest(None, entered + int(th.limit_ms[stage]) + 1, now)
    return earliest(best, entered + int(th.critical_ms[stage]) + 1, now)


def text(deal: DealState, m: Metrics) -> Text:
    return Text(
        f"'{name(deal)}' is stuck in {m['stage']} for {m['days_in_stage']} days",
        f"The deal has been in the {m['stage']} stage for {m['days_in_stage']} days, longer than "
        f"the {m['threshold_days']:g}-day norm for that stage."
        + value_sentence(deal, "Value at stake"),
    )


RULE = Rule(
    name=RuleName.STUCK_IN_STAGE,
    code=1,
    thresholds=StuckThresholds,
    check=check,
    deadline=deadline,
    text=text,
    actions=(
        Action(
            "Identify the blocker to the next stage with the buyer",
            Priority.HIGH,
            "within 2 days",
            "Unblocks progression or exposes a stalled deal",
        ),
        Action(
            "Agree on a mutual action plan with dates",
            Priority.MEDIUM,
            "this week",
            "Shortens the remaining sales cycle",
        ),
    ),
    confidence=0.8,
    meaning="In the current stage for longer than the norm for that stage.",
    fires_when="days in stage > lead 14, qualified 21, proposal 30, negotiation 21",
    priority_text="high; critical > 2×",  # noqa: RUF001 (the README's sign)
    needs=("stage",),
)
