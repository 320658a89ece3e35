"""The demo report's rules grid: the deal rules the demo runs, and ``pipeline_gap`` (raised by
forecasts, not by the demo) only when it has insights."""

from __future__ import annotations

from app.demo import grid_rules
from schemas.insights import DEAL_RULES, RuleName


def test_the_grid_leaves_out_a_workspace_rule_without_insights() -> None:
    rules = grid_rules({("stale_deal", "high"): 3})
    assert rules == list(DEAL_RULES)
    assert RuleName.PIPELINE_GAP not in rules


def test_the_grid_shows_pipeline_gap_when_it_has_insights() -> None:
    rules = grid_rules({("pipeline_gap", "critical"): 1})
    assert RuleName.PIPELINE_GAP in rules
    assert set(rules) == set(RuleName)
