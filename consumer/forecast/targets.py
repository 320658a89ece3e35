"""Revenue targets per workspace, owner and period, from a YAML file (pure: the text is passed
in)::

    acme:
      2026-Q1: 2500000        # the workspace's target for the quarter
      2026-03: 900000
      owners:
        rep-1: {2026-Q1: 1200000}
    beta:
      2026-Q1: 400000
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from consumer.forecast.pipeline import PeriodSpec


@dataclass(frozen=True)
class Targets:
    workspaces: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """workspace -> period name -> target."""
    owners: Mapping[str, Mapping[str, Mapping[str, float]]] = field(default_factory=dict)
    """workspace -> owner id -> period name -> target."""

    def of(self, workspace: str, period: str, owner: str | None = None) -> float | None:
        if owner is None:
            return self.workspaces.get(workspace, {}).get(period)
        return self.owners.get(workspace, {}).get(owner, {}).get(period)


def _periods(raw: Any, where: str) -> dict[str, float]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected period: target pairs")
    out = {}
    for key, value in raw.items():
        try:
            name = PeriodSpec.parse(str(key)).name
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"{where}.{key}: the target must be a number >= 0, not {value!r}")
        out[name] = float(value)
    return out


def parse_targets(text: str) -> Targets:
    """The targets of a YAML text; ``ValueError`` says where it is wrong."""
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"not YAML: {exc}") from None
    if not isinstance(raw, Mapping):
        raise ValueError("expected workspace: {period: target, owners: {...}}")
    workspaces: dict[str, dict[str, float]] = {}
    owners: dict[str, dict[str, dict[str, float]]] = {}
    for ws, body in raw.items():
        if not isinstance(body, Mapping):
            raise ValueError(f"{ws}: expected period: target pairs and owners")
        periods = {k: v for k, v in body.items() if k != "owners"}
        workspaces[str(ws)] = _periods(periods, str(ws))
        per_owner = body.get("owners") or {}
        if not isinstance(per_owner, Mapping):
            raise ValueError(f"{ws}.owners: expected owner: {{period: target}}")
        owners[str(ws)] = {str(o): _periods(p, f"{ws}.owners.{o}") for o, p in per_owner.items()}
    return Targets(workspaces, owners)
