"""Settings: one pydantic-settings class per service, all read from ``VECTOROS_*`` variables.

They are frozen; secrets are ``SecretStr``; nothing has a hard-coded host. When
``VECTOROS_KAFKA_BOOTSTRAP_SERVERS`` / ``VECTOROS_DATABASE_URL`` are unset, ``vectoros run`` and
``vectoros demo`` start the embedded broker and database; the single services refuse to start.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BeforeValidator, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from vectoros.errors import ConfigError

# The default ops port (/metrics, /healthz, /readyz) of each service, so that any of them can
# run side by side on one host (docker-compose.yml and deploy/prometheus.yml use the same).
METRICS_PORTS: dict[str, int] = {
    "run": 9464,
    "monitor": 9465,
    "sink": 9466,
    "notifier": 9467,
    "enricher": 9468,
    "gateway": 9469,
    "ticker": 9470,
    "capture": 9471,
    "history": 9472,
    "api": 9473,
    "forecast": 9474,
}


def metrics_port_field(service: str) -> Any:
    """The ``metrics_port`` field of one service, defaulting to its own port."""
    return Field(
        default=METRICS_PORTS[service],
        ge=0,
        le=65535,
        description=f"Ops endpoint port (default {METRICS_PORTS[service]}); 0 picks a free port.",
    )


class _Base(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VECTOROS_", frozen=True, extra="ignore", env_file=None
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value


class CommonSettings(_Base):
    """What every command reads at start (the log level)."""


class OpsSettings(_Base):
    """Where /metrics, /healthz and /readyz are served."""

    metrics_enabled: bool = True
    metrics_host: str = "127.0.0.1"
    metrics_port: int = metrics_port_field("run")


class KafkaSettings(OpsSettings):
    """What every Kafka client shares."""

    kafka_bootstrap_servers: str | None = Field(
        default=None, description="host:port[,host:port]; unset means the embedded broker."
    )
    kafka_client_id: str = "vectoros"
    kafka_connect_timeout_seconds: float = Field(
        default=30,
        gt=0,
        le=3600,
        description="How long a command waits for an unreachable broker before it gives up.",
    )
    kafka_idempotence: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Idempotent producer: 'auto' uses it when the broker supports it.",
    )
    topic_events: str = "deal-events"
    topic_insights: str = "deal-insights"
    topic_dlq: str = "deal-events-dlq"
    topic_state: str = "deal-monitor-state"
    topic_acks: str = "insight-acks"  # answers to insights (schemas/acks.py)
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


def known_variables(classes: Iterable[type[BaseSettings]]) -> set[str]:
    """Every ``VECTOROS_*`` variable one of ``classes`` reads (the app layer knows them all)."""
    names: set[str] = set()
    for cls in classes:
        prefix = str(cls.model_config.get("env_prefix") or "")
        for name, field in cls.model_fields.items():
            names.add(f"{prefix}{name}".upper())
            alias = field.validation_alias
            choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
            names.update(c.upper() for c in choices if isinstance(c, str))
    return {name for name in names if name.startswith("VECTOROS_")}


def unknown_variables(
    environ: Mapping[str, str] | Iterable[str], known: set[str]
) -> list[tuple[str, str | None]]:
    """``VECTOROS_*`` names in ``environ`` that are not in ``known``, each with the closest known
    name (or None): a typo like VECTOROS_KAFKA_BOOTSTRAP_SERVER is otherwise silently ignored."""
    unknown = []
    for name in sorted(environ):
        if name.upper().startswith("VECTOROS_") and name.upper() not in known:
            close = difflib.get_close_matches(name.upper(), sorted(known), n=1, cutoff=0.6)
            unknown.append((name, close[0] if close else None))
    return unknown
