"""Train on one period of history, judge on the later one: the model against the rep's
probability and the historical stage win rate, and the close-date interval's coverage.

The held-out period is the last ``holdout_days`` before the end of the data (the latest time in
the history, never the wall clock). Training uses the snapshots taken before it *of deals that
had closed before it* (their outcome was known then); the held-out snapshots are those taken
in it, of deals closed by the end of the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from consumer.intelligence.features import (
    AttributeCodes,
    OwnerRecord,
    Snapshots,
    snapshots,
    workspace_codes,
)
from consumer.intelligence.metrics import Scores, coverage, score
from consumer.intelligence.model import (
    CloseModel,
    WinModel,
    fit_close,
    fit_win,
    rep_baseline,
    stage_baseline,
    stage_win_rates,
)
from consumer.intelligence.projection import DAY_MS, DealHistory

MIN_TRAIN = 200
MIN_HOLDOUT = 50


class NotEnoughHistory(ValueError):
    """Too few closed deals before or in the held-out period to train or judge a model."""


@dataclass
class Split:
    train: Snapshots
    holdout: Snapshots
    holdout_from_ms: int
    data_until_ms: int
    closed_deals: int
    workspaces: dict[str, int]
    attributes: AttributeCodes | None = None


def split(
    histories: Sequence[DealHistory], holdout_days: float, *, attributes: bool = True
) -> Split:
    ends = [h.closed_ms or h.updated_ms or h.created_ms or 0 for h in histories]
    if not ends:
        raise NotEnoughHistory("the history is empty")
    until = max(ends)
    cutoff = until - int(holdout_days * DAY_MS)
    workspaces = workspace_codes(histories)
    # the CRM attributes' codes from the deals closed before the held-out period only
    codes = (
        AttributeCodes.fit(h for h in histories if h.closed_ms is not None and h.closed_ms < cutoff)
        if attributes
        else None
    )
    if codes is not None and not codes.names:
        codes = None
    snaps = snapshots(
        histories, workspaces=workspaces, owners=OwnerRecord.of(histories), attributes=codes
    )
    at, closed = np.asarray(snaps.at_ms), np.asarray(snaps.closed_ms)
    train = snaps.select(list((at < cutoff) & (closed < cutoff)))
    holdout = snaps.select(list(at >= cutoff))
    closed_deals = sum(1 for h in histories if h.outcome is not None)
    if len(train) < MIN_TRAIN or len(set(train.won)) < 2:
        raise NotEnoughHistory(
            f"{len(train)} training snapshots before the held-out period (need {MIN_TRAIN}, "
            f"won and lost); {closed_deals} closed deals in all"
        )
    if len(holdout) < MIN_HOLDOUT or len(set(holdout.won)) < 2:
        raise NotEnoughHistory(
            f"{len(holdout)} snapshots in the last {holdout_days:g} days (need {MIN_HOLDOUT}, "
            "won and lost); use a longer --holdout-days"
        )
    return Split(train, holdout, cutoff, until, closed_deals, workspaces, codes)


@dataclass
class Evaluation:
    split: Split
    model: WinModel
    scores: dict[str, Scores]  # "model", "rep", "stage"
    predictions: dict[str, NDArray[np.float64]]
    close: CloseModel | None = None
    interval_coverage: float | None = None
    median_abs_error_days: float | None = None


def evaluate(
    histories: Sequence[DealHistory],
    holdout_days: float = 180,
    *,
    with_close: bool = True,
    max_iter: int = 200,
    attributes: bool = True,
) -> Evaluation:
    """``attributes``: the deals' CRM attributes among the features (``AttributeCodes``)."""
    s = split(histories, holdout_days, attributes=attributes)
    model = fit_win(s.train, max_iter=max_iter, workspaces=s.workspaces)
    rates = stage_win_rates(s.train)
    predictions = {
        "model": model.predict(s.holdout.X),
        "rep": rep_baseline(rates, s.holdout.X),
        "stage": stage_baseline(rates, s.holdout.X),
    }
    scores = {name: score(s.holdout.won, p) for name, p in predictions.items()}
    result = Evaluation(s, model, scores, predictions)
    if with_close:
        close = fit_close(s.train, max_iter=max(50, max_iter // 2))
        lo, mid, hi = close.predict(s.holdout.X)
        actual = np.asarray(s.holdout.days_to_close)
        result.close = close
        result.interval_coverage = coverage(actual, lo, hi)
        result.median_abs_error_days = float(np.median(np.abs(mid - actual)))
    return result


def better(new: Scores, current: Scores | None) -> bool:
    """Promote ``new`` over ``current`` (both on the same held-out snapshots): a lower Brier
    score without a worse ranking (AUC at most 0.005 lower)."""
    if current is None:
        return True
    return new.brier < current.brier and not new.auc < current.auc - 0.005
