"""What ``vectoros evaluate`` prints and draws: the metrics table side by side for the model,
the rep's probability and the stage win rate, and the reliability diagram (PNG)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt

from consumer.intelligence.evaluation import Evaluation
from consumer.intelligence.metrics import reliability

LABELS = {
    "model": "model (calibrated trees)",
    "rep": "rep's probability",
    "stage": "stage win rate",
}


def _day(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).date().isoformat()


def table(ev: Evaluation) -> str:
    s = ev.split
    lines = [
        f"trained on {len(s.train)} snapshots before {_day(s.holdout_from_ms)}; held out "
        f"{len(s.holdout)} snapshots from {_day(s.holdout_from_ms)} to {_day(s.data_until_ms)} "
        f"({s.closed_deals} closed deals in all)",
        "",
        f"{'win probability':<26} {'AUC':>6} {'Brier':>7} {'log loss':>9} {'ECE':>6}",
    ]
    for key, label in LABELS.items():
        m = ev.scores[key]
        lines.append(f"{label:<26} {m.auc:>6.3f} {m.brier:>7.4f} {m.log_loss:>9.4f} {m.ece:>6.3f}")
    if ev.interval_coverage is not None:
        lines += [
            "",
            f"close date: P10-P90 interval holds {ev.interval_coverage:.1%} of actual close "
            f"dates (target 80% ± 5%); median error of P50 {ev.median_abs_error_days:.1f} days",
        ]
    return "\n".join(lines)


def reliability_png(ev: Evaluation, path: Path, bins: int = 10) -> None:
    """Predicted probability against the observed win rate per bin, for all three."""
    y = ev.split.holdout.won
    fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfectly calibrated")
    for key, label in LABELS.items():
        mean_p, rate, count = reliability(y, ev.predictions[key], bins)
        used = count > 0
        ece = ev.scores[key].ece
        ax.plot(mean_p[used], rate[used], marker="o", label=f"{label} (ECE {ece:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted probability of winning")
    ax.set_ylabel("observed win rate")
    ax.set_title(f"Reliability on {len(y)} held-out snapshots")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
