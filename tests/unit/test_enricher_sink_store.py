"""How the sink stores ``enriched`` events (in-memory store; PostgreSQL agrees, see
tests/integration/test_enricher.py): the text of the current content version only, rule text
kept as the fallback, replays and redeliveries change nothing."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from consumer.sink.store import (
    ENRICH_INSIGHTS_SQL,
    InMemoryInsightStore,
    InsightRow,
    SourcePosition,
    apply_enrichment,
    enrichment_row,
    insight_row,
    split_enrichments,
)
from schemas.insights import (
    InsightAction,
    InsightData,
    InsightEvent,
    Lifecycle,
    Priority,
    RuleName,
)

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
MODEL = "claude-sonnet-5-5"


def event(
    lifecycle: Lifecycle,
    *,
    priority: Priority = Priority.HIGH,
    day: float = 0,
    title: str | None = None,
    source: str = "rules",
    insight: str = "i1",
) -> InsightEvent:
    return InsightEvent(
        insight_id=insight,
        lifecycle=lifecycle,
        rule=RuleName.STALE_DEAL,
        workspace_id="ws1",
        deal_id=f"deal-{insight}",
        title=title or f"rule text: {lifecycle.value} {priority.value} day {day:g}",
        description=f"rule description day {day:g}",
        priority=priority,
        confidence=0.9,
        data=InsightData(
            deal_id=f"deal-{insight}",
            deal_title="Acme",
            deal_value=25_000.0,
            key_metrics={"days_inactive": 8 + day},
        ),
        actions=[
            InsightAction(action="Call", priority=priority, timeline="today", expected_impact="x"),
            InsightAction(
                action="Mail", priority=Priority.LOW, timeline="week", expected_impact="y"
            ),
        ],
        source=source,
        detected_at=T0 + timedelta(days=day),
        raised_at=T0,
    )


def enriched(base: InsightEvent, title: str = "Claude wrote this") -> InsightEvent:
    return base.model_copy(
        update={
            "lifecycle": Lifecycle.ENRICHED,
            "title": title,
            "description": f"{title}: 12 days without contact.",
            "actions": [
                InsightAction(
                    action="Call the buyer", priority=Priority.HIGH, timeline="today",
                    expected_impact="Re-engages",
                ),
                InsightAction(
                    action="Send a recap", priority=Priority.MEDIUM, timeline="this week",
                    expected_impact="Keeps momentum",
                ),
            ],
            "source": MODEL,
        }
    )  # fmt: skip


RAISED = event(Lifecycle.RAISED, day=0)
ESCALATED = event(Lifecycle.ESCALATED, priority=Priority.CRITICAL, day=7)
RESOLVED = event(Lifecycle.RESOLVED, priority=Priority.CRITICAL, day=9, title="Resolved")
E_RAISED = enriched(RAISED, "Claude on the raise")
E_ESCALATED = enriched(ESCALATED, "Claude on the escalation")


async def rows_after(*batches: list[InsightEvent]) -> dict[str, InsightRow]:
    store = InMemoryInsightStore()
    offset = 0
    for batch in batches:
        items = []
        for e in batch:
            items.append((e, SourcePosition("deal-insights", 0, offset)))
            offset += 1
        await store.write_batch(items)
    return store.insights


async def test_enrichment_replaces_the_text_and_keeps_the_rule_text() -> None:
    row = (await rows_after([RAISED], [E_RAISED]))["i1"]
    assert row.title == "Claude on the raise"
    assert row.source == MODEL
    assert "Call the buyer" in row.actions
    assert row.rule_title == RAISED.title  # the fallback
    assert row.rule_description == RAISED.description
    # nothing else changes: status, priority, lifecycle, versions
    base = insight_row(RAISED)
    for name in ("status", "lifecycle", "priority", "detected_at", "content_detected_at", "data"):
        assert getattr(row, name) == getattr(base, name), name


async def test_in_one_batch_too() -> None:
    assert (await rows_after([RAISED, E_RAISED]))["i1"].title == "Claude on the raise"


async def test_an_enrichment_of_an_older_version_changes_nothing() -> None:
    row = (await rows_after([RAISED, ESCALATED], [E_RAISED]))["i1"]
    assert row.title == ESCALATED.title
    assert row.source == "rules"


async def test_an_escalation_replaces_the_enriched_text_until_it_is_enriched() -> None:
    rows = await rows_after([RAISED], [E_RAISED], [ESCALATED])
    assert rows["i1"].title == ESCALATED.title
    assert rows["i1"].source == "rules"
    rows = await rows_after([RAISED], [E_RAISED], [ESCALATED], [E_ESCALATED])
    assert rows["i1"].title == "Claude on the escalation"
    assert rows["i1"].rule_title == ESCALATED.title


async def test_resolution_keeps_the_enriched_text_and_an_enrichment_never_reopens() -> None:
    rows = await rows_after([RAISED, E_RAISED, RESOLVED])
    assert rows["i1"].title == "Claude on the raise"
    assert rows["i1"].status == "resolved"
    late = await rows_after([RAISED, RESOLVED], [E_RAISED])
    assert late["i1"].status == "resolved"


async def test_an_enrichment_without_its_event_makes_no_row() -> None:
    assert await rows_after([E_RAISED]) == {}


async def test_a_resolution_only_row_is_not_enriched() -> None:
    only = event(Lifecycle.RESOLVED, day=0)  # same detected_at and priority as RAISED
    rows = await rows_after([only], [E_RAISED])
    assert rows["i1"].title == only.title


async def test_priority_must_match_too() -> None:
    """Raised and escalated at the same instant: each enrichment finds its own version."""
    same_instant = event(Lifecycle.ESCALATED, priority=Priority.CRITICAL, day=0)
    rows = await rows_after([RAISED, same_instant], [E_RAISED])
    assert rows["i1"].title == same_instant.title
    rows = await rows_after([RAISED, same_instant], [enriched(same_instant)])
    assert rows["i1"].title == "Claude wrote this"


@pytest.mark.parametrize("repeats", [1, 2, 3])
async def test_replays_and_redeliveries_change_nothing(repeats: int) -> None:
    stream = [RAISED, E_RAISED, ESCALATED, E_ESCALATED, RESOLVED]
    expected = await rows_after(stream)
    store = InMemoryInsightStore()
    for n, batch in enumerate(itertools.chain.from_iterable([stream] * repeats)):
        result = await store.write_batch([(batch, SourcePosition("t", 0, n))])
        if n >= len(stream):
            assert result.insights_written == 0
            assert result.events_inserted == 0
    assert store.insights == expected
    assert len(store.events) == len(stream)  # one history row per step, enrichments included


def test_split_keeps_one_enrichment_per_version() -> None:
    pos = SourcePosition("t", 0, 0)
    second = enriched(RAISED, "second text")
    steps, enrichments = split_enrichments([(RAISED, pos), (E_RAISED, pos), (second, pos)])
    assert [e for e, _ in steps] == [RAISED]
    assert [e.title for e in enrichments] == ["second text"]


def test_apply_enrichment_is_idempotent() -> None:
    row = insight_row(RAISED)
    once = apply_enrichment(row, enrichment_row(E_RAISED))
    assert apply_enrichment(once, enrichment_row(E_RAISED)) == once
    assert apply_enrichment(row, enrichment_row(E_ESCALATED)) == row


def test_the_sql_is_parameterised_and_matches_the_rule() -> None:
    for text in (
        "cur.content_rank >= 1",
        "cur.content_detected_at = new.detected_at",
        "cur.priority = new.priority",
        "IS DISTINCT FROM",
        "$7::text[]",
    ):
        assert text in ENRICH_INSIGHTS_SQL
    assert "rule_title" not in ENRICH_INSIGHTS_SQL
