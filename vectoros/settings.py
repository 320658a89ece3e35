"""Settings: one pydantic-settings class per service, all read from ``VECTOROS_*`` variables.

They are frozen; secrets are ``SecretStr``; nothing has a hard-coded host. When
``VECTOROS_KAFKA_BOOTSTRAP_SERVERS`` / ``VECTOROS_DATABASE_URL`` are unset, ``vectoros run`` and
``vectoros demo`` start the embedded broker and database; the single services refuse to start.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from vectoros.errors import ConfigError


class _Base(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VECTOROS_", frozen=True, extra="ignore", env_file=None
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class OpsSettings(_Base):
    """Where /metrics, /healthz and /readyz are served."""

    metrics_enabled: bool = True
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9464, ge=0, le=65535, description="0 picks a free port.")


class KafkaSettings(OpsSettings):
    """What every Kafka client shares."""

    kafka_bootstrap_servers: str | None = Field(
        default=None, description="host:port[,host:port]; unset means the embedded broker."
    )
    kafka_client_id: str = "vectoros"
    kafka_idempotence: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Idempotent producer: 'auto' uses it when the broker supports it.",
    )
    topic_events: str = "deal-events"
    topic_insights: str = "deal-insights"
    topic_dlq: str = "deal-events-dlq"
    topic_state: str = "deal-monitor-state"
    topic_partitions: int = Field(default=6, ge=1, le=10_000)

    def bootstrap(self) -> str:
        if not self.kafka_bootstrap_servers:
            raise ConfigError(
                "VECTOROS_KAFKA_BOOTSTRAP_SERVERS is not set. Point it at a Kafka-compatible "
                "broker, or use `vectoros run` / `vectoros demo`, which start an embedded one."
            )
        return self.kafka_bootstrap_servers


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def _duration_seconds(value: Any) -> Any:
    """``'90s'``, ``'15m'``, ``'1h'``, ``'400d'``, ``'250ms'`` or a plain number of seconds ->
    seconds; anything else is left to pydantic (which rejects it)."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError("expected a duration such as 3600, 90s, 15m, 1h or 400d")
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return value


Duration = Annotated[float, BeforeValidator(_duration_seconds)]
"""Seconds; from the environment also as ``90s``, ``15m``, ``1h``, ``400d``."""

MAX_CLOCK_SKEW_DEFAULT = 3600.0
MAX_EVENT_AGE_DEFAULT = 400 * 86400.0


class MonitorSettings(KafkaSettings):
    """``vectoros monitor``: per-deal state and the rules."""

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


class TickerSettings(KafkaSettings):
    """``vectoros tick``: one tick to every partition of ``deal-events`` per interval."""

    tick_interval_seconds: float = Field(default=60, gt=0)


class SimulatorSettings(KafkaSettings):
    """``vectoros simulate``: a seeded, realistic pipeline."""

    sim_deals: int = Field(default=200, ge=1)
    sim_days: int = Field(default=90, ge=1)
    sim_workspaces: int = Field(default=3, ge=1)
    sim_seed: int = 42
    sim_speedup: float = Field(
        default=0, ge=0, description="Simulated seconds per wall second; 0 = as fast as possible."
    )
    sim_tick_hours: float = Field(default=6, gt=0, description="Simulated hours between ticks.")


class DatabaseSettings(_Base):
    database_url: SecretStr | None = Field(
        default=None, description="postgresql://...; unset means the embedded PostgreSQL."
    )

    def dsn(self) -> str:
        if self.database_url is None:
            raise ConfigError(
                "VECTOROS_DATABASE_URL is not set. Point it at PostgreSQL, or use "
                "`vectoros run` / `vectoros demo`, which start an embedded one."
            )
        return self.database_url.get_secret_value()
