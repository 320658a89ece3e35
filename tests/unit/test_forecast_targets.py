"""Targets per workspace, owner and period from a YAML file, and the forecasts that use them."""

from __future__ import annotations

import datetime as dt

import pytest

from consumer.forecast.pipeline import PeriodSpec
from consumer.forecast.service import forecast_workspaces
from consumer.forecast.targets import Targets, parse_targets
from consumer.intelligence.projection import DealHistory, StageSpell

TEXT = """
acme:
  2026-q1: 2500000
  2026-03: 900000
  owners:
    ann: {2026-Q1: 150}
beta:
  2026-Q1: 400
"""


def test_targets_per_workspace_owner_and_period() -> None:
    t = parse_targets(TEXT)
    assert t.of("acme", "2026-Q1") == 2_500_000.0  # period names normalised
    assert t.of("acme", "2026-03") == 900_000.0
    assert t.of("acme", "2026-Q1", "ann") == 150.0
    assert t.of("acme", "2026-Q1", "bob") is None
    assert t.of("beta", "2026-Q1") == 400.0
    assert t.of("beta", "2026-Q2") is None
    assert t.of("gamma", "2026-Q1") is None
    assert parse_targets("") == Targets({}, {})


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("acme: {2026-Q7: 5}", "acme: '2026-Q7' is not a period"),
        ("acme: {2026-Q1: lots}", "acme.2026-Q1: the target must be a number"),
        ("acme: {2026-Q1: -5}", "must be a number >= 0"),
        ("acme: {owners: {ann: 5}}", "acme.owners.ann: expected period: target pairs"),
        ("acme: 5", "acme: expected period: target pairs"),
        ("[1, 2]", "expected workspace"),
        ("acme: {", "not YAML"),
    ],
)
def test_bad_targets_say_where(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error.replace("(", r"\(")):
        parse_targets(text)


def ms(day: str) -> int:
    return round(dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp() * 1000)


def deal(i: str, owner: str, value: float, workspace: str = "acme") -> DealHistory:
    h = DealHistory(workspace_id=workspace, deal_id=i, value=value, owner_id=owner,
                    created_ms=ms("2026-01-05"), close_date=dt.date(2026, 2, 10))  # fmt: skip
    h.stages = [StageSpell("proposal", ms("2026-01-05"))]
    h.probabilities = [(ms("2026-01-05"), 100.0)]
    return h


def test_forecasts_take_each_workspaces_and_owners_target_from_the_file() -> None:
    at = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    histories = [deal("a", "ann", 100.0), deal("b", "bob", 200.0), deal("c", "cy", 50.0, "beta")]
    out = forecast_workspaces(
        histories, at, PeriodSpec.parse("2026-Q1"), targets=parse_targets(TEXT), by_owner=True,
        simulations=50, seed=1,
    )  # fmt: skip
    got = {(f.workspace_id, f.scope): (f.result.target, f.result.p_reach) for f in out}
    assert got == {
        ("acme", "workspace"): (2_500_000.0, 0.0),
        ("acme", "owner:ann"): (150.0, 0.0),  # 100 certain, short of 150
        ("acme", "owner:bob"): (None, None),
        ("beta", "workspace"): (400.0, 0.0),
        ("beta", "owner:cy"): (None, None),
    }
    assert [g.deal_id for g in out[0].gap_closers] == []  # nothing can reach 2.5M
    one = forecast_workspaces(
        histories, at, PeriodSpec.parse("2026-Q1"), target=250.0, targets=parse_targets(TEXT)
    )
    assert [f.result.target for f in one] == [250.0, 250.0]  # --target is everyone's
