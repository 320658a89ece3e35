"""The learned models on PostgreSQL: versions stored with their held-out metrics, promoted only
when better; and the commands (history import, benchmarks, train, evaluate) as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from consumer.history import store
from consumer.history.models import current_model, versions
from consumer.history.train import train
from consumer.intelligence.histgen import HistorySpec, generate_histories
from tests.databases import fresh_database, migrated_pool
from vectoros.db import PgPool

pytestmark = pytest.mark.integration

VECTOROS = [sys.executable, "-m", "app"]
WAIT_LIMIT = 120.0  # a bound for "never finishes", not a timing goal
SPEC = HistorySpec(deals=1500, days=540, seed=3)


@pytest.fixture
async def learn_dsn(database_url: str) -> AsyncIterator[str]:
    async with fresh_database(database_url, "learn") as dsn:
        yield dsn


@pytest.fixture
async def pool(learn_dsn: str) -> AsyncIterator[PgPool]:
    async with migrated_pool(learn_dsn) as pool:
        yield pool


async def test_a_model_is_promoted_only_when_better(pool: PgPool) -> None:
    async with pool.acquire() as conn:
        await store.upsert_histories(conn, generate_histories(SPEC))

    first = await train(pool, holdout_days=150, max_iter=3)  # a weak model: no current one yet
    assert (first.promoted, first.current) == (True, None)
    same = await train(pool, holdout_days=150, max_iter=3)  # as good, not better
    assert not same.promoted
    assert same.current == first.scores
    stronger = await train(pool, holdout_days=150, max_iter=80)
    assert stronger.promoted
    assert stronger.current is not None
    assert stronger.scores.brier < stronger.current.brier
    weaker = await train(pool, holdout_days=150, max_iter=2)
    assert not weaker.promoted

    rows = await versions(pool)
    assert [(r["version"], r["current"]) for r in rows] == [
        (first.version, False),
        (same.version, False),
        (stronger.version, True),
        (weaker.version, False),
    ]
    assert set(rows[2]["metrics"]) == {"auc", "brier", "log_loss", "ece", "n", "reliability"}
    bins = rows[2]["metrics"]["reliability"]  # the held-out reliability diagram, for the page
    assert sum(b["count"] for b in bins) == rows[2]["metrics"]["n"]
    assert set(rows[3]["baselines"]) == {"rep", "stage", "current"}
    assert rows[3]["baselines"]["current"]["version"] == stronger.version
    current = await current_model(pool)
    assert current is not None
    assert current.version == stronger.version
    holdout = stronger.evaluation.split.holdout
    assert list(current.model.predict(holdout.X[:20])) == list(
        stronger.evaluation.predictions["model"][:20]
    )


def run(args: list[str], dsn: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VECTOROS_")}
    env["VECTOROS_DATABASE_URL"] = dsn
    return subprocess.run(
        VECTOROS + args, env=env, capture_output=True, text=True, timeout=WAIT_LIMIT, check=False
    )


def write_export(path: Path) -> None:
    """A Pipedrive export of the known-truth history (stages by the mapping's names)."""
    names = {"lead": "Qualified", "qualified": "Contact Made", "proposal": "Proposal Made",
             "negotiation": "Negotiations Started"}  # fmt: skip
    lines = [
        "Deal - ID,Deal - Title,Deal - Deal created,Deal - Deal closed on,Deal - Status,"
        "Deal - Stage,Deal - Value,Deal - Currency,Deal - Owner,Deal - Expected close date,"
        "Deal - Organization,Deal - Pipeline,Deal - Source channel,Deal - Lost reason,"
        "Deal - Product quantity"
    ]
    import datetime as dt

    def day(ms: int | None) -> str:
        return "" if ms is None else dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat()

    for h in generate_histories(HistorySpec(deals=300, seed=5)):
        status = {"won": "Won", "lost": "Lost", None: "Open"}[h.outcome]
        stage = names.get(h.stage or "", "")
        lines.append(
            f"{h.deal_id},{h.title},{day(h.created_ms)},{day(h.closed_ms)},{status},{stage},"
            f"{h.value},USD,{h.owner_id},,,Default,,,1"
        )
    lines.append("bad-1,Broken,not a date,,Open,Qualified,1,USD,x,,,Default,,,1")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


async def test_the_commands(learn_dsn: str, tmp_path: Path) -> None:
    export = tmp_path / "deals.csv"
    write_export(export)
    mapping = Path(__file__).parents[2] / "docs" / "mappings" / "pipedrive.yaml"
    imported = run(
        ["history", "import", str(export), "--mapping", str(mapping), "--workspace", "ws-p"],
        learn_dsn,
    )
    assert imported.returncode == 0, imported.stderr
    assert "imported 300 deal(s) from 301 row(s); 1 row(s) skipped" in imported.stdout
    assert "line 302: created (Deal - Deal created): 'not a date' is not a date" in (
        imported.stderr
    )

    bench = run(["history", "benchmarks", "--refresh", "--workspace", "ws-p"], learn_dsn)
    assert bench.returncode == 0, bench.stderr
    assert "no benchmarks yet" in bench.stdout  # a Pipedrive export has no stage history

    png = tmp_path / "out" / "reliability.png"
    evaluated = run(["evaluate", "--holdout-days", "120", "--png", str(png)], learn_dsn)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "model (calibrated trees)" in evaluated.stdout
    assert "rep's probability" in evaluated.stdout
    assert "stage win rate" in evaluated.stdout
    assert png.read_bytes().startswith(b"\x89PNG")

    trained = run(["train", "--holdout-days", "120"], learn_dsn)
    assert trained.returncode == 0, trained.stderr
    assert "model version 1: held-out AUC" in trained.stdout
    assert "promoted: it is now the current model" in trained.stdout

    too_little = run(["train", "--holdout-days", "100000"], learn_dsn)
    assert too_little.returncode == 1
    assert "not enough history to train on" in too_little.stderr


async def test_open_deals_are_scored_and_published(
    kafka_bootstrap: str, learn_dsn: str, pool: PgPool, unique_name: Any
) -> None:
    """With a current model, the history service scores every open deal an event batch
    changed: deal_scores in PostgreSQL and deal-scores on the broker, same scores."""
    import asyncio

    from prometheus_client import CollectorRegistry

    from consumer.history.service import run_history
    from consumer.history.settings import HistorySettings
    from producer.simulator import SimulationSpec, generate
    from schemas.events import encode_event
    from schemas.scores import DealScore
    from tests.kafka_utils import read_all
    from vectoros.kafka import ensure_topics, start_producer
    from vectoros.ops_server import Health
    from vectoros.settings import KafkaSettings

    async with pool.acquire() as conn:
        await store.upsert_histories(conn, generate_histories(SPEC))
    trained = await train(pool, holdout_days=150, max_iter=40)
    assert trained.promoted

    events_topic, scores_topic = unique_name("events"), unique_name("scores")
    await ensure_topics(kafka_bootstrap, {events_topic: 3})
    events = [
        i
        for i in generate(SimulationSpec(deals=25, days=20, workspaces=2, seed=4))
        if not hasattr(i, "at")
    ]
    producer = await start_producer(KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap))
    try:
        for e in events:
            await producer.send(events_topic, encode_event(e), key=e.deal_id.encode())  # type: ignore[union-attr]
        await producer.flush()
    finally:
        await producer.stop()
    settings = HistorySettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        database_url=learn_dsn,  # type: ignore[arg-type]
        topic_events=events_topic,
        topic_scores=scores_topic,
        topic_insights=unique_name("insights"),
        topic_partitions=3,
        history_group_id=unique_name("history"),
        history_flush_ms=20,
        metrics_enabled=False,
    )
    registry, health, stop = CollectorRegistry(), Health(), asyncio.Event()
    task = asyncio.create_task(run_history(settings, registry, health, stop))
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_LIMIT
        while (registry.get_sample_value("vectoros_history_events_consumed_total") or 0) < len(
            events
        ):
            assert loop.time() < deadline, "the events were not consumed"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_LIMIT)

    rows = await pool.fetch("SELECT * FROM deal_scores")
    open_deals = await pool.fetch(
        "SELECT deal_id FROM deal_history WHERE source = 'events' AND outcome IS NULL "
        "AND deleted_at IS NULL"
    )
    assert {r["deal_id"] for r in rows} == {r["deal_id"] for r in open_deals}
    assert rows
    assert {r["model_version"] for r in rows} == {trained.version}
    assert all(0 <= r["win_probability"] <= 1 for r in rows)
    assert any(r["top_factors"] for r in rows)
    published = [
        DealScore.model_validate_json(r.value)
        for r in await read_all(kafka_bootstrap, scores_topic)
    ]
    latest = {}
    for s in published:
        latest[s.deal_id] = s
    assert set(latest) == {r["deal_id"] for r in rows}
    for r in rows:
        s = latest[r["deal_id"]]
        assert (s.win_probability, s.as_of, s.model_version) == (
            r["win_probability"],
            r["as_of"],
            r["model_version"],
        )
    assert registry.get_sample_value("vectoros_history_deals_scored_total") == len(published)


async def test_outcome_learning_retrains_after_enough_new_outcomes(pool: PgPool) -> None:
    """The service trains by itself once N deals closed after the last model's data."""
    from consumer.history.service import HistoryHandler, Retrain
    from consumer.history.train import due
    from consumer.intelligence.projection import DAY_MS

    histories = generate_histories(SPEC)
    last = max(h.closed_ms or 0 for h in histories)
    cutoff = last - 60 * DAY_MS
    older = [h for h in histories if (h.closed_ms or h.updated_ms or 0) < cutoff]
    newer = [h for h in histories if h not in older]
    assert len([h for h in newer if h.outcome]) >= 50
    async with pool.acquire() as conn:
        await store.upsert_histories(conn, older)

    from prometheus_client import CollectorRegistry

    from consumer.history.metrics import HistoryMetrics

    registry = CollectorRegistry()
    handler = HistoryHandler(
        HistoryMetrics(registry),
        retrain=Retrain(after_outcomes=50, every_seconds=86_400, holdout_days=150),
    )
    handler.pool = pool
    await handler.retrain_if_due()  # no model yet, plenty of outcomes: trains version 1
    assert [r["version"] for r in await versions(pool)] == [1]
    assert await due(pool, after_outcomes=50, every_seconds=86_400) == (False, 0)
    await handler.retrain_if_due()  # nothing new: no training
    assert len(await versions(pool)) == 1

    async with pool.acquire() as conn:
        await store.upsert_histories(conn, newer)  # the deals that closed since
    is_due, new = await due(pool, after_outcomes=50, every_seconds=86_400)
    assert is_due
    assert new >= 50
    await handler.retrain_if_due()
    # a second pooled version (the workspaces' own models took version numbers too)
    pooled = [r["version"] for r in await versions(pool)]
    assert len(pooled) == 2
    assert pooled[0] == 1
    trained = sum(
        registry.get_sample_value("vectoros_history_retrainings_total", {"promoted": p}) or 0
        for p in ("true", "false")
    )
    assert trained == 2


async def test_a_workspace_with_enough_closed_deals_gets_its_own_model(pool: PgPool) -> None:
    """``train_all``: the pooled model, and one of its own for a workspace with enough closed
    deals (trained on its deals alone); its deals are then scored with it, the others with the
    pooled one."""
    from collections import Counter

    from prometheus_client import CollectorRegistry

    from consumer.history.metrics import HistoryMetrics
    from consumer.history.models import current_models
    from consumer.history.service import HistoryHandler
    from consumer.history.train import train_all

    histories = generate_histories(SPEC)
    async with pool.acquire() as conn:
        await store.upsert_histories(conn, histories)
    closed = Counter(h.workspace_id for h in histories if h.outcome is not None)
    big, small = sorted(closed, key=lambda w: closed[w], reverse=True)
    assert closed[big] > closed[small] >= 200
    results = await train_all(
        pool, holdout_days=150, max_iter=40, with_close=False, min_closed=closed[big]
    )
    own = f"workspace:{big}"
    assert [(r.scope, r.promoted) for r in results] == [("pooled", True), (own, True)]
    current = await current_models(pool)
    assert set(current) == {"pooled", own}
    assert current[own].model.workspaces == {big: 0}  # its own deals only
    handler = HistoryHandler(HistoryMetrics(CollectorRegistry()), scores_topic="scores")
    handler.pool = pool
    await handler.load_model()
    open_deals = [h for h in histories if h.outcome is None and h.deleted_ms is None]
    assert {h.workspace_id for h in open_deals} == {big, small}
    scores = {s.deal_id: s for s in handler.score(open_deals)}
    assert len(scores) == len(open_deals)
    versions_used = {(h.workspace_id, scores[h.deal_id].model_version) for h in open_deals}
    assert versions_used == {(big, current[own].version), (small, current["pooled"].version)}
