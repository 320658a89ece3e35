"""The monitor evaluates stuck_in_stage with each team's learned days-in-stage norm, read from
the history's stage benchmarks in PostgreSQL (``VECTOROS_DATABASE_URL`` set)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from consumer.history import store
from consumer.intelligence.projection import DAY_MS, DealHistory, StageSpell
from consumer.learned_rules import learned_rules_from
from consumer.monitor import Monitor
from consumer.monitor.metrics import MonitorMetrics
from consumer.thresholds import RulesConfig
from schemas.events import DealCreated
from schemas.insights import RuleName
from tests.databases import fresh_database, migrated_pool
from tests.kafka_utils import monitor_settings, publisher_for, read_insights, wait_ready
from vectoros.kafka import ensure_standard_topics
from vectoros.ops_server import Health

pytestmark = pytest.mark.integration

WAIT_LIMIT = 60.0  # a bound for "never happens", not a timing goal
T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


def histories(workspace: str) -> list[DealHistory]:
    """35 deals that left negotiation after 1..35 days: P90 = 31.6 days, from 35 deals."""
    t0 = int(T0.timestamp() * 1000) - 400 * DAY_MS
    return [
        DealHistory(
            workspace_id=workspace,
            deal_id=f"past-{n}",
            created_ms=t0,
            outcome="won",
            closed_ms=t0 + n * DAY_MS,
            stages=[StageSpell("negotiation", t0, t0 + n * DAY_MS)],
        )
        for n in range(1, 36)
    ]


def created(workspace: str, deal_id: str) -> DealCreated:
    return DealCreated(
        event_id=f"{deal_id}-created",
        workspace_id=workspace,
        deal_id=deal_id,
        occurred_at=T0,
        title=f"Deal {deal_id}",
        value=5_000,
        currency="USD",
        stage="negotiation",  # type: ignore[arg-type]
        probability=80,
        close_date=(T0 + dt.timedelta(days=90)).date(),
        owner_id="owner-1",
    )


async def test_stuck_in_stage_uses_the_teams_learned_norm(
    kafka_bootstrap: str, database_url: str, unique_name: Any
) -> None:
    async with fresh_database(database_url, "learned") as dsn:
        async with migrated_pool(dsn) as pool:
            async with pool.acquire() as conn:
                await store.upsert_histories(conn, histories("ws-learned"))
            await store.refresh_benchmarks(pool)
        settings = monitor_settings(kafka_bootstrap, unique_name).model_copy(
            update={"database_url": SecretStr(dsn)}
        )
        await ensure_standard_topics(settings)
        rules = RulesConfig()
        async with learned_rules_from(dsn, rules) as learned:
            monitor = Monitor(
                settings, rules, MonitorMetrics(CollectorRegistry()), Health(), learned=learned
            )
            stop = asyncio.Event()
            task = asyncio.create_task(monitor.run(stop))
            try:
                await wait_ready(monitor)
                loop = asyncio.get_running_loop()
                deadline = loop.time() + WAIT_LIMIT
                while monitor.handler.rules is rules:  # the first refresh has not landed yet
                    assert loop.time() < deadline, "the learned benchmarks were never read"
                    await asyncio.sleep(0.05)
                async with publisher_for(settings) as pub:
                    await pub.publish(created("ws-learned", "learned-1"))
                    await pub.publish(created("ws-static", "static-1"))
                    partitions = await pub.partitions(refresh=True)
                    # 25 days in negotiation: over the static 21-day norm, under the team's P90
                    await pub.publish_tick(T0 + dt.timedelta(days=25), partitions)
                    await pub.flush()
                    # 40 days: over both
                    await pub.publish_tick(T0 + dt.timedelta(days=40), partitions)
                    await pub.flush()
                stuck: dict[str, Any] = {}
                while len(stuck) < 2:
                    assert loop.time() < deadline, f"saw only {sorted(stuck)}"
                    for insight in await read_insights(kafka_bootstrap, settings.topic_insights):
                        if insight.rule == RuleName.STUCK_IN_STAGE:
                            stuck.setdefault(insight.deal_id, insight)
                    await asyncio.sleep(0.2)
            finally:
                stop.set()
                await asyncio.wait_for(task, WAIT_LIMIT)

    static, learned_one = stuck["static-1"], stuck["learned-1"]
    # the static norm fired at the first tick, the learned one only at the second
    assert static.detected_at == T0 + dt.timedelta(days=25)
    assert learned_one.detected_at == T0 + dt.timedelta(days=40)
    metrics = learned_one.data.key_metrics
    assert (metrics["benchmark"], metrics["benchmark_deals"]) == ("P90", 35)
    assert "from 35 deals" in learned_one.description
