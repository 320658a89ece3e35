"""The win-probability and close-date models, fitted on point-in-time snapshots.

Win probability: a gradient-boosted tree classifier (scikit-learn's
``HistGradientBoostingClassifier``, stage and workspace as categorical features, missing values
native) fitted on the earlier 75% of the training period, then calibrated with isotonic
regression on the later 25% (a held-out calibration split in time, so calibration is learned
on snapshots the trees never saw). Close date: three quantile regressors (P10/P50/P90) of
log days-to-close, the P10-P90 interval then widened or narrowed by split-conformal calibration
on the same later split so that it holds 80% of actual close dates.

Deterministic for a given input (fixed random state). No I/O.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.isotonic import IsotonicRegression
from threadpoolctl import threadpool_limits

from consumer.intelligence.features import (
    CATEGORICAL,
    FEATURES,
    AttributeCodes,
    Snapshots,
    feature_names,
)

THREADS = 1
"""OpenMP threads of the tree fitting and prediction. One: on a small machine shared with other
work, OpenMP's spinning threads make a fit a hundred times slower, not faster."""
CALIBRATION_SHARE = 0.25
COVERAGE = 0.8
SEED = 0


def _matrix(rows: list[list[float]], width: int = len(FEATURES)) -> NDArray[np.float64]:
    return np.asarray(rows, dtype=float).reshape(len(rows), width)


def _fit_matrix(rows: list[list[float]], width: int = len(FEATURES)) -> NDArray[np.float64]:
    """The training matrix; a column with no value at all (an export without probabilities)
    becomes 0, which the trees then ignore (scikit-learn cannot bin an all-missing column)."""
    x = _matrix(rows, width)
    x[:, np.all(np.isnan(x), axis=0)] = 0.0
    return x


def _categorical(attributes: AttributeCodes | None = None) -> list[bool]:
    extra = [] if attributes is None else attributes.categorical_mask
    return [name in CATEGORICAL for name in FEATURES] + extra


def _time_split(s: Snapshots) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """(fit, calibrate) masks: the later ``CALIBRATION_SHARE`` of snapshot times calibrates."""
    at = np.asarray(s.at_ms)
    cut = np.quantile(at, 1 - CALIBRATION_SHARE)
    return at < cut, at >= cut


@dataclass
class WinModel:
    trees: HistGradientBoostingClassifier
    calibration: IsotonicRegression
    features: tuple[str, ...] = FEATURES
    workspaces: dict[str, int] = field(default_factory=dict)
    """The workspace feature's codes it was trained with (score with the same)."""
    close: CloseModel | None = None
    """The close-date model trained with it (``vectoros train``), for each score's P10; ``None``
    in models stored before it was (their scores have no close date)."""
    attributes: AttributeCodes | None = None
    """The CRM attributes among its features, as encoded in training (``None``: none, and in
    models stored before attributes were features; ``codes`` reads both)."""

    @property
    def codes(self) -> AttributeCodes | None:
        return getattr(self, "attributes", None)  # None in a model pickled before it had them

    def predict(self, rows: list[list[float]]) -> NDArray[np.float64]:
        """Calibrated probabilities of winning, one per row (batch: one call for all rows)."""
        if not rows:
            return np.zeros(0)
        return self._predict(_matrix(rows, len(self.features)))

    def _predict(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        with threadpool_limits(limits=THREADS, user_api="openmp"):
            raw = self.trees.predict_proba(x)[:, 1]
        return np.asarray(self.calibration.predict(raw), dtype=float)

    def explain(
        self, rows: list[list[float]], top: int = 3
    ) -> tuple[NDArray[np.float64], list[list[tuple[str, float]]]]:
        """Probabilities and each row's ``top`` factors: how much the probability moves when
        the feature is taken away (treated as unknown, as the trees treat a missing value),
        signed, largest first; none when no single feature moves it (a flat stretch of the
        calibration map). One prediction call for every row and feature."""
        if not rows:
            return np.zeros(0), []
        x = _matrix(rows, len(self.features))
        n, f = x.shape
        variants = np.repeat(x[np.newaxis, :, :], f + 1, axis=0)  # (f + 1, n, f)
        for j in range(f):
            variants[j + 1, :, j] = np.nan
        p = self._predict(variants.reshape(-1, f)).reshape(f + 1, n)
        effect = p[0][np.newaxis, :] - p[1:]  # (f, n): what each feature adds
        factors = []
        for i in range(n):
            order = np.argsort(-np.abs(effect[:, i]), kind="stable")[:top]
            factors.append(
                [(self.features[j], round(float(effect[j, i]), 4)) for j in order if effect[j, i]]
            )
        return p[0], factors

    def dumps(self) -> bytes:
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)


@dataclass
class CloseModel:
    p10: HistGradientBoostingRegressor
    p50: HistGradientBoostingRegressor
    p90: HistGradientBoostingRegressor
    widen: float = 0.0  # added to both ends of the P10-P90 interval (log days), conformal
    features: tuple[str, ...] = field(default=FEATURES)

    def predict(
        self, rows: list[list[float]]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """Days to close at P10, P50, P90 for each row."""
        m = _matrix(rows, len(self.features))
        with threadpool_limits(limits=THREADS, user_api="openmp"):
            lo = self.p10.predict(m) - self.widen
            mid = self.p50.predict(m)
            hi = self.p90.predict(m) + self.widen
        lo, hi = np.minimum(lo, mid), np.maximum(hi, mid)
        return (np.expm1(np.maximum(lo, 0)), np.expm1(np.maximum(mid, 0)), np.expm1(hi))


def loads(blob: bytes) -> WinModel:
    """A model stored by ``WinModel.dumps`` (only ever read from our own database)."""
    model = pickle.loads(blob)  # noqa: S301 (our own model table, never user input)
    if not isinstance(model, WinModel):
        raise TypeError("not a win model")
    return model


def fit_win(
    train: Snapshots, max_iter: int = 200, workspaces: dict[str, int] | None = None
) -> WinModel:
    """Trees on the earlier part of ``train``, isotonic calibration on the later part; with the
    CRM attributes the snapshots carry (``train.attributes``)."""
    attributes = train.attributes
    names = feature_names(attributes)
    x, y = _fit_matrix(train.X, len(names)), np.asarray(train.won)
    fit, cal = _time_split(train)
    trees = HistGradientBoostingClassifier(
        max_iter=max_iter,
        learning_rate=0.06,
        max_leaf_nodes=31,
        min_samples_leaf=40,
        l2_regularization=1.0,
        categorical_features=_categorical(attributes),
        early_stopping=False,
        random_state=SEED,
    )
    with threadpool_limits(limits=THREADS, user_api="openmp"):
        trees.fit(x[fit], y[fit])
        raw = trees.predict_proba(x[cal])[:, 1]
    calibration = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
    calibration.fit(raw, y[cal])
    return WinModel(
        trees, calibration, names, workspaces=dict(workspaces or {}), attributes=attributes
    )


def fit_close(train: Snapshots, max_iter: int = 150) -> CloseModel:
    """Quantile trees of log days-to-close; the interval calibrated to ``COVERAGE``."""
    attributes = train.attributes
    names = feature_names(attributes)
    x, y = _fit_matrix(train.X, len(names)), np.log1p(np.asarray(train.days_to_close))
    fit, cal = _time_split(train)

    def quantile(q: float) -> HistGradientBoostingRegressor:
        model = HistGradientBoostingRegressor(
            loss="quantile",
            quantile=q,
            max_iter=max_iter,
            learning_rate=0.08,
            min_samples_leaf=40,
            categorical_features=_categorical(attributes),
            early_stopping=False,
            random_state=SEED,
        )
        return model.fit(x[fit], y[fit])

    with threadpool_limits(limits=THREADS, user_api="openmp"):
        lo, mid, hi = quantile(0.1), quantile(0.5), quantile(0.9)
        # split-conformal (CQR): how far outside [lo, hi] the calibration split's closes fall
        errors = np.maximum(lo.predict(x[cal]) - y[cal], y[cal] - hi.predict(x[cal]))
    n = len(errors)
    level = min(1.0, math.ceil((n + 1) * COVERAGE) / max(n, 1))
    widen = float(np.quantile(errors, level)) if n else 0.0
    return CloseModel(lo, mid, hi, widen, names)


def stage_win_rates(train: Snapshots) -> dict[int, float]:
    """The historical win rate of the snapshots in each stage (the baseline)."""
    stage_col = FEATURES.index("stage")
    totals: dict[int, list[int]] = {}
    for row, won in zip(train.X, train.won, strict=True):
        t = totals.setdefault(int(row[stage_col]), [0, 0])
        t[0] += won
        t[1] += 1
    return {s: (w + 1) / (n + 2) for s, (w, n) in totals.items()}


def stage_baseline(rates: dict[int, float], rows: list[list[float]]) -> NDArray[np.float64]:
    stage_col = FEATURES.index("stage")
    overall = float(np.mean(list(rates.values()))) if rates else 0.5
    return np.asarray([rates.get(int(row[stage_col]), overall) for row in rows], dtype=float)


def rep_baseline(rates: dict[int, float], rows: list[list[float]]) -> NDArray[np.float64]:
    """The rep's probability as of the snapshot; the stage's rate where none was entered."""
    col = FEATURES.index("rep_probability")
    fallback = stage_baseline(rates, rows)
    rep = np.asarray([row[col] for row in rows], dtype=float) / 100.0
    return np.where(np.isnan(rep), fallback, rep)
