"""Settings of ``vectoros history`` (``VECTOROS_*`` variables, frozen)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from vectoros.settings import DatabaseSettings, KafkaSettings, metrics_port_field


class HistorySettings(KafkaSettings, DatabaseSettings):
    """``vectoros history``: the deal-history projection of ``deal-events`` in PostgreSQL."""

    metrics_port: int = metrics_port_field("history")
    history_group_id: str = "vectoros-history"
    history_batch_max: int = Field(
        default=2000, ge=1, le=100_000, description="Most deal events written per transaction."
    )
    history_flush_ms: int = Field(
        default=200,
        ge=1,
        le=60_000,
        description="How long a batch may wait for more events after its first one.",
    )
    history_migrate_on_start: bool = Field(
        default=True, description="Apply pending migrations at start-up (advisory-locked)."
    )
    history_benchmarks_refresh_seconds: float = Field(
        default=6 * 3600,
        gt=0,
        le=86_400,
        description="How often the learned stage benchmarks are recomputed (at most daily).",
    )
    topic_scores: str = Field(
        default="deal-scores", description="Where the model's scores of open deals go."
    )
    history_scoring: bool = Field(
        default=True,
        description="Score every open deal an event batch changes with the current model.",
    )
    history_model_rules: bool = Field(
        default=True,
        description=(
            "Evaluate the model-based rules (forecast_risk, win_probability_drop, "
            "close_date_unrealistic) here, on each score, and publish their insights to "
            "topic_insights: the monitor never reads a score. Off: see history_scores_to_events."
        ),
    )
    history_scores_to_events: bool = Field(
        default=False,
        description=(
            "Instead of history_model_rules: publish each score that matters "
            "(history_score_publish_points / _days) as a deal.scored event on deal-events (the "
            "deal's own partition), where the monitor folds it into the deal and runs its "
            "model-based rules (every insight then carries the model's probability; the "
            "monitor does more work per event)."
        ),
    )
    history_score_publish_points: float = Field(
        default=5,
        ge=0,
        le=100,
        description=(
            "A score goes to deal-events when its probability is this many points (0-100) or "
            "more from the deal's last published one (or its model, or its close-date P10 "
            "changed enough); 0: any change. The monitor's probability lags by less than this."
        ),
    )
    history_score_publish_days: int = Field(
        default=7,
        ge=0,
        le=365,
        description=(
            "... or when its close-date P10 moved this many days or more from the published one, "
            "or across the rep's close date; 0: any change."
        ),
    )
    history_rescore_hours: float = Field(
        default=24,
        ge=0,
        le=24 * 7,
        description=(
            "Score every open deal again once per this many hours of tick time (time changes "
            "the features: days since the last activity, in stage, to the close date); 0: never."
        ),
    )
    history_model_refresh_seconds: float = Field(
        default=300, gt=0, description="How often the current model is looked up again."
    )
    history_retrain_after_outcomes: int = Field(
        default=200,
        ge=0,
        description="Retrain when this many deals closed since the last model's data (0: never).",
    )
    history_retrain_every_seconds: float = Field(
        default=7 * 86_400, gt=0, description="Retrain when the last training is this old."
    )
    history_retrain_check_seconds: float = Field(
        default=600, gt=0, description="How often retraining is considered."
    )
    history_holdout_days: float = Field(
        default=90, gt=0, description="The held-out period of automatic retraining."
    )
    rules_file: Path | None = Field(
        default=None, description="YAML/JSON thresholds file (the model rules' thresholds)."
    )
    db_pool_max_size: int = Field(default=4, ge=1, le=100)
    db_command_timeout_seconds: float = Field(default=60, gt=0)
    db_retry_initial_seconds: float = Field(default=0.2, gt=0)
    db_retry_max_seconds: float = Field(default=30, gt=0)

    @model_validator(mode="after")
    def _one_home_for_the_model_rules(self) -> HistorySettings:
        if self.history_model_rules and self.history_scores_to_events:
            raise ValueError(
                "VECTOROS_HISTORY_MODEL_RULES and VECTOROS_HISTORY_SCORES_TO_EVENTS are both on: "
                "the model-based rules would run twice (here and in the monitor); turn one off"
            )
        return self
