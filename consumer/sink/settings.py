"""Settings of ``vectoros sink`` (``VECTOROS_*`` variables, frozen)."""

from __future__ import annotations

from pydantic import Field, model_validator

from vectoros.settings import DatabaseSettings, KafkaSettings, metrics_port_field


class SinkSettings(KafkaSettings, DatabaseSettings):
    """``vectoros sink``: insight events into PostgreSQL."""

    metrics_port: int = metrics_port_field("sink")
    sink_group_id: str = "vectoros-sink"
    sink_batch_max: int = Field(
        default=1000, ge=1, le=100_000, description="Most insight events written per transaction."
    )
    sink_flush_ms: int = Field(
        default=100,
        ge=1,
        le=60_000,
        description="How long a batch may wait for more events after its first one.",
    )
    sink_migrate_on_start: bool = Field(
        default=True, description="Apply pending migrations at start-up (advisory-locked)."
    )
    db_pool_min_size: int = Field(
        default=0, ge=0, le=100, description="Connections kept open even when idle."
    )
    db_pool_max_size: int = Field(default=4, ge=1, le=100)
    db_connect_deadline_seconds: float = Field(
        default=60,
        gt=0,
        description="Unused: the sink waits for PostgreSQL as long as it takes (consume loop).",
    )
    db_command_timeout_seconds: float = Field(default=30, gt=0)
    db_retry_initial_seconds: float = Field(
        default=0.2, gt=0, description="First back-off after a failed batch write."
    )
    db_retry_max_seconds: float = Field(
        default=30, gt=0, description="Cap of the exponential back-off between batch retries."
    )

    @model_validator(mode="after")
    def _check_ranges(self) -> SinkSettings:
        if self.db_pool_min_size > self.db_pool_max_size:
            raise ValueError("VECTOROS_DB_POOL_MIN_SIZE must not exceed VECTOROS_DB_POOL_MAX_SIZE")
        if self.db_retry_initial_seconds > self.db_retry_max_seconds:
            raise ValueError(
                "VECTOROS_DB_RETRY_INITIAL_SECONDS must not exceed VECTOROS_DB_RETRY_MAX_SECONDS"
            )
        return self
