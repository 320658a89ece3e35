"""Revenue forecasts: one period's Monte Carlo forecast of a workspace (or one owner of it) as
known at an as-of time, on ``deal-forecasts`` (keyed by ``workspace_id``) and in PostgreSQL's
``forecasts`` (one row per workspace, scope, period and as-of). Schema version 1.

Published by ``vectoros forecast run`` after the row is stored. The same forecast again (same
workspace, scope, period and as-of) replaces the row; on the topic the latest record of that
identity is the current one.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

Id = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Money = Annotated[float, Field(allow_inf_nan=False)]
Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


class ForecastGapCloser(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    deal_id: Id
    value: Money
    probability: Share = Field(description="Its probability of winning used by the forecast.")
    p_reach_if_won: Share = Field(
        description="The probability of reaching the target if it is won inside the period."
    )
    lift: float = Field(
        ge=-1, le=1, allow_inf_nan=False, description="p_reach_if_won - p_reach_target."
    )


class DealForecast(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    type: Literal["deal.forecast"] = "deal.forecast"
    workspace_id: Id = Field(description="Also the Kafka message key.")
    scope: Annotated[str, StringConstraints(pattern=r"^(workspace|owner:.*)$", max_length=210)] = (
        Field(description="`workspace`, or `owner:<owner id>` for one owner's deals.")
    )
    period: Annotated[str, StringConstraints(pattern=r"^[0-9]{4}-(Q[1-4]|[0-9]{2})$")] = Field(
        description="`2026-Q1` or `2026-12`."
    )
    period_start: AwareDatetime
    period_end: AwareDatetime = Field(description="Exclusive.")
    as_of: AwareDatetime = Field(description="Only what was known before this time was used.")
    simulations: int = Field(ge=1)
    seed: int | None = None
    open_deals: int = Field(ge=0)
    won: Money = Field(description="Already won in the period before the as-of time.")
    p10: Money
    p50: Money
    p90: Money
    expected: Money
    weighted_pipeline: Money
    commit: Money
    best_case: Money
    pipeline: Money
    target: Money | None = None
    coverage: Money | None = None
    gap: Money | None = Field(default=None, description="target - P50.")
    p_reach_target: Share | None = None
    probabilities: str = Field(
        default="rep",
        max_length=50,
        description="Whose probabilities of winning: `rep`, or `model v<N>` (the current "
        "model's scores of the open deals it scored).",
    )
    gap_closers: list[ForecastGapCloser] = Field(
        default_factory=list,
        max_length=50,
        description="With a target: the open deals whose win raises p_reach_target most.",
    )
