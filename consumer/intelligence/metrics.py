"""How a probability and an interval are judged: AUC, Brier, log loss, calibration error,
reliability bins, interval coverage."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.metrics import roc_auc_score

EPS = 1e-6


@dataclass(frozen=True)
class Scores:
    auc: float
    brier: float
    log_loss: float
    ece: float
    n: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def reliability(
    y: ArrayLike, p: ArrayLike, bins: int = 10
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """Per equal-width bin of predicted probability: mean prediction, observed rate, count."""
    yv, pv = np.asarray(y, dtype=float), np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    which = np.minimum((pv * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins)
    mean_p = np.bincount(which, weights=pv, minlength=bins) / np.maximum(count, 1)
    rate = np.bincount(which, weights=yv, minlength=bins) / np.maximum(count, 1)
    return mean_p, rate, count


def reliability_points(y: ArrayLike, p: ArrayLike, bins: int = 10) -> list[dict[str, float]]:
    """The reliability diagram as data (stored with a model, drawn by the dashboard): per
    non-empty bin, the mean prediction, the observed rate and the number of deals."""
    mean_p, rate, count = reliability(y, p, bins)
    return [
        {"predicted": float(m), "observed": float(r), "count": float(c)}
        for m, r, c in zip(mean_p, rate, count, strict=True)
        if c > 0
    ]


def ece(y: ArrayLike, p: ArrayLike, bins: int = 10) -> float:
    """Expected calibration error: the count-weighted gap between prediction and outcome."""
    mean_p, rate, count = reliability(y, p, bins)
    return float(np.sum(count * np.abs(mean_p - rate)) / max(int(count.sum()), 1))


def score(y: ArrayLike, p: ArrayLike) -> Scores:
    yv = np.asarray(y, dtype=float)
    pv = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    safe = np.clip(pv, EPS, 1 - EPS)
    auc = float(roc_auc_score(yv, pv)) if 0 < yv.sum() < len(yv) else float("nan")
    return Scores(
        auc=auc,
        brier=float(np.mean((pv - yv) ** 2)),
        log_loss=float(-np.mean(yv * np.log(safe) + (1 - yv) * np.log(1 - safe))),
        ece=ece(yv, pv),
        n=len(yv),
    )


def coverage(y: ArrayLike, lo: ArrayLike, hi: ArrayLike) -> float:
    """Share of actual values inside ``[lo, hi]``."""
    yv = np.asarray(y, dtype=float)
    return float(np.mean((yv >= np.asarray(lo)) & (yv <= np.asarray(hi))))
