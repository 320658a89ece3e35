"""``vectoros enrich`` settings: the key from ANTHROPIC_API_KEY, off without it or with
VECTOROS_LLM=off, the key never shown, the default model current, and the off state of
run_enricher (it says so once and waits)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr, ValidationError

from consumer.enricher.service import run_enricher
from consumer.enricher.settings import DEFAULT_MODEL, EnricherSettings
from vectoros.ops_server import Health

KEY = "sk-ant-api03-SECRETSECRET"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "VECTOROS_ANTHROPIC_API_KEY", "VECTOROS_LLM"):
        monkeypatch.delenv(name, raising=False)


def test_off_without_a_key() -> None:
    s = EnricherSettings()
    assert s.anthropic_api_key is None
    assert not s.enrich_enabled
    assert s.off_reason == "ANTHROPIC_API_KEY is not set"
    assert s.enrich_model == DEFAULT_MODEL == "claude-sonnet-5-5"


def test_the_key_comes_from_anthropic_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    s = EnricherSettings()
    assert s.enrich_enabled
    assert s.anthropic_api_key is not None
    assert s.anthropic_api_key.get_secret_value() == KEY
    assert KEY not in repr(s)
    assert KEY not in str(s.model_dump())


def test_the_vectoros_variable_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-general")
    monkeypatch.setenv("VECTOROS_ANTHROPIC_API_KEY", KEY)
    key = EnricherSettings().anthropic_api_key
    assert key is not None
    assert key.get_secret_value() == KEY


@pytest.mark.parametrize("value", ["off", "false", "0"])
def test_llm_off_wins_over_a_key(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("VECTOROS_LLM", value)
    s = EnricherSettings()
    assert not s.enrich_enabled
    assert s.off_reason == "VECTOROS_LLM=off"


def test_an_empty_key_is_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "")
    assert not EnricherSettings().enrich_enabled


def test_errors_do_not_echo_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECTOROS_ENRICH_CONCURRENCY", KEY)
    with pytest.raises(ValidationError) as info:
        EnricherSettings()
    assert KEY not in str(info.value)
    assert "enrich_concurrency" in str(info.value)


def test_ranges() -> None:
    with pytest.raises(ValidationError):
        EnricherSettings(enrich_backoff_base_seconds=5, enrich_backoff_cap_seconds=1)
    with pytest.raises(ValidationError):
        EnricherSettings(enrich_max_attempts=0)
    s = EnricherSettings(anthropic_api_key=SecretStr(KEY), enrich_timeout_seconds=10)
    assert s.enrich_claim_stale_seconds == 3 * (10 + 20) + 30


async def test_off_says_so_once_and_waits(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    registry, health, stop = CollectorRegistry(), Health(), asyncio.Event()
    task = asyncio.create_task(run_enricher(EnricherSettings(), registry, health, stop))
    await asyncio.sleep(0.05)
    assert not task.done()
    assert health.ready()
    assert registry.get_sample_value("vectoros_enricher_enabled") == 0
    stop.set()
    await asyncio.wait_for(task, 5)
    messages = [r.getMessage() for r in caplog.records if "enricher off" in r.getMessage()]
    assert messages == ["enricher off (ANTHROPIC_API_KEY is not set): insights keep the rule text"]
