"""The notifier's grouping window: it waits for the model's text only while an enricher runs,
only for the insights it enriches, and never longer than the window."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from consumer.enricher.store import InMemoryEnrichmentLog, MemoryRow
from consumer.notifier.metrics import NotifierEnrichmentMetrics, NotifierMetrics
from consumer.notifier.service import Notifier
from consumer.notifier.settings import NotifierSettings
from schemas.enriched_text import EnrichedText
from schemas.insights import InsightEvent, Priority, insight_adapter
from vectoros.enrichments import EnrichmentKey, StoredText

TEXT = EnrichedText.model_validate(
    {
        "title": "Claude: Deal 1 has been silent for 9 days",
        "description": "No activity for 9 days on a 1,000 EUR deal.",
        "actions": [
            {"action": "Call", "priority": "high", "timeline": "today", "expected_impact": "Reach"},
            {
                "action": "Mail",
                "priority": "low",
                "timeline": "this week",
                "expected_impact": "Recap",
            },
        ],
    }
)


def insight(n: int = 1, **overrides: Any) -> InsightEvent:
    data: dict[str, Any] = {
        "insight_id": f"insight-{n}",
        "lifecycle": "raised",
        "rule": "stale_deal",
        "workspace_id": "ws-1",
        "deal_id": f"deal-{n}",
        "title": f"Deal {n} has gone quiet",
        "description": "No activity for 9 days.",
        "priority": "high",
        "confidence": 0.9,
        "data": {"deal_id": f"deal-{n}", "deal_title": f"Deal {n}", "deal_value": 1000.0},
        "actions": [
            {"action": "Call", "priority": "high", "timeline": "today", "expected_impact": "x"},
            {"action": "Mail", "priority": "low", "timeline": "week", "expected_impact": "y"},
        ],
        "source": "rules",
        "detected_at": "2026-03-01T09:00:00+00:00",
        "raised_at": "2026-03-01T09:00:00+00:00",
    }
    data.update(overrides)
    return insight_adapter.validate_python(data)


class Clock:
    """A fake monotonic clock; sleeping advances it (and lets ``on_sleep`` act)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.on_sleep: Any = None

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep(self.now)


class World:
    def __init__(self, window: float = 10.0) -> None:
        settings = NotifierSettings(notify_console=True, notify_enrichment_window_seconds=window)
        self.registry = CollectorRegistry()
        self.clock = Clock()
        self.log = InMemoryEnrichmentLog()
        self.notifier = Notifier(
            settings,
            [],
            None,  # type: ignore[arg-type]  # the notification log is not used here
            NotifierMetrics(self.registry),
            asyncio.Event(),
            clock=self.clock,
            sleep=self.clock.sleep,
            enrichments=self.log,
            enrichment_metrics=NotifierEnrichmentMetrics(self.registry),
        )

    def enricher_runs(self, min_priority: Priority = Priority.HIGH) -> None:
        self.log.live["enricher-1"] = min_priority.value

    def outcome(self, event: InsightEvent, text: EnrichedText | None) -> None:
        status = "enriched" if text is not None else "fallback"
        stored = StoredText(text, "claude-sonnet-5-5") if text is not None else None
        self.log.rows[EnrichmentKey.of(event)] = MemoryRow(status, "enricher-1", stored)

    def waits(self, status: str) -> float:
        found = self.registry.get_sample_value(
            "vectoros_notifier_enrichment_waits_total", {"status": status}
        )
        return found or 0.0


async def test_no_enricher_running_means_no_wait() -> None:
    w = World()
    batch = [insight(1)]
    assert await w.notifier.with_enrichments(batch) == batch
    assert w.clock.sleeps == []


async def test_a_window_of_zero_means_no_wait() -> None:
    w = World(window=0)
    w.enricher_runs()
    assert await w.notifier.with_enrichments([insight(1)]) == [insight(1)]
    assert w.clock.sleeps == []


async def test_the_model_text_replaces_the_rule_text_when_it_is_there() -> None:
    w = World()
    w.enricher_runs()
    first, second = insight(1), insight(2)
    w.outcome(first, TEXT)
    w.clock.on_sleep = lambda now: now >= 1.0 and w.outcome(second, None)
    out = await w.notifier.with_enrichments([first, second])
    assert out[0].title == TEXT.title
    assert out[0].source == "claude-sonnet-5-5"
    assert out[0].lifecycle.value == "raised"  # still the step being announced
    assert out[0].insight_id == first.insight_id
    assert out[1] == second  # the enricher gave up: rule text
    assert 1.0 <= w.clock.now < 1.5  # stopped waiting once both outcomes were known
    assert w.waits("enriched") == 1
    assert w.waits("fallback") == 1


async def test_the_wait_ends_with_the_window() -> None:
    w = World(window=3.0)
    w.enricher_runs()
    out = await w.notifier.with_enrichments([insight(1)])
    assert out == [insight(1)]
    assert w.clock.now == pytest.approx(3.0)
    assert w.waits("timeout") == 1


async def test_only_insights_the_enricher_takes_are_held() -> None:
    w = World()
    w.enricher_runs(Priority.CRITICAL)
    out = await w.notifier.with_enrichments([insight(1), insight(2, lifecycle="resolved")])
    assert len(out) == 2
    assert w.clock.sleeps == []  # high is below the enricher's threshold, resolved never waits


async def test_an_unreadable_log_sends_the_rule_text() -> None:
    w = World()
    w.enricher_runs()
    w.log.fail_with = [OSError("database down")]  # the liveness query fails
    assert await w.notifier.with_enrichments([insight(1)]) == [insight(1)]
    original = w.log.live_min_priority

    async def live() -> Priority | None:  # ... or the outcomes query after it
        result = await original()
        w.log.fail_with = [OSError("database down")]
        return result

    w.log.live_min_priority = live  # type: ignore[method-assign]
    w.log.fail_with = []
    assert await w.notifier.with_enrichments([insight(1)]) == [insight(1)]
    assert w.waits("unavailable") == 1
    assert w.clock.sleeps == []


def test_the_window_setting() -> None:
    assert NotifierSettings().notify_enrichment_window_seconds == 10.0
    with pytest.raises(ValueError, match="notify_enrichment_window_seconds"):
        NotifierSettings(notify_enrichment_window_seconds=-1)
