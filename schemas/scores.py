"""Deal scores: the model's current view of an open deal, on ``deal-scores`` (keyed by
``deal_id``) and in PostgreSQL's ``deal_scores``. Schema version 1.

Written by the history service when an event changes a deal, with the current model
(``win_models``). ``as_of`` is the time of the deal's latest event the score reflects, so a
replay gives the same score for the same model version.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

Id = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class TopFactor(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    feature: str = Field(description="A feature name (docs/intelligence.md lists them).")
    effect: float = Field(
        description="How much the feature moves the probability (signed, 0-1 scale)."
    )


class DealScore(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    type: Literal["deal.scored"] = "deal.scored"
    workspace_id: Id
    deal_id: Id = Field(description="Also the Kafka message key.")
    as_of: AwareDatetime = Field(description="The deal's latest event that the score reflects.")
    model_version: int = Field(ge=1, description="win_models.version")
    win_probability: float = Field(ge=0, le=1, allow_inf_nan=False)
    rep_probability: float | None = Field(default=None, ge=0, le=100, allow_inf_nan=False)
    stage: str | None = None
    top_factors: list[TopFactor] = Field(default_factory=list, max_length=10)
    close_p10: dt.date | None = Field(
        default=None, description="The model's 10th-percentile close date, when it has one."
    )
