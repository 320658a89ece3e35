"""``vectoros monitor``'s settings."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from vectoros.settings import (
    MAX_CLOCK_SKEW_DEFAULT,
    MAX_EVENT_AGE_DEFAULT,
    DatabaseSettings,
    Duration,
    KafkaSettings,
    metrics_port_field,
)


class MonitorSettings(KafkaSettings, DatabaseSettings):
    """``vectoros monitor``: per-deal state and the rules."""

    metrics_port: int = metrics_port_field("monitor")
    monitor_group_id: str = "vectoros-monitor"
    monitor_group_instance_id: str | None = Field(
        default=None,
        description="Static membership: a restart within the session timeout keeps partitions.",
    )
    stall_seconds: float = Field(default=60, gt=0, description="No progress while lagging.")
    session_timeout_ms: int = Field(
        default=10_000,
        ge=1000,
        description="Group session timeout: how fast a dead member is noticed.",
    )
    rules_file: Path | None = Field(default=None, description="YAML/JSON thresholds file.")
    max_event_bytes: int = Field(
        default=64 * 1024,
        ge=256,
        le=256 * 1024,  # a DLQ record (value + headers) must fit the monitor's 512 KiB batches
        description="Larger goes to DLQ.",
    )
    max_batch_records: int = Field(default=5000, ge=1)
    fetch_timeout_ms: int = Field(default=200, ge=1)
    fetch_max_wait_ms: int = Field(
        default=20,
        ge=1,
        le=500,
        description="How long the broker may hold a fetch that finds nothing new.",
    )
    dedupe_per_deal: int = Field(
        default=16, ge=0, le=255, description="Most recent event ids remembered per deal."
    )
    tombstone_days: float = Field(default=30, gt=0, description="How long closed deals are kept.")
    max_clock_skew: Duration = Field(
        default=MAX_CLOCK_SKEW_DEFAULT,
        gt=0,
        description="Seconds an event or tick may be ahead of its record timestamp (else DLQ).",
    )
    max_event_age: Duration = Field(
        default=MAX_EVENT_AGE_DEFAULT,
        gt=0,
        description="Seconds an event or tick may be behind its record timestamp (else DLQ).",
    )
    learned_benchmarks: bool = Field(
        default=True,
        description=(
            "With VECTOROS_DATABASE_URL set, stuck_in_stage uses each team's learned days-in-stage "
            "norm (written by `vectoros history`); without it, the static thresholds."
        ),
    )
    learned_refresh_seconds: float = Field(
        default=300, gt=0, description="How often the monitor re-reads the learned benchmarks."
    )
