"""NotifierSettings: environment parsing, validation, and no secret in any error or repr."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from consumer.notifier.settings import NotifierSettings
from schemas.insights import Priority

SLACK = "https://hooks.slack.com/services/T000/B000/SLACKSECRET"
HOOK = "https://receiver.example.com/in?token=HOOKSECRET"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("VECTOROS_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    s = NotifierSettings()
    assert s.notifier_group_id == "vectoros-notifier"
    assert s.notify_min_priority is Priority.HIGH
    assert s.notify_resolved is False
    assert s.notify_console is False
    assert s.slack_webhook_urls == []
    assert s.webhook_urls == []
    assert s.slack_min_interval_seconds == 1.0
    assert s.topic_insights == "deal-insights"
    assert not s.has_destinations
    assert NotifierSettings(notify_console=True).has_destinations
    assert s.notify_flood_control is True
    assert s.notify_prompt_min_priority is Priority.HIGH
    assert s.flood_policy().prompt_rank == Priority.HIGH.rank


def test_prompt_delivery_can_be_turned_off() -> None:
    assert NotifierSettings(notify_prompt_min_priority="none").flood_policy().prompt_rank is None
    assert NotifierSettings(notify_prompt_min_priority="critical").flood_policy().prompt_rank == (
        Priority.CRITICAL.rank
    )


def test_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECTOROS_SLACK_WEBHOOK_URLS", f"{SLACK}, {SLACK}2")
    monkeypatch.setenv("VECTOROS_WEBHOOK_URLS", f'["{HOOK}"]')
    monkeypatch.setenv("VECTOROS_WEBHOOK_SECRET", WHSEC)
    monkeypatch.setenv("VECTOROS_NOTIFY_MIN_PRIORITY", "critical")
    monkeypatch.setenv("VECTOROS_NOTIFY_RESOLVED", "true")
    monkeypatch.setenv("VECTOROS_CRM_DEAL_URL_TEMPLATE", "https://crm.example.com/deals/{deal_id}")
    s = NotifierSettings()
    assert [u.get_secret_value() for u in s.slack_webhook_urls] == [SLACK, SLACK + "2"]
    assert [u.get_secret_value() for u in s.webhook_urls] == [HOOK]
    assert s.notify_min_priority is Priority.CRITICAL
    assert s.notify_resolved is True
    text = repr(s) + str(s)
    for secret in ("SLACKSECRET", "HOOKSECRET", WHSEC):
        assert secret not in text


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"VECTOROS_SLACK_WEBHOOK_URLS": "ftp://x/SLACKSECRET"}, "slack_webhook_urls[0]"),
        ({"VECTOROS_WEBHOOK_URLS": HOOK}, "VECTOROS_WEBHOOK_SECRET"),
        (
            {"VECTOROS_WEBHOOK_URLS": HOOK, "VECTOROS_WEBHOOK_SECRET": "HOOKSECRET"},
            "whsec_",
        ),
        (
            {"VECTOROS_WEBHOOK_URLS": HOOK, "VECTOROS_WEBHOOK_SECRET": "whsec_HOOKSECRET!!"},
            "base64",
        ),
        ({"VECTOROS_CRM_DEAL_URL_TEMPLATE": "https://crm/{deal}"}, "placeholders"),
        ({"VECTOROS_CRM_DEAL_URL_TEMPLATE": "javascript:{deal_id}"}, "http"),
        ({"VECTOROS_SLACK_WEBHOOK_URLS": '["SLACKSECRET'}, "JSON"),
    ],
)
def test_invalid_settings_never_echo_secrets(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError) as info:
        NotifierSettings()
    text = str(info.value)
    assert message in text
    assert "SLACKSECRET" not in text
    assert "HOOKSECRET" not in text


def test_settings_are_frozen() -> None:
    s = NotifierSettings()
    with pytest.raises(ValidationError):
        s.notify_console = True  # type: ignore[misc]


def test_escalations_go_to_email_sms_or_named_shared_destinations() -> None:
    s = NotifierSettings(notify_escalate_via="email, slack_app:0,teams:1")
    assert s.notify_escalate_via == ["email", "slack_app:0", "teams:1"]
    with pytest.raises(ValidationError, match="notify_escalate_via"):
        NotifierSettings(notify_escalate_via="pager")
    with pytest.raises(ValidationError, match="notify_escalate_via"):
        NotifierSettings(notify_escalate_via="slack_app:owner")
