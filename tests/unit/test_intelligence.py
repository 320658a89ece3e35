"""The learning core: point-in-time features cannot see the future, the metrics, the
known-truth generator, training with calibration, and the promotion rule."""

from __future__ import annotations

import copy
import datetime as dt
import math
import random

import numpy as np
import pytest

from consumer.intelligence.evaluation import NotEnoughHistory, better, evaluate
from consumer.intelligence.features import (
    FEATURES,
    OwnerRecord,
    as_of,
    features_at,
    snapshots,
)
from consumer.intelligence.histgen import HistorySpec, generate_histories
from consumer.intelligence.metrics import Scores, coverage, ece, reliability_points, score
from consumer.intelligence.model import loads
from consumer.intelligence.projection import DAY_MS, Activity, DealHistory, StageSpell

SMALL = HistorySpec(deals=1500, days=540, seed=3)


def same(a: list[float], b: list[float]) -> bool:
    return all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b, strict=True))


def rewrite_future(h: DealHistory, t: int, rng: random.Random) -> DealHistory:
    """The same deal up to ``t``, and a different future: another outcome, a burst of
    activity, pushes, a new value, another stage, another rep probability."""
    other = copy.deepcopy(h)
    other.outcome = "lost" if h.outcome == "won" else "won"
    for k in range(20):
        other.activities.append(Activity(t + k * 3_600_000, "meeting", "inbound"))
    other.activities.append(Activity(t, "call", "inbound"))  # at t itself: not before t
    old_close = None if other.close_date is None else other.close_date.isoformat()
    other.close_date_changes.append((t + DAY_MS, old_close, "2031-01-01"))
    other.close_date = dt.date(2031, 1, 1)
    other.value_changes.append((t + DAY_MS, other.value, 9e9))
    other.value = 9e9
    other.probabilities.append((t, 99.0))
    other.probability = 99.0
    if other.stages and other.stages[-1].left_ms is None:
        other.stages[-1].left_ms = t + DAY_MS
    other.stages.append(StageSpell("negotiation", t + DAY_MS, None))
    other.closed_ms = t + rng.randint(2, 50) * DAY_MS
    return other


def test_a_feature_cannot_see_the_future() -> None:
    """For every snapshot instant t, changing anything at or after t — the deal's own future,
    and the outcomes of the owner's deals that closed after t — changes no feature."""
    histories = generate_histories(HistorySpec(deals=300, seed=11))
    rng = random.Random(0)
    owners = OwnerRecord.of(histories)
    workspaces = {"ws-0": 0, "ws-1": 1}
    checked = 0
    for h in histories:
        if h.outcome is None or h.created_ms is None or h.closed_ms is None:
            continue
        t = h.created_ms + rng.randint(1, max(1, (h.closed_ms - h.created_ms) // DAY_MS)) * DAY_MS
        seen = features_at(h, t, owners, workspaces)
        future = rewrite_future(h, t, rng)
        # the owner's record: every deal that closed at or after t flips its outcome
        flipped = [copy.copy(x) for x in histories]
        for x in flipped:
            if x.closed_ms is not None and x.closed_ms >= t:
                x.outcome = "lost" if x.outcome == "won" else "won"
        assert same(features_at(future, t, OwnerRecord.of(flipped), workspaces), seen)
        checked += 1
    assert checked > 200


def test_the_features_do_see_the_past() -> None:
    """The leakage test is not vacuous: the same kind of change *before* t changes features."""
    h = next(h for h in generate_histories(HistorySpec(deals=50, seed=2)) if h.outcome)
    assert h.created_ms is not None
    t = h.created_ms + 10 * DAY_MS
    owners = OwnerRecord.of([h])
    before = copy.deepcopy(h)
    before.activities.append(Activity(t - 1, "meeting", "inbound"))
    assert not same(features_at(before, t, owners, {}), features_at(h, t, owners, {}))


def test_as_of_rolls_fields_back() -> None:
    h = DealHistory(
        workspace_id="ws",
        deal_id="d",
        value=200.0,
        created_ms=0,
        outcome="won",
        closed_ms=30 * DAY_MS,
        value_changes=[(5 * DAY_MS, 100.0, 150.0), (20 * DAY_MS, 150.0, 200.0)],
        probabilities=[(0, 20.0), (15 * DAY_MS, 60.0)],
        stages=[StageSpell("lead", 0, 12 * DAY_MS), StageSpell("proposal", 12 * DAY_MS, None)],
    )
    past = as_of(h, 10 * DAY_MS)
    assert (past.value, past.probability, past.stage, past.outcome) == (150.0, 20.0, "lead", None)
    assert past.stages[-1].left_ms is None
    assert h.stages[0].left_ms == 12 * DAY_MS  # the original is untouched


def test_metrics() -> None:
    y = [0, 0, 1, 1]
    perfect = score(y, [0.0, 0.0, 1.0, 1.0])
    assert (perfect.auc, perfect.brier, perfect.ece) == (1.0, 0.0, 0.0)
    assert perfect.log_loss < 1e-5
    coin = score(y, [0.5] * 4)
    assert (coin.auc, coin.brier, round(coin.log_loss, 4)) == (0.5, 0.25, round(math.log(2), 4))
    assert ece([1, 1, 1, 1], [0.9, 0.9, 0.9, 0.9]) == pytest.approx(0.1)
    assert coverage([1, 5, 10], [0, 0, 0], [4, 6, 8]) == pytest.approx(2 / 3)


def test_reliability_points_are_the_non_empty_bins() -> None:
    points = reliability_points([0, 1, 1, 0, 1], [0.05, 0.12, 0.95, 0.91, 0.99])
    assert points == [
        {"predicted": pytest.approx(0.05), "observed": 0.0, "count": 1.0},
        {"predicted": pytest.approx(0.12), "observed": 1.0, "count": 1.0},
        {
            "predicted": pytest.approx((0.95 + 0.91 + 0.99) / 3),
            "observed": pytest.approx(2 / 3),
            "count": 3.0,
        },
    ]


def test_snapshots_are_taken_while_the_deal_was_open() -> None:
    histories = generate_histories(SMALL)
    s = snapshots(histories)
    assert len(s) > 1000
    assert len(s.X[0]) == len(FEATURES)
    assert all(at < closed for at, closed in zip(s.at_ms, s.closed_ms, strict=True))
    assert all(d > 0 for d in s.days_to_close)


def test_the_model_beats_the_rep_and_the_stage_rate_and_is_calibrated() -> None:
    result = evaluate(generate_histories(SMALL), holdout_days=150, max_iter=60)
    model, rep, stage = (result.scores[k] for k in ("model", "rep", "stage"))
    assert model.auc > rep.auc
    assert model.auc > stage.auc
    assert model.brier < rep.brier
    assert model.brier < stage.brier
    assert model.ece < 0.08
    assert result.interval_coverage is not None
    assert 0.65 < result.interval_coverage < 0.95
    again = loads(result.model.dumps())
    assert np.allclose(again.predict(result.split.holdout.X[:50]), result.predictions["model"][:50])


def test_not_enough_history_is_said() -> None:
    with pytest.raises(NotEnoughHistory, match="training snapshots"):
        evaluate(generate_histories(HistorySpec(deals=20, seed=1)), with_close=False)


@pytest.mark.parametrize(
    ("new", "current", "promote"),
    [
        ((0.80, 0.15), None, True),
        ((0.80, 0.15), (0.80, 0.16), True),
        ((0.80, 0.17), (0.80, 0.16), False),
        ((0.80, 0.16), (0.80, 0.16), False),  # equal is not better
        ((0.70, 0.15), (0.80, 0.16), False),  # better calibrated but ranks worse
    ],
)
def test_promotion_only_when_better(
    new: tuple[float, float], current: tuple[float, float] | None, promote: bool
) -> None:
    def s(auc: float, brier: float) -> Scores:
        return Scores(auc=auc, brier=brier, log_loss=0.5, ece=0.02, n=100)

    assert better(s(*new), None if current is None else s(*current)) is promote


def test_a_history_without_activities_or_probabilities_still_trains() -> None:
    """A bare CRM export: no stage history, no activities, no rep probabilities, no close
    dates (all-missing feature columns)."""
    histories = generate_histories(HistorySpec(deals=600, days=540, seed=4))
    for h in histories:
        h.stages, h.activities, h.probabilities, h.close_date_changes = [], [], [], []
        h.close_date = None
    result = evaluate(histories, holdout_days=150, max_iter=20)
    assert result.scores["model"].n == len(result.split.holdout)


def test_open_deals_are_scored_in_one_batch_with_their_top_factors() -> None:
    from consumer.intelligence.scoring import score_deals

    histories = generate_histories(SMALL)
    result = evaluate(histories, holdout_days=150, max_iter=40, with_close=False)
    model = result.model
    assert model.workspaces == {"ws-0": 0, "ws-1": 1}
    owners = OwnerRecord.of(histories)
    open_deals = [h for h in histories if h.outcome is None]
    assert open_deals
    scores = score_deals(model, 7, histories, owners)
    assert [s.deal_id for s in scores] == [h.deal_id for h in open_deals]  # closed ones skipped
    assert score_deals(model, 7, histories, owners) == scores  # deterministic
    rows = [
        features_at(h, (h.updated_ms or 0) + 1, owners, model.workspaces, model.codes)
        for h in open_deals
    ]
    assert [s.win_probability for s in scores] == pytest.approx(list(model.predict(rows)))
    # a deal in a flat stretch of the calibration map (no one feature moves it) has none
    assert sum(1 for s in scores if s.top_factors) > len(scores) / 2
    for s in scores:
        assert s.model_version == 7
        assert len(s.top_factors) <= 3
        effects = [abs(f.effect) for f in s.top_factors]
        assert effects == sorted(effects, reverse=True)
        assert {f.feature for f in s.top_factors} <= set(model.features)


def test_scores_carry_the_close_date_p10_of_the_close_model_stored_with_the_model() -> None:
    from consumer.intelligence.scoring import score_deals

    histories = generate_histories(HistorySpec(deals=600, days=400, seed=5))
    result = evaluate(histories, holdout_days=120, max_iter=20, with_close=True)
    model, close = result.model, result.close
    assert close is not None
    owners = OwnerRecord.of(histories)
    without = score_deals(model, 1, histories, owners)
    assert without
    assert {s.close_p10 for s in without} == {None}  # no close model: no close date
    old = copy.copy(model)
    del old.__dict__["close"]  # a model pickled before it had a close model
    assert {s.close_p10 for s in score_deals(loads(old.dumps()), 1, histories, owners)} == {None}
    model.close = close
    again = loads(model.dumps())  # stored and read back with it
    scores = score_deals(again, 1, histories, owners)
    assert [s.win_probability for s in scores] == [s.win_probability for s in without]
    open_deals = [h for h in histories if h.outcome is None]
    rows = [
        features_at(h, (h.updated_ms or 0) + 1, owners, model.workspaces, model.codes)
        for h in open_deals
    ]
    days = close.predict(rows)[0]
    for s, d in zip(scores, days, strict=True):
        assert s.close_p10 == (s.as_of + dt.timedelta(milliseconds=1, days=float(d))).date()
        assert s.close_p10 >= s.as_of.date()


def test_crm_attributes_are_features_encoded_on_the_training_deals_only() -> None:
    """Categorical attributes become ordinal codes fitted on the deals closed before the
    held-out period (a value seen only later is "other"), numeric ones are taken as they are;
    what the held-out and open deals carry changes neither the codes nor any training row."""
    from consumer.intelligence.evaluation import split
    from consumer.intelligence.features import OTHER, AttributeCodes

    histories = generate_histories(SMALL)
    rng = random.Random(5)
    for h in histories:
        h.attributes["seats"] = float(rng.randint(1, 500))
        h.attributes["source"] = rng.choice(["web", "referral", "event", "partner"])
    s = split(histories, 150)
    codes = s.attributes
    assert codes is not None
    assert codes.names == ("attr:segment", "attr:source", "attr:seats")
    assert sorted(codes.categorical["segment"]) == ["Enterprise", "Mid-Market", "SMB"]
    assert len(s.train.X[0]) == len(FEATURES) + 3

    later = copy.deepcopy(histories)
    for h in later:
        if h.closed_ms is None or h.closed_ms >= s.holdout_from_ms:  # held out, or still open
            h.attributes["segment"] = "Brand-new"
            h.attributes["source"] = "Brand-new"
            h.attributes["seats"] = 1e6
    s2 = split(later, 150)
    assert s2.attributes == codes
    assert len(s2.train) == len(s.train)
    assert all(same(a, b) for a, b in zip(s2.train.X, s.train.X, strict=True))
    col = len(FEATURES)
    assert {row[col] for row in s2.holdout.X} == {OTHER}  # never seen in training: other
    assert {row[col + 2] for row in s2.holdout.X} == {1e6}
    assert not all(same(a, b) for a, b in zip(s2.holdout.X, s.holdout.X, strict=True))

    # rare values share the "other" code; a text value makes an attribute categorical
    fitted = AttributeCodes.fit(
        [
            DealHistory("w", f"d{i}", attributes={"tier": "gold" if i < 10 else f"t{i}"})
            for i in range(30)
        ]
    )
    assert fitted.categorical == {"tier": {"gold": 1}}
    assert fitted.row({"tier": "gold"}) == [1.0]
    assert fitted.row({"tier": "t12"}) == [float(OTHER)]
    assert math.isnan(fitted.row({})[0])


def test_a_model_with_attributes_scores_and_explains_with_them() -> None:
    """The simulator's segment moves the true win probability: as a feature, the model uses
    it (a top factor of some scores), and a stored model scores with the codes it was fitted
    with."""
    from consumer.intelligence.scoring import score_deals

    histories = generate_histories(SMALL)
    result = evaluate(histories, holdout_days=150, max_iter=40, with_close=False)
    model = result.model
    assert model.features == (*FEATURES, "attr:segment")
    without = evaluate(histories, holdout_days=150, max_iter=40, with_close=False, attributes=False)
    assert without.model.features == FEATURES
    assert without.model.codes is None
    owners = OwnerRecord.of(histories)
    scores = score_deals(loads(model.dumps()), 1, histories, owners)
    assert any(f.feature == "attr:segment" for s in scores for f in s.top_factors)
    # a model stored before attributes were features scores with the base features only
    old = copy.copy(without.model)
    old.__dict__.pop("attributes", None)
    assert score_deals(loads(old.dumps()), 1, histories, owners) == score_deals(
        without.model, 1, histories, owners
    )
