"""Read API latency: the open-insights list of a workspace with ``count`` insights.

A database of its own on the session's PostgreSQL (the sink scenario empties the insights
table of the main one) is filled with ``count`` insights of one workspace (about 70 % open,
priorities, rules, owners, values and times spread as in a busy pipeline) and a fifth as many
of another. Requests go through the whole app in-process (ASGI: token lookup, rate limit, SQL,
JSON, ETag) as the dashboard makes them: the first page, a priority filter, an owner filter, a
rule filter and the next pages after a cursor; the latency of each is measured and the p50 and
p99 over all of them reported.
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
from prometheus_client import CollectorRegistry

from bench.env import Session
from consumer.api.app import build_app
from consumer.api.metrics import ApiMetrics
from consumer.api.queries import PgApiStore
from consumer.api.settings import ApiSettings
from consumer.api.tokens import PgTokens
from vectoros.db import PgPool, connect_pool, migrate

WORKSPACE = "ws-bench"

_FILL = """
INSERT INTO insights (insight_id, workspace_id, deal_id, rule, type, status, lifecycle, priority,
    priority_rank, title, description, actions, key_metrics, data, confidence, source, rule_title,
    rule_description, raised_at, detected_at, resolved_at, state_rank, content_rank,
    content_detected_at)
SELECT 'b-' || $1 || '-' || n,
       $1,
       'deal-' || (n % ($2 / 3 + 1)),
       (ARRAY['stale_deal','stuck_in_stage','low_probability','high_value_at_risk',
              'close_date_pressure','close_date_passed','ghosting'])[1 + n % 7],
       'risk',
       CASE WHEN n % 10 < 7 THEN 'open' ELSE 'resolved' END,
       CASE WHEN n % 10 < 7 THEN 'raised' ELSE 'resolved' END,
       (ARRAY['low','medium','high','critical'])[1 + (n * 7919) % 4],
       (n * 7919) % 4,
       'Deal ' || n || ' needs attention',
       'No activity for 9 days while the close date is near; the champion has not replied.',
       '[{"action":"Call the champion","priority":"high","timeline":"today",
          "expected_impact":"x"},
         {"action":"Send a recap","priority":"medium","timeline":"this week",
          "expected_impact":"y"}]'::jsonb,
       '{"days_inactive": 9}'::jsonb,
       jsonb_build_object('deal_id', 'deal-' || (n % ($2 / 3 + 1)), 'deal_title', 'Deal ' || n,
                          'deal_value', 1000 + (n * 37) % 90000, 'currency', 'EUR',
                          'stage', (ARRAY['lead','qualified','proposal','negotiation'])[1 + n % 4],
                          'owner_id', 'owner-' || n % 40, 'owner_name', 'Owner ' || n % 40),
       0.8, 'rules', 'title', 'description',
       $3::timestamptz - make_interval(mins => n % 129600),
       $3::timestamptz - make_interval(mins => n % 129600),
       CASE WHEN n % 10 < 7 THEN NULL ELSE $3::timestamptz - make_interval(mins => n % 1000) END,
       CASE WHEN n % 10 < 7 THEN 0 ELSE 2 END,
       1,
       $3::timestamptz - make_interval(mins => n % 129600)
FROM generate_series(1, $2) AS n
"""


@dataclass
class ApiSetup:
    dsn: str
    database: str
    pool: PgPool
    token: str
    count: int


async def setup(session: Session, count: int) -> ApiSetup:
    database = f"bench_api_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(session.dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    dsn = urlunsplit(urlsplit(session.dsn)._replace(path=f"/{database}"))
    pool = await connect_pool(dsn, max_size=4)
    await migrate(pool)
    now = dt.datetime.now(dt.UTC)
    await pool.execute(_FILL, WORKSPACE, count, now)
    await pool.execute(_FILL, "ws-other", max(1, count // 5), now)
    await pool.execute("ANALYZE insights")
    _, token = await PgTokens(pool).create(WORKSPACE, "bench")
    return ApiSetup(dsn, database, pool, token, count)


async def teardown(session: Session, s: ApiSetup) -> None:
    await s.pool.close()
    admin = await asyncpg.connect(session.dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{s.database}" WITH (FORCE)')
    finally:
        await admin.close()


@dataclass(frozen=True)
class ApiResult:
    requests: int
    p50_ms: float
    p99_ms: float


async def run(s: ApiSetup, rounds: int) -> ApiResult:
    settings = ApiSettings(
        database_url=s.dsn,
        metrics_enabled=False,
        api_rate_limit_per_second=1e5,
        api_rate_limit_burst=1_000_000,
    )
    app = build_app(
        settings, PgApiStore(s.pool), PgTokens(s.pool), ApiMetrics(CollectorRegistry()), None
    )
    headers = {"Authorization": f"Bearer {s.token}"}
    took: list[float] = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as c:

        async def get(params: dict[str, str]) -> dict[str, object]:
            t = time.perf_counter()
            answer = await c.get("/api/v1/insights", params=params, headers=headers)
            took.append(time.perf_counter() - t)
            assert answer.status_code == 200, answer.text
            body: dict[str, object] = answer.json()
            return body

        for i in range(rounds):
            first = await get({"limit": "50"})
            await get({"limit": "50", "priority": "high"})
            await get({"limit": "50", "owner": f"owner-{i % 40}"})
            await get({"limit": "50", "rule": "ghosting"})
            cursor = first["next_cursor"]
            for _ in range(3):
                if not isinstance(cursor, str):
                    break
                cursor = (await get({"limit": "50", "cursor": cursor}))["next_cursor"]
    took.sort()
    p99 = took[min(len(took) - 1, int(len(took) * 0.99))]
    return ApiResult(len(took), statistics.median(took) * 1000, p99 * 1000)
