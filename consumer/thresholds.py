"""Rule thresholds: the defaults of DESIGN.md, a rules file, and per-workspace overrides.

A rules file (YAML or JSON) looks like::

    defaults:                 # optional, overrides the built-in defaults for everyone
      stale_days: 7
    workspaces:
      ws-acme:                # only the keys given change, the rest come from defaults
        stale_days: 5
        stuck_days: {proposal: 45}

Unknown keys are rejected (a typo must not silently leave a default in force).
"""

from __future__ import annotations

from functools import cache, cached_property
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.events import Stage
from vectoros.errors import ConfigError


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PerStage(_Frozen):
    lead: float = Field(gt=0)
    qualified: float = Field(gt=0)
    proposal: float = Field(gt=0)
    negotiation: float = Field(gt=0)

    def for_stage(self, stage: Stage) -> float:
        return getattr(self, stage)  # type: ignore[no-any-return]  # Stage is a str enum


DAY_MS = 86_400_000


class Limits(NamedTuple):
    """The thresholds in the units the hot path compares (milliseconds), computed once per
    ``RuleThresholds``. ``*_after`` are the deadline offsets: the first millisecond past the
    limit, as ``rules.next_deadline`` schedules them."""

    stale: float
    stale_critical: float
    stale_after: int
    stale_critical_after: int
    high_value_inactive: float
    high_value_inactive_after: int
    stuck: dict[Stage, float]
    stuck_critical: dict[Stage, float]
    stuck_after: dict[Stage, int]
    stuck_critical_after: dict[Stage, int]
    min_probability: dict[Stage, float]


class RuleThresholds(_Frozen):
    """Every number a rule uses. Days are calendar days of 24 h on the partition clock."""

    stale_days: float = Field(default=7, gt=0)
    stale_critical_days: float = Field(default=14, gt=0)
    stuck_days: PerStage = PerStage(lead=14, qualified=21, proposal=30, negotiation=21)
    stuck_critical_factor: float = Field(default=2.0, gt=1)
    min_probability: PerStage = PerStage(lead=15, qualified=25, proposal=40, negotiation=60)
    low_probability_high_value: float = Field(default=10_000, ge=0)
    high_value: float = Field(default=10_000, ge=0)
    high_value_inactive_days: float = Field(default=5, gt=0)
    high_value_min_probability: float = Field(default=30, ge=0, le=100)
    close_pressure_days: int = Field(default=14, ge=0)
    close_pressure_max_probability: float = Field(default=70, ge=0, le=100)

    @cached_property
    def limits(self) -> Limits:
        factor = self.stuck_critical_factor
        stuck = {s: self.stuck_days.for_stage(s) * DAY_MS for s in Stage}
        critical = {s: self.stuck_days.for_stage(s) * factor * DAY_MS for s in Stage}
        return Limits(
            stale=self.stale_days * DAY_MS,
            stale_critical=self.stale_critical_days * DAY_MS,
            stale_after=int(self.stale_days * DAY_MS) + 1,
            stale_critical_after=int(self.stale_critical_days * DAY_MS) + 1,
            high_value_inactive=self.high_value_inactive_days * DAY_MS,
            high_value_inactive_after=int(self.high_value_inactive_days * DAY_MS) + 1,
            stuck=stuck,
            stuck_critical=critical,
            stuck_after={s: int(v) + 1 for s, v in stuck.items()},
            stuck_critical_after={s: int(v) + 1 for s, v in critical.items()},
            min_probability={s: self.min_probability.for_stage(s) for s in Stage},
        )

    @model_validator(mode="after")
    def _ordered(self) -> RuleThresholds:
        if self.stale_critical_days <= self.stale_days:
            raise ValueError("stale_critical_days must be greater than stale_days")
        return self


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


class RulesConfig:
    """Thresholds for every workspace: defaults plus per-workspace overrides."""

    def __init__(
        self,
        defaults: RuleThresholds | None = None,
        workspaces: dict[str, RuleThresholds] | None = None,
    ) -> None:
        self.defaults = defaults or RuleThresholds()
        self._workspaces = dict(workspaces or {})

    def for_workspace(self, workspace_id: str) -> RuleThresholds:
        return self._workspaces.get(workspace_id, self.defaults)

    @classmethod
    def from_mapping(cls, raw: dict[str, Any]) -> RulesConfig:
        unknown = set(raw) - {"defaults", "workspaces"}
        if unknown:
            raise ConfigError(f"rules: unknown top-level keys {sorted(unknown)}")
        try:
            base = _merge(RuleThresholds().model_dump(), raw.get("defaults") or {})
            defaults = RuleThresholds.model_validate(base)
            workspaces = {
                str(ws): RuleThresholds.model_validate(_merge(base, over or {}))
                for ws, over in (raw.get("workspaces") or {}).items()
            }
        except ValidationError as exc:
            raise ConfigError(f"rules: {exc}") from exc
        return cls(defaults, workspaces)

    @classmethod
    def load(cls, path: Path | None) -> RulesConfig:
        """Read a rules file; ``None`` gives the built-in defaults."""
        if path is None:
            return cls()
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"rules file {path}: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"rules file {path}: expected a mapping at the top level")
        return cls.from_mapping(raw)


@cache
def default_thresholds() -> RuleThresholds:
    return RuleThresholds()
