"""The context built from the insight stream: deal facts, the rule and its numbers, stage
history, activity figures, other open insights; bounded memory; untrusted text cleaned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from consumer.enricher.context import DealMemory, build_context, untrusted
from schemas.insights import InsightEvent, insight_adapter

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def step(
    rule: str = "stale_deal",
    lifecycle: str = "raised",
    *,
    deal: str = "d1",
    day: int = 0,
    stage: str = "proposal",
    priority: str = "high",
    metrics: dict[str, Any] | None = None,
    title: str = "Acme renewal",
) -> InsightEvent:
    at = T0 + timedelta(days=day)
    return insight_adapter.validate_python(
        {
            "insight_id": f"{deal}-{rule}",
            "lifecycle": lifecycle,
            "rule": rule,
            "workspace_id": "ws",
            "deal_id": deal,
            "title": f"'{title}' rule text",
            "description": "Rule description with 12 days.",
            "priority": priority,
            "confidence": 0.9,
            "data": {
                "deal_id": deal,
                "deal_title": title,
                "deal_value": 48000.0,
                "currency": "EUR",
                "stage": stage,
                "owner_name": "Ada",
                "company": "Acme",
                "key_metrics": metrics or {"days_inactive": 12.0, "threshold_days": 7},
            },
            "actions": [
                {"action": "Call", "priority": "high", "timeline": "today", "expected_impact": "x"},
                {"action": "Mail", "priority": "low", "timeline": "week", "expected_impact": "y"},
            ],
            "source": "rules",
            "detected_at": at.isoformat(),
            "raised_at": T0.isoformat(),
        }
    )


def test_context_of_a_first_insight() -> None:
    memory = DealMemory()
    event = step(metrics={"days_inactive": 12.0, "threshold_days": 7, "activity_count": 3})
    ctx = build_context(event, memory.observe(event))
    assert ctx["deal"] == {
        "title": "Acme renewal",
        "company": "Acme",
        "value": 48000.0,
        "currency": "EUR",
        "stage": "proposal",
        "owner": "Ada",
    }
    alert = ctx["alert"]
    assert alert["rule"] == "stale_deal"
    assert "No activity" in alert["meaning"]
    assert alert["key_metrics"] == {"activity_count": 3, "days_inactive": 12.0, "threshold_days": 7}
    assert alert["rule_text"]["title"] == "'Acme renewal' rule text"
    assert ctx["activity"] == {"activity_count": 3, "days_inactive": 12.0}
    assert ctx["stage_history"] == [{"stage": "proposal", "first_seen": "2026-03-01"}]
    assert ctx["other_open_alerts"] == []
    assert ctx["previous_alerts"] == []


def test_other_open_insights_stage_history_and_previous_steps() -> None:
    memory = DealMemory()
    for event in (
        step("low_probability", day=0, stage="qualified"),
        step("close_date_passed", day=2, stage="proposal"),
        step("close_date_passed", "resolved", day=3, stage="proposal"),
        step("stale_deal", day=5, stage="negotiation"),
    ):
        before = memory.observe(event)
    ctx = build_context(event, before)
    assert [a["rule"] for a in ctx["other_open_alerts"]] == ["low_probability"]
    assert [s["stage"] for s in ctx["stage_history"]] == ["qualified", "proposal", "negotiation"]
    assert [(p["rule"], p["lifecycle"]) for p in ctx["previous_alerts"]] == [
        ("low_probability", "raised"),
        ("close_date_passed", "raised"),
        ("close_date_passed", "resolved"),
    ]
    escalated = step("stale_deal", "escalated", day=9, stage="negotiation", priority="critical")
    ctx = build_context(escalated, memory.observe(escalated))
    assert "stale_deal" not in [a["rule"] for a in ctx["other_open_alerts"]]  # itself
    assert ctx["previous_alerts"][-1]["rule"] == "stale_deal"  # its own raise, before


def test_memory_is_bounded() -> None:
    memory = DealMemory(max_deals=3)
    for n in range(10):
        memory.observe(step(deal=f"d{n}"))
    assert len(memory) == 3
    assert memory.history("ws", "d0") is None
    assert memory.history("ws", "d9") is not None
    for day in range(30):
        memory.observe(step(deal="d9", day=day, stage=("lead", "qualified")[day % 2]))
    history = memory.history("ws", "d9")
    assert history is not None
    assert len(history.recent) <= 8
    assert len(history.stages) <= 8


def test_enriched_events_are_not_remembered() -> None:
    memory = DealMemory()
    memory.observe(step("stale_deal", "enriched"))
    history = memory.history("ws", "d1")
    assert history is not None
    assert not history.open
    assert not history.recent


def test_untrusted_text_is_cleaned_and_bounded() -> None:
    assert untrusted("a\x00b\x1bc\u2028d") == "a b c d"
    assert untrusted("x" * 1000) == "x" * 299 + "…"
    assert untrusted(None) is None
    memory = DealMemory()
    event = step(title="Acme " + "y" * 500)
    ctx = build_context(event, memory.observe(event))
    assert len(ctx["deal"]["title"]) == 300


def test_a_pipeline_gap_insight_has_a_meaning_too() -> None:
    event = step("pipeline_gap", deal="pipeline:2026-Q1", metrics={"p_reach_target": 0.2})
    ctx = build_context(event, DealMemory().observe(event))
    assert ctx["alert"]["rule"] == "pipeline_gap"
    assert "probability of reaching its revenue target" in ctx["alert"]["meaning"]
