"""What closes the gap, and scenarios: each change moves exactly what it says and nothing else."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from consumer.forecast import scenario as what_if
from consumer.forecast import simulate
from consumer.forecast.pipeline import CreationRates, PeriodSpec, creation_rates
from consumer.forecast.scenario import Scenario
from consumer.forecast.service import forecast_workspaces
from consumer.forecast.simulate import OpenDeals, Period, forecast, gap_closers
from consumer.intelligence.projection import DealHistory, StageSpell

N = 20_000


def deals(
    value: list[float],
    p: list[float],
    p50: list[float],
    stages: list[str] | None = None,
    spread: float = 0.0,
) -> OpenDeals:
    mid = np.asarray(p50, dtype=float)
    return OpenDeals(
        tuple(f"d{i}" for i in range(len(value))),
        np.asarray(value, dtype=float),
        np.asarray(p, dtype=float),
        np.asarray(p, dtype=float),
        np.maximum(mid - spread, 0),
        mid,
        mid + spread,
        tuple(f"rep{i}" for i in range(len(value))),
        tuple(stages) if stages is not None else (),
    )


# --- what closes the gap ------------------------------------------------------------------


def test_gap_closers_rank_deals_by_how_much_winning_them_raises_the_chance_of_the_target() -> None:
    pipe = deals(
        [1000.0, 100.0, 5000.0],
        [0.5, 0.5, 1.0],
        [10.0, 10.0, 90.0],  # d2 is certain but expected after the period
    )
    p_base, ranked = gap_closers(pipe, Period(0, 30), np.random.default_rng(4), target=1000, n=N)
    assert abs(p_base - 0.5) <= 4 * math.sqrt(0.25 / N)
    # winning d0 or d2 in the period reaches the target in every simulation: equal lifts,
    # the bigger deal first; winning d1 (100) reaches it only when d0 lands anyway: no lift
    assert [g.deal_id for g in ranked] == ["d2", "d0"]
    assert [g.p_reach_if_won for g in ranked] == [1.0, 1.0]
    assert ranked[0].lift == pytest.approx(1.0 - p_base)


def test_gap_closers_are_exact_whatever_the_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(simulate, "CHUNK_CELLS", 1)  # one simulation per chunk
    pipe = deals([600.0, 500.0, 50.0], [1.0, 0.0, 0.0], [5.0, 5.0, 5.0])
    p_base, ranked = gap_closers(
        pipe, Period(0, 30), np.random.default_rng(0), target=1000, won=0.0, n=7, top=5
    )
    assert p_base == 0.0
    assert [(g.deal_id, g.p_reach_if_won, g.lift) for g in ranked] == [("d1", 1.0, 1.0)]


def test_gap_closers_keep_the_top_ones_only() -> None:
    pipe = deals([400.0, 300.0, 200.0], [0.0, 0.0, 0.0], [5.0, 5.0, 5.0])
    _, ranked = gap_closers(pipe, Period(0, 30), np.random.default_rng(0), target=100, n=10, top=2)
    assert [g.deal_id for g in ranked] == ["d0", "d1"]


# --- scenarios change exactly what they say -----------------------------------------------

PIPE = deals(
    [100.0, 200.0, 300.0, 400.0],
    [0.2, 0.5, 0.6, 0.9],
    [10.0, 20.0, 30.0, 40.0],
    stages=["lead", "proposal", "proposal", "negotiation"],
    spread=5.0,
)
PERIOD = Period(-15, 60)


def same(a: np.typing.NDArray[np.float64], b: np.typing.NDArray[np.float64]) -> bool:
    return bool(np.array_equal(a, b))


def test_a_slip_moves_only_the_close_dates_of_the_deals_in_that_stage() -> None:
    changed = what_if.apply(
        Scenario.model_validate({"slip": [{"stage": "proposal", "days": 30}]}), PIPE, 50.0, PERIOD
    )
    d = changed.deals
    assert d.close_p50.tolist() == [10.0, 50.0, 60.0, 40.0]
    assert d.close_p10.tolist() == [5.0, 45.0, 55.0, 35.0]
    assert d.close_p90.tolist() == [15.0, 55.0, 65.0, 45.0]
    assert same(d.probability, PIPE.probability)
    assert same(d.rep_probability, PIPE.rep_probability)
    assert same(d.value, PIPE.value)
    assert (d.ids, d.stages, d.owners, changed.won) == (PIPE.ids, PIPE.stages, PIPE.owners, 50.0)
    assert changed.changes == ("slip proposal +30 days: 2 deals",)


def test_an_earlier_slip_never_closes_a_deal_before_the_as_of_time() -> None:
    changed = what_if.apply(
        Scenario.model_validate({"slip": [{"stage": "lead", "days": -12}]}), PIPE, 0.0, PERIOD
    )
    assert changed.deals.close_p10[0] == 0.0
    assert changed.deals.close_p50[0] == 0.0
    assert changed.deals.close_p90[0] == 3.0


def test_a_scale_moves_only_the_win_probability_of_the_deals_in_that_stage() -> None:
    changed = what_if.apply(
        Scenario.model_validate(
            {"scale": [{"stage": "proposal", "factor": 0.5}, {"stage": "negotiation", "factor": 2}]}
        ),
        PIPE,
        0.0,
        PERIOD,
    )
    d = changed.deals
    assert d.probability.tolist() == pytest.approx([0.2, 0.25, 0.3, 1.0])  # capped at 1
    assert same(d.rep_probability, PIPE.rep_probability)  # the rep's call stays
    for name in ("value", "close_p10", "close_p50", "close_p90"):
        assert same(getattr(d, name), getattr(PIPE, name))
    assert PIPE.probability.tolist() == [0.2, 0.5, 0.6, 0.9]  # the baseline is not touched


def test_setting_a_deal_won_or_lost_changes_only_that_deal() -> None:
    changed = what_if.apply(
        Scenario.model_validate(
            {"set": [{"deal": "d1", "outcome": "won"}, {"deal": "d3", "outcome": "lost"}]}
        ),
        PIPE,
        50.0,
        PERIOD,
    )
    d = changed.deals
    assert d.ids == ("d0", "d2")
    assert changed.won == 250.0  # 50 already won + d1
    assert d.value.tolist() == [100.0, 300.0]
    assert d.probability.tolist() == [0.2, 0.6]
    assert d.close_p50.tolist() == [10.0, 30.0]
    assert d.stages == ("lead", "proposal")
    assert d.owners == ("rep0", "rep2")
    with pytest.raises(ValueError, match="not open"):
        what_if.apply(
            Scenario.model_validate({"set": [{"deal": "nope", "outcome": "won"}]}),
            PIPE,
            0.0,
            PERIOD,
        )


def test_new_pipeline_adds_deals_at_the_historical_rates_and_changes_no_other() -> None:
    rates = CreationRates(
        lookback_days=90, created=45, per_day=0.5, mean_value=1000.0, win_rate=0.25, cycle_days=20
    )
    changed = what_if.apply(
        Scenario.model_validate({"new_pipeline": {"lookback_days": 90, "rate": 2}}),
        PIPE,
        0.0,
        Period(-10, 20),  # 20 days left: 0.5/day x 2 x 20 = 20 new deals
        rates,
    )
    d = changed.deals
    assert len(d) == 24
    assert d.ids[:4] == PIPE.ids
    assert d.ids[4:] == tuple(f"new-{i}" for i in range(1, 21))
    assert same(d.value[:4], PIPE.value)
    assert same(d.probability[:4], PIPE.probability)
    assert same(d.close_p50[:4], PIPE.close_p50)
    assert d.value[4:].tolist() == [1000.0] * 20
    assert d.probability[4:].tolist() == [0.25] * 20
    assert d.close_p50[4:].tolist() == pytest.approx([20 + 0.5 + i for i in range(20)])
    with pytest.raises(ValueError, match="creation rates"):
        what_if.apply(
            Scenario.model_validate({"new_pipeline": {}}), PIPE, 0.0, Period(-10, 20), None
        )


def test_a_slip_out_of_the_period_lowers_the_forecast_by_exactly_those_deals() -> None:
    sure = deals([100.0, 200.0, 400.0], [1.0, 1.0, 1.0], [5.0, 10.0, 20.0], ["a", "b", "a"])
    slipped = what_if.apply(
        Scenario.model_validate({"slip": [{"stage": "a", "days": 100}]}), sure, 0.0, Period(0, 30)
    )
    before = forecast(sure, Period(0, 30), np.random.default_rng(0), n=50)
    after = forecast(slipped.deals, Period(0, 30), np.random.default_rng(0), n=50)
    assert (before.p50, after.p50) == (700.0, 200.0)
    assert before.weighted_pipeline - after.weighted_pipeline == 500.0


def test_scenario_files_are_validated() -> None:
    text = """
name: Q1 downside
set: [{deal: d-1, outcome: won}]
slip: [{stage: proposal, days: 30}]
scale: [{stage: negotiation, factor: 0.8}]
new_pipeline: {lookback_days: 120}
"""
    s = Scenario.from_yaml(text)
    assert s.name == "Q1 downside"
    assert s.set[0].outcome == "won"
    assert s.slip[0].days == 30
    assert s.new_pipeline is not None
    assert s.new_pipeline.rate == 1.0
    assert Scenario.from_yaml("") == Scenario()
    with pytest.raises(ValueError, match="outcome"):
        Scenario.from_yaml("set: [{deal: d-1, outcome: maybe}]")
    with pytest.raises(ValueError, match="slips"):
        Scenario.from_yaml("slips: []")
    with pytest.raises(ValueError, match="factor"):
        Scenario.from_yaml("scale: [{stage: lead, factor: -1}]")
    with pytest.raises(ValueError, match="not YAML"):
        Scenario.from_yaml("set: [")


# --- from the history ----------------------------------------------------------------------


def ms(day: str) -> int:
    return round(dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp() * 1000)


def deal(deal_id: str, created: str, stage: str = "proposal", **fields: object) -> DealHistory:
    h = DealHistory(workspace_id="w", deal_id=deal_id, created_ms=ms(created), **fields)  # type: ignore[arg-type]
    h.stages = [StageSpell(stage, ms(created))]
    h.stage = stage
    h.updated_ms = ms(created)
    return h


def test_creation_rates_use_only_the_lookback_window_before_the_as_of_time() -> None:
    at = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)
    history = [
        deal("a", "2026-03-01", value=100.0, outcome="won", closed_ms=ms("2026-03-11")),
        deal("b", "2026-03-05", value=300.0, outcome="won", closed_ms=ms("2026-03-25")),
        deal("c", "2026-03-10", value=200.0, outcome="lost", closed_ms=ms("2026-03-20")),
        deal("d", "2026-03-20", value=400.0),
        deal("old", "2025-06-01", value=9e6, outcome="lost", closed_ms=ms("2025-07-01")),
        deal("later", "2026-04-02", value=9e6, outcome="won", closed_ms=ms("2026-04-03")),
    ]
    rates = creation_rates(history, at, 40)
    assert rates.created == 4
    assert rates.per_day == pytest.approx(4 / 40)
    assert rates.mean_value == pytest.approx(250.0)
    assert rates.win_rate == pytest.approx(2 / 3)
    assert rates.cycle_days == pytest.approx(15.0)  # median of 10 and 20 days


def test_creation_rates_count_only_the_days_the_history_covers() -> None:
    """A history younger than the lookback window: deals per day over the days since the
    first deal was created, not over the whole window (which would count days when nothing
    could be created, and understate the new pipeline of a new workspace)."""
    at = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)
    history = [deal(f"d{i}", f"2026-03-{2 + i:02d}", value=100.0) for i in range(10)]
    rates = creation_rates(history, at, 180)
    assert rates.created == 10
    assert rates.per_day == pytest.approx(10 / 30)  # since 2026-03-02, 30 days before at


def test_forecast_workspaces_shows_a_scenario_against_the_same_random_draws() -> None:
    at = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    q1 = PeriodSpec.parse("2026-Q1")
    history = [
        deal("a", "2026-01-05", value=1000.0, close_date=dt.date(2026, 2, 20)),
        deal("b", "2026-01-06", "negotiation", value=500.0, close_date=dt.date(2026, 3, 1)),
    ]
    history[0].probabilities = [(ms("2026-01-05"), 50.0)]
    history[1].probabilities = [(ms("2026-01-06"), 80.0)]
    nothing = forecast_workspaces(
        history, at, q1, target=1200.0, seed=5, simulations=2000, scenario=Scenario()
    )[0]
    assert nothing.scenario is not None
    assert set(nothing.scenario.change().values()) == {0.0}  # no change: not a cent of noise
    assert [g.deal_id for g in nothing.gap_closers] == ["a", "b"]

    lost = forecast_workspaces(
        history,
        at,
        q1,
        target=1200.0,
        seed=5,
        simulations=2000,
        scenario=Scenario.model_validate({"set": [{"deal": "a", "outcome": "lost"}]}),
    )[0]
    assert lost.result == nothing.result  # the baseline is the same forecast
    assert lost.scenario is not None
    assert lost.scenario.result.p_reach == 0.0  # 500 alone never reaches 1,200
    assert lost.scenario.result.weighted_pipeline == pytest.approx(400.0)
    assert lost.scenario.change()["weighted_pipeline"] == pytest.approx(-500.0)
    doc = lost.to_json()
    assert doc["scenario"]["changes"] == ["a lost"]  # type: ignore[index]
    assert [g["deal_id"] for g in doc["gap_closers"]] == ["a", "b"]  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="not open"):
        forecast_workspaces(
            history,
            at,
            q1,
            scenario=Scenario.model_validate({"set": [{"deal": "zz", "outcome": "won"}]}),
        )
