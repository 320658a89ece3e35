"""Scores reach the monitor (``VECTOROS_HISTORY_SCORES_TO_EVENTS``, with the model rules off in
the history service): with a current model, ``vectoros history`` scores the deals an event
batch changed and publishes each score as a ``deal.scored`` event on ``deal-events``; the monitor
folds it into the deal's state and its model-based rules fire on it, with the score in the
insight's key metrics. Real broker, real PostgreSQL, the real services."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from consumer.history import store
from consumer.history.service import run_history
from consumer.history.settings import HistorySettings
from consumer.history.train import train
from consumer.intelligence.histgen import HistorySpec, generate_histories
from consumer.monitor.settings import MonitorSettings
from consumer.thresholds import RulesConfig, RuleThresholds
from schemas.events import DealCreated
from schemas.insights import InsightEvent, RuleName
from tests.databases import fresh_database, migrated_pool
from tests.kafka_utils import (
    monitor_settings,
    publish,
    read_insights,
    running_monitor,
    wait_ready,
)
from vectoros.db import PgPool
from vectoros.ops_server import Health

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000
WAIT_LIMIT = 120.0  # a bound for "never happens", not a timing goal
SPEC = HistorySpec(deals=1500, days=540, seed=3)
DEALS = ("scored-1", "scored-2")


def created(deal_id: str, at: dt.datetime) -> DealCreated:
    return DealCreated(
        event_id=f"{deal_id}-created",
        workspace_id="ws-scores",
        deal_id=deal_id,
        occurred_at=at,
        title=f"Deal {deal_id}",
        value=5_000,
        currency="USD",
        stage="negotiation",  # type: ignore[arg-type]
        probability=100,
        close_date=(at + dt.timedelta(days=30)).date(),
        owner_id="owner-1",
    )


@contextlib.asynccontextmanager
async def trained_database(
    database_url: str, prefix: str
) -> AsyncIterator[tuple[str, PgPool, int]]:
    """A fresh database holding the simulator's history and a promoted model: its DSN, a pool
    and the model's version."""
    async with fresh_database(database_url, prefix) as dsn, migrated_pool(dsn) as pool:
        async with pool.acquire() as conn:
            await store.upsert_histories(conn, generate_histories(SPEC))
        trained = await train(pool, holdout_days=150, max_iter=40)
        assert trained.promoted
        yield dsn, pool, trained.version


def history_settings(
    kafka_bootstrap: str, dsn: str, monitor: MonitorSettings, name: Any, **extra: Any
) -> HistorySettings:
    """``vectoros history`` on the monitor's topics, its own scores topic and group."""
    return HistorySettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        database_url=dsn,
        topic_events=monitor.topic_events,
        topic_insights=monitor.topic_insights,
        topic_scores=name("scores"),
        topic_partitions=monitor.topic_partitions,
        history_group_id=name("history"),
        history_flush_ms=20,
        metrics_enabled=False,
        **extra,
    )


async def forecast_risks(
    kafka_bootstrap: str, topic: str, history: HistorySettings, deals: Sequence[str]
) -> dict[str, InsightEvent]:
    """Run ``vectoros history`` until ``topic`` holds a forecast_risk of each of ``deals``."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_history(history, CollectorRegistry(), Health(), stop))
    found: dict[str, InsightEvent] = {}
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_LIMIT
        while len(found) < len(deals):
            assert loop.time() < deadline, f"saw only {sorted(found)}"
            for insight in await read_insights(kafka_bootstrap, topic):
                if insight.rule is RuleName.FORECAST_RISK:
                    found.setdefault(insight.deal_id, insight)
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_LIMIT)
    return found


async def test_scores_reach_the_monitor_and_its_model_rules(
    kafka_bootstrap: str, database_url: str, unique_name: Any
) -> None:
    async with trained_database(database_url, "scores") as (dsn, pool, version):
        settings = monitor_settings(kafka_bootstrap, unique_name)
        # the rep says 100%: any model probability below 99.99% is a forecast risk
        rules = RulesConfig(
            RuleThresholds(forecast_gap_points=0.01, forecast_gap_critical_points=100)
        )
        history = history_settings(
            kafka_bootstrap,
            dsn,
            settings,
            unique_name,
            history_model_rules=False,
            history_scores_to_events=True,
        )
        async with running_monitor(settings, rules) as monitor:
            await wait_ready(monitor)
            at = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
            await publish(settings, [created(d, at) for d in DEALS])
            found = await forecast_risks(kafka_bootstrap, settings.topic_insights, history, DEALS)
            states = {
                deal_id: deal
                for part in monitor.partitions.values()
                for deal_id, deal in part.deals.items()
            }
        rows = {r["deal_id"]: r for r in await pool.fetch("SELECT * FROM deal_scores")}
    assert set(rows) == set(DEALS)
    for deal_id in DEALS:
        row, score = rows[deal_id], states[deal_id].score
        assert score is not None
        assert score.model_version == row["model_version"] == version
        assert score.probability == round(row["win_probability"] * 100, 2)
        assert score.p10_day is not None  # train stores the close-date model with it
        metrics = found[deal_id].data.key_metrics
        assert metrics["model_win_probability"] == score.probability
        assert metrics["rep_probability"] == 100
        assert f"{score.probability:g}%" in found[deal_id].description


class ConstantModel:
    """A stand-in for the win model that gives every deal the same probability."""

    workspaces: dict[str, int] = {}
    close = None

    def __init__(self, probability: float) -> None:
        self.probability = probability

    def explain(self, rows: list[Any], top: int = 3) -> tuple[Any, list[list[tuple[str, float]]]]:
        import numpy as np

        return np.full(len(rows), self.probability), [[("stage", 0.1)] for _ in rows]


async def test_only_changed_scores_go_to_deal_events(database_url: str) -> None:
    """A score equal to the deal's last published one (same model, same probability) goes to
    deal-scores but not to deal-events; a batch processed again after a crash publishes again
    the scores it published (they may never have reached the broker), not the others."""
    from consumer.history import models
    from consumer.history.metrics import HistoryMetrics
    from consumer.history.service import HistoryHandler
    from schemas.events import ActivityLogged

    at = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
    note = ActivityLogged(
        event_id="note-1",
        workspace_id="ws-scores",
        deal_id="scored-1",
        occurred_at=at + dt.timedelta(days=1),
        activity_type="note",  # type: ignore[arg-type]
    )
    registry = CollectorRegistry()
    handler = HistoryHandler(HistoryMetrics(registry), scores_topic="scores", events_topic="events")
    stop = asyncio.Event()

    async def to_events(events: list[Any], probability: float) -> list[str]:
        handler.model = models.StoredModel(1, "pooled", {}, ConstantModel(probability))  # type: ignore[arg-type]
        out = await handler.handle(events, stop)
        assert sum(o.topic == "scores" for o in out) == 1  # deal-scores gets every score
        return [o.key.decode() for o in out if o.topic == "events" and o.key is not None]

    async with fresh_database(database_url, "changed") as dsn, migrated_pool(dsn) as pool:
        handler.pool = pool
        first = created("scored-1", at)
        assert await to_events([first], 0.4) == ["scored-1"]  # its first score
        assert await to_events([note], 0.4) == []  # the note left it at 40%
        assert await to_events([note], 0.4) == []  # the same batch again: still not
        later = note.model_copy(
            update={"event_id": "note-2", "occurred_at": at + dt.timedelta(days=2)}
        )
        assert await to_events([later], 0.3) == ["scored-1"]  # 40% -> 30%
        assert await to_events([later], 0.3) == ["scored-1"]  # the same batch again: again
    assert registry.get_sample_value("vectoros_history_scores_to_events_total") == 3


class AgingModel(ConstantModel):
    """A stand-in whose probability falls with the deal's age: time alone changes it."""

    def explain(self, rows: list[Any], top: int = 3) -> tuple[Any, list[list[tuple[str, float]]]]:
        import numpy as np

        from consumer.intelligence.features import FEATURES

        age = FEATURES.index("deal_age_days")
        p = np.asarray([max(0.05, self.probability - 0.01 * row[age]) for row in rows])
        return p, [[("deal_age_days", -0.01)] for _ in rows]


async def test_a_tick_scores_every_open_deal_again_once_a_day(database_url: str) -> None:
    """The first tick of a day scores every open deal again as of that day's start (time
    changed their features), in one batch; later ticks that day do not; a deal with an event
    after that instant keeps its newer score; closed deals are not scored."""
    from consumer.history import models
    from consumer.history.metrics import HistoryMetrics
    from consumer.history.service import EventBatch, HistoryHandler
    from schemas.events import DealClosed

    day0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
    registry = CollectorRegistry()
    handler = HistoryHandler(
        HistoryMetrics(registry),
        scores_topic="scores",
        events_topic="events",
        rescore_ms=86_400_000,
    )
    handler.model = models.StoredModel(1, "pooled", {}, AgingModel(0.6))  # type: ignore[arg-type]
    stop = asyncio.Event()

    def batch(*events: Any, tick: dt.datetime | None = None) -> EventBatch:
        out = EventBatch(events)
        out.tick_ms = 0 if tick is None else round(tick.timestamp() * 1000)
        return out

    async def scored(b: EventBatch) -> dict[str, list[tuple[str, dt.datetime, float]]]:
        from schemas.events import DealScored, event_adapter
        from schemas.scores import DealScore

        out: dict[str, list[tuple[str, dt.datetime, float]]] = {"scores": [], "events": []}
        for o in await handler.handle(b, stop):
            if o.topic == "scores":
                s = DealScore.model_validate_json(o.value)
                out["scores"].append((s.deal_id, s.as_of, round(s.win_probability, 2)))
            else:
                e = event_adapter.validate_json(o.value)
                assert isinstance(e, DealScored)
                out["events"].append((e.deal_id, e.occurred_at, round(e.win_probability, 2)))
        return out

    lost = DealClosed(
        event_id="lost-1",
        workspace_id="ws-scores",
        deal_id="scored-3",
        occurred_at=day0,
        outcome="lost",  # type: ignore[arg-type]
    )
    async with fresh_database(database_url, "rescore") as dsn, migrated_pool(dsn) as pool:
        handler.pool = pool
        first = await scored(
            batch(
                created("scored-1", day0),
                created("scored-2", day0),
                created("scored-3", day0),
                lost,
            )
        )
        assert sorted(first["events"]) == [
            ("scored-1", day0, 0.6),
            ("scored-2", day0, 0.6),
        ]
        day3 = dt.datetime(2026, 3, 5, tzinfo=dt.UTC)
        late = created("scored-2", day0).model_copy(
            update={"event_id": "late", "occurred_at": day3 + dt.timedelta(hours=1)}
        )
        again = await scored(batch(late, tick=day3 + dt.timedelta(hours=2)))
        # scored-2: its event's score (after day3's start) is newer than the tick's
        age1 = round(0.6 - 0.01 * (day3 - day0).total_seconds() / 86_400, 2)
        assert ("scored-1", day3, age1) in again["events"]
        when = {(d, at) for d, at, _ in again["events"]}
        assert ("scored-2", day3 + dt.timedelta(hours=1)) in when
        assert ("scored-2", day3) not in when
        assert not [s for s in again["scores"] if s[0] == "scored-3"]
        assert await scored(batch(tick=day3 + dt.timedelta(hours=20))) == {
            "scores": [],
            "events": [],
        }  # the same day: nothing
        next_day = await scored(batch(tick=day3 + dt.timedelta(days=1, minutes=1)))
        assert [s[:2] for s in next_day["scores"]] == [
            ("scored-1", day3 + dt.timedelta(days=1)),
            ("scored-2", day3 + dt.timedelta(days=1)),
        ]


class SteeredModel(ConstantModel):
    """A stand-in whose probability and days to the P10 close date are set between batches."""

    def __init__(self) -> None:
        super().__init__(0.4)
        self.p10_days = 30.0
        self.close = self  # type: ignore[assignment]

    def predict(self, rows: list[Any]) -> tuple[Any, Any, Any]:
        import numpy as np

        days = np.full(len(rows), self.p10_days)
        return days, days, days


async def test_a_score_goes_to_the_monitor_only_when_it_matters(database_url: str) -> None:
    """With publish_points=5 and publish_days=7, a deal's score goes to deal-events when it is
    its first, or 5 points from the last one published, or its P10 moved 7 days from the
    published one or across the rep's close date; every score goes to deal-scores and
    deal_scores, with its P10, and deal_scores remembers the published one."""
    from consumer.history import models
    from consumer.history.metrics import HistoryMetrics
    from consumer.history.service import HistoryHandler
    from schemas.events import ActivityLogged

    day0 = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
    model = SteeredModel()
    handler = HistoryHandler(
        HistoryMetrics(CollectorRegistry()),
        scores_topic="scores",
        events_topic="events",
        publish_points=5,
        publish_days=7,
    )
    handler.model = models.StoredModel(1, "pooled", {}, model)  # type: ignore[arg-type]
    stop = asyncio.Event()

    def note(day: int) -> ActivityLogged:
        return ActivityLogged(
            event_id=f"note-{day}",
            workspace_id="ws-scores",
            deal_id="scored-1",
            occurred_at=day0 + dt.timedelta(days=day),
            activity_type="note",  # type: ignore[arg-type]
        )

    async def published(event: Any, probability: float, p10: dt.date) -> bool:
        model.probability = probability
        model.p10_days = (p10 - event.occurred_at.date()).days + 0.5  # the P10 is that day
        out = await handler.handle([event], stop)
        assert sum(o.topic == "scores" for o in out) == 1  # deal-scores gets every score
        return [o.topic for o in out if o.topic == "events"] == ["events"]

    def day(n: int) -> dt.date:
        return (day0 + dt.timedelta(days=n)).date()

    async with fresh_database(database_url, "worth") as dsn, migrated_pool(dsn) as pool:
        handler.pool = pool
        # the rep's close date is day 30 (``created``)
        assert await published(created("scored-1", day0), 0.40, day(25))  # its first score
        assert not await published(note(1), 0.43, day(26))  # 3 points, 1 day
        assert not await published(note(1), 0.43, day(26))  # the same batch again: still not
        assert await published(note(2), 0.44, day(31))  # P10 after the rep's date now
        assert not await published(note(3), 0.48, day(36))  # 4 points, 5 days
        assert await published(note(4), 0.49, day(39))  # 8 days from the published P10
        assert await published(note(4), 0.49, day(39))  # the same batch again: published again
        assert await published(note(5), 0.40, day(40))  # 9 points down
        assert not await published(note(6), 0.36, day(42))  # 4 points, 2 days
        row = await pool.fetchrow("SELECT * FROM deal_scores WHERE deal_id = 'scored-1'")
    assert row is not None
    assert (row["win_probability"], row["close_p10"]) == (0.36, day(42))
    assert (row["published_win_probability"], row["published_close_p10"]) == (0.40, day(40))
    assert row["published_as_of"] == day0 + dt.timedelta(days=5)
