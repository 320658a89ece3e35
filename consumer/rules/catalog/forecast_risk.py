"""forecast_risk: the model gives a late-stage deal a much lower win probability than the rep.

Reads the deal's score (``DealState.score``, folded from ``deal.scored`` events): a deal never
scored never fires. Also home of the helpers the model-based rules share (``score_metrics``,
``factors_sentence``).
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
    name,
    value_sentence,
)
from consumer.state import DealState, Score
from schemas.events import Stage
from schemas.insights import Priority, RuleName

LATE_STAGES = frozenset((Stage.PROPOSAL, Stage.NEGOTIATION))
"""The stages in which the rule compares the rep with the model."""


def factors_sentence(m: Metrics) -> str:
    """`` What weighs most: ...`` (with its leading space), or nothing without factors."""
    factors = m.get("top_factors")
    return f" What weighs most in the model's view: {factors}." if factors else ""


def score_metrics(score: Score) -> Metrics:
    """The score's part of every insight's key metrics: the model's probability (points)
    and its top factors."""
    return {
        "model_win_probability": score.probability,
        "top_factors": score.factors or None,
    }


class ForecastRiskThresholds(Thresholds):
    forecast_gap_points: float = Field(default=25, gt=0, le=100)
    forecast_gap_critical_points: float = Field(default=40, gt=0, le=100)


def check(deal: DealState, now: int, th: ForecastRiskThresholds) -> Finding | None:
    score, rep, stage = deal.score, deal.probability, deal.stage
    if score is None or rep is None or stage not in LATE_STAGES:
        return None
    gap = rep - score.probability
    if gap < th.forecast_gap_points:
        return None
    critical = gap >= th.forecast_gap_critical_points
    metrics = score_metrics(score)
    metrics.update(
        {
            "rep_probability": rep,
            "gap_points": round(gap, 1),
            "stage": stage.value if stage is not None else None,
        }
    )
    return Finding(
        RuleName.FORECAST_RISK, Priority.CRITICAL if critical else Priority.HIGH, metrics
    )


def deadline(deal: DealState, now: int, th: ForecastRiskThresholds) -> int | None:
    return None  # depends on deal fields and the score only


def text(deal: DealState, m: Metrics) -> Text:
    return Text(
        f"'{name(deal)}' is forecast well above what the model expects",
        f"The rep puts this {m['stage']} deal at {m['rep_probability']:g}%; the model, trained "
        f"on this team's closed deals, at {m['model_win_probability']:g}% "
        f"({m['gap_points']:g} points lower)." + factors_sentence(m) + value_sentence(deal),
    )


RULE = Rule(
    name=RuleName.FORECAST_RISK,
    code=20,
    thresholds=ForecastRiskThresholds,
    check=check,
    deadline=deadline,
    text=text,
    actions=(
        Action(
            "Review the deal with the rep against the factors the model weighs",
            Priority.HIGH,
            "this week",
            "Either finds the evidence behind the rep's number or corrects the forecast",
        ),
        Action(
            "Lower the deal's probability or its forecast category until it is confirmed",
            Priority.MEDIUM,
            "before the next forecast call",
            "Keeps the committed number honest",
        ),
    ),
    confidence=0.7,
    meaning="On a deal in proposal or negotiation, the model's calibrated win probability is 25 "
    "or more points below the rep's.",
    fires_when="a deal in proposal or negotiation has a model win probability >= 25 points "
    "below the rep's probability",
    priority_text="high; critical when >= 40 points below",
    needs=("score", "probability", "stage"),
)
