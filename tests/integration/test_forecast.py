"""`vectoros forecast run` on PostgreSQL's deal history: what was known at the as-of date, the
stored row per workspace, and running it again replacing the row."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import pathlib
import subprocess
import sys
from collections.abc import AsyncIterator, Callable

import pytest

from consumer.forecast.backtest import actual_won
from consumer.forecast.pipeline import PeriodSpec
from consumer.history import store
from consumer.intelligence.histgen import HistorySpec, generate_histories
from consumer.intelligence.projection import DealHistory, StageSpell
from schemas.forecasts import DealForecast
from schemas.insights import Lifecycle, Priority, RuleName
from tests.databases import fresh_database, migrated_pool
from tests.kafka_utils import read_all, read_insights
from vectoros.db import PgPool

pytestmark = pytest.mark.integration

VECTOROS = [sys.executable, "-m", "app"]
WAIT_LIMIT = 120.0  # a bound for "never finishes", not a timing goal


@pytest.fixture
async def forecast_dsn(database_url: str) -> AsyncIterator[str]:
    async with fresh_database(database_url, "forecast") as dsn:
        yield dsn


@pytest.fixture
async def pool(forecast_dsn: str) -> AsyncIterator[PgPool]:
    async with migrated_pool(forecast_dsn) as pool:
        yield pool


def ms(day: str) -> int:
    return round(dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp() * 1000)


def deal(
    workspace: str,
    deal_id: str,
    created: str,
    value: float,
    probability: float | None = None,
    close: str | None = None,
    won: str | None = None,
) -> DealHistory:
    h = DealHistory(
        workspace_id=workspace,
        deal_id=deal_id,
        source="import",
        value=value,
        stage="proposal",
        probability=probability,
        close_date=None if close is None else dt.date.fromisoformat(close),
        owner_id="rep-1",
        created_ms=ms(created),
        updated_ms=ms(won or created),
    )
    h.stages = [StageSpell("proposal", ms(created), None if won is None else ms(won))]
    if probability is not None:
        h.probabilities = [(ms(created), probability)]
    if won is not None:
        h.outcome, h.closed_ms = "won", ms(won)
    return h


HISTORY = [
    deal("acme", "early", "2026-01-02", 700.0, 90, "2026-01-20", won="2026-01-20"),
    # won after the as-of date: open then, certain and expected inside the quarter
    deal("acme", "later", "2026-01-10", 500.0, 100, "2026-02-20", won="2026-03-01"),
    deal("acme", "half", "2026-01-05", 1000.0, 50, "2026-02-10"),
    deal("acme", "future", "2026-02-15", 10_000.0, 90, "2026-03-01"),  # created after
    deal("beta", "small", "2026-01-20", 100.0, 20, "2026-03-15"),
]


def run(args: list[str], dsn: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VECTOROS_")}
    env.update(VECTOROS_DATABASE_URL=dsn, COLUMNS="200", **settings)
    return subprocess.run(
        VECTOROS + args, env=env, capture_output=True, text=True, timeout=WAIT_LIMIT, check=False
    )


ARGS = ["forecast", "run", "--as-of", "2026-02-01", "--period", "2026-Q1", "--target", "2200"]


async def test_forecast_run_uses_what_was_known_then_and_stores_one_row_per_workspace(
    forecast_dsn: str, pool: PgPool
) -> None:
    async with pool.acquire() as conn:
        await store.upsert_histories(conn, HISTORY)

    done = run([*ARGS, "--seed", "3", "--simulations", "4000", "--json"], forecast_dsn)
    assert done.returncode == 0, done.stderr
    acme, beta = json.loads(done.stdout)
    assert "not published on deal-forecasts" in done.stderr  # no broker configured
    assert (acme["workspace_id"], beta["workspace_id"]) == ("acme", "beta")
    assert acme["open_deals"] == 2  # "later" was still open, "future" did not exist yet
    assert acme["won"] == 700.0
    assert acme["weighted_pipeline"] == pytest.approx(700 + 500 + 500)
    assert (acme["p10"], acme["p90"]) == (1200.0, 2200.0)
    assert abs(acme["p_reach_target"] - 0.5) <= 4 * math.sqrt(0.25 / 4000)
    assert acme["commit"] == 1200.0  # won + the 100% deal; the 50% one is best case
    assert acme["best_case"] == 2200.0
    assert beta["open_deals"] == 1

    rows = await pool.fetch("SELECT * FROM forecasts ORDER BY workspace_id")
    assert [(r["workspace_id"], r["scope"], r["period"]) for r in rows] == [
        ("acme", "workspace", "2026-Q1"),
        ("beta", "workspace", "2026-Q1"),
    ]
    assert rows[0]["as_of"] == dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    assert rows[0]["p50"] == acme["p50"]
    assert rows[0]["simulations"] == 4000

    again = run(
        [*ARGS, "--workspace", "acme", "--simulations", "500", "--by", "owner"], forecast_dsn
    )
    assert again.returncode == 0, again.stderr
    assert "Forecast of 2026-Q1" in again.stdout
    assert "acme" in again.stdout
    assert "owner:rep-1" in again.stdout
    assert "beta" not in again.stdout
    rows = await pool.fetch(
        "SELECT workspace_id, scope, simulations, weighted_pipeline FROM forecasts ORDER BY 1, 2"
    )
    assert [(r["workspace_id"], r["scope"], r["simulations"]) for r in rows] == [
        ("acme", "owner:rep-1", 500),
        ("acme", "workspace", 500),
        ("beta", "workspace", 4000),
    ]
    assert rows[0]["weighted_pipeline"] == pytest.approx(1700.0)


_CONTRIBUTIONS = """
SELECT workspace_id, period, deal_id, as_of, p_land, expected FROM forecast_contributions
ORDER BY workspace_id, period, deal_id
"""


async def test_forecast_run_stores_each_deals_contribution_to_the_latest_workspace_forecast(
    forecast_dsn: str, pool: PgPool
) -> None:
    async with pool.acquire() as conn:
        await store.upsert_histories(conn, HISTORY)
    feb1, feb10 = (dt.datetime(2026, 2, d, tzinfo=dt.UTC) for d in (1, 10))

    done = run(
        [*ARGS, "--seed", "3", "--simulations", "4000", "--json", "--by", "owner"], forecast_dsn
    )
    assert done.returncode == 0, done.stderr
    acme = json.loads(done.stdout)[0]
    assert acme["scope"] == "workspace"
    rows = await pool.fetch(_CONTRIBUTIONS)
    # the deals open at the as-of time, workspace level only (the owner forecast adds none)
    assert [(r["workspace_id"], r["period"], r["deal_id"], r["as_of"]) for r in rows] == [
        ("acme", "2026-Q1", "half", feb1),
        ("acme", "2026-Q1", "later", feb1),
        ("beta", "2026-Q1", "small", feb1),
    ]
    half, later, _ = rows
    assert (later["p_land"], later["expected"]) == (1.0, 500.0)  # certain, inside the quarter
    assert abs(half["p_land"] - 0.5) <= 4 * math.sqrt(0.25 / 4000)
    assert half["expected"] == pytest.approx(1000.0 * half["p_land"])
    assert half["expected"] + later["expected"] == pytest.approx(acme["expected"] - acme["won"])

    # an older as-of (three deals open then) changes nothing
    older = run(["forecast", "run", "--as-of", "2026-01-15", "--period", "2026-Q1"], forecast_dsn)
    assert older.returncode == 0, older.stderr
    assert await pool.fetchval("SELECT count(*) FROM forecasts WHERE as_of < $1", feb1) == 2
    assert [tuple(r) for r in await pool.fetch(_CONTRIBUTIONS)] == [tuple(r) for r in rows]

    # a newer one replaces the period's rows of its workspace only
    newer = run(
        ["forecast", "run", "--as-of", "2026-02-10", "--period", "2026-Q1", "--workspace", "acme"],
        forecast_dsn,
    )
    assert newer.returncode == 0, newer.stderr
    after = await pool.fetch(_CONTRIBUTIONS)
    assert [(r["workspace_id"], r["deal_id"], r["as_of"]) for r in after] == [
        ("acme", "half", feb10),
        ("acme", "later", feb10),
        ("beta", "small", feb1),
    ]


async def test_forecast_run_rejects_a_bad_period_and_an_as_of_after_it(forecast_dsn: str) -> None:
    bad = run(["forecast", "run", "--as-of", "2026-02-01", "--period", "2026-Q7"], forecast_dsn)
    assert bad.returncode == 2
    assert "not a period" in bad.stderr
    late = run(["forecast", "run", "--as-of", "2026-05-01", "--period", "2026-Q1"], forecast_dsn)
    assert late.returncode == 2
    assert "not before the end of 2026-Q1" in late.stderr


async def test_forecast_run_lists_the_gap_closers_and_a_scenario_as_the_change(
    forecast_dsn: str, pool: PgPool, tmp_path: pathlib.Path
) -> None:
    async with pool.acquire() as conn:
        await store.upsert_histories(conn, HISTORY)
    what_if = tmp_path / "what-if.yaml"
    what_if.write_text("name: lose half\nset:\n  - {deal: half, outcome: lost}\n")
    args = [*ARGS, "--workspace", "acme", "--seed", "3", "--simulations", "2000"]

    done = run([*args, "--scenario", str(what_if), "--json"], forecast_dsn)
    assert done.returncode == 0, done.stderr
    (acme,) = json.loads(done.stdout)
    # 700 won + "later" (certain) = 1,200; the target 2,200 needs "half" (1,000)
    assert [g["deal_id"] for g in acme["gap_closers"]] == ["half"]
    assert acme["gap_closers"][0]["p_reach_if_won"] == 1.0
    scenario = acme["scenario"]
    assert scenario["name"] == "lose half"
    assert scenario["changes"] == ["half lost"]
    assert scenario["forecast"]["p_reach_target"] == 0.0
    assert scenario["change"]["weighted_pipeline"] == pytest.approx(-500.0)
    assert scenario["change"]["p90"] == pytest.approx(-1000.0)
    rows = await pool.fetch("SELECT p50, weighted_pipeline FROM forecasts")
    assert [r["weighted_pipeline"] for r in rows] == [pytest.approx(1700.0)]  # the baseline

    table = run([*args, "--scenario", str(what_if)], forecast_dsn)
    assert table.returncode == 0, table.stderr
    assert "What closes the gap in acme" in table.stdout
    assert "Scenario lose half in acme: half lost" in table.stdout

    what_if.write_text("set: [{deal: nowhere, outcome: won}]\n")
    bad = run([*args, "--scenario", str(what_if)], forecast_dsn)
    assert bad.returncode == 2
    assert "not open at the as-of time" in bad.stderr
    what_if.write_text("slip: [{stage: proposal}]\n")
    bad = run([*args, "--scenario", str(what_if)], forecast_dsn)
    assert bad.returncode == 2
    assert "slip.0.days" in bad.stderr


async def test_the_deal_forecasts_topic_and_the_forecasts_table_agree(
    forecast_dsn: str, pool: PgPool, kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    async with pool.acquire() as conn:
        await store.upsert_histories(conn, HISTORY)
    topic = unique_name("forecasts")
    broker = {
        "VECTOROS_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "VECTOROS_TOPIC_FORECASTS": topic,
    }

    skipped = run([*ARGS, "--workspace", "beta", "--no-publish"], forecast_dsn, **broker)
    assert skipped.returncode == 0, skipped.stderr
    done = run(
        [*ARGS, "--seed", "3", "--simulations", "1000", "--by", "owner"], forecast_dsn, **broker
    )
    assert done.returncode == 0, done.stderr
    again = run([*ARGS, "--workspace", "beta", "--simulations", "300"], forecast_dsn, **broker)
    assert again.returncode == 0, again.stderr

    records = await read_all(kafka_bootstrap, topic)
    assert len(records) == 5  # each workspace and its owner, then beta again; not --no-publish
    latest: dict[tuple[str, str], DealForecast] = {}
    for r in records:
        f = DealForecast.model_validate_json(r.value)
        assert r.key == f.workspace_id.encode()
        latest[f.workspace_id, f.scope] = f  # one partition per key: in publishing order
    assert latest["beta", "workspace"].simulations == 300

    rows = await pool.fetch("SELECT * FROM forecasts")
    assert len(rows) == len(latest) == 4
    for row in rows:
        f = latest[row["workspace_id"], row["scope"]]
        assert (f.period, f.as_of, f.period_start, f.period_end) == (
            row["period"],
            row["as_of"],
            row["period_start"],
            row["period_end"],
        )
        for name in (
            "simulations",
            "open_deals",
            "won",
            "p10",
            "p50",
            "p90",
            "expected",
            "weighted_pipeline",
            "commit",
            "best_case",
            "pipeline",
            "target",
            "coverage",
            "gap",
            "p_reach_target",
            "probabilities",
        ):
            assert getattr(f, name) == row[name], name
    acme = latest["acme", "workspace"]
    assert [g.deal_id for g in acme.gap_closers] == ["half"]  # with the target
    assert acme.seed == 3
    assert "published" not in skipped.stderr


async def test_pipeline_gap_is_raised_escalated_and_resolved_once_each_on_deal_insights(
    forecast_dsn: str, pool: PgPool, kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    async with pool.acquire() as conn:
        await store.upsert_histories(conn, HISTORY)
    insights_topic = unique_name("insights")
    broker = {
        "VECTOROS_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "VECTOROS_TOPIC_FORECASTS": unique_name("forecasts"),
        "VECTOROS_TOPIC_INSIGHTS": insights_topic,
        "VECTOROS_FORECAST_GAP_THRESHOLD": "0.6",
    }

    def forecast_at(day: str, target: str) -> None:
        args = ["forecast", "run", "--as-of", day, "--period", "2026-Q1", "--workspace", "acme"]
        done = run([*args, "--target", target, "--simulations", "2000"], forecast_dsn, **broker)
        assert done.returncode == 0, done.stderr

    forecast_at("2026-02-01", "2200")  # P(target) about 50%: below 60%, high -> raised
    forecast_at("2026-02-02", "5000")  # 0%: below 30%, critical -> escalated
    forecast_at("2026-02-02", "5000")  # the same forecast again: nothing
    forecast_at("2026-01-20", "5000")  # an earlier as-of: nothing
    forecast_at("2026-02-03", "1000")  # certain: resolved
    forecast_at("2026-02-04", "1000")  # still fine: nothing

    events = await read_insights(kafka_bootstrap, insights_topic)
    assert [(e.lifecycle, e.priority) for e in events] == [
        (Lifecycle.RAISED, Priority.HIGH),
        (Lifecycle.ESCALATED, Priority.CRITICAL),
        (Lifecycle.RESOLVED, Priority.CRITICAL),
    ]
    assert len({e.insight_id for e in events}) == 1
    assert {(e.rule, e.workspace_id, e.deal_id) for e in events} == {
        (RuleName.PIPELINE_GAP, "acme", "pipeline:2026-Q1")
    }
    assert [e.detected_at.date().isoformat() for e in events] == [
        "2026-02-01",
        "2026-02-02",
        "2026-02-03",
    ]
    state = await pool.fetchrow("SELECT * FROM forecast_gap_state")
    assert state is not None
    assert (state["workspace_id"], state["period"], state["priority"]) == ("acme", "2026-Q1", None)
    assert state["last_as_of"] == dt.datetime(2026, 2, 4, tzinfo=dt.UTC)


async def test_forecast_backtest_on_the_stored_history_and_on_a_simulated_one(
    forecast_dsn: str, pool: PgPool
) -> None:
    stored = generate_histories(HistorySpec(deals=400, days=300, workspaces=1, seed=5))
    async with pool.acquire() as conn:
        await store.upsert_histories(conn, stored)
    args = ["forecast", "backtest", "--from", "2024-04-01", "--to", "2024-10-01"]
    fast = ["--points", "2", "--simulations", "200", "--rep-probabilities"]

    done = run([*args, "--period", "quarter", *fast, "--json"], forecast_dsn)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert [(r["period"], r["as_of"][:10]) for r in doc["rows"]] == [
        ("2024-Q2", "2024-04-01"),
        ("2024-Q2", "2024-05-16"),
        ("2024-Q3", "2024-07-01"),
        ("2024-Q3", "2024-08-16"),
    ]
    q2 = PeriodSpec.parse("2024-Q2")
    assert doc["rows"][0]["actual"] == pytest.approx(actual_won(stored, q2))
    assert {r["probabilities"] for r in doc["rows"]} == {"rep"}
    assert [s["method"] for s in doc["scores"]] == [
        "monte_carlo",
        "weighted_pipeline",
        "stage_win_rate",
    ]

    table = run([*args, "--period", "month", *fast, "--simulated", "300"], forecast_dsn)
    assert table.returncode == 0, table.stderr
    assert "| Monte Carlo P50 |" in table.stdout
    assert "24 forecasts, 0 as-of dates with a model" in table.stdout  # 6 months x 2 x 2

    none = run([*args[:3], "2024-04-02", "--to", "2024-05-01", *fast], forecast_dsn)
    assert none.returncode == 2
    assert "no whole quarter" in none.stderr


async def test_forecast_fan_draws_the_stored_history_of_one_workspace(
    forecast_dsn: str, pool: PgPool, tmp_path: pathlib.Path
) -> None:
    async with pool.acquire() as conn:
        await store.upsert_histories(conn, HISTORY)
    png = tmp_path / "fan.png"
    args = ["forecast", "fan", "--period", "2026-Q1", "--from", "2026-01-15", "--every", "14"]
    fast = ["--rep-probabilities", "--simulations", "200", "--png", str(png)]

    both = run([*args, *fast], forecast_dsn)
    assert both.returncode == 2
    assert "choose one of acme, beta" in both.stderr

    done = run([*args, "--workspace", "acme", "--target", "2200", *fast], forecast_dsn)
    assert done.returncode == 0, done.stderr
    assert f"fan chart of acme 2026-Q1, 6 as-of dates: {png}" in done.stdout  # Jan 15 .. Mar 26
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_forecast_run_reads_targets_per_workspace_and_owner_from_a_file(
    forecast_dsn: str, pool: PgPool, tmp_path: pathlib.Path
) -> None:
    async with pool.acquire() as conn:
        await store.upsert_histories(conn, HISTORY)
    targets = tmp_path / "targets.yaml"
    targets.write_text("acme:\n  2026-Q1: 2200\n  owners:\n    rep-1: {2026-Q1: 1000}\n")
    args = ["forecast", "run", "--as-of", "2026-02-01", "--period", "2026-Q1"]

    done = run([*args, "--targets", str(targets), "--by", "owner", "--json"], forecast_dsn)
    assert done.returncode == 0, done.stderr
    got = {(f["workspace_id"], f["scope"]): f["target"] for f in json.loads(done.stdout)}
    assert got == {
        ("acme", "workspace"): 2200.0,
        ("acme", "owner:rep-1"): 1000.0,
        ("beta", "workspace"): None,
        ("beta", "owner:rep-1"): None,
    }
    both = run([*args, "--targets", str(targets), "--target", "5"], forecast_dsn)
    assert both.returncode == 2
    assert "--target or --targets" in both.stderr
    targets.write_text("acme: {2026-Q9: 1}\n")
    bad = run([*args, "--targets", str(targets)], forecast_dsn)
    assert bad.returncode == 2
    assert "'2026-Q9' is not a period" in bad.stderr


async def test_forecast_run_with_models_trained_before_the_as_of_date(
    forecast_dsn: str, pool: PgPool
) -> None:
    async with pool.acquire() as conn:
        await store.upsert_histories(conn, HISTORY)  # far too little to train on
    args = ["forecast", "run", "--as-of", "2026-02-01", "--period", "2026-Q1", "--models"]
    few = run([*args, "--workspace", "acme", "--simulations", "200", "--json"], forecast_dsn)
    assert few.returncode == 0, few.stderr
    assert "too few: the rep's probabilities" in few.stderr
    assert [f["probabilities"] for f in json.loads(few.stdout)] == ["rep"]

    simulated = generate_histories(HistorySpec(deals=700, days=300, workspaces=1, seed=5))
    async with pool.acquire() as conn:
        await store.upsert_histories(conn, simulated)
    # the models are the default, with the new pipeline and the common shock
    args = ["forecast", "run", "--as-of", "2024-09-15", "--period", "2024-Q4"]
    args += ["--workspace", "ws-0", "--simulations", "400", "--seed", "3", "--no-publish"]
    plain = run([*args, "--no-new-pipeline", "--independent", "--json"], forecast_dsn)
    assert plain.returncode == 0, plain.stderr
    done = run([*args, "--json"], forecast_dsn)
    assert done.returncode == 0, done.stderr
    (ws0,) = json.loads(done.stdout)
    assert ws0["probabilities"] == "model trained to as-of"
    (without,) = json.loads(plain.stdout)
    assert ws0["expected"] > without["expected"]  # the deals created in the rest of 2024-Q4
    assert ws0["p90"] - ws0["p10"] > without["p90"] - without["p10"]
    assert ws0["weighted_pipeline"] == without["weighted_pipeline"]
    stored = await pool.fetchval("SELECT probabilities FROM forecasts WHERE workspace_id = 'ws-0'")
    assert stored == "model trained to as-of"
