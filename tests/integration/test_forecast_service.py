"""The forecast service on PostgreSQL: daily per workspace at its time, once; again for every
workspace when a model is promoted, with that model's scores as the probabilities."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from consumer.forecast.service import ForecastMetrics, ForecastService, run_forecast_service
from consumer.forecast.settings import ForecastSettings
from consumer.forecast.targets import Targets
from consumer.history import store
from tests.databases import fresh_database, migrated_pool
from tests.integration.test_forecast import HISTORY
from vectoros.db import PgPool
from vectoros.ops_server import Health

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[PgPool]:
    async with fresh_database(database_url, "forecast_service") as dsn, migrated_pool(dsn) as p:
        async with p.acquire() as conn:
            await store.upsert_histories(conn, HISTORY)
        yield p


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


SETTINGS = ForecastSettings(
    kafka_bootstrap_servers=None,
    forecast_at="06:00",
    forecast_workspace_at={"beta": "08:00"},
    forecast_periods="quarter",
    forecast_simulations=500,
)


async def rows(pool: PgPool) -> list[tuple[str, str, str]]:
    found = await pool.fetch(
        "SELECT workspace_id, as_of, probabilities FROM forecasts ORDER BY as_of, workspace_id"
    )
    return [(r["workspace_id"], r["as_of"].strftime("%H:%M"), r["probabilities"]) for r in found]


async def test_daily_per_workspace_and_again_when_a_model_is_promoted(pool: PgPool) -> None:
    registry = CollectorRegistry()
    stop = asyncio.Event()
    stop.set()  # one check, then return
    await run_forecast_service(
        SETTINGS,
        pool,
        store.load_histories,
        registry,
        Health(),
        stop,
        targets=Targets({"acme": {"2026-Q1": 2200.0}}),
        clock=lambda: at("2026-02-01T07:00"),
    )
    # neither had a forecast yet: both at once
    assert await rows(pool) == [("acme", "07:00", "rep"), ("beta", "07:00", "rep")]
    target = await pool.fetchval("SELECT target FROM forecasts WHERE workspace_id = 'acme'")
    assert target == 2200.0
    assert registry.get_sample_value("vectoros_forecast_rounds_total", {"trigger": "schedule"}) == 1

    service = ForecastService(
        SETTINGS, pool, store.load_histories, ForecastMetrics(CollectorRegistry())
    )
    assert (
        await service.check(at("2026-02-01T07:30")) == []
    )  # acme's 06:00 done, beta's 08:00 not yet
    assert [f.workspace_id for f in await service.check(at("2026-02-01T08:05"))] == ["beta"]
    assert await service.check(at("2026-02-01T08:06")) == []

    version = await pool.fetchval(
        "INSERT INTO win_models (scope, data_until, holdout_from, train_snapshots,"
        " holdout_snapshots, closed_deals, features, metrics, baselines, current, model)"
        " VALUES ('pooled', now(), now(), 1, 1, 1, '[]', '{}', '{}', true, '\\x00')"
        " RETURNING version"
    )
    await pool.execute(
        "INSERT INTO deal_scores (workspace_id, deal_id, as_of, model_version, win_probability,"
        " top_factors) VALUES ('acme', 'half', now(), $1, 0.9, '[]')",
        version,
    )
    promoted = await service.check(at("2026-02-01T08:10"))  # every workspace, the model's scores
    assert [(f.workspace_id, f.probabilities) for f in promoted] == [
        ("acme", f"model v{version}"),
        ("beta", "rep"),  # the model scored none of beta's deals
    ]
    assert promoted[0].result.weighted_pipeline == pytest.approx(700 + 500 + 0.9 * 1000)
    assert promoted[1].result.weighted_pipeline == pytest.approx(0.2 * 100)
    # with the model's scores, the deals still to be created are drawn too: about 5.9 more
    # deals like January's 700 win by the quarter's end (none with the rep's, beta)
    assert promoted[0].result.expected > 700 + 500 + 1000 + 2000
    assert promoted[1].result.expected <= 100.0
    assert await service.check(at("2026-02-01T08:20")) == []  # the same model: nothing
    assert await rows(pool) == [
        ("acme", "07:00", "rep"),
        ("beta", "07:00", "rep"),
        ("beta", "08:05", "rep"),
        ("acme", "08:10", f"model v{version}"),
        ("beta", "08:10", "rep"),
    ]
    assert service.metrics.rounds.labels("model")._value.get() == 1


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="time of day"):
        ForecastService(
            ForecastSettings(forecast_at="6 am"),
            None,
            store.load_histories,
            ForecastMetrics(CollectorRegistry()),  # type: ignore[arg-type]
        )
    with pytest.raises(ValueError, match="period kind"):
        ForecastService(
            ForecastSettings(forecast_periods="quarter,week"),
            None,
            store.load_histories,
            ForecastMetrics(CollectorRegistry()),  # type: ignore[arg-type]
        )
