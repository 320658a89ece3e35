"""Results and the table: median of the runs with min and max, the target and whether it is met."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass
class Metric:
    """One row of the table: a value per run."""

    scenario: str
    name: str
    unit: str
    values: list[float] = field(default_factory=list)
    target: float | None = None
    higher_is_better: bool = True
    exact: bool = False  # the target must be met exactly
    target_text: str = ""
    notes: list[str] = field(default_factory=list)
    digits: int = 0

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def verdict(self) -> str:
        if self.target is None or not self.values:
            return ""
        if self.exact:
            ok = all(v == self.target for v in self.values)
        elif self.higher_is_better:
            ok = self.median >= self.target
        else:
            ok = self.median <= self.target
        return "yes" if ok else "NO"

    def fmt(self, value: float) -> str:
        if value != value:  # NaN
            return "-"
        if abs(value) >= 1000 and self.digits == 0:
            return f"{value:,.0f}"
        return f"{value:,.{self.digits}f}"


Formatter = Callable[[Sequence[str]], str]


def _rows(metrics: Sequence[Metric]) -> list[list[str]]:
    rows = []
    for m in metrics:
        rows.append(
            [
                m.scenario,
                f"{m.name} ({m.unit})" if m.unit else m.name,
                m.fmt(m.median),
                m.fmt(min(m.values)) if m.values else "-",
                m.fmt(max(m.values)) if m.values else "-",
                str(len(m.values)),
                m.target_text,
                m.verdict,
            ]
        )
    return rows


HEADER = ["scenario", "metric", "median", "min", "max", "runs", "target", "met"]


def text_table(metrics: Sequence[Metric]) -> str:
    rows = [HEADER, *_rows(metrics)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    right = {2, 3, 4, 5}
    lines = []
    for n, row in enumerate(rows):
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(metrics: Sequence[Metric]) -> str:
    lines = [
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * 4 + ["---"] * 2) + "|",
    ]
    lines += [
        "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in _rows(metrics)
    ]
    return "\n".join(lines)


def notes(metrics: Sequence[Metric]) -> list[str]:
    out: list[str] = []
    for m in metrics:
        out.extend(f"{m.scenario}: {n}" for n in m.notes)
    return out
