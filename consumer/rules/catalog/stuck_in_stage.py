"""stuck_in_stage: in the current stage for longer than the norm for that stage.

The norm is the team's own once it is known: ``stuck_learned`` holds, per stage, the days in
stage (P50/P75/P90) of the deals that left it and how many they were (the history service's
``stage_benchmarks``, loaded per workspace by ``consumer.intelligence.benchmarks``). A stage
with at least ``stuck_benchmark_min_deals`` of them uses the ``stuck_benchmark_quantile``
(default P90); before that, the static ``stuck_days``. The text says which.
"""

from __future__ import annotations

from functools import cached_property
from typing import Literal

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

Quantile = Literal["p50", "p75", "p90"]


class LearnedStage(Thresholds):
    """Days in one stage of the deals that left it: quantiles, and how many deals."""

    p50: float = Field(gt=0)
    p75: float = Field(gt=0)
    p90: float = Field(gt=0)
    deals: int = Field(ge=0)


class StuckThresholds(Thresholds):
    stuck_days: PerStage = PerStage(lead=14, qualified=21, proposal=30, negotiation=21)
    stuck_critical_factor: float = Field(default=2.0, gt=1)
    stuck_benchmark_quantile: Quantile = "p90"
    stuck_benchmark_min_deals: int = Field(default=30, ge=1)
    stuck_learned: dict[Stage, LearnedStage] = Field(default_factory=dict)

    def norm(self, stage: Stage) -> tuple[float, LearnedStage | None]:
        """The days allowed in ``stage``, and the benchmark they come from (``None``: the
        static default)."""
        learned = self.stuck_learned.get(stage)
        if learned is not None and learned.deals >= self.stuck_benchmark_min_deals:
            return getattr(learned, self.stuck_benchmark_quantile), learned
        return self.stuck_days.for_stage(stage), None

    @cached_property
    def limit_ms(self) -> dict[Stage, float]:
        return {s: self.norm(s)[0] * DAY_MS for s in Stage}

    @cached_property
    def critical_ms(self) -> dict[Stage, float]:
        factor = self.stuck_critical_factor
        return {s: self.norm(s)[0] * factor * DAY_MS for s in Stage}


def check(deal: DealState, now: int, th: StuckThresholds) -> Finding | None:
    stage = deal.stage
    if stage is None:
        return None
    in_stage = now - deal.stage_entered_at_ms
    if in_stage <= th.limit_ms[stage]:
        return None
    critical = in_stage > th.critical_ms[stage]
    limit, learned = th.norm(stage)
    return Finding(
        RuleName.STUCK_IN_STAGE,
        Priority.CRITICAL if critical else Priority.HIGH,
        {
            "stage": stage.value,
            "days_in_stage": round(days(in_stage), 1),
            "threshold_days": round(limit, 1),
            "benchmark": "default" if learned is None else th.stuck_benchmark_quantile.upper(),
            "benchmark_deals": None if learned is None else learned.deals,
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
    benchmark, deals = m.get("benchmark"), m.get("benchmark_deals")
    if benchmark not in (None, "default") and deals is not None:
        norm = (
            f"; this team's {benchmark} is {m['threshold_days']:g} days, "
            f"from {deals} deals that left {m['stage']}."
        )
    else:
        norm = f", longer than the {m['threshold_days']:g}-day norm for that stage."
    return Text(
        f"'{name(deal)}' is stuck in {m['stage']} for {m['days_in_stage']} days",
        f"The deal has been in the {m['stage']} stage for {m['days_in_stage']} days{norm}"
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
    fires_when=(
        "days in stage > the team's learned P90 once ≥ 30 deals left the stage, "
        "else lead 14, qualified 21, proposal 30, negotiation 21"
    ),
    priority_text="high; critical > 2×",  # noqa: RUF001 (the README's sign)
    needs=("stage",),
)
