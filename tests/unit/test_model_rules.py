"""The three model-based rules (forecast_risk, win_probability_drop, close_date_unrealistic)
through the partition state: raised, escalated, resolved; the score in every insight's key
metrics; nothing run for a deal never scored."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from consumer import rules
from consumer.partition import PartitionState
from consumer.rules import assess, fused
from consumer.state import DealState, Score, apply_event, to_ms
from consumer.thresholds import RulesConfig, RuleThresholds
from schemas.events import Stage, Tick
from schemas.insights import InsightEvent, Lifecycle, Priority, RuleName
from tests.unit.test_deal_scores import DAY, T0, created, scored, updated

MODEL_RULES = (
    RuleName.FORECAST_RISK,
    RuleName.WIN_PROBABILITY_DROP,
    RuleName.CLOSE_DATE_UNREALISTIC,
)


def tick(day: float) -> Tick:
    return Tick(at=T0 + day * DAY)


def run(p: PartitionState, *inputs: Any) -> list[InsightEvent]:
    out: list[InsightEvent] = []
    for item in inputs:
        step = p.tick(item) if isinstance(item, Tick) else p.apply(item)
        out.extend(i.event() for i in step.insights)
    return out


def steps(out: list[InsightEvent], rule: RuleName) -> list[tuple[Lifecycle, Priority]]:
    return [(i.lifecycle, i.priority) for i in out if i.rule is rule]


# --- the rules -------------------------------------------------------------------------------


def test_forecast_risk_raised_escalated_and_resolved() -> None:
    p = PartitionState(RulesConfig())
    out = run(p, created(), scored(0.5, 0.1))  # rep 80, model 50: 30 points
    out += run(p, scored(0.35, 1))  # 45 points
    out += run(p, updated(2, probability=50))  # the rep agrees now: 15 points
    assert steps(out, RuleName.FORECAST_RISK) == [
        (Lifecycle.RAISED, Priority.HIGH),
        (Lifecycle.ESCALATED, Priority.CRITICAL),
        (Lifecycle.RESOLVED, Priority.CRITICAL),
    ]
    raised = next(i for i in out if i.rule is RuleName.FORECAST_RISK)
    assert "80%" in raised.description
    assert "50%" in raised.description
    assert "days_since_activity (-12.0 pts)" in raised.description
    assert raised.data.key_metrics["model_win_probability"] == 50.0
    assert raised.data.key_metrics["gap_points"] == 30.0


def test_forecast_risk_only_late_in_the_pipeline() -> None:
    p = PartitionState(RulesConfig())
    out = run(p, created(stage="qualified"), scored(0.1, 0.1))
    assert steps(out, RuleName.FORECAST_RISK) == []
    out = run(p, updated(1, stage="proposal"))
    assert steps(out, RuleName.FORECAST_RISK) == [(Lifecycle.RAISED, Priority.CRITICAL)]


def test_win_probability_drop_raised_escalated_and_resolved_as_days_pass() -> None:
    p = PartitionState(RulesConfig())
    out = run(p, created(probability=50), scored(0.7, 0.1))
    out += run(p, scored(0.45, 1))  # 25 points below the week's highest
    out += run(p, scored(0.3, 2))  # 40 points
    out += run(p, *(tick(d) for d in range(3, 8)))
    assert steps(out, RuleName.WIN_PROBABILITY_DROP) == [
        (Lifecycle.RAISED, Priority.MEDIUM),
        (Lifecycle.ESCALATED, Priority.HIGH),
    ]
    # the 70% of day 0 leaves the 7-day window at the start of day 8: the highest is then 45%
    out = run(p, tick(8.5))
    assert steps(out, RuleName.WIN_PROBABILITY_DROP) == [(Lifecycle.RESOLVED, Priority.HIGH)]
    assert p.deals["d1"].score is not None
    raised = run(PartitionState(RulesConfig()), created(), scored(0.7, 0), scored(0.45, 1))
    drop = next(i for i in raised if i.rule is RuleName.WIN_PROBABILITY_DROP)
    assert "fell 25 points" in drop.title
    assert "down from 70% 1 day ago" in drop.description


def test_close_date_unrealistic_raised_escalated_and_resolved() -> None:
    p = PartitionState(RulesConfig())
    close = (T0 + 10 * DAY).date()
    out = run(p, created(probability=50, close_date=close), scored(0.5, 0.1, p10_day=20))
    out += run(p, scored(0.5, 1, p10_day=50))  # 40 days before the model's P10
    out += run(p, updated(2, close_date=(T0 + 60 * DAY).date()))
    assert steps(out, RuleName.CLOSE_DATE_UNREALISTIC) == [
        (Lifecycle.RAISED, Priority.MEDIUM),
        (Lifecycle.ESCALATED, Priority.HIGH),
        (Lifecycle.RESOLVED, Priority.HIGH),
    ]
    raised = next(i for i in out if i.rule is RuleName.CLOSE_DATE_UNREALISTIC)
    assert close.isoformat() in raised.description
    assert (T0 + 20 * DAY).date().isoformat() in raised.description


def test_a_score_without_a_close_date_model_never_fires_close_date_unrealistic() -> None:
    p = PartitionState(RulesConfig())
    out = run(p, created(close_date=(T0 + DAY).date()), scored(0.9, 0.1))
    assert steps(out, RuleName.CLOSE_DATE_UNREALISTIC) == []


def test_every_insight_of_a_scored_deal_carries_the_score() -> None:
    p = PartitionState(RulesConfig())
    out = run(p, created("plain", probability=5), created("s", probability=5), scored(0.3, 0, "s"))
    low = {i.deal_id: i for i in out if i.rule is RuleName.LOW_PROBABILITY}
    assert "model_win_probability" not in low["plain"].data.key_metrics
    out = run(p, updated(1, "s", value=50_000))  # low_probability escalates, now with the score
    escalated = next(i for i in out if i.rule is RuleName.LOW_PROBABILITY)
    assert escalated.lifecycle is Lifecycle.ESCALATED
    metrics = escalated.data.key_metrics
    assert metrics["model_win_probability"] == 30.0
    assert metrics["top_factors"] == "days_since_activity (-12.0 pts), stage (+5.0 pts)"


def test_the_model_rules_run_in_the_fused_pass() -> None:
    """The model-based rules run in the fused pass (``consumer.rules.fused``; the registry's
    property test proves it equal to their modules), which reads a score only on a deal that
    has one: their modules' ``check`` and ``deadline`` are not called, scored deal or not."""
    for name in MODEL_RULES:
        assert rules.BY_NAME[name].needs[0] == "score"
        assert name in fused.COVERS

    def boom(deal: DealState, now: int, t: Any) -> None:
        raise AssertionError("called")

    th = RuleThresholds()
    th.checks = tuple(
        (replace(r, check=boom, deadline=boom) if r.name in MODEL_RULES else r, t)
        for r, t in th.checks
    )
    th.cache.clear()
    deal = apply_event(None, created())
    assert deal is not None
    now = to_ms(T0)
    assert RuleName.FORECAST_RISK not in assess(deal, now, th)[0]
    late = replace(deal, stage=Stage.NEGOTIATION, probability=60.0, score=Score(now, 1, 10.0))
    assert assess(late, now, th)[0][RuleName.FORECAST_RISK] is Priority.CRITICAL
