"""The backtest: its periods and as-of dates, its scores, and that every forecast in it uses only
what was known at its as-of date (models included)."""

from __future__ import annotations

import copy
import datetime as dt
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from app.cli import main
from app.commands.forecast import backtest_targets_missed
from consumer.forecast import backtest as bt
from consumer.forecast.backtest import Row, backtest, pinball, score
from consumer.forecast.chart import fan_png
from consumer.forecast.pipeline import (
    CANDIDATES,
    PeriodSpec,
    creation_rates,
    new_pipeline,
    pipeline_at,
)
from consumer.forecast.service import TRAINED, forecast_workspaces
from consumer.forecast.simulate import Forecast
from consumer.intelligence.features import Snapshots, feature_names
from consumer.intelligence.histgen import HistorySpec, generate_histories
from consumer.intelligence.projection import DAY_MS, DealHistory, StageSpell

SPEC = HistorySpec(deals=900, days=400, workspaces=1, seed=11)


def ms(day: str) -> int:
    return round(dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp() * 1000)


def test_periods_are_the_whole_ones_inside_the_range_and_as_of_dates_spread_from_the_start() -> (
    None
):
    quarters = bt.periods(dt.date(2024, 2, 1), dt.date(2025, 1, 1), "quarter")
    assert [p.name for p in quarters] == ["2024-Q2", "2024-Q3", "2024-Q4"]
    months = bt.periods(dt.date(2024, 11, 1), dt.date(2025, 2, 15), "month")
    assert [p.name for p in months] == ["2024-11", "2024-12", "2025-01"]
    q1 = PeriodSpec.parse("2025-Q1")
    assert [d.date() for d in bt.as_of_dates(q1, 3)] == [
        dt.date(2025, 1, 1),
        dt.date(2025, 1, 31),
        dt.date(2025, 3, 2),
    ]


def test_pinball_loss_of_three_quantiles() -> None:
    assert pinball(100.0, (100.0, 100.0, 100.0)) == 0.0
    # under by 30 at every quantile: 0.1*30, 0.5*30, 0.9*30 -> mean 15
    assert pinball(130.0, (100.0, 100.0, 100.0)) == pytest.approx(15.0)
    # over by 30: 0.9*30, 0.5*30, 0.1*30 -> mean 15 as well; an interval costs less
    assert pinball(70.0, (100.0, 100.0, 100.0)) == pytest.approx(15.0)
    assert pinball(100.0, (80.0, 100.0, 120.0)) == pytest.approx((0.1 * 20 + 0.1 * 20) / 3)


def test_scores_per_method() -> None:
    at = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    rows = [
        Row("2025-Q1", at, "w", "rep", 3, 100.0, 80.0, 90.0, 120.0, 150.0, 100.0),
        Row("2025-Q2", at, "w", "rep", 3, 200.0, 210.0, 230.0, 260.0, 100.0, 150.0),
        Row("2025-Q3", at, "w", "rep", 3, 0.0, 5.0, 10.0, 20.0, 0.0, 0.0),
    ]
    mc, weighted, stage = score(rows)
    assert (mc.method, weighted.method, stage.method) == bt.METHODS
    assert mc.mae == pytest.approx((10 + 30 + 10) / 3)
    assert mc.mape == pytest.approx((0.1 + 0.15) / 2)  # no percentage of a 0 actual
    assert mc.coverage == pytest.approx(1 / 3)  # only the first actual is inside P10-P90
    assert weighted.mae == pytest.approx((50 + 100 + 0) / 3)
    assert weighted.coverage is None
    assert stage.mae == pytest.approx(50 / 3)


def test_actual_and_stage_win_rates_count_only_what_they_should() -> None:
    def deal(i: str, outcome: str | None, closed: str | None, value: float) -> DealHistory:
        h = DealHistory(workspace_id="w", deal_id=i, value=value, created_ms=ms("2024-01-01"))
        h.stages = [StageSpell("lead", ms("2024-01-01")), StageSpell("proposal", ms("2024-01-05"))]
        h.outcome, h.closed_ms = outcome, None if closed is None else ms(closed)
        return h

    hs = [
        deal("a", "won", "2024-02-10", 100.0),
        deal("b", "lost", "2024-02-20", 50.0),
        deal("c", "won", "2024-04-02", 70.0),  # after the as-of date / outside Q1
        deal("d", None, None, 30.0),
    ]
    assert bt.actual_won(hs, PeriodSpec.parse("2024-Q1")) == 100.0
    rates = bt.stage_win_rates(hs, ms("2024-03-01"))
    assert rates == {"lead": pytest.approx(2 / 4), "proposal": pytest.approx(2 / 4)}


@pytest.fixture(scope="module")
def histories() -> list[DealHistory]:
    return generate_histories(SPEC)


def run(hs: list[DealHistory], **kw: object) -> bt.Backtest:
    return backtest(
        hs,
        dt.date(2024, 7, 1),
        dt.date(2025, 1, 1),
        "quarter",
        np.random.default_rng(3),
        points=2,
        simulations=300,
        max_iter=20,
        **kw,  # type: ignore[arg-type]
    )


def test_a_backtest_trains_a_model_per_as_of_date_where_it_can(
    histories: list[DealHistory], monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run(histories)
    assert [(r.period, r.as_of.date().isoformat()) for r in result.rows] == [
        ("2024-Q3", "2024-07-01"),
        ("2024-Q3", "2024-08-16"),
        ("2024-Q4", "2024-10-01"),
        ("2024-Q4", "2024-11-16"),
    ]
    assert {r.probabilities for r in result.rows} == {"model"}
    assert result.models_trained == 4
    assert [s.method for s in result.scores] == list(bt.METHODS)
    for r in result.rows:
        assert r.p10 <= r.p50 <= r.p90
        assert r.actual == bt.actual_won(histories, PeriodSpec.parse(r.period))

    monkeypatch.setattr(bt, "MIN_TRAIN_SNAPSHOTS", 10**9)  # too little history anywhere
    fallback = run(histories)
    assert {r.probabilities for r in fallback.rows} == {"rep"}
    assert fallback.models_trained == 0
    rep_only = run(histories, use_models=False)
    assert {r.probabilities for r in rep_only.rows} == {"rep"}


def test_every_forecast_of_a_backtest_uses_only_what_was_known_at_its_as_of_date(
    histories: list[DealHistory],
) -> None:
    """Change every outcome that happened after 2024-10-01 (won <-> lost): the forecasts made
    as of 2024-10-01 and before (models, probabilities, simulations) are exactly the same;
    only the actuals, and the later forecasts, may differ."""
    cut = ms("2024-10-01")
    flipped = copy.deepcopy(histories)
    changed = 0
    for h in flipped:
        if h.closed_ms is not None and h.closed_ms >= cut and h.outcome in ("won", "lost"):
            h.outcome = "lost" if h.outcome == "won" else "won"
            changed += 1
    assert changed > 50
    before, after = run(histories), run(flipped)
    known = [
        i
        for i, r in enumerate(before.rows)
        if r.as_of <= dt.datetime.fromtimestamp(cut / 1000, dt.UTC)
    ]
    assert len(known) == 3
    for i in known:
        a, b = before.rows[i], after.rows[i]
        assert (a.p10, a.p50, a.p90, a.weighted_pipeline, a.stage_win_rate, a.probabilities) == (
            b.p10,
            b.p50,
            b.p90,
            b.weighted_pipeline,
            b.stage_win_rate,
            b.probabilities,
        )
    assert before.rows[2].actual != after.rows[2].actual  # 2024-Q4's outcomes did change
    # the new pipeline's wins (values, cycles) and the common shock's spread come from the
    # closes before the as-of date too
    at = dt.datetime.fromtimestamp(cut / 1000, dt.UTC)
    known_rates = creation_rates(histories, at, bt.LOOKBACK_DAYS)
    assert known_rates == creation_rates(flipped, at, bt.LOOKBACK_DAYS)
    assert known_rates.won > 0
    assert known_rates.shock_sd > 0


def test_the_models_train_only_on_snapshots_settled_before_the_as_of_date(
    histories: list[DealHistory], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Of the deals closed before the as-of date, the snapshots of its last SETTLED_DAYS are
    left out (they over-represent the deals that closed quickly); the older ones stay."""
    t = ms("2024-10-01")
    cut = t - bt.SETTLED_DAYS * DAY_MS
    settled = bt._training(histories, t).snapshots
    assert len(settled) >= bt.MIN_TRAIN_SNAPSHOTS
    assert max(settled.at_ms) <= cut
    monkeypatch.setattr(bt, "SETTLED_DAYS", 0)
    every = bt._training(histories, t).snapshots
    recent = [at for at in every.at_ms if at > cut]
    assert recent
    assert max(every.at_ms) < t
    assert len(every) == len(settled) + len(recent)
    assert bt.train_at(histories, t, max_iter=5).training_snapshots == len(every)


def test_pooled_backtests_score_every_history_s_forecasts_together(
    histories: list[DealHistory],
) -> None:
    first = run(histories, use_models=False)
    second = run(generate_histories(HistorySpec(deals=600, days=400, workspaces=1, seed=5)))
    both = bt.pooled({11: first, 5: second})
    assert both.rows == [replace(r, history=5) for r in second.rows] + [
        replace(r, history=11) for r in first.rows
    ]
    assert both.scores == score(both.rows)
    assert both.scores != first.scores
    assert both.scores != second.scores
    assert both.models_trained == first.models_trained + second.models_trained
    assert both.rows[0].to_json()["history"] == 5
    assert first.rows[0].to_json()["history"] is None


def test_a_fan_is_one_backtest_row_per_as_of_date_and_draws_a_png(
    histories: list[DealHistory], tmp_path: Path
) -> None:
    q4 = PeriodSpec.parse("2024-Q4")
    dates = [dt.datetime(2024, 9, 1, tzinfo=dt.UTC) + dt.timedelta(days=20 * i) for i in range(4)]
    rows = bt.fan(
        histories, "ws-0", q4, dates, np.random.default_rng(1), simulations=200, use_models=False
    )
    assert [r.as_of for r in rows] == dates
    assert {(r.workspace_id, r.period, r.probabilities) for r in rows} == {
        ("ws-0", "2024-Q4", "rep")
    }
    assert {r.actual for r in rows} == {bt.actual_won(histories, q4)}
    png = tmp_path / "fan.png"
    fan_png(rows, png, target=1_000_000.0)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="not before the end"):
        bt.fan(histories, "ws-0", q4, [q4.end], np.random.default_rng(1), use_models=False)
    with pytest.raises(ValueError, match="no forecast"):
        fan_png([], png)


def test_the_new_pipeline_is_made_of_the_windows_wins_value_and_cycle_together() -> None:
    """Each candidate new deal is one of the lookback window's wins drawn whole (its value and
    its days from creation to the win), not a created deal's value: big deals are won less
    often, so created values would overstate what new wins bring."""
    hs = []
    for i in range(12):  # won: value 1000 * (i + 1), cycle 10 + i days
        h = DealHistory(workspace_id="w", deal_id=f"w{i}", value=1000.0 * (i + 1))
        h.created_ms, h.closed_ms, h.outcome = ms("2024-03-01"), ms("2024-03-01"), "won"
        h.closed_ms += (10 + i) * 86_400_000
        hs.append(h)
    for i in range(12):  # lost, and much bigger: never a new win's value
        h = DealHistory(workspace_id="w", deal_id=f"l{i}", value=10**6)
        h.created_ms, h.closed_ms, h.outcome = ms("2024-03-02"), ms("2024-04-20"), "lost"
        hs.append(h)
    at = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    rel = PeriodSpec.parse("2024-Q2").relative_to(at)
    deals = new_pipeline(creation_rates(hs, at, 180.0), rel)
    assert len(deals) > 0
    cycle = {1000.0 * (i + 1): 10.0 + i for i in range(12)}
    created = (np.arange(len(deals)) + 0.5) * rel.end / len(deals)
    for value, p10, p50, p90, c in zip(
        deals.value, deals.close_p10, deals.close_p50, deals.close_p90, created, strict=True
    ):
        assert value in cycle
        assert p10 == p50 == p90 == pytest.approx(c + cycle[value])
    assert deals.probability == pytest.approx(
        np.full(len(deals), 0.5 * 24 / 61 * rel.end / len(deals))  # 24 created since 03-01
    )


def test_the_new_pipeline_holds_every_window_win_equally_often_without_drawing() -> None:
    """The candidates are every win of the window the same number of times, each win's
    copies spread over the days left: no random draw of the wins, which would give each
    forecast's new pipeline an error of its own (the sample of wins it happened to draw)."""
    hs = []
    for i in range(30):  # 30 wins of very different values, 30 days each
        h = DealHistory(workspace_id="w", deal_id=f"w{i}", value=1000.0 * 2**i)
        h.created_ms, h.outcome = ms("2024-01-01") + i * 86_400_000, "won"
        h.closed_ms = h.created_ms + 30 * 86_400_000
        hs.append(h)
    at = dt.datetime(2024, 4, 1, tzinfo=dt.UTC)
    rel = PeriodSpec.parse("2024-Q2").relative_to(at)
    rates = creation_rates(hs, at, 180.0)
    deals = new_pipeline(rates, rel)
    values, counts = np.unique(deals.value, return_counts=True)
    assert sorted(values) == sorted(rates.won_values)
    assert len(set(counts)) == 1  # each win the same number of times
    assert len(deals) >= CANDIDATES * rates.per_day * rel.end
    # each win's copies span the days left, not one stretch of them
    for v in values:
        created = deals.close_p50[deals.value == v] - 30.0
        assert created.min() < rel.end / 3
        assert created.max() > 2 * rel.end / 3
    # the expected won value is the window's: deals per day x days left x won value per close
    expected = float((deals.probability * deals.value).sum())
    assert expected == pytest.approx(rates.per_day * rel.end * np.mean(rates.won_values))


def test_the_close_date_model_learns_the_days_to_a_win(
    histories: list[DealHistory], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The simulation draws a close date for a deal it wins, so the close-date model is trained
    on the snapshots of won deals (lost ones drag on and would push every win too late)."""
    seen: list[set[int]] = []
    fit_close = bt.fit_close

    def spy(train: Snapshots, **kw: int) -> object:
        seen.append(set(train.won))
        return fit_close(train, **kw)

    monkeypatch.setattr(bt, "fit_close", spy)
    models = bt.train_at(histories, ms("2024-10-01"), max_iter=5)
    assert models.predict is not None
    assert seen == [{1}]


def test_check_names_the_targets_a_backtest_misses() -> None:
    def result(mc: float, weighted: float, coverage: float) -> bt.Backtest:
        return bt.Backtest(
            scores=[
                bt.Score("monte_carlo", mc, None, 0.0, coverage),
                bt.Score("weighted_pipeline", weighted, None, 0.0, None),
                bt.Score("stage_win_rate", weighted, None, 0.0, None),
            ]
        )

    assert backtest_targets_missed(result(70.0, 100.0, 0.8)) == []
    assert backtest_targets_missed(result(69.0, 100.0, 0.7)) == []
    missed = backtest_targets_missed(result(80.0, 100.0, 0.67))
    assert len(missed) == 2
    assert "0.80x" in missed[0]
    assert "67%" in missed[1]
    assert len(backtest_targets_missed(result(50.0, 100.0, 0.95))) == 1  # too wide is a miss


@pytest.mark.parametrize("flag", ["--common-shock", "--independent"])
def test_the_backtest_command_draws_the_shock_unless_independent_and_checks_the_targets(
    flag: str,
) -> None:
    args = ["--from", "2024-04-01", "--to", "2024-07-01", "--period", "month", "--simulated",
            "300", "--seed", "4", "--simulations", "200", "--rep-probabilities"]  # fmt: skip
    out = CliRunner().invoke(main, ["forecast", "backtest", *args, flag, "--json", "--check"])
    expected = backtest(
        generate_histories(HistorySpec(deals=300, seed=4)),
        dt.date(2024, 4, 1),
        dt.date(2024, 7, 1),
        "month",
        np.random.default_rng(4),
        simulations=200,
        use_models=False,
        common_shock=flag == "--common-shock",
    )
    doc = json.loads(out.stdout)
    assert [(r["p10"], r["p50"], r["p90"]) for r in doc["rows"]] == [
        (r.p10, r.p50, r.p90) for r in expected.rows
    ]
    missed = backtest_targets_missed(expected)
    assert out.exit_code == (1 if missed else 0)
    assert ("target missed" in out.stderr) == bool(missed)


def test_the_backtest_command_pools_several_simulated_histories() -> None:
    """--histories 2: seeds 4 and 5, each backtested as a one-history run would be (in its
    own process), scored together; without --simulated it is refused."""
    args = ["--from", "2024-04-01", "--to", "2024-07-01", "--period", "month", "--simulated",
            "300", "--seed", "4", "--simulations", "200", "--rep-probabilities"]  # fmt: skip
    out = CliRunner().invoke(main, ["forecast", "backtest", *args, "--histories", "2", "--json"])
    assert out.exit_code == 0, out.output
    expected = bt.pooled(
        {
            seed: backtest(
                generate_histories(HistorySpec(deals=300, seed=seed)),
                dt.date(2024, 4, 1),
                dt.date(2024, 7, 1),
                "month",
                np.random.default_rng(seed),
                simulations=200,
                use_models=False,
            )
            for seed in (4, 5)
        }
    )
    doc = json.loads(out.stdout)
    assert doc["rows"] == [r.to_json() | {"as_of": r.as_of.isoformat()} for r in expected.rows]
    assert {r["history"] for r in doc["rows"]} == {4, 5}
    assert doc["scores"] == [s.to_json() for s in expected.scores]
    text = CliRunner().invoke(main, ["forecast", "backtest", *args, "--histories", "2"])
    assert "\n36 forecasts of 2 histories (seeds 4-5)," in "\n" + text.stdout  # 3x3x2x2
    assert "history 2/2" in text.stderr
    refused = CliRunner().invoke(
        main, ["forecast", "backtest", "--from", "2024-04-01", "--to", "2024-07-01",
               "--histories", "2"]
    )  # fmt: skip
    assert refused.exit_code == 2
    assert "needs --simulated" in refused.output


def test_the_backtest_command_names_a_workspace_without_deals_before_backtesting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = ["forecast", "backtest", "--from", "2024-04-01", "--to", "2024-07-01", "--period",
            "month", "--simulated", "300", "--rep-probabilities"]  # fmt: skip
    unknown = CliRunner().invoke(main, [*args, "--workspace", "nope"])
    assert unknown.exit_code == 2
    assert "no deal history of workspace 'nope'" in unknown.output

    def no_backtest(*args: object, **kwargs: object) -> bt.Backtest:
        raise AssertionError("a range without a whole period is refused before backtesting")

    monkeypatch.setattr(bt, "backtest", no_backtest)
    too_short = CliRunner().invoke(main, [*args[:5], "2024-04-02", *args[6:]])
    assert too_short.exit_code == 2
    assert "no whole month between 2024-04-01 and 2024-04-02" in too_short.output


def test_the_models_of_an_as_of_date_use_the_crm_attributes_known_then(
    histories: list[DealHistory], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As `vectoros train` does, the backtest's models have the CRM attributes among their
    features (the simulator's `segment`), coded from the deals closed before the as-of date."""
    seen: list[tuple[str, ...]] = []
    fit_win = bt.fit_win

    def spy(train: Snapshots, **kw: Any) -> object:
        seen.append(feature_names(train.attributes))
        return fit_win(train, **kw)

    monkeypatch.setattr(bt, "fit_win", spy)
    models = bt.train_at(histories, ms("2024-10-01"), max_iter=5)
    assert models.predict is not None
    assert len(seen) == 1
    assert "attr:segment" in seen[0]
    open_deals = [h for h in histories if h.created_ms < ms("2024-10-01") < (h.closed_ms or 2**62)]
    p, *_ = models.predict(open_deals[:5])
    assert len(p) == 5


def test_forecast_run_with_models_draws_the_new_pipeline_and_the_shock_from_what_was_known(
    histories: list[DealHistory],
) -> None:
    """`forecast run`'s path (``forecast_workspaces``) with the models, the new pipeline and
    the common shock, as the backtest forecasts: the new pipeline raises the expected revenue
    but not the roll-up or the deals' contributions, and flipping every outcome after the
    as-of date changes nothing of it."""
    at = dt.datetime(2024, 10, 1, tzinfo=dt.UTC)
    q4 = PeriodSpec.parse("2024-Q4")

    def run_at(hs: list[DealHistory], **kw: bool) -> Forecast:
        model = bt.train_at(hs, ms("2024-10-01"), max_iter=5).predict
        assert model is not None
        (out,) = forecast_workspaces(hs, at, q4, seed=3, simulations=2000, model=model, **kw)
        assert out.probabilities == TRAINED
        return out.result

    plain = run_at(histories)
    full = run_at(histories, new_pipeline=True, common_shock=True)
    assert full.expected > plain.expected * 1.2  # the quarter's deals not created yet
    assert full.p90 - full.p10 > plain.p90 - plain.p10
    assert (full.weighted_pipeline, full.commit, full.open_deals) == (
        plain.weighted_pipeline,
        plain.commit,
        plain.open_deals,
    )
    assert [c.deal_id for c in full.contributions] == [c.deal_id for c in plain.contributions]
    flipped = copy.deepcopy(histories)
    for h in flipped:
        if h.closed_ms is not None and h.closed_ms >= ms("2024-10-01") and h.outcome:
            h.outcome = "lost" if h.outcome == "won" else "won"
    again = run_at(flipped, new_pipeline=True, common_shock=True)
    assert (again.p10, again.p50, again.p90, again.expected) == (
        full.p10,
        full.p50,
        full.p90,
        full.expected,
    )


def test_the_close_date_model_alone_is_train_ats_and_uses_only_what_was_known(
    histories: list[DealHistory],
) -> None:
    """``close_at`` (the forecast service's close dates, beside the current model's scores) is
    ``train_at``'s close-date model: the same close dates for the open deals, unchanged when
    every outcome after the as-of date is flipped; none from too little history."""
    t = ms("2024-10-01")
    open_deals = [h for h in histories if h.created_ms < t < (h.closed_ms or 2**62)]
    close = bt.close_at(histories, t, max_iter=5)
    models = bt.train_at(histories, t, max_iter=5)
    assert close is not None
    assert models.predict is not None
    lo, mid, hi = close(open_deals)
    _, *expected = models.predict(open_deals)
    assert [lo.tolist(), mid.tolist(), hi.tolist()] == [x.tolist() for x in expected]
    assert len(set(mid.tolist())) > 1  # per deal, not one number
    flipped = copy.deepcopy(histories)
    for h in flipped:
        if h.closed_ms is not None and h.closed_ms >= t and h.outcome:
            h.outcome = "lost" if h.outcome == "won" else "won"
    again = bt.close_at(flipped, t, max_iter=5)
    assert again is not None
    assert [x.tolist() for x in again(open_deals)] == [lo.tolist(), mid.tolist(), hi.tolist()]
    assert bt.close_at(histories[:20], t, max_iter=5) is None


def test_forecast_workspaces_takes_the_close_dates_and_keeps_the_given_probabilities(
    histories: list[DealHistory],
) -> None:
    """The service's path: the current model's scores as the probabilities, the close-date
    model's close dates (so which deals are expected in the period follows them)."""
    at = dt.datetime(2024, 10, 1, tzinfo=dt.UTC)
    q4 = PeriodSpec.parse("2024-Q4")
    close = bt.close_at(histories, ms("2024-10-01"), max_iter=5)
    assert close is not None
    rep = pipeline_at(histories, at, q4).deals
    scores = {d: 0.5 for d in rep.ids}
    (out,) = forecast_workspaces(
        histories, at, q4, seed=3, simulations=500, probabilities=scores,
        probabilities_label="model v3", close=close,
    )  # fmt: skip
    (before,) = forecast_workspaces(
        histories, at, q4, seed=3, simulations=500, probabilities=scores,
        probabilities_label="model v3",
    )  # fmt: skip
    assert out.probabilities == "model v3"
    rel = q4.relative_to(at)
    _, mid, _ = close([h for h in histories if h.deal_id in scores])
    model_in = (mid >= rel.start) & (mid < rel.end)
    rep_in = (rep.close_p50 >= rel.start) & (rep.close_p50 < rel.end)
    won = out.result.won
    assert out.result.weighted_pipeline == pytest.approx(won + 0.5 * rep.value[model_in].sum())
    assert before.result.weighted_pipeline == pytest.approx(won + 0.5 * rep.value[rep_in].sum())
    assert out.result.weighted_pipeline != pytest.approx(before.result.weighted_pipeline)
