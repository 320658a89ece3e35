"""Settings of ``vectoros forecast`` (``VECTOROS_*`` variables, frozen)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from vectoros.settings import DatabaseSettings, KafkaSettings, metrics_port_field


class ForecastSettings(KafkaSettings, DatabaseSettings):
    """``vectoros forecast``: revenue forecasts from the deal history."""

    metrics_port: int = metrics_port_field("forecast")
    forecast_at: str = Field(
        default="06:00", description="When the service forecasts each workspace daily (UTC)."
    )
    forecast_workspace_at: dict[str, str] = Field(
        default_factory=dict,
        description='Per-workspace times instead, JSON: {"acme": "07:30"} (UTC).',
    )
    forecast_periods: str = Field(
        default="quarter,month", description="The current periods the service forecasts."
    )
    forecast_targets_file: Path | None = Field(
        default=None, description="YAML {workspace: {period: target}} for the service."
    )
    forecast_simulations: int = Field(default=10_000, ge=1, le=1_000_000)
    forecast_check_seconds: float = Field(
        default=60, gt=0, description="How often the service looks for due workspaces and models."
    )

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
