"""The fan chart (PNG): one period's forecast over as-of dates, P10-P90 band and P50, beside the
weighted pipeline, with the target and what was won when known."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter

from consumer.forecast.backtest import Row


def fan_png(
    rows: Sequence[Row],
    path: Path,
    *,
    target: float | None = None,
    actual_label: str | None = "actual (won in the period)",
) -> None:
    """Write the chart of ``rows`` (one workspace, one period, as-of dates in order) to
    ``path``. ``actual_label`` None: the period is not over, no actual line."""
    if not rows:
        raise ValueError("no forecast to draw")
    x = [(r.as_of - rows[0].as_of).total_seconds() / 86_400 for r in rows]  # days
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    ax.fill_between(x, [r.p10 for r in rows], [r.p90 for r in rows], alpha=0.25, label="P10-P90")
    ax.plot(x, [r.p50 for r in rows], marker="o", linewidth=2, label="P50 (Monte Carlo)")
    ax.plot(
        x,
        [r.weighted_pipeline for r in rows],
        linestyle="--",
        marker=".",
        label="weighted pipeline (rep)",
    )
    if actual_label is not None:
        ax.axhline(rows[0].actual, color="black", linewidth=1.5, label=actual_label)
    if target is not None:
        ax.axhline(target, color="red", linestyle=":", linewidth=1.5, label="target")
    sources = sorted({r.probabilities for r in rows})
    ax.set_title(
        f"{rows[0].workspace_id}: forecast of {rows[0].period} by as-of date "
        f"({' / '.join(sources)} probabilities)"
    )
    ax.set_xlabel("as of")
    ax.set_ylabel("period revenue")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ticks = list(range(0, len(rows), max(1, -(-len(rows) // 8))))  # at most 8 labels
    ax.set_xticks([x[i] for i in ticks], [rows[i].as_of.date().isoformat() for i in ticks])
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
