"""Settings of ``vectoros capture`` (``VECTOROS_CAPTURE_*`` variables, frozen).

The webhook secret and the token key are ``SecretStr`` and never logged. The workspaces file
(YAML) is the per-workspace opt-in: a workspace not in it captures nothing::

    ws-acme:
      own_domains: [acme-vendor.io]   # the workspace's own mail domains
      subjects: false                 # keep email subjects (default off)
      domains_only: false             # keep participants' domains instead of addresses
      retention_days: 365             # how long captured ids are kept
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from producer.capture.matcher import WorkspacePolicy
from vectoros.errors import ConfigError
from vectoros.settings import KafkaSettings, metrics_port_field


class CaptureSettings(KafkaSettings):
    """``vectoros capture``: emails and meetings in, ``email.logged``/``meeting.logged`` out."""

    model_config = SettingsConfigDict(hide_input_in_errors=True)

    metrics_port: int = metrics_port_field("capture")
    capture_host: str = Field(default="127.0.0.1", description="Address the endpoints are on.")
    capture_port: int = Field(default=8089, ge=0, le=65535, description="0 picks a free port.")
    capture_webhook_secret: SecretStr | None = Field(
        default=None, description="HMAC secret of the generic JSON webhook (required)."
    )
    capture_token_key: SecretStr | None = Field(
        default=None, description="Fernet key encrypting stored OAuth tokens (required)."
    )
    capture_db_path: Path = Field(
        default=Path("capture.db"), description="SQLite file: connections, cursors, captured ids."
    )
    capture_workspaces_file: Path | None = Field(
        default=None, description="YAML: the workspaces that opted in, and their policies."
    )
    capture_gmail_push_token: SecretStr | None = Field(
        default=None,
        description="Token in the Gmail Pub/Sub push URL (?token=...); set with the Google "
        "client id and secret to serve POST /capture/gmail/push.",
    )
    capture_google_client_id: str | None = Field(
        default=None, description="Google OAuth client id (refresh-token grant)."
    )
    capture_google_client_secret: SecretStr | None = Field(
        default=None, description="Google OAuth client secret."
    )

    capture_public_url: str | None = Field(
        default=None,
        description="The https URL where providers and browsers reach the capture endpoints "
        "(OAuth redirects, Calendar channels, Graph subscriptions); enables connecting.",
    )
    capture_gmail_topic: str | None = Field(
        default=None,
        description="The Pub/Sub topic (projects/<p>/topics/<t>) users.watch points mailboxes "
        "at; with it the maintenance loop re-watches each mailbox before expiry.",
    )
    capture_poll_seconds: float = Field(
        default=300.0,
        ge=0,
        description="Seconds between maintenance rounds (re-watch, renew, polling sync of "
        "every connection); 0 turns it off.",
    )
    capture_gcal_channel_secret: SecretStr | None = Field(
        default=None,
        description="Secret the Google Calendar channel tokens are derived from; set with the "
        "Google client id and secret to serve POST /capture/gcal/notify.",
    )
    capture_ms_client_id: str | None = Field(
        default=None, description="Microsoft identity platform application (client) id."
    )
    capture_ms_client_secret: SecretStr | None = Field(
        default=None, description="Microsoft identity platform client secret."
    )
    capture_graph_secret: SecretStr | None = Field(
        default=None,
        description="Secret the Graph subscriptions' clientState is derived from; set with the "
        "Microsoft client id and secret to serve POST /capture/graph/notify.",
    )

    def gmail_configured(self) -> bool:
        """All three Gmail settings set (``check_config`` refuses only some of them)."""
        return None not in (
            self.capture_gmail_push_token,
            self.capture_google_client_id,
            self.capture_google_client_secret,
        )

    def gcal_configured(self) -> bool:
        return None not in (
            self.capture_gcal_channel_secret,
            self.capture_google_client_id,
            self.capture_google_client_secret,
        )

    def graph_configured(self) -> bool:
        return None not in (
            self.capture_graph_secret,
            self.capture_ms_client_id,
            self.capture_ms_client_secret,
        )


def load_policies(path: Path | None) -> dict[str, WorkspacePolicy]:
    """The workspaces file; ``ConfigError`` (one line naming the file and key) when bad."""
    if path is None:
        return {}
    source = f"capture workspaces file {path}"
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{source}: cannot be read ({type(exc).__name__}); fix it") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of workspace ids to policies")
    out = {}
    known = {"own_domains", "subjects", "domains_only", "retention_days", "enabled"}
    for ws, body in raw.items():
        body = body or {}
        unknown = sorted(set(body) - known) if isinstance(body, dict) else ["(not a mapping)"]
        if unknown:
            raise ConfigError(f"{source}: {ws}.{unknown[0]}: unknown key; use {sorted(known)}")
        own = body.get("own_domains") or []
        if not isinstance(own, list) or not own:
            raise ConfigError(f"{source}: {ws}.own_domains: list the workspace's mail domains")
        out[str(ws)] = WorkspacePolicy(
            own_domains=frozenset(str(d).strip().lower() for d in own),
            enabled=bool(body.get("enabled", True)),
            subjects=bool(body.get("subjects", False)),
            domains_only=bool(body.get("domains_only", False)),
            retention_days=int(body.get("retention_days", 365)),
        )
    return out
