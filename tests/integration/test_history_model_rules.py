"""The model rules in ``vectoros history`` (the default): the handler against a real PostgreSQL
raises, re-sends after a failed publish or a crash, and resolves on close through its outbox;
the real service next to the real monitor on the real broker publishes the model rules'
insights itself while the monitor never sees a score."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from consumer.history import models
from consumer.history.metrics import HistoryMetrics
from consumer.history.service import EventBatch, HistoryHandler
from consumer.thresholds import RulesConfig
from schemas.events import ActivityLogged, DealClosed
from schemas.insights import InsightEvent, Lifecycle, RuleName
from tests.databases import fresh_database, migrated_pool
from tests.integration.test_monitor_scores import (
    ConstantModel,
    created,
    forecast_risks,
    history_settings,
    trained_database,
)
from tests.kafka_utils import monitor_settings, publish, read_insights, running_monitor, wait_ready

pytestmark = pytest.mark.integration

WAIT_LIMIT = 120.0  # a bound for "never happens", not a timing goal
AT = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


def batch(*events: Any) -> EventBatch:
    return EventBatch(events)


def insights(outputs: Any) -> list[InsightEvent]:
    return [InsightEvent.model_validate_json(o.value) for o in outputs if o.topic == "insights"]


async def test_raised_resent_until_published_and_resolved_on_close(database_url: str) -> None:
    registry = CollectorRegistry()
    metrics = HistoryMetrics(registry)

    def handler() -> HistoryHandler:
        h = HistoryHandler(metrics, scores_topic="scores", insights_topic="insights")
        h.model = models.StoredModel(1, "pooled", {}, ConstantModel(0.4))  # type: ignore[arg-type]
        return h

    stop = asyncio.Event()
    async with fresh_database(database_url, "modelrules") as dsn, migrated_pool(dsn) as pool:
        first = handler()
        first.pool = pool
        b1 = batch(created("scored-1", AT))  # the rep says 100%, the model 40%
        raised = insights(await first.handle(b1, stop))
        assert [(i.rule, i.lifecycle, i.deal_id) for i in raised] == [
            (RuleName.FORECAST_RISK, Lifecycle.RAISED, "scored-1")
        ]
        assert raised[0].data.key_metrics["model_win_probability"] == 40.0
        # the publish failed: the loop hands the same batch again; it goes out again
        assert insights(await first.handle(b1, stop)) == raised
        # a crash before the publish: a new process handles the batch again; still sent
        second = handler()
        second.pool = pool
        assert insights(await second.handle(batch(created("scored-1", AT)), stop)) == raised
        # the next batch: the one before was published, so it is not sent again
        note = ActivityLogged(
            event_id="note-1",
            workspace_id="ws-scores",
            deal_id="scored-1",
            occurred_at=AT + dt.timedelta(days=1),
            activity_type="note",  # type: ignore[arg-type]
        )
        assert insights(await second.handle(batch(note), stop)) == []
        assert await pool.fetchval("SELECT count(*) FROM model_insight_outbox") == 0
        lost = DealClosed(
            event_id="lost-1",
            workspace_id="ws-scores",
            deal_id="scored-1",
            occurred_at=AT + dt.timedelta(days=2),
            outcome="lost",  # type: ignore[arg-type]
        )
        resolved = insights(await second.handle(batch(lost), stop))
        assert [(i.rule, i.lifecycle, i.insight_id) for i in resolved] == [
            (RuleName.FORECAST_RISK, Lifecycle.RESOLVED, raised[0].insight_id)
        ]
        assert resolved[0].data.key_metrics["resolution"] == "lost"
        state = await pool.fetchval("SELECT state FROM model_watch WHERE deal_id = 'scored-1'")
        assert state["closed"]  # kept closed: a late score finds nothing to raise on
        assert state["open"] == []
    count = registry.get_sample_value
    labels = {"rule": "forecast_risk", "lifecycle": "raised"}
    assert count("vectoros_history_model_insights_total", labels) == 1
    labels["lifecycle"] = "resolved"
    assert count("vectoros_history_model_insights_total", labels) == 1


async def test_the_service_publishes_the_model_rules_and_the_monitor_sees_no_score(
    kafka_bootstrap: str, database_url: str, unique_name: Any, tmp_path: Path
) -> None:
    async with trained_database(database_url, "scoresvc") as (dsn, pool, _version):
        settings = monitor_settings(kafka_bootstrap, unique_name)
        # the rep says 100%: any model probability below 99.99% is a forecast risk
        rules_file = tmp_path / "rules.yaml"
        rules_file.write_text(
            "defaults: {forecast_gap_points: 0.01, forecast_gap_critical_points: 100}\n"
        )
        history = history_settings(
            kafka_bootstrap, dsn, settings, unique_name, rules_file=rules_file
        )
        assert history.history_model_rules
        assert not history.history_scores_to_events
        async with running_monitor(settings, RulesConfig()) as monitor:
            await wait_ready(monitor)
            at = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
            await publish(settings, [created("scored-1", at)])
            found = await forecast_risks(
                kafka_bootstrap, settings.topic_insights, history, ["scored-1"]
            )
            deals = {d: s for part in monitor.partitions.values() for d, s in part.deals.items()}
        row = await pool.fetchrow("SELECT * FROM deal_scores WHERE deal_id = 'scored-1'")
    assert deals["scored-1"].score is None  # the monitor never saw a score
    published = [
        i
        for i in await read_insights(kafka_bootstrap, settings.topic_insights)
        if i.rule is RuleName.FORECAST_RISK
    ]
    assert published == [found["scored-1"]]  # raised once, by the history service
    metrics = found["scored-1"].data.key_metrics
    assert row is not None
    assert metrics["model_win_probability"] == round(row["win_probability"] * 100, 2)
    assert metrics["rep_probability"] == 100
