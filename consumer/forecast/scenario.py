"""Scenarios: what-if changes to the pipeline as known at the as-of time (pure).

A scenario file (YAML) lists changes, applied in this order to the open deals of the baseline:

```yaml
set:            # a deal won inside the period (its value counts as won) or lost (gone)
  - {deal: d-17, outcome: won}
  - {deal: d-42, outcome: lost}
slip:           # every open deal in the stage closes N days later (negative: earlier)
  - {stage: proposal, days: 30}
scale:          # every open deal in the stage: win probability x factor (capped at 1)
  - {stage: negotiation, factor: 0.8}
new_pipeline:   # deals created from the as-of time to the period end, at the historical rate
  lookback_days: 365   # default: the baseline's window (pipeline.LOOKBACK_DAYS)
  rate: 1.0     # a multiple of the historical creation rate
```

Nothing else moves: a slip changes only the close-date distributions of the deals in that stage,
a scale only their win probability (the one the simulation and the weighted pipeline use; the
rep's probability, which places a deal in commit or best case, is the rep's call and stays), a
set only that deal. New pipeline: the deals created per day in the ``lookback_days`` before the
as-of time x ``rate`` x the days left to the period end gives ``k`` new deals (rounded), spread
evenly over those days, each at the window's mean value, its win rate (won / closed) and its
median creation-to-win cycle as the P50 of the close date (the pipeline's usual spread).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from consumer.forecast.pipeline import LOOKBACK_DAYS, CreationRates, close_spread
from consumer.forecast.simulate import OpenDeals, Period

Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
NEW_DEAL_PREFIX = "new-"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SetOutcome(_Strict):
    deal: Name
    outcome: Literal["won", "lost"]


class Slip(_Strict):
    stage: Name
    days: float = Field(allow_inf_nan=False)


class Scale(_Strict):
    stage: Name
    factor: float = Field(ge=0, allow_inf_nan=False)


class NewPipeline(_Strict):
    lookback_days: float = Field(default=LOOKBACK_DAYS, gt=0, le=3650)
    rate: float = Field(default=1.0, ge=0, le=100, allow_inf_nan=False)


class Scenario(_Strict):
    name: str | None = None
    set: tuple[SetOutcome, ...] = ()
    slip: tuple[Slip, ...] = ()
    scale: tuple[Scale, ...] = ()
    new_pipeline: NewPipeline | None = None

    @classmethod
    def from_yaml(cls, text: str) -> Scenario:
        """Parse and validate a scenario file's text; ``ValueError`` says what is wrong."""
        try:
            data: Any = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"not YAML: {exc}") from None
        try:
            return cls.model_validate(data or {})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'scenario'}: {e['msg']}" for e in exc.errors()
            )
            raise ValueError(problems) from None


@dataclass(frozen=True)
class Applied:
    deals: OpenDeals
    won: float
    changes: tuple[str, ...]
    """One line per change: what it did and to how many deals."""


def apply(
    scenario: Scenario,
    deals: OpenDeals,
    won: float,
    period: Period,
    rates: CreationRates | None = None,
    *,
    only_open: bool = False,
) -> Applied:
    """The open deals and the won revenue under ``scenario``. ``rates`` are needed for
    ``new_pipeline``. A ``set`` of a deal that is not open raises ``ValueError``, or is
    skipped with ``only_open`` (a scenario over several workspaces: the deal is in another)."""
    changes: list[str] = []
    keep = np.ones(len(deals), dtype=bool)
    index = {d: i for i, d in enumerate(deals.ids)}
    for s in scenario.set:
        i = index.get(s.deal)
        if i is None and only_open:
            continue
        if i is None or not keep[i]:
            raise ValueError(f"deal {s.deal!r} is not open at the as-of time")
        keep[i] = False
        if s.outcome == "won":
            won += float(deals.value[i])
        changes.append(f"{s.deal} {s.outcome}")
    deals = deals.select(keep)
    stages = np.asarray(deals.stages if deals.stages else ("",) * len(deals), dtype=object)
    p10, p50, p90 = deals.close_p10.copy(), deals.close_p50.copy(), deals.close_p90.copy()
    probability = deals.probability.copy()
    for slip in scenario.slip:
        hit = stages == slip.stage
        for days in (p10, p50, p90):
            days[hit] = np.maximum(days[hit] + slip.days, 0.0)
        changes.append(f"slip {slip.stage} {slip.days:+g} days: {int(hit.sum())} deals")
    for scale in scenario.scale:
        hit = stages == scale.stage
        probability[hit] = np.minimum(probability[hit] * scale.factor, 1.0)
        changes.append(f"scale {scale.stage} x{scale.factor:g}: {int(hit.sum())} deals")
    out = OpenDeals(
        deals.ids,
        deals.value,
        probability,
        deals.rep_probability,
        p10,
        p50,
        p90,
        deals.owners,
        deals.stages,
    )
    if scenario.new_pipeline is not None:
        if rates is None:
            raise ValueError("new_pipeline needs the historical creation rates")
        out = _with_new_pipeline(out, scenario.new_pipeline, rates, period)
        added = sum(1 for d in out.ids if d.startswith(NEW_DEAL_PREFIX))
        changes.append(
            f"new pipeline x{scenario.new_pipeline.rate:g}: {added} deals of "
            f"{rates.mean_value:,.0f} at {rates.win_rate:.0%}, {rates.cycle_days:.0f}-day cycle"
        )
    return Applied(out, won, tuple(changes))


def _with_new_pipeline(
    deals: OpenDeals, spec: NewPipeline, rates: CreationRates, period: Period
) -> OpenDeals:
    days_left = max(0.0, period.end)
    k = round(rates.per_day * spec.rate * days_left)
    if k <= 0:
        return deals
    created = (np.arange(k) + 0.5) * days_left / k
    lo, hi = close_spread(rates.cycle_days)
    n = len(deals)
    return OpenDeals(
        deals.ids + tuple(f"{NEW_DEAL_PREFIX}{j + 1}" for j in range(k)),
        np.concatenate([deals.value, np.full(k, rates.mean_value)]),
        np.concatenate([deals.probability, np.full(k, rates.win_rate)]),
        np.concatenate([deals.rep_probability, np.full(k, rates.win_rate)]),
        np.concatenate([deals.close_p10, created + lo]),
        np.concatenate([deals.close_p50, created + rates.cycle_days]),
        np.concatenate([deals.close_p90, created + hi]),
        deals.owners + ("",) * k if deals.owners else (),
        (deals.stages if deals.stages else ("",) * n) + ("",) * k,
    )
