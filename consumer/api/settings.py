"""Settings of ``vectoros api`` (``VECTOROS_API_*`` variables, frozen)."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from vectoros.settings import DatabaseSettings, KafkaSettings, metrics_port_field

Origins = Annotated[list[str], NoDecode]


def _split_list(value: Any) -> Any:
    """``'a,b'`` or ``'["a","b"]'`` -> ``["a", "b"]``; anything else is left to pydantic."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            try:
                return orjson.loads(text)
            except orjson.JSONDecodeError:
                raise ValueError("not a valid JSON array") from None
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class ApiSettings(KafkaSettings, DatabaseSettings):
    """``vectoros api``: the read API, the live stream and the dashboard page."""

    model_config = SettingsConfigDict(hide_input_in_errors=True)

    metrics_port: int = metrics_port_field("api")
    api_host: str = Field(
        default="127.0.0.1", description="Address the API and page are served on."
    )
    api_port: int = Field(default=8090, ge=0, le=65535, description="0 picks a free port.")
    api_cors_origins: Origins = Field(
        default_factory=list,
        description="Origins allowed to call the API from a browser (CORS); empty: none.",
    )
    api_rate_limit_per_second: float = Field(
        default=20, gt=0, le=100_000, description="Requests per second per token (sustained)."
    )
    api_rate_limit_burst: int = Field(
        default=100, ge=1, le=1_000_000, description="Requests a token may make at once."
    )
    api_page_size_max: int = Field(
        default=200, ge=1, le=10_000, description="Largest page of the insights list."
    )
    api_live: bool = Field(
        default=True,
        description="Serve the live stream (reads deal-insights and insight-acks from the end).",
    )
    api_live_buffer: int = Field(
        default=1000,
        ge=0,
        le=1_000_000,
        description="Live events kept per workspace for clients resuming with Last-Event-ID.",
    )
    api_live_keepalive_seconds: float = Field(
        default=15, gt=0, le=3600, description="A comment line on an idle stream this often."
    )
    api_answer_timeout_seconds: float = Field(
        default=10,
        gt=0,
        le=300,
        description="How long an answer from the page waits for the broker before a 503.",
    )
    api_group_prefix: str = Field(
        default="vectoros-api",
        description="Consumer group prefix of the live stream (one group per process).",
    )
    api_migrate_on_start: bool = Field(
        default=True, description="Apply pending migrations at start-up (advisory-locked)."
    )
    db_pool_max_size: int = Field(default=4, ge=1, le=100)

    @field_validator("api_cors_origins", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("api_cors_origins", mode="after")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for position, origin in enumerate(value):
            if origin != "*" and not (
                origin.startswith(("http://", "https://")) and "/" not in origin.split("://")[1]
            ):
                raise ValueError(
                    f"api_cors_origins[{position}] must be * or scheme://host[:port] (no path)"
                )
        return value
