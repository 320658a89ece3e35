"""``vectoros notify`` settings: which insights go where, and how hard to try.

Every destination URL is a secret (a Slack incoming-webhook URL *is* the credential; a generic
webhook URL may carry a token), so they are ``SecretStr`` and only ever logged in the redacted
form of :func:`consumer.notifier.delivery.redact_url`. List settings accept a JSON array or a
comma-separated string::

    VECTOROS_SLACK_WEBHOOK_URLS='https://hooks.slack.com/services/T/B/x,https://hooks.slack.com/...'
    VECTOROS_WEBHOOK_URLS='["https://hooks.example.com/vectoros"]'
    VECTOROS_WEBHOOK_SECRET='whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import string
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from consumer.notifier.flood import FloodPolicy
from schemas.insights import Priority
from vectoros.settings import DatabaseSettings, KafkaSettings, metrics_port_field

WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - a format prefix, not a secret
URL_TEMPLATE_FIELDS = frozenset({"deal_id", "workspace_id"})

SecretUrls = Annotated[list[SecretStr], NoDecode]
Channels = Annotated[list[str], NoDecode]
Vias = Annotated[list[str], NoDecode]
ESCALATION_CHANNEL = re.compile(r"^(slack|slack_app|teams|webhook):\d+$")
"""A shared destination an escalation can go to, besides the manager's ``email``/``sms``."""


def _by_email() -> list[str]:
    return ["email"]


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


def _check_urls(urls: list[SecretStr], what: str) -> list[SecretStr]:
    # Never echo the value: it is a credential. The position is enough to find it.
    for position, url in enumerate(urls):
        parts = urlsplit(url.get_secret_value())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{what}[{position}] is not an http(s) URL")
    return urls


def decode_webhook_secret(secret: SecretStr) -> bytes:
    """The HMAC key of a Standard Webhooks secret ``whsec_<base64>``."""
    value = secret.get_secret_value()
    if not value.startswith(WEBHOOK_SECRET_PREFIX):
        raise ValueError("webhook_secret must look like 'whsec_<base64>'")
    try:
        key = base64.b64decode(value[len(WEBHOOK_SECRET_PREFIX) :], validate=True)
    except binascii.Error:
        raise ValueError("webhook_secret: the part after 'whsec_' is not valid base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError("webhook_secret: the key must be 24 to 64 bytes (Standard Webhooks)")
    return key


class NotifierSettings(KafkaSettings, DatabaseSettings):
    """``vectoros notify``: insights -> Slack, signed webhooks and the console."""

    # Validation errors must not echo the input: it may be a webhook URL or the signing secret.
    model_config = SettingsConfigDict(hide_input_in_errors=True)

    metrics_port: int = metrics_port_field("notifier")
    notifier_group_id: str = "vectoros-notifier"
    notify_min_priority: Priority = Field(
        default=Priority.HIGH, description="Raised/escalated insights below this are skipped."
    )
    notify_resolved: bool = Field(default=False, description="Also announce resolved insights.")
    notify_console: bool = Field(default=False, description="Print notifications to stdout.")

    slack_webhook_urls: SecretUrls = Field(
        default_factory=list, description="Slack incoming-webhook URLs (secrets)."
    )
    slack_bot_token: SecretStr | None = Field(
        default=None,
        description="Slack app mode: the bot token (xoxb-..., secret) for chat.postMessage/update.",
    )
    slack_channels: Channels = Field(
        default_factory=list,
        description="Slack app mode: channel ids to post to (one thread per deal in each).",
    )
    slack_api_url: str = Field(default="https://slack.com/api", description="Slack's Web API.")
    slack_min_interval_seconds: float = Field(
        default=1.0, ge=0, description="At least this long between two requests to one Slack URL."
    )
    teams_webhook_urls: SecretUrls = Field(
        default_factory=list,
        description="Microsoft Teams incoming-webhook or Workflows URLs (secrets).",
    )
    teams_min_interval_seconds: float = Field(default=1.0, ge=0)
    teams_at_most_once: bool = Field(
        default=True, description="An attempt with unknown outcome is not repeated (as Slack)."
    )
    webhook_urls: SecretUrls = Field(
        default_factory=list, description="Generic JSON webhooks, signed per Standard Webhooks."
    )
    webhook_secret: SecretStr | None = Field(
        default=None, description="Standard Webhooks signing secret 'whsec_<base64>'."
    )
    webhook_min_interval_seconds: float = Field(default=0.0, ge=0)
    crm_deal_url_template: str | None = Field(
        default=None,
        description="e.g. 'https://crm.example.com/deals/{deal_id}' ({workspace_id} too).",
    )

    notify_max_attempts: int = Field(
        default=5, ge=1, le=100, description="HTTP attempts per notification (429/5xx/network)."
    )
    notify_backoff_base_seconds: float = Field(default=0.5, gt=0)
    notify_backoff_cap_seconds: float = Field(default=30.0, gt=0)
    notify_retry_after_max_seconds: float = Field(
        default=120.0,
        gt=0,
        description="A 429 asking to wait longer than this fails the notification instead.",
    )
    notify_http_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Hard deadline of one HTTP attempt."
    )
    notify_circuit_failures: int = Field(
        default=3,
        ge=1,
        description="Consecutive exhausted notifications that open a destination's circuit.",
    )
    notify_circuit_open_seconds: float = Field(
        default=60.0,
        gt=0,
        description="While open, notifications to that destination fail at once (recorded).",
    )
    slack_at_most_once: bool = Field(
        default=True,
        description=(
            "Never risk a duplicate Slack message: an attempt whose outcome is unknown (crash "
            "mid-request, timeout after sending) is recorded as failed, not repeated."
        ),
    )
    notify_max_batch_records: int = Field(default=100, ge=1)
    notify_fetch_timeout_ms: int = Field(default=500, ge=1)
    notify_max_poll_interval_ms: int = Field(
        default=900_000,
        ge=10_000,
        description=(
            "Kafka max.poll.interval.ms: a batch may legitimately take minutes (1 message/s per "
            "Slack URL, Retry-After waits, retries), so more than the 5 min default."
        ),
    )
    notify_db_retry_seconds: float = Field(
        default=2.0, gt=0, description="Pause before re-running a batch after a database error."
    )
    notify_enrichment_window_seconds: float = Field(
        default=10.0,
        ge=0,
        le=300,
        description=(
            "While an enricher runs, raised/escalated insights it enriches are held up to this "
            "long for the model's text (sent with the rule text after that); 0 = never wait."
        ),
    )

    notify_policy_file: Path | None = Field(
        default=None,
        description="YAML routing policy per workspace (docs/notifier.md); unset: all to all.",
    )
    notify_directory_file: Path | None = Field(
        default=None,
        description="Owner directory (YAML): email, phone, time zone, manager per owner id.",
    )
    smtp_host: str | None = Field(
        default=None, description="SMTP server for email; unset: no email."
    )
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_security: Literal["starttls", "tls", "none"] = Field(
        default="starttls", description="STARTTLS on a plain port, implicit TLS (465), or none."
    )
    smtp_username: str | None = None
    smtp_password: SecretStr | None = Field(default=None, description="SMTP password (secret).")
    smtp_validate_certs: bool = True
    email_from: str = Field(default="VectorOS <alerts@vectoros.invalid>")
    email_at_most_once: bool = Field(
        default=True,
        description="A mail whose outcome is unknown (connection lost mid-way) is not resent.",
    )
    email_min_interval_seconds: float = Field(default=0.0, ge=0)
    notify_ack_link_url: str | None = Field(
        default=None,
        description="The gateway's public base URL: emails get signed answer links to "
        "{url}/acks/<token> (Acknowledge, Snooze 1 day, Not useful); unset: no links.",
    )
    notify_ack_link_key: SecretStr | None = Field(
        default=None,
        description="HMAC key of the answer links (secret, at least 32 characters; the "
        "gateway's VECTOROS_GATEWAY_ACK_LINK_KEY is the same).",
    )
    notify_ack_link_ttl_hours: float = Field(
        default=168.0, gt=0, le=24 * 90, description="How long an answer link works."
    )

    notify_escalate_after_hours: float = Field(
        default=0.0,
        ge=0,
        description="Critical insights not acknowledged or resolved after this long go to the "
        "owner's manager (needs flood control and the owner directory); 0 = never.",
    )
    notify_usefulness_refresh_seconds: float = Field(
        default=600.0,
        ge=0,
        description="How often the usefulness gauges (last 30 days per rule) are recomputed "
        "from PostgreSQL; 0 = never.",
    )
    notify_escalate_via: Vias = Field(
        default_factory=_by_email,
        description="Where an escalation goes (comma-separated): email / sms (the manager's "
        "address / phone from the directory), and shared destinations by name such as "
        "slack_app:0, slack:1, teams:0 (the team's channel).",
    )
    twilio_account_sid: str | None = Field(default=None, description="SMS: Twilio account.")
    twilio_auth_token: SecretStr | None = Field(default=None, description="Twilio Auth Token.")
    twilio_api_url: str = Field(default="https://api.twilio.com")
    sms_from: str | None = Field(
        default=None, description="Sender number (E.164) or Messaging Service SID (MG...)."
    )
    sms_status_callback_url: str | None = None
    sms_at_most_once: bool = True
    sms_min_interval_seconds: float = Field(default=1.0, ge=0)

    notify_daily_digest_at: dt.time | None = Field(
        default=None,
        description="With flood control: insights at or below notify_daily_digest_max_priority "
        "are held for one daily digest at this local time (a person's own time zone from the "
        "directory, else notify_daily_digest_tz); unset: no daily digest.",
    )
    notify_daily_digest_max_priority: Priority = Field(default=Priority.MEDIUM)
    notify_daily_digest_tz: str = Field(
        default="UTC", description="Time zone of the daily digest for shared destinations."
    )

    notify_flood_control: bool = Field(
        default=True,
        description=(
            "Group, cool down, hold flapping insights, summarise bursts and inhibit (see "
            "docs/notifier.md); off: every insight is sent at once, one message each."
        ),
    )
    notify_prompt_min_priority: Priority | None = Field(
        default=Priority.HIGH,
        description="With flood control: raised/escalated insights at or above this go out "
        "within notify_prompt_wait_seconds, not held by group_wait/group_interval "
        "(none = off).",
    )
    notify_prompt_wait_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long a prompt insight waits for others to share its message.",
    )
    notify_group_wait_seconds: float = Field(
        default=30.0, ge=0, description="A new group waits this long for more insights."
    )
    notify_group_interval_seconds: float = Field(
        default=300.0, ge=0, description="At least this long between two messages of one group."
    )
    notify_repeat_interval_seconds: float = Field(
        default=0.0, ge=0, description="Remind of a group's open insights this often (0 = never)."
    )
    notify_cooldown_seconds: float = Field(
        default=3600.0, ge=0, description="A deal's rule is announced at most once per this."
    )
    notify_flap_window_seconds: float = Field(default=3600.0, gt=0)
    notify_flap_threshold: int = Field(
        default=4, ge=1, description="More raised/resolved than this in the window: flapping."
    )
    notify_burst_threshold: int = Field(
        default=50,
        ge=0,
        description="More new insights per workspace in the window: one summary (0 = off).",
    )
    notify_burst_window_seconds: float = Field(default=60.0, gt=0)
    notify_max_groups: int = Field(default=100_000, ge=1)
    notify_flush_tick_seconds: float = Field(
        default=1.0, gt=0, le=60, description="How often held messages are checked for sending."
    )

    def flood_policy(self) -> FloodPolicy:
        return FloodPolicy(
            group_wait=self.notify_group_wait_seconds,
            group_interval=self.notify_group_interval_seconds,
            repeat_interval=self.notify_repeat_interval_seconds,
            cooldown=self.notify_cooldown_seconds,
            flap_window=self.notify_flap_window_seconds,
            flap_threshold=self.notify_flap_threshold,
            burst_threshold=self.notify_burst_threshold,
            burst_window=self.notify_burst_window_seconds,
            max_groups=self.notify_max_groups,
            max_keys=2 * self.notify_max_groups,
            prompt_rank=(
                None
                if self.notify_prompt_min_priority is None
                else self.notify_prompt_min_priority.rank
            ),
            prompt_wait=self.notify_prompt_wait_seconds,
        )

    @field_validator("notify_prompt_min_priority", mode="before")
    @classmethod
    def _none(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("", "none", "off"):
            return None
        return value

    @property
    def has_destinations(self) -> bool:
        """Whether anything is configured to notify (``run_notifier`` refuses to start without)."""
        return bool(
            self.slack_webhook_urls
            or (self.slack_bot_token and self.slack_channels)
            or self.webhook_urls
            or self.teams_webhook_urls
            or self.notify_console
            or (self.smtp_host and self.notify_directory_file)
            or (self.twilio_account_sid and self.notify_directory_file)
        )

    @field_validator(
        "slack_webhook_urls",
        "webhook_urls",
        "teams_webhook_urls",
        "slack_channels",
        "notify_escalate_via",
        mode="before",
    )
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("notify_escalate_via", mode="after")
    @classmethod
    def _vias(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if v not in ("email", "sms") and not ESCALATION_CHANNEL.match(v)]
        if bad:
            raise ValueError(
                f"notify_escalate_via: unknown {bad}; use email, sms, or destination names "
                "such as slack:0, slack_app:0, teams:0, webhook:0"
            )
        return value

    @field_validator("slack_webhook_urls", "webhook_urls", "teams_webhook_urls", mode="after")
    @classmethod
    def _urls(cls, value: list[SecretStr], info: Any) -> list[SecretStr]:
        return _check_urls(value, str(info.field_name))

    @field_validator("webhook_secret", mode="after")
    @classmethod
    def _secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            decode_webhook_secret(value)
        return value

    @field_validator("crm_deal_url_template", mode="after")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        unknown = names - URL_TEMPLATE_FIELDS
        if unknown:
            raise ValueError(
                f"crm_deal_url_template: unknown placeholders {sorted(unknown)}; "
                f"use {sorted(URL_TEMPLATE_FIELDS)}"
            )
        parts = urlsplit(value.replace("{", "").replace("}", ""))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("crm_deal_url_template must be an http(s) URL")
        return value

    @model_validator(mode="after")
    def _webhooks_are_signed(self) -> NotifierSettings:
        if self.webhook_urls and self.webhook_secret is None:
            raise ValueError(
                "VECTOROS_WEBHOOK_URLS needs VECTOROS_WEBHOOK_SECRET (deliveries are signed): "
                "set it to 'whsec_<base64>'"
            )
        if self.notify_daily_digest_at is not None and not self.notify_flood_control:
            raise ValueError(
                "VECTOROS_NOTIFY_DAILY_DIGEST_AT holds insights, which needs "
                "VECTOROS_NOTIFY_FLOOD_CONTROL=true"
            )
        try:
            zoneinfo.ZoneInfo(self.notify_daily_digest_tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                "VECTOROS_NOTIFY_DAILY_DIGEST_TZ: unknown time zone "
                f"{self.notify_daily_digest_tz!r}"
            ) from None
        if bool(self.notify_ack_link_url) != (self.notify_ack_link_key is not None):
            raise ValueError(
                "answer links need both VECTOROS_NOTIFY_ACK_LINK_URL and "
                "VECTOROS_NOTIFY_ACK_LINK_KEY"
            )
        if (
            self.notify_ack_link_key is not None
            and len(self.notify_ack_link_key.get_secret_value()) < 32
        ):
            raise ValueError("VECTOROS_NOTIFY_ACK_LINK_KEY: at least 32 characters")
        if self.notify_ack_link_url is not None:
            parts = urlsplit(self.notify_ack_link_url)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
                raise ValueError("VECTOROS_NOTIFY_ACK_LINK_URL must be an http(s) URL, no query")
        if bool(self.slack_bot_token) != bool(self.slack_channels):
            raise ValueError(
                "Slack app mode needs both VECTOROS_SLACK_BOT_TOKEN and VECTOROS_SLACK_CHANNELS"
            )
        if self.notify_backoff_cap_seconds < self.notify_backoff_base_seconds:
            raise ValueError(
                "VECTOROS_NOTIFY_BACKOFF_CAP_SECONDS must be >= "
                "VECTOROS_NOTIFY_BACKOFF_BASE_SECONDS"
            )
        return self

    notify_db_retry_max_seconds: float = Field(
        default=30.0,
        gt=0,
        description=(
            "Cap of the back-off (doubling from notify_db_retry_seconds) while PostgreSQL or the "
            "broker is unreachable."
        ),
    )
