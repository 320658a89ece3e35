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
