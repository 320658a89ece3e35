"""Learned stage benchmarks into the rules' thresholds (pure).

``with_benchmarks(config, benchmarks)`` is the rules configuration the monitor should use: every
workspace with benchmarks gets its thresholds (the rules file's, defaults included) with
``stuck_learned`` set from them; ``stuck_in_stage`` then uses the learned quantile of each stage
that has enough deals. Workspaces without benchmarks keep what they had.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from consumer.thresholds import RulesConfig, RuleThresholds
from schemas.events import Stage

SQL = """
SELECT workspace_id, stage, samples, p50_days, p75_days, p90_days
FROM stage_benchmarks
WHERE ($1::text IS NULL OR workspace_id = $1)
ORDER BY workspace_id, stage
"""
"""The benchmarks as of the history service's last refresh (parameter: a workspace or NULL)."""

_STAGES = {s.value for s in Stage}


@dataclass(frozen=True, slots=True)
class Benchmark:
    workspace_id: str
    stage: str
    deals: int
    p50: float
    p75: float
    p90: float

    @classmethod
    def of_row(cls, row: Mapping[str, Any]) -> Benchmark:
        return cls(
            row["workspace_id"],
            row["stage"],
            int(row["samples"]),
            float(row["p50_days"]),
            float(row["p75_days"]),
            float(row["p90_days"]),
        )


def with_benchmarks(config: RulesConfig, benchmarks: Iterable[Benchmark]) -> RulesConfig:
    """``config`` with each workspace's learned stage benchmarks (see the module doc)."""
    learned: dict[str, dict[str, dict[str, float | int]]] = {}
    for b in benchmarks:
        if b.stage not in _STAGES or min(b.p50, b.p75, b.p90) <= 0:
            continue  # an unknown stage, or a stage left at once (a zero-day norm means nothing)
        learned.setdefault(b.workspace_id, {})[b.stage] = {
            "p50": b.p50,
            "p75": b.p75,
            "p90": b.p90,
            "deals": b.deals,
        }
    workspaces = config.workspaces
    for ws, stages in learned.items():
        values = config.for_workspace(ws).model_dump()
        values["stuck_learned"] = stages
        workspaces[ws] = RuleThresholds(**values)
    return RulesConfig(config.defaults, workspaces)
