"""The forecast service on PostgreSQL: daily per workspace at its time, once; again for every
workspace when a model is promoted, with that model's scores as the probabilities."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from consumer.forecast.backtest import close_at
from consumer.forecast.pipeline import PeriodSpec, pipeline_at
from consumer.forecast.service import (
    ForecastMetrics,
    ForecastService,
    WorkspaceForecast,
    run_forecast_service,
)
from consumer.forecast.settings import ForecastSettings
from consumer.forecast.targets import Targets
from consumer.history import store
from consumer.intelligence.histgen import HistorySpec, generate_histories
from consumer.intelligence.projection import DealHistory
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


async def test_with_a_current_model_the_close_dates_are_a_model_trained_as_of_now(
    database_url: str,
) -> None:
    """With a current model, a workspace it scored is forecast with its scores and with close
    dates from a close-date model trained on what is known now (``backtest.close_at``, as
    `forecast run` trains one); a workspace it did not score, and every workspace before there
    is a model, with the rep's close dates."""
    simulated = generate_histories(HistorySpec(deals=400, days=300, workspaces=2, seed=5))
    async with (
        fresh_database(database_url, "forecast_service_close") as dsn,
        migrated_pool(dsn) as pool,
    ):
        async with pool.acquire() as conn:
            await store.upsert_histories(conn, simulated)
        loaded = await store.load_histories(pool)
        ws0 = [h for h in loaded if h.workspace_id == "ws-0"]
        ws1 = [h for h in loaded if h.workspace_id == "ws-1"]
        q4 = PeriodSpec.parse("2024-Q4")

        def expected(hs: list[DealHistory], now: dt.datetime, **kw: Any) -> tuple[float, float]:
            """(pipeline, weighted pipeline): which deals are expected in the quarter follows
            the close dates."""
            pipe = pipeline_at(hs, now, q4, **kw)
            rel = q4.relative_to(now)
            d = pipe.deals
            inside = (d.close_p50 >= rel.start) & (d.close_p50 < rel.end)
            value = float(d.value[inside].sum())
            weighted = float((d.value * d.probability)[inside].sum())
            return pipe.won + value, pipe.won + weighted

        def numbers(f: WorkspaceForecast) -> tuple[float, float]:
            return f.result.pipeline, f.result.weighted_pipeline

        service = ForecastService(
            SETTINGS,
            pool,
            store.load_histories,
            ForecastMetrics(CollectorRegistry()),
            close_max_iter=5,
        )
        before = at("2024-10-01T07:00")
        first = await service.check(before)  # no model yet: the rep's
        assert [(f.workspace_id, f.probabilities) for f in first] == [
            ("ws-0", "rep"),
            ("ws-1", "rep"),
        ]
        assert numbers(first[0]) == pytest.approx(expected(ws0, before))

        version = await pool.fetchval(
            "INSERT INTO win_models (scope, data_until, holdout_from, train_snapshots,"
            " holdout_snapshots, closed_deals, features, metrics, baselines, current, model)"
            " VALUES ('pooled', now(), now(), 1, 1, 1, '[]', '{}', '{}', true, '\\x00')"
            " RETURNING version"
        )
        scores = {d: 0.4 for d in pipeline_at(ws0, before, q4).deals.ids}
        await pool.executemany(
            "INSERT INTO deal_scores (workspace_id, deal_id, as_of, model_version,"
            " win_probability, top_factors) VALUES ('ws-0', $1, now(), $2, $3, '[]')",
            [(d, version, p) for d, p in scores.items()],
        )
        now = at("2024-10-01T07:10")
        promoted = await service.check(now)
        assert [(f.workspace_id, f.probabilities) for f in promoted] == [
            ("ws-0", f"model v{version}"),
            ("ws-1", "rep"),
        ]
        close = close_at(loaded, round(now.timestamp() * 1000), max_iter=5)
        assert close is not None
        with_model = expected(ws0, now, probabilities=scores, close=close)
        assert numbers(promoted[0]) == pytest.approx(with_model)
        # the test means something: the model's close dates place other deals in the quarter
        assert with_model != pytest.approx(expected(ws0, now, probabilities=scores))
        assert numbers(promoted[1]) == pytest.approx(expected(ws1, now))
