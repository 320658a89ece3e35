"""low_probability: win probability below the minimum expected for the stage."""

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
    name,
    value_sentence,
)
from consumer.state import DealState
from schemas.events import Stage
from schemas.insights import Priority, RuleName


class LowProbabilityThresholds(Thresholds):
    min_probability: PerStage = PerStage(lead=15, qualified=25, proposal=40, negotiation=60)
    low_probability_high_value: float = Field(default=10_000, ge=0)

    @cached_property
    def minimum(self) -> dict[Stage, float]:
        return {s: self.min_probability.for_stage(s) for s in Stage}


def check(deal: DealState, now: int, th: LowProbabilityThresholds) -> Finding | None:
    stage, probability = deal.stage, deal.probability
    if stage is None or probability is None:
        return None
    minimum = th.minimum[stage]
    if probability >= minimum:
        return None
    high = deal.value is not None and deal.value > th.low_probability_high_value
    return Finding(
        RuleName.LOW_PROBABILITY,
        Priority.HIGH if high else Priority.MEDIUM,
        {"probability": probability, "stage_min_probability": minimum, "stage": stage.value},
    )


def deadline(deal: DealState, now: int, th: LowProbabilityThresholds) -> int | None:
    return None  # depends on deal fields only


def text(deal: DealState, m: Metrics) -> Text:
    return Text(
        f"'{name(deal)}' has a low win probability for its stage",
        f"Probability is {m['probability']:g}% while {m['stage']} deals normally sit at "
        f"{m['stage_min_probability']:g}% or more." + value_sentence(deal),
    )


RULE = Rule(
    name=RuleName.LOW_PROBABILITY,
    code=2,
    thresholds=LowProbabilityThresholds,
    check=check,
    deadline=deadline,
    text=text,
    actions=(
        Action(
            "Re-qualify budget, authority, need and timeline",
            Priority.HIGH,
            "this week",
            "Either raises confidence or frees time for better deals",
        ),
        Action(
            "Review the forecast with the sales manager",
            Priority.MEDIUM,
            "next pipeline review",
            "Keeps the forecast honest",
        ),
    ),
    confidence=0.75,
    meaning="Win probability below the minimum expected for the stage.",
    fires_when="probability below lead 15, qualified 25, proposal 40, negotiation 60",
    priority_text="medium; high when value > 10,000",
    needs=("stage", "probability"),
)
