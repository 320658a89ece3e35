"""``vectoros enrich`` settings (``VECTOROS_*`` variables, frozen).

The API key is read from ``ANTHROPIC_API_KEY`` (the SDK's usual variable) or
``VECTOROS_ANTHROPIC_API_KEY``; it is a ``SecretStr`` and never logged or echoed in a validation
error. Without a key, or with ``VECTOROS_LLM=off``, the enricher is off (:attr:`off_reason`).
"""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from schemas.insights import Priority
from vectoros.settings import DatabaseSettings, KafkaSettings, metrics_port_field

# A current Sonnet in the installed SDK's model list (anthropic.types.Model). A configured model
# that the installed SDK lists as deprecated is reported at start (client.check_model).
DEFAULT_MODEL = "claude-sonnet-5-5"


class EnricherSettings(KafkaSettings, DatabaseSettings):
    """``vectoros enrich``: Claude rewrites the text of raised and escalated insights."""

    # The key must not appear in validation errors; init by field name works too (tests).
    model_config = SettingsConfigDict(hide_input_in_errors=True, validate_by_name=True)

    metrics_port: int = metrics_port_field("enricher")

    llm: bool = Field(
        default=True, description="VECTOROS_LLM=off turns the enricher off even with a key."
    )
    anthropic_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("VECTOROS_ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY"),
        description="Claude API key (a secret). Unset: the enricher is off.",
    )
    anthropic_base_url: str | None = Field(
        default=None,
        description="Messages API base URL (a proxy or gateway); unset: the SDK's default.",
    )
    enricher_group_id: str = "vectoros-enricher"
    enrich_model: str = Field(default=DEFAULT_MODEL, min_length=1)
    enrich_min_priority: Priority = Field(
        default=Priority.HIGH, description="Raised/escalated insights below this keep rule text."
    )
    enrich_concurrency: int = Field(default=4, ge=1, le=64, description="Model calls at once.")
    enrich_timeout_seconds: float = Field(
        default=30.0, gt=0, le=600, description="Deadline of one HTTP attempt."
    )
    enrich_max_attempts: int = Field(
        default=3, ge=1, le=10, description="Attempts per insight (429, 529, 5xx, timeouts)."
    )
    enrich_backoff_base_seconds: float = Field(default=1.0, gt=0)
    enrich_backoff_cap_seconds: float = Field(default=20.0, gt=0)
    enrich_retry_after_max_seconds: float = Field(
        default=60.0,
        gt=0,
        description="A retry-after longer than this gives up on the insight (rule text stays).",
    )
    enrich_max_output_tokens: int = Field(default=1024, ge=256, le=8192)
    enrich_daily_calls_per_workspace: int = Field(
        default=1000, ge=0, description="Insights sent to the model per workspace and UTC day."
    )
    enrich_daily_tokens_per_workspace: int = Field(
        default=2_000_000, ge=0, description="Input + output tokens per workspace and UTC day."
    )
    enrich_price_input_usd_per_mtok: float = Field(default=3.0, ge=0)
    enrich_price_output_usd_per_mtok: float = Field(default=15.0, ge=0)
    enrich_price_cache_write_usd_per_mtok: float = Field(default=3.75, ge=0)
    enrich_price_cache_read_usd_per_mtok: float = Field(default=0.30, ge=0)
    enrich_memory_deals: int = Field(
        default=10_000, ge=1, description="Deals whose recent insights are kept for context."
    )
    enrich_max_batch_records: int = Field(default=20, ge=1, le=1000)
    enrich_fetch_timeout_ms: int = Field(default=500, ge=1)
    enrich_max_poll_interval_ms: int = Field(
        default=900_000,
        ge=10_000,
        description="Kafka max.poll.interval.ms: a batch waits for model calls.",
    )
    enrich_db_retry_seconds: float = Field(
        default=2.0, gt=0, description="Pause before re-running a batch after a database error."
    )
    enrich_heartbeat_seconds: float = Field(
        default=5.0, gt=0, le=60, description="How often the enricher tells the notifier it runs."
    )

    @property
    def off_reason(self) -> str | None:
        """Why the enricher does not run, or None when it does."""
        if not self.llm:
            return "VECTOROS_LLM=off"
        if self.anthropic_api_key is None or not self.anthropic_api_key.get_secret_value():
            return "ANTHROPIC_API_KEY is not set"
        return None

    @property
    def enrich_enabled(self) -> bool:
        return self.off_reason is None

    @property
    def enrich_claim_stale_seconds(self) -> float:
        """A claim older than this belongs to an enricher that died mid-call (taken over)."""
        per_attempt = self.enrich_timeout_seconds + self.enrich_backoff_cap_seconds
        return self.enrich_max_attempts * per_attempt + 30.0

    @model_validator(mode="after")
    def _check_ranges(self) -> EnricherSettings:
        if self.enrich_backoff_cap_seconds < self.enrich_backoff_base_seconds:
            raise ValueError(
                "VECTOROS_ENRICH_BACKOFF_CAP_SECONDS must be >= "
                "VECTOROS_ENRICH_BACKOFF_BASE_SECONDS"
            )
        return self

    enrich_db_retry_max_seconds: float = Field(
        default=30.0,
        gt=0,
        description=(
            "Cap of the back-off (doubling from enrich_db_retry_seconds) while PostgreSQL or the "
            "broker is unreachable."
        ),
    )
