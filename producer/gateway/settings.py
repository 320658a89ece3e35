"""Settings of ``vectoros gateway`` (``VECTOROS_GATEWAY_*`` variables, frozen).

Each source is enabled by its credential: a source without one answers 404, so nothing is ever
accepted unauthenticated. Credentials are ``SecretStr`` and never logged; validation errors do not
echo input values.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import orjson
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from vectoros.settings import (
    MAX_CLOCK_SKEW_DEFAULT,
    MAX_EVENT_AGE_DEFAULT,
    Duration,
    KafkaSettings,
    metrics_port_field,
)

SOURCES: tuple[str, ...] = ("hubspot", "pipedrive", "salesforce", "twenty")

WORKSPACE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")

Workspaces = Annotated[list[str], NoDecode]


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


class GatewaySettings(KafkaSettings):
    """``vectoros gateway``: CRM webhooks in, deal events out."""

    model_config = SettingsConfigDict(hide_input_in_errors=True)

    metrics_port: int = metrics_port_field("gateway")
    gateway_host: str = Field(
        default="127.0.0.1", description="Address the webhooks are served on."
    )
    gateway_port: int = Field(default=8088, ge=0, le=65535, description="0 picks a free port.")
    gateway_public_url: str | None = Field(
        default=None,
        description=(
            "The base URL the CRMs call (e.g. https://hooks.example.com), used to rebuild the "
            "request URI that HubSpot signs; unset: taken from the request's Host header."
        ),
    )
    gateway_default_workspace: str | None = Field(
        default=None, description="Workspace of /webhooks/<source> (routes without a workspace)."
    )
    gateway_workspaces: Workspaces = Field(
        default_factory=list,
        description="Allowed workspaces in /webhooks/<source>/<workspace>; empty: any valid id.",
    )
    gateway_max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="Larger bodies get 413."
    )
    gateway_max_timestamp_age_seconds: float = Field(
        default=300, gt=0, le=3600, description="Signed timestamps older (or newer) are rejected."
    )
    max_clock_skew: Duration = Field(
        default=MAX_CLOCK_SKEW_DEFAULT,
        gt=0,
        description="Seconds an event may be ahead of its receive time (else 400).",
    )
    max_event_age: Duration = Field(
        default=MAX_EVENT_AGE_DEFAULT,
        gt=0,
        description="Seconds an event may be behind its receive time (else 400).",
    )
    gateway_publish_timeout_seconds: float = Field(
        default=4,
        gt=0,
        le=120,
        description="Longest wait for the broker before answering 503 (the CRMs wait 5-10 s).",
    )
    gateway_stages_file: Path | None = Field(
        default=None, description="YAML/JSON stage mapping per source and workspace."
    )
    gateway_default_currency: str | None = Field(
        default=None,
        pattern=r"^[A-Z]{3}$",
        description="Currency of amounts whose source sends none (HubSpot, Salesforce).",
    )

    gateway_hubspot_client_secret: SecretStr | None = Field(
        default=None, description="HubSpot app client secret (X-HubSpot-Signature-v3)."
    )
    gateway_hubspot_token: SecretStr | None = Field(
        default=None,
        description="HubSpot private app access token: reads a deal's contacts' emails and "
        "companies' domains when associations change (for email capture).",
    )
    gateway_pipedrive_username: str | None = Field(
        default=None, description="HTTP basic auth user set on the Pipedrive webhook."
    )
    gateway_pipedrive_password: SecretStr | None = Field(
        default=None, description="HTTP basic auth password set on the Pipedrive webhook."
    )
    gateway_pipedrive_api_token: SecretStr | None = Field(
        default=None,
        description="Pipedrive API token: reads the persons of a deal whose person changed "
        "(for email capture); with gateway_pipedrive_company_domain.",
    )
    gateway_pipedrive_company_domain: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
        description="The Pipedrive company domain (<domain>.pipedrive.com) of the API token.",
    )
    gateway_salesforce_token: SecretStr | None = Field(
        default=None, description="Bearer token the Salesforce CDC relay sends."
    )
    gateway_salesforce_instance_url: str | None = Field(
        default=None,
        pattern=r"^https://[A-Za-z0-9.-]+$",
        description="Salesforce My Domain URL (https://<domain>.my.salesforce.com): reads an "
        "opportunity's contact roles (for email capture), with the client id and secret.",
    )
    gateway_salesforce_client_id: str | None = Field(
        default=None, description="Salesforce connected app consumer key (client credentials)."
    )
    gateway_salesforce_client_secret: SecretStr | None = Field(
        default=None, description="Salesforce connected app consumer secret."
    )
    gateway_twenty_secret: SecretStr | None = Field(
        default=None, description="Twenty webhook secret (X-Twenty-Webhook-Signature)."
    )
    gateway_slack_signing_secret: SecretStr | None = Field(
        default=None,
        description="The Slack app's signing secret: enables POST /slack/interactions (buttons).",
    )
    gateway_twilio_auth_token: SecretStr | None = Field(
        default=None,
        description="Twilio Auth Token: enables POST /twilio/status (signed SMS status callbacks).",
    )
    gateway_ack_link_key: SecretStr | None = Field(
        default=None,
        description="Key of the notifier's signed email answer links (the notifier's "
        "VECTOROS_NOTIFY_ACK_LINK_KEY): enables /acks/<token>.",
    )

    @field_validator("gateway_workspaces", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("gateway_workspaces", mode="after")
    @classmethod
    def _valid_workspaces(cls, value: list[str]) -> list[str]:
        for position, workspace in enumerate(value):
            if not WORKSPACE_PATTERN.match(workspace):
                raise ValueError(f"gateway_workspaces[{position}] is not a valid workspace id")
        return value

    @field_validator("gateway_default_workspace", mode="after")
    @classmethod
    def _valid_default(cls, value: str | None) -> str | None:
        if value is not None and not WORKSPACE_PATTERN.match(value):
            raise ValueError("gateway_default_workspace is not a valid workspace id")
        return value

    @field_validator("gateway_public_url", mode="after")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not re.match(r"^https?://[^/?#\s]+(/[^?#\s]*)?$", value):
            raise ValueError("gateway_public_url must be an http(s) URL without query")
        return value

    @field_validator(
        "gateway_hubspot_client_secret",
        "gateway_pipedrive_password",
        "gateway_salesforce_token",
        "gateway_twenty_secret",
        "gateway_slack_signing_secret",
        "gateway_twilio_auth_token",
        mode="after",
    )
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 8:
            raise ValueError("too short (at least 8 characters)")
        return value

    @field_validator("gateway_ack_link_key", mode="after")
    @classmethod
    def _ack_link_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("too short (at least 32 characters)")
        return value

    @model_validator(mode="after")
    def _pipedrive_pair(self) -> GatewaySettings:
        user, password = self.gateway_pipedrive_username, self.gateway_pipedrive_password
        if (user is None) != (password is None) or user == "":
            raise ValueError(
                "VECTOROS_GATEWAY_PIPEDRIVE_USERNAME and VECTOROS_GATEWAY_PIPEDRIVE_PASSWORD "
                "must be set together"
            )
        return self

    def enabled_sources(self) -> tuple[str, ...]:
        """The sources that have a credential (the others answer 404)."""
        enabled = {
            "hubspot": self.gateway_hubspot_client_secret is not None,
            "pipedrive": self.gateway_pipedrive_password is not None,
            "salesforce": self.gateway_salesforce_token is not None,
            "twenty": self.gateway_twenty_secret is not None,
        }
        return tuple(source for source in SOURCES if enabled[source])
