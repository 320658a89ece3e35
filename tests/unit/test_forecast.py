"""The Monte Carlo forecast core and the pipeline as of a date, against known answers."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from consumer.forecast import simulate
from consumer.forecast.pipeline import DEFAULT_SHOCK_SD, CreationRates, PeriodSpec, pipeline_at
from consumer.forecast.simulate import OpenDeals, Period, forecast, revenue_draws
from consumer.intelligence.projection import DealHistory, StageSpell

N = 20_000


def deals(
    value: list[float],
    p: list[float],
    p50: list[float],
    spread: float = 0.0,
    rep: list[float] | None = None,
) -> OpenDeals:
    mid = np.asarray(p50, dtype=float)
    return OpenDeals(
        tuple(f"d{i}" for i in range(len(value))),
        np.asarray(value, dtype=float),
        np.asarray(p, dtype=float),
        np.asarray(rep if rep is not None else p, dtype=float),
        np.maximum(mid - spread, 0),
        mid,
        mid + spread,
    )


def tolerance(p: float, n: int = N) -> float:
    return 4 * math.sqrt(p * (1 - p) / n)  # four standard errors of a share


def test_one_deal_at_one_half_reaches_its_value_half_of_the_time() -> None:
    one = deals([1000.0], [0.5], [10.0])
    result = forecast(one, Period(0, 30), np.random.default_rng(1), n=N, target=1000.0)
    assert result.p_reach is not None
    assert abs(result.p_reach - 0.5) <= tolerance(0.5)
    assert abs(result.expected - 500.0) <= 1000 * tolerance(0.5)
    assert (result.p10, result.p90) == (0.0, 1000.0)


def test_the_close_date_draw_lands_before_its_p50_half_of_the_time() -> None:
    sure = deals([1.0], [1.0], [40.0], spread=20.0)
    draws = revenue_draws(sure, Period(0, 40), N, np.random.default_rng(2))
    assert abs(draws.mean() - 0.5) <= tolerance(0.5)
    draws = revenue_draws(sure, Period(20, 60), N, np.random.default_rng(3))  # P10 to P90
    assert abs(draws.mean() - 0.8) <= tolerance(0.8)


def test_close_days_follows_the_three_quantiles_and_never_goes_below_zero() -> None:
    lo, mid, hi = np.array([1.0]), np.array([10.0]), np.array([30.0])
    at = simulate.close_days(np.array([0.1, 0.5, 0.9, 0.0]), lo, mid, hi)
    assert at.tolist() == pytest.approx([1.0, 10.0, 30.0, 0.0])


def test_the_same_seed_gives_the_same_forecast_and_another_one_differs() -> None:
    pipe = deals([100.0, 250.0, 75.0], [0.3, 0.6, 0.9], [5, 20, 50], spread=10)
    a = revenue_draws(pipe, Period(0, 30), 500, np.random.default_rng(7))
    b = revenue_draws(pipe, Period(0, 30), 500, np.random.default_rng(7))
    c = revenue_draws(pipe, Period(0, 30), 500, np.random.default_rng(8))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_weighted_pipeline_and_the_roll_up_are_exact() -> None:
    pipe = deals(
        [100.0, 200.0, 400.0, 800.0, 1600.0],
        [0.9, 0.5, 0.2, 0.7, 1.0],
        [10, 10, 10, 10, 45],  # the last one is expected after the period
    )
    result = forecast(pipe, Period(0, 30), np.random.default_rng(0), won=50.0, n=100)
    assert result.weighted_pipeline == pytest.approx(50 + 90 + 100 + 80 + 560)
    assert result.commit == pytest.approx(50 + 100 + 800)
    assert result.best_case == pytest.approx(50 + 100 + 800 + 200)
    assert result.pipeline == pytest.approx(50 + 1500)


def test_already_won_revenue_is_in_every_simulation_and_sets_the_target_gap() -> None:
    result = forecast(
        deals([], [], []), Period(-10, 20), np.random.default_rng(0), won=300.0, target=500.0
    )
    assert (result.p10, result.p50, result.p90, result.expected) == (300, 300, 300, 300)
    assert result.gap == 200.0
    assert result.p_reach == 0.0
    assert result.coverage == 0.0


def test_coverage_is_the_open_pipeline_over_what_is_left_of_the_target() -> None:
    pipe = deals([600.0], [0.5], [5.0])
    result = forecast(pipe, Period(0, 30), np.random.default_rng(0), won=100.0, target=400.0)
    assert result.coverage == pytest.approx(2.0)


def test_chunks_cover_every_simulation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(simulate, "CHUNK_CELLS", 7)  # 3 deals: chunks of 2 simulations
    sure = deals([1.0, 2.0, 4.0], [1.0, 1.0, 1.0], [1.0, 2.0, 3.0])
    draws = revenue_draws(sure, Period(0, 30), 11, np.random.default_rng(0))
    assert draws.tolist() == [7.0] * 11


def test_ten_thousand_simulations_of_two_thousand_deals_run_vectorised() -> None:
    rng = np.random.default_rng(0)
    d = 2000
    pipe = OpenDeals(
        tuple(map(str, range(d))),
        rng.uniform(1e3, 1e5, d),
        rng.uniform(0, 1, d),
        rng.uniform(0, 1, d),
        np.full(d, 10.0),
        np.full(d, 40.0),
        np.full(d, 90.0),
    )
    result = forecast(pipe, Period(0, 60), np.random.default_rng(1))
    assert result.simulations == 10_000
    assert result.p10 < result.p50 < result.p90


# --- the pipeline as of a date ------------------------------------------------------------


def ms(day: str) -> int:
    return round(dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp() * 1000)


def deal(deal_id: str, created: str, **fields: object) -> DealHistory:
    h = DealHistory(workspace_id="w", deal_id=deal_id, created_ms=ms(created), **fields)  # type: ignore[arg-type]
    h.stages = [StageSpell("proposal", ms(created))]
    h.stage = "proposal"
    h.updated_ms = ms(created)
    return h


def test_periods_parse_into_utc_ranges() -> None:
    q1 = PeriodSpec.parse("2026-q1")
    assert (q1.name, q1.start.date(), q1.end.date()) == (
        "2026-Q1",
        dt.date(2026, 1, 1),
        dt.date(2026, 4, 1),
    )
    dec = PeriodSpec.parse("2026-12")
    assert (dec.start.date(), dec.end.date()) == (dt.date(2026, 12, 1), dt.date(2027, 1, 1))
    for bad in ("2026", "2026-Q5", "2026-13", "Q1-2026"):
        with pytest.raises(ValueError, match="not a period"):
            PeriodSpec.parse(bad)


def test_a_past_as_of_date_uses_only_what_was_known_then() -> None:
    at = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    q1 = PeriodSpec.parse("2026-Q1")
    changed = deal("changed", "2026-01-05", value=900.0, close_date=dt.date(2026, 6, 1))
    changed.value_changes = [(ms("2026-02-10"), 300.0, 900.0)]
    changed.close_date_changes = [(ms("2026-02-10"), "2026-02-21", "2026-06-01")]
    changed.probabilities = [(ms("2026-01-05"), 60.0), (ms("2026-02-10"), 10.0)]
    later_won = deal("later", "2026-01-10", value=500.0, outcome="won", closed_ms=ms("2026-03-01"))
    early_won = deal("early", "2026-01-02", value=700.0, outcome="won", closed_ms=ms("2026-01-20"))
    last_year = deal("old", "2025-10-01", value=999.0, outcome="won", closed_ms=ms("2025-12-20"))
    lost = deal("lost", "2026-01-02", value=50.0, outcome="lost", closed_ms=ms("2026-01-25"))
    future = deal("future", "2026-02-15", value=10_000.0)
    deleted = deal("gone", "2026-01-03", value=40.0, deleted_ms=ms("2026-01-15"))
    histories = [changed, later_won, early_won, last_year, lost, future, deleted]

    pipe = pipeline_at(histories, at, q1)

    assert pipe.deals.ids == ("changed", "later")
    assert (pipe.won, pipe.won_deals) == (700.0, 1)
    assert pipe.deals.value.tolist() == [300.0, 500.0]
    assert pipe.deals.probability[0] == pytest.approx(0.6)
    assert pipe.deals.probability[1] == pytest.approx(0.5)  # no rep probability: the stage's
    assert pipe.deals.close_p50[0] == pytest.approx(20.0)  # 2026-02-21, not 2026-06-01
    assert pipe.deals.close_p10[0] == pytest.approx(6.0)  # the 14-day minimum spread
    assert pipe.deals.close_p90[0] == pytest.approx(34.0)
    assert pipe.deals.close_p50[1] == pytest.approx(60.0)  # no close date: the default


def test_an_overdue_close_date_means_it_may_close_any_day() -> None:
    at = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    late = deal("late", "2026-01-05", value=100.0, close_date=dt.date(2026, 2, 1))
    pipe = pipeline_at([late], at, PeriodSpec.parse("2026-03"))
    assert pipe.deals.close_p50.tolist() == [0.0]
    assert pipe.deals.close_p90.tolist() == [14.0]


def test_by_owner_adds_one_forecast_per_owner_after_the_workspace_one() -> None:
    from consumer.forecast.service import forecast_workspaces

    a = deal("a", "2026-01-05", value=100.0, owner_id="ann", close_date=dt.date(2026, 2, 10))
    b = deal("b", "2026-01-05", value=200.0, owner_id="bob", close_date=dt.date(2026, 2, 10))
    won = deal("c", "2026-01-02", value=50.0, owner_id="bob", outcome="won")
    won.closed_ms = ms("2026-01-20")
    idle = deal("d", "2025-01-02", value=9.0, owner_id="cy", outcome="lost")
    idle.closed_ms = ms("2025-03-01")
    at = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    out = forecast_workspaces(
        [a, b, won, idle], at, PeriodSpec.parse("2026-Q1"), target=400.0, seed=1, by_owner=True
    )
    assert [(f.workspace_id, f.scope) for f in out] == [
        ("w", "workspace"),
        ("w", "owner:ann"),
        ("w", "owner:bob"),
    ]
    assert [f.result.weighted_pipeline for f in out] == pytest.approx([200.0, 50.0, 150.0])
    assert [f.result.target for f in out] == [400.0, None, None]
    plain = forecast_workspaces([a, b, won], at, PeriodSpec.parse("2026-Q1"), seed=1)
    assert [f.scope for f in plain] == ["workspace"]


def test_close_cdf_inverts_close_days_so_one_draw_per_cell_decides_the_landing() -> None:
    lo = np.array([0.0, 5.0, 10.0, 30.0, 0.0])
    mid = np.array([0.0, 20.0, 10.0, 30.0, 3.0])
    hi = np.array([14.0, 50.0, 10.0, 90.0, 4.0])  # with degenerate and one-sided spreads
    u = np.random.default_rng(0).random(5000)[:, None]  # exact ties have probability 0
    days = simulate.close_days(u, lo, mid, hi)
    for x in (-5.0, 0.0, 0.5, 3.0, 10.0, 10.5, 20.0, 29.0, 45.0, 95.0):
        below = u < simulate.close_cdf(x, lo, mid, hi)
        assert np.array_equal(below, days < x), x


def test_won_and_landed_share_matches_probability_times_the_close_date_share() -> None:
    one = deals([1.0], [0.4], [40.0], spread=20.0)  # P10 20, P90 60
    draws = revenue_draws(one, Period(20, 60), N, np.random.default_rng(9))
    assert abs(draws.mean() - 0.4 * 0.8) <= tolerance(0.32)


def test_given_probabilities_replace_the_win_probability_but_not_the_reps() -> None:
    at = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    a = deal("a", "2026-01-05", value=100.0)
    a.probabilities = [(ms("2026-01-05"), 60.0)]
    b = deal("b", "2026-01-05", value=100.0)
    pipe = pipeline_at([a, b], at, PeriodSpec.parse("2026-Q1"), {"a": 0.9, "zz": 0.1})
    assert pipe.deals.probability.tolist() == pytest.approx([0.9, 0.5])
    assert pipe.deals.rep_probability.tolist() == pytest.approx([0.6, 0.5])


def test_a_model_gives_every_open_deal_its_probability_and_close_dates() -> None:
    at = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    a = deal("a", "2026-01-05", value=100.0)
    a.probabilities = [(ms("2026-01-05"), 60.0)]
    b = deal("b", "2026-01-06", value=200.0)
    later = deal("c", "2026-03-01", value=300.0)  # not open yet: not given to the model
    seen: list[list[str]] = []

    def model(hs: object) -> tuple[np.ndarray, ...]:
        ids = [h.deal_id for h in hs]  # type: ignore[attr-defined]
        seen.append(ids)
        n = len(ids)
        return np.full(n, 0.3), np.full(n, 1.0), np.full(n, 2.0), np.full(n, 3.0)

    pipe = pipeline_at([a, b, later], at, PeriodSpec.parse("2026-Q1"), model=model)
    assert seen == [["a", "b"]]
    assert pipe.deals.probability.tolist() == [0.3, 0.3]
    assert pipe.deals.rep_probability.tolist() == pytest.approx([0.6, 0.5])
    assert pipe.deals.close_p10.tolist() == [1.0, 1.0]
    assert pipe.deals.close_p90.tolist() == [3.0, 3.0]
    from consumer.forecast.service import TRAINED, forecast_workspaces

    out = forecast_workspaces([a, b], at, PeriodSpec.parse("2026-Q1"), model=model, seed=1)
    assert out[0].probabilities == TRAINED
    assert out[0].result.weighted_pipeline == pytest.approx(0.3 * 300)


def test_a_common_shock_moves_every_deal_together_and_keeps_the_expected_revenue() -> None:
    """400 deals at 30%: independent, the number won varies by sqrt(400 * 0.3 * 0.7) ~ 9; with
    one factor N(1, 0.3) per simulation on every probability, by about
    sqrt(84 + 120^2 * 0.09) ~ 37, around the same mean (120)."""
    pipe = deals([1.0] * 400, [0.3] * 400, [10.0] * 400)
    period = Period(0, 30)
    alone = revenue_draws(pipe, period, 4000, np.random.default_rng(1))
    shocked = revenue_draws(pipe, period, 4000, np.random.default_rng(1), shock_sd=0.3)
    assert alone.std() < 12
    assert 30 < shocked.std() < 46
    assert abs(alone.mean() - 120) < 2
    assert abs(shocked.mean() - 120) < 5
    wide = forecast(pipe, period, np.random.default_rng(1), n=4000, shock_sd=0.3)
    narrow = forecast(pipe, period, np.random.default_rng(1), n=4000)
    assert wide.p90 - wide.p10 > 2 * (narrow.p90 - narrow.p10)
    assert wide.weighted_pipeline == narrow.weighted_pipeline
    # no shock: the very same draws as before it existed
    again = revenue_draws(pipe, period, 4000, np.random.default_rng(1), shock_sd=0.0)
    assert again.tolist() == alone.tolist()
    with pytest.raises(ValueError, match="shock_sd"):
        revenue_draws(pipe, period, 10, np.random.default_rng(1), shock_sd=-0.1)


def test_the_shock_spread_is_the_relative_standard_error_of_the_value_win_rate() -> None:
    def rates(won: list[float], lost: list[float]) -> CreationRates:
        return CreationRates(
            90, 100, 1.0, 1000.0, 0.0, 30.0, won_values=tuple(won), lost_values=tuple(lost)
        )

    # 20 wins and 80 losses of 1 each: R = 0.2, sqrt(20 * 0.8^2 + 80 * 0.2^2) / 20
    assert rates([1.0] * 20, [1.0] * 80).shock_sd == pytest.approx(math.sqrt(0.8 / 20))
    assert rates([1.0] * 200, [1.0] * 800).shock_sd == pytest.approx(math.sqrt(0.8 / 200))
    # the same counts, but one win and one loss are big: far less certain
    lumpy = rates([1.0] * 19 + [50.0], [1.0] * 79 + [50.0]).shock_sd
    assert lumpy > 2 * math.sqrt(0.8 / 20)
    assert rates([], [1.0]).shock_sd == rates([1.0], []).shock_sd == DEFAULT_SHOCK_SD


def test_each_deal_contributes_its_landing_share_times_its_value() -> None:
    """No common shock: a deal lands with probability p * P(close in period); P10 10, P50 20,
    P90 30 days (linear quantiles) and a period [0, 20) give 0.5 of the close dates, [15, 25)
    gives 0.4 (0.3 to 0.7). The contributions are counted from the very draws of the forecast,
    so they sum to its expected revenue minus what was already won."""
    pipe = deals([1000.0, 400.0, 250.0, 90.0], [0.8, 0.5, 1.0, 0.0], [20.0] * 4, spread=10.0)
    for period, share in ((Period(0, 20), 0.5), (Period(15, 25), 0.4), (Period(40, 50), 0.0)):
        result = forecast(pipe, period, np.random.default_rng(11), won=5000.0, n=N)
        assert [c.deal_id for c in result.contributions] == ["d0", "d1", "d2", "d3"]
        for c, p, value in zip(result.contributions, pipe.probability, pipe.value, strict=True):
            landing = p * share
            assert abs(c.p_land - landing) <= tolerance(landing) + 1e-12
            assert c.expected == pytest.approx(c.p_land * value)
        total = sum(c.expected for c in result.contributions)
        assert total == pytest.approx(result.expected - 5000.0, rel=1e-9, abs=1e-6)
    assert forecast(deals([], [], []), Period(0, 20), np.random.default_rng(1)).contributions == ()


def test_contributions_come_from_the_shocked_draws_too_and_stay_bounded_by_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a common shock and chunks of a few simulations, the contributions still sum to the
    expected revenue beyond what was won (same draws, counted chunk by chunk)."""
    monkeypatch.setattr(simulate, "CHUNK_CELLS", 7)
    pipe = deals([10.0, 20.0, 30.0], [0.3, 0.6, 0.9], [5.0, 10.0, 50.0], spread=4.0)
    result = forecast(pipe, Period(0, 30), np.random.default_rng(5), won=1.0, n=999, shock_sd=0.4)
    assert sum(c.expected for c in result.contributions) == pytest.approx(result.expected - 1.0)
    assert result.contributions[2].p_land == 0.0  # closes after the period in every draw
    assert 0 < result.contributions[0].p_land < result.contributions[1].p_land


def test_new_pipeline_is_drawn_into_the_revenue_but_not_the_roll_up_or_contributions() -> None:
    """Deals still to be created (``new``) add their wins to every number drawn (P10-P90,
    expected, P(target)), under the same shock; the roll-up, the coverage, ``open_deals`` and
    the per-deal contributions stay the open deals' (a deal not created yet has no row)."""
    pipe = deals([1000.0, 400.0], [0.8, 0.5], [10.0, 10.0])
    made = deals([300.0] * 4, [0.5] * 4, [10.0] * 4)
    new = OpenDeals(
        tuple(f"new-{i + 1}" for i in range(4)),
        made.value,
        made.probability,
        made.rep_probability,
        made.close_p10,
        made.close_p50,
        made.close_p90,
    )
    period = Period(0, 30)
    plain = forecast(pipe, period, np.random.default_rng(3), won=50.0, n=N, target=1500.0)
    more = forecast(pipe, period, np.random.default_rng(3), won=50.0, n=N, target=1500.0, new=new)
    assert more.expected - plain.expected == pytest.approx(4 * 0.5 * 300.0, rel=0.05)
    assert more.p_reach is not None
    assert plain.p_reach is not None
    assert more.p_reach > plain.p_reach
    for name in ("weighted_pipeline", "commit", "best_case", "pipeline", "coverage", "open_deals"):
        assert getattr(more, name) == getattr(plain, name)
    assert [c.deal_id for c in more.contributions] == ["d0", "d1"]
    total = sum(c.expected for c in more.contributions)
    assert total == pytest.approx(plain.expected - 50.0, rel=0.05)
    # the gap closers draw the new deals too, and rank only the open ones
    base, closers = simulate.gap_closers(
        pipe, period, np.random.default_rng(3), target=1500.0, won=50.0, n=N, new=new
    )
    assert base == pytest.approx(more.p_reach, abs=0.02)
    assert {g.deal_id for g in closers} <= {"d0", "d1"}
    assert closers
