"""The read API on a real PostgreSQL: tables written by the sink's and the history's own code,
tokens in ``api_tokens``, the API in-process (ASGI). Every endpoint is checked for confinement
to the token's workspace with data present in both workspaces."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from consumer.api.app import build_app
from consumer.api.metrics import ApiMetrics
from consumer.api.queries import PgApiStore
from consumer.api.settings import ApiSettings
from consumer.api.tokens import PgTokens, token_hash
from consumer.history.store import write_events
from consumer.sink.store import PostgresInsightStore, SourcePosition
from schemas.events import ActivityLogged, DealCreated, DealEvent, Stage
from schemas.insights import InsightEvent, Lifecycle
from tests.databases import fresh_database, migrated_pool
from vectoros.db import PgPool

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 11, 1, 9, 0, tzinfo=dt.UTC)
NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
RULES = ("stale_deal", "close_date_passed", "low_probability", "ghosting")
PRIORITIES = ("low", "medium", "high", "critical")


def insight(
    ws: str, deal: int, rule: str, lifecycle: Lifecycle, priority: str, day: int
) -> InsightEvent:
    return InsightEvent.model_validate(
        {
            "insight_id": f"{ws}-d{deal}-{rule}",
            "lifecycle": lifecycle,
            "rule": rule,
            "workspace_id": ws,
            "deal_id": f"d{deal}",
            "title": f"{rule} on deal {deal} ({lifecycle.value})",
            "description": "What is wrong.",
            "priority": priority,
            "confidence": 0.7,
            "data": {
                "deal_id": f"d{deal}",
                "deal_title": f"Deal {deal}",
                "deal_value": 1000.0 * (deal + 1),
                "stage": "proposal" if deal % 2 else "negotiation",
                "owner_id": f"owner-{deal % 3}",
                "owner_name": f"Owner {deal % 3}",
            },
            "actions": [
                {"action": "Call", "priority": "high", "timeline": "today", "expected_impact": "a"},
                {"action": "Mail", "priority": "low", "timeline": "week", "expected_impact": "b"},
            ],
            "source": "rules",
            "detected_at": T0 + dt.timedelta(days=day, minutes=deal),
            "raised_at": T0 + dt.timedelta(days=1, minutes=deal),
        }
    )


def workspace_insights(ws: str, deals: int) -> list[InsightEvent]:
    """Per deal: one insight per rule, raised; every third escalated to critical; every
    fourth resolved."""
    out = []
    for deal in range(deals):
        for r, rule in enumerate(RULES):
            priority = PRIORITIES[(deal + r) % 3]
            out.append(insight(ws, deal, rule, Lifecycle.RAISED, priority, 1))
            if (deal + r) % 3 == 0:
                out.append(insight(ws, deal, rule, Lifecycle.ESCALATED, "critical", 5))
            if (deal + r) % 4 == 0:
                out.append(insight(ws, deal, rule, Lifecycle.RESOLVED, priority, 9))
    return out


def deal_events(ws: str, deal: int) -> list[DealEvent]:
    return [
        DealCreated(
            event_id=f"{ws}-d{deal}-created",
            workspace_id=ws,
            deal_id=f"d{deal}",
            occurred_at=T0,
            title=f"Deal {deal}",
            value=1000.0 * (deal + 1),
            currency="EUR",
            stage=Stage.PROPOSAL,
            probability=40,
            close_date=dt.date(2026, 12, 20),
            owner_id="owner-1",
        ),
        ActivityLogged(
            event_id=f"{ws}-d{deal}-call",
            workspace_id=ws,
            deal_id=f"d{deal}",
            occurred_at=T0 + dt.timedelta(hours=3),
            activity_type="call",
            direction="outbound",
        ),
    ]


async def seed(pool: PgPool) -> None:
    events = workspace_insights("ws-a", 30) + workspace_insights("ws-b", 20)
    store = PostgresInsightStore(pool)
    await store.write_batch([(e, SourcePosition("t", 0, i)) for i, e in enumerate(events)])
    async with pool.acquire() as conn:
        await write_events(conn, deal_events("ws-a", 1) + deal_events("ws-b", 1))
    await pool.execute(
        "INSERT INTO deal_scores (workspace_id, deal_id, as_of, model_version, win_probability,"
        " rep_probability, stage, top_factors) VALUES ($1, 'd1', $2, 3, $3, 0.4, 'proposal', $4)",
        "ws-a",
        T0,
        0.31,
        [{"feature": "days_in_stage", "effect": -0.2}],
    )
    for ws, p50 in (("ws-a", 500_000.0), ("ws-b", 7.0)):
        await pool.execute(
            "INSERT INTO forecasts (workspace_id, scope, period, as_of, period_start, period_end,"
            " simulations, open_deals, won, p10, p50, p90, expected, weighted_pipeline, commit,"
            " best_case, pipeline) VALUES ($1, 'workspace', '2026-Q4', $2, $3, $4, 1000, 10, 0,"
            " 1, $5, 3, 2, 2, 1, 3, 4)",
            ws,
            NOW,
            dt.datetime(2026, 10, 1, tzinfo=dt.UTC),
            dt.datetime(2027, 1, 1, tzinfo=dt.UTC),
            p50,
        )
    # ws-a's d1 in two periods' latest forecasts; ws-b's d1 in none
    await pool.executemany(
        "INSERT INTO forecast_contributions (workspace_id, period, deal_id, as_of, p_land,"
        " expected) VALUES ('ws-a', $1, 'd1', $2, $3, $4)",
        [("2027-Q1", NOW, 0.3, 6000.0), ("2026-Q4", NOW, 0.62, 12_400.0)],
    )
    await pool.execute(
        "INSERT INTO insight_acks (insight_id, state, actor) VALUES ('ws-a-d2-stale_deal',"
        " 'acknowledged', 'ada')"
    )
    await store_model(pool, "pooled", 0.71, {"rep": 0.66, "stage": 0.6})
    await store_model(pool, "ws-a", 0.83, {"rep": 0.7, "stage": 0.64})


async def store_model(pool: PgPool, scope: str, auc: float, baselines: dict[str, float]) -> None:
    """A current win model of ``scope`` as ``vectoros train`` stores it (metrics held out)."""

    def quality(value: float) -> dict[str, Any]:
        return {"auc": value, "brier": 0.2, "log_loss": 0.6, "ece": 1 - value, "n": 5000}

    await pool.execute(
        "INSERT INTO win_models (scope, data_until, holdout_from, train_snapshots,"
        " holdout_snapshots, closed_deals, features, metrics, baselines, current, model)"
        " VALUES ($1, $2, $3, 40000, 5000, 900, $4, $5, $6, true, '\\x00')",
        scope,
        NOW,
        NOW - dt.timedelta(days=90),
        ["days_in_stage"],
        {**quality(auc), "reliability": RELIABILITY},
        {name: quality(value) for name, value in baselines.items()},
    )


RELIABILITY = [  # as consumer.intelligence.metrics.reliability_points writes them
    {"predicted": 0.12, "observed": 0.1, "count": 3000.0},
    {"predicted": 0.55, "observed": 0.6, "count": 1500.0},
    {"predicted": 0.91, "observed": 0.88, "count": 500.0},
]


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[PgPool]:
    async with fresh_database(database_url, "api") as dsn, migrated_pool(dsn) as pool:
        await seed(pool)
        yield pool


@pytest.fixture
async def api(pool: PgPool) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    settings = ApiSettings(
        kafka_bootstrap_servers="unused:9092", metrics_enabled=False, api_rate_limit_burst=10_000
    )
    tokens = PgTokens(pool)
    _, token_a = await tokens.create("ws-a", "a")
    _, token_b = await tokens.create("ws-b", "b")
    app = build_app(
        settings, PgApiStore(pool), tokens, ApiMetrics(CollectorRegistry()), None, clock=lambda: NOW
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as client:
        yield client, {"ws-a": token_a, "ws-b": token_b}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def walk(client: httpx.AsyncClient, token: str, **params: Any) -> list[dict[str, Any]]:
    """Every page of the insights list."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        answer = await client.get("/api/v1/insights", params=query, headers=auth(token))
        assert answer.status_code == 200, answer.text
        page = answer.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def test_tokens_are_stored_hashed_and_revocable(pool: PgPool) -> None:
    tokens = PgTokens(pool)
    info, token = await tokens.create("ws-a", "ci")
    stored = await pool.fetchrow("SELECT * FROM api_tokens WHERE token_id = $1", info.token_id)
    assert stored is not None
    assert token not in {str(v) for v in stored.values()}
    assert stored["token_sha256"] == token_hash(token)
    found = await tokens.authenticate(token)
    assert found is not None
    assert found.workspace_id == "ws-a"
    assert not await tokens.revoke(info.token_id, "ws-b")  # another workspace's id: no
    assert await tokens.revoke(info.token_id, "ws-a")
    assert await tokens.authenticate(token) is None
    [listed] = [t for t in await tokens.list("ws-a") if t.token_id == info.token_id]
    assert listed.revoked_at is not None


async def test_pages_walk_the_whole_list_once_in_order(
    api: tuple[httpx.AsyncClient, dict[str, str]], pool: PgPool
) -> None:
    client, tokens = api
    items = await walk(client, tokens["ws-a"], limit=7)
    expected = await pool.fetch(
        "SELECT insight_id FROM insights WHERE workspace_id = 'ws-a' AND status = 'open'"
        " ORDER BY priority_rank DESC, detected_at DESC, insight_id DESC"
    )
    assert [i["insight_id"] for i in items] == [r["insight_id"] for r in expected]
    assert len(items) > 7 * 3
    ranks = [PRIORITIES.index(i["priority"]) for i in items]
    assert ranks == sorted(ranks, reverse=True)
    acked = [i for i in items if i["insight_id"] == "ws-a-d2-stale_deal"]
    assert not acked or acked[0]["ack"]["state"] == "acknowledged"


@pytest.mark.parametrize(
    ("params", "check"),
    [
        ({"priority": "high"}, lambda i: i["priority"] in ("high", "critical")),
        ({"rule": "ghosting"}, lambda i: i["rule"] == "ghosting"),
        ({"deal": "d4"}, lambda i: i["deal_id"] == "d4"),
        ({"owner": "owner 2"}, lambda i: i["data"]["owner_id"] == "owner-2"),
        ({"status": "resolved"}, lambda i: i["status"] == "resolved"),
        ({"since": "2026-11-04T00:00:00Z"}, lambda i: i["detected_at"] >= "2026-11-04"),
    ],
)
async def test_filters(
    api: tuple[httpx.AsyncClient, dict[str, str]], params: dict[str, str], check: Any
) -> None:
    client, tokens = api
    items = await walk(client, tokens["ws-a"], limit=5, **params)
    everything = await walk(client, tokens["ws-a"], status="all", limit=200)
    assert items
    assert all(check(i) for i in items)
    wanted = [i for i in everything if check(i) and (i["status"] == "open" or "status" in params)]
    assert sorted(i["insight_id"] for i in items) == sorted(i["insight_id"] for i in wanted)


async def test_the_list_etag_changes_with_the_data(
    api: tuple[httpx.AsyncClient, dict[str, str]], pool: PgPool
) -> None:
    client, tokens = api
    first = await client.get("/api/v1/insights", headers=auth(tokens["ws-a"]))
    etag = first.headers["etag"]
    same = await client.get(
        "/api/v1/insights", headers={**auth(tokens["ws-a"]), "If-None-Match": etag}
    )
    assert same.status_code == 304
    await PostgresInsightStore(pool).write_batch(
        [
            (
                insight("ws-a", 99, "ghosting", Lifecycle.RAISED, "critical", 20),
                SourcePosition("t", 0, 0),
            )
        ]
    )
    changed = await client.get(
        "/api/v1/insights", headers={**auth(tokens["ws-a"]), "If-None-Match": etag}
    )
    assert changed.status_code == 200
    assert changed.json()["items"][0]["deal_id"] == "d99"


async def test_one_deal_with_its_timeline(api: tuple[httpx.AsyncClient, dict[str, str]]) -> None:
    client, tokens = api
    answer = await client.get("/api/v1/deals/d1", headers=auth(tokens["ws-a"]))
    assert answer.status_code == 200
    deal = answer.json()
    assert deal["deal"]["title"] == "Deal 1"
    assert deal["score"]["win_probability"] == pytest.approx(0.31)
    assert deal["forecast"] == [
        {"period": "2026-Q4", "as_of": NOW.isoformat(), "p_land": 0.62, "expected": 12_400.0},
        {"period": "2027-Q1", "as_of": NOW.isoformat(), "p_land": 0.3, "expected": 6000.0},
    ]
    assert {i["rule"] for i in deal["insights"]} == set(RULES)
    steps = {(i["rule"], s["lifecycle"]) for i in deal["insights"] for s in i["history"]}
    assert ("stale_deal", "raised") in steps
    kinds = [(t["kind"], t["type"]) for t in deal["timeline"]]
    assert ("event", "deal.created") in kinds
    assert ("event", "activity.logged") in kinds
    assert ("insight", "raised") in kinds
    times = [t["at"] for t in deal["timeline"]]
    assert times == sorted(times, reverse=True)
    assert deal["timeline"][-1]["summary"] == "created in proposal"


async def test_insight_history(api: tuple[httpx.AsyncClient, dict[str, str]]) -> None:
    client, tokens = api
    # deal 0, stale_deal: raised, escalated (0 % 3 == 0) and resolved (0 % 4 == 0)
    answer = await client.get("/api/v1/insights/ws-a-d0-stale_deal", headers=auth(tokens["ws-a"]))
    assert answer.status_code == 200
    found = answer.json()
    assert found["status"] == "resolved"
    assert [s["lifecycle"] for s in found["history"]] == ["raised", "escalated", "resolved"]


async def test_forecasts_rule_stats_and_summary(
    api: tuple[httpx.AsyncClient, dict[str, str]], pool: PgPool
) -> None:
    client, tokens = api
    headers = auth(tokens["ws-a"])
    [forecast] = (await client.get("/api/v1/forecasts", headers=headers)).json()["items"]
    assert forecast["p50"] == 500_000.0
    assert forecast["period"] == "2026-Q4"
    stats = (await client.get("/api/v1/stats/rules?since=60d", headers=headers)).json()["items"]
    by_rule = {s["rule"]: s for s in stats}
    assert set(by_rule) == set(RULES)
    for rule in RULES:
        row = await pool.fetchrow(
            "SELECT count(*) FILTER (WHERE status = 'open') AS open,"
            " count(*) FILTER (WHERE status = 'resolved') AS resolved FROM insights"
            " WHERE workspace_id = 'ws-a' AND rule = $1",
            rule,
        )
        assert row is not None
        assert by_rule[rule]["open"] == row["open"]
        assert by_rule[rule]["resolved"] == row["resolved"]
        assert by_rule[rule]["raised"] == row["open"] + row["resolved"]
    assert by_rule["stale_deal"]["acknowledged"] == 1
    summary = (await client.get("/api/v1/summary", headers=headers)).json()
    critical = await pool.fetchval(
        "SELECT count(*) FROM insights WHERE workspace_id = 'ws-a' AND status = 'open'"
        " AND priority = 'critical'"
    )
    assert summary["critical"] == critical > 0
    assert sum(summary["open_by_priority"].values()) == sum(s["open"] for s in stats)
    assert {r["stage"] for r in summary["at_risk_by_rule_stage"]} == {"proposal", "negotiation"}
    assert summary["at_risk_value"] > 0


async def test_the_model_and_its_held_out_quality(
    api: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    client, tokens = api
    answer = await client.get("/api/v1/model", headers=auth(tokens["ws-a"]))
    model = answer.json()["model"]
    assert model["scope"] == "workspace"
    assert model["heldout"] == pytest.approx(
        {"auc": 0.83, "brier": 0.2, "log_loss": 0.6, "ece": 0.17}
    )
    assert set(model["baselines"]) == {"rep", "stage"}
    assert model["baselines"]["rep"]["auc"] == pytest.approx(0.7)
    assert "n" not in model["heldout"]  # no counts: not even of the workspace's own model
    assert model["reliability"] == [  # the bins' sizes as shares, not counts
        {"predicted": 0.12, "observed": 0.1, "share": pytest.approx(0.6)},
        {"predicted": 0.55, "observed": 0.6, "share": pytest.approx(0.3)},
        {"predicted": 0.91, "observed": 0.88, "share": pytest.approx(0.1)},
    ]
    again = await client.get(
        "/api/v1/model", headers={**auth(tokens["ws-a"]), "If-None-Match": answer.headers["etag"]}
    )
    assert again.status_code == 304


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/insights?status=all&limit=200",
        "/api/v1/insights/ws-a-d1-stale_deal",
        "/api/v1/deals/d1",
        "/api/v1/deals/d25",
        "/api/v1/forecasts",
        "/api/v1/stats/rules?since=60d",
        "/api/v1/summary",
        "/api/v1/model",
        "/api/v1/me",
    ],
)
async def test_a_token_of_b_sees_nothing_of_a(
    api: tuple[httpx.AsyncClient, dict[str, str]], path: str
) -> None:
    client, tokens = api
    of_a = await client.get(path, headers=auth(tokens["ws-a"]))
    of_b = await client.get(path, headers=auth(tokens["ws-b"]))
    assert of_a.status_code == 200
    text_b = of_b.text
    assert "ws-a" not in text_b
    if path.startswith("/api/v1/insights/") or path == "/api/v1/deals/d25":
        assert of_b.status_code == 404  # ws-a's insight; a deal only ws-a has
        return
    assert of_b.status_code == 200
    if path == "/api/v1/deals/d1":  # both have a d1: each sees its own
        assert of_a.json()["score"] is not None
        assert of_b.json()["score"] is None
        assert len(of_a.json()["forecast"]) == 2
        assert of_b.json()["forecast"] == []
        assert {i["insight_id"][:4] for i in of_b.json()["insights"]} == {"ws-b"}
    if path == "/api/v1/forecasts":
        assert [f["p50"] for f in of_b.json()["items"]] == [7.0]
    if path.startswith("/api/v1/insights?"):
        assert {i["insight_id"][:4] for i in of_b.json()["items"]} == {"ws-b"}
    if path == "/api/v1/summary":
        assert of_a.json() != of_b.json()
    if path == "/api/v1/model":  # A has a model of its own; B is scored by the pooled one
        assert of_a.json()["model"]["scope"] == "workspace"
        assert of_b.json()["model"]["scope"] == "pooled"
        assert of_b.json()["model"]["heldout"]["auc"] == pytest.approx(0.71)
    forbidden = await client.get(path, params={"workspace": "ws-a"}, headers=auth(tokens["ws-b"]))
    assert forbidden.status_code == 403
