"""Gateway settings from the environment, and the stage mapping file."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from producer.gateway.settings import GatewaySettings
from producer.gateway.stages import BUILTIN, StageMap
from schemas.events import Outcome, Stage
from vectoros.errors import ConfigError


def test_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECTOROS_GATEWAY_PORT", "9000")
    monkeypatch.setenv("VECTOROS_GATEWAY_WORKSPACES", "ws-a, ws-b")
    monkeypatch.setenv("VECTOROS_GATEWAY_HUBSPOT_CLIENT_SECRET", "hubspot-secret-1")
    monkeypatch.setenv("VECTOROS_GATEWAY_PUBLIC_URL", "https://hooks.example.com/")
    s = GatewaySettings()
    assert (s.gateway_port, s.gateway_workspaces) == (9000, ["ws-a", "ws-b"])
    assert s.gateway_public_url == "https://hooks.example.com"
    assert s.enabled_sources() == ("hubspot",)
    assert "hubspot-secret-1" not in repr(s)
    assert s.gateway_max_body_bytes == 1024 * 1024


@pytest.mark.parametrize(
    "values",
    [
        {"gateway_pipedrive_username": "only-user"},
        {"gateway_twenty_secret": "short"},
        {"gateway_workspaces": ["bad id"]},
        {"gateway_default_workspace": "-x"},
        {"gateway_public_url": "ftp://x"},
        {"gateway_default_currency": "usd"},
        {"gateway_max_body_bytes": 10},
    ],
)
def test_invalid(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        GatewaySettings(**values)  # type: ignore[arg-type]


def test_secrets_are_not_echoed_in_errors() -> None:
    with pytest.raises(ValidationError) as err:
        GatewaySettings(gateway_salesforce_token="tiny")  # type: ignore[arg-type]
    assert "tiny" not in str(err.value)


def test_stage_lookup_order(tmp_path: Path) -> None:
    path = tmp_path / "stages.yaml"
    path.write_text(
        "defaults:\n"
        "  hubspot:\n"
        "    appointmentscheduled: qualified\n"
        "  pipedrive:\n"
        "    '1': lead\n"
        "workspaces:\n"
        "  ws-acme:\n"
        "    pipedrive:\n"
        "      '1': proposal\n"
        "      7: LOST\n"
    )
    stages = StageMap.load(path)
    assert stages.lookup("pipedrive", "ws-acme", 1) is Stage.PROPOSAL
    assert stages.lookup("pipedrive", "ws-other", "1") is Stage.LEAD
    assert stages.lookup("pipedrive", "ws-acme", 7) is Outcome.LOST
    assert stages.lookup("hubspot", "ws-acme", "appointmentscheduled") is Stage.QUALIFIED
    assert stages.lookup("hubspot", "ws-acme", "ClosedWon") is Outcome.WON
    assert stages.lookup("salesforce", "ws", " Negotiation/Review ") is Stage.NEGOTIATION
    assert stages.lookup("pipedrive", "ws", "99") is None
    assert BUILTIN["pipedrive"] == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("zoho: {}", "unknown keys"),
        ("defaults: {zoho: {}}", "unknown source"),
        ("defaults: {hubspot: {x: maybe}}", "not one of"),
        ("workspaces: [1]", "workspaces must map"),
        ("defaults: {hubspot: [1]}", "must map stage ids"),
        ("[unclosed", "not valid YAML"),
    ],
)
def test_bad_stage_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "stages.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        StageMap.load(path)


def test_missing_stage_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        StageMap.load(tmp_path / "absent.yaml")
    assert StageMap.load(None).lookup("hubspot", "ws", "closedlost") is Outcome.LOST
