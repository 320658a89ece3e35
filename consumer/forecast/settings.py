"""Settings of ``vectoros forecast`` (``VECTOROS_*`` variables, frozen)."""

from __future__ import annotations

from pydantic import Field

from vectoros.settings import DatabaseSettings, KafkaSettings


class ForecastSettings(KafkaSettings, DatabaseSettings):
    """``vectoros forecast``: revenue forecasts from the deal history."""

    topic_forecasts: str = Field(
        default="deal-forecasts",
        description="Where forecasts are published (when a broker is configured).",
    )
    forecast_gap_threshold: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description=(
            "Raise pipeline_gap when a workspace's probability of reaching its target falls "
            "below this (critical below half of it)."
        ),
    )
