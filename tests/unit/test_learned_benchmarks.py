"""stuck_in_stage with learned stage benchmarks: the team's quantile once a stage has enough
deals (default P90 from 30), the static default before, and the text says which."""

from __future__ import annotations

import pytest

from consumer.intelligence.benchmarks import Benchmark, with_benchmarks
from consumer.rules import stuck_in_stage
from consumer.rules.catalog.stuck_in_stage import RULE
from consumer.state import DAY_MS, DealState
from consumer.thresholds import RulesConfig
from schemas.events import Stage
from schemas.insights import Priority

T0 = 20_000 * DAY_MS


def deal(workspace: str = "ws-a") -> DealState:
    return DealState(
        workspace_id=workspace,
        deal_id="d1",
        title="Acme renewal",
        stage=Stage.NEGOTIATION,
        created_at_ms=T0,
        last_activity_at_ms=T0,
        stage_entered_at_ms=T0,
    )


def bench(deals: int, ws: str = "ws-a", p90: float = 12.0) -> Benchmark:
    return Benchmark(ws, "negotiation", deals, 5.0, 8.0, p90)


def config_with(*benchmarks: Benchmark, raw: dict[str, object] | None = None) -> RulesConfig:
    base = RulesConfig.from_mapping(raw or {})
    return with_benchmarks(base, benchmarks)


@pytest.mark.parametrize(
    ("deals", "days_in_stage", "expected"),
    [
        (212, 11.9, None),  # under the learned P90 (12 days)
        (212, 12.1, Priority.HIGH),  # over it, though far under the static 21 days
        (212, 24.1, Priority.CRITICAL),  # over 2x the learned norm
        (29, 12.1, None),  # 29 deals: the static 21-day default still applies
        (29, 21.1, Priority.HIGH),
        (30, 12.1, Priority.HIGH),  # 30: the learned one
    ],
)
def test_learned_norm_once_enough_deals(
    deals: int, days_in_stage: float, expected: Priority | None
) -> None:
    th = config_with(bench(deals)).for_workspace("ws-a")
    finding = stuck_in_stage(deal(), T0 + int(days_in_stage * DAY_MS), th)
    assert (finding.priority if finding else None) == expected
    if expected is not None and deals >= 30:
        # the deadline index follows the learned norm too
        assert RULE.deadline(deal(), T0, th.of(RULE)) == T0 + 12 * DAY_MS + 1


def test_the_text_names_the_benchmark() -> None:
    th = config_with(bench(212, p90=21.0)).for_workspace("ws-a")
    finding = stuck_in_stage(deal(), T0 + 45 * DAY_MS, th)
    assert finding is not None
    assert finding.metrics["benchmark"] == "P90"
    assert finding.metrics["benchmark_deals"] == 212
    text = RULE.text(deal(), finding.metrics)
    assert (
        "for 45.0 days; this team's P90 is 21 days, from 212 deals that left negotiation."
        in text.description
    )

    static = stuck_in_stage(deal(), T0 + 45 * DAY_MS, RulesConfig().for_workspace("ws-a"))
    assert static is not None
    assert static.metrics["benchmark"] == "default"
    assert "longer than the 21-day norm" in RULE.text(deal(), static.metrics).description


def test_quantile_and_minimum_are_settings_and_other_workspaces_keep_theirs() -> None:
    raw = {
        "defaults": {"stuck_benchmark_quantile": "p75", "stuck_benchmark_min_deals": 5},
        "workspaces": {"ws-b": {"stuck_days": {"negotiation": 40}}},
    }
    config = config_with(bench(6), raw=raw)
    th = config.for_workspace("ws-a")
    assert stuck_in_stage(deal(), T0 + int(8.1 * DAY_MS), th) is not None  # P75 = 8 days
    assert config.for_workspace("ws-b").stuck_days.negotiation == 40
    assert config.for_workspace("ws-c") == config.defaults
    assert stuck_in_stage(deal("ws-c"), T0 + 20 * DAY_MS, config.for_workspace("ws-c")) is None


def test_benchmarks_keep_the_workspace_overrides() -> None:
    raw = {"workspaces": {"ws-a": {"stuck_critical_factor": 3}}}
    th = config_with(bench(100), raw=raw).for_workspace("ws-a")
    assert th.stuck_critical_factor == 3
    assert th.stuck_learned[Stage.NEGOTIATION].deals == 100


def test_a_zero_day_benchmark_is_ignored() -> None:
    config = config_with(Benchmark("ws-a", "negotiation", 100, 0.0, 0.0, 0.0))
    assert config.for_workspace("ws-a") == config.defaults


def test_the_monitors_fused_evaluation_uses_the_learned_norm() -> None:
    """The monitor evaluates through ``consumer.rules.fired``/``next_deadline`` (the fused
    fast path): they follow the learned thresholds too."""
    from consumer.rules import fired, next_deadline
    from schemas.insights import RuleName

    th = config_with(bench(212)).for_workspace("ws-a")
    at = T0 + int(12.1 * DAY_MS)
    assert fired(deal(), at, th).get(RuleName.STUCK_IN_STAGE) == Priority.HIGH
    assert RuleName.STUCK_IN_STAGE not in fired(deal(), at, RulesConfig().defaults)
    deadline = next_deadline(deal(), T0, th)
    assert deadline is not None
    assert deadline <= T0 + 12 * DAY_MS + 1
