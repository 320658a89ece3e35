"""The read API's HTTP behaviour in-process (ASGI, a fake store, tokens in memory): auth,
workspace confinement, rate limits, ETags, parameters, CORS, the page, the OpenAPI document."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from consumer.api.app import build_app
from consumer.api.live import LiveHub
from consumer.api.metrics import ApiMetrics
from consumer.api.openapi import openapi_document
from consumer.api.paging import encode_cursor
from consumer.api.queries import Cursor, InsightFilter
from consumer.api.settings import ApiSettings
from consumer.api.tokens import MemoryTokens

ROOT = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)

ENDPOINTS = [
    "/api/v1/me",
    "/api/v1/insights",
    "/api/v1/insights/i-1",
    "/api/v1/deals/d-1",
    "/api/v1/forecasts",
    "/api/v1/stats/rules",
    "/api/v1/summary",
    "/api/v1/model",
    "/api/v1/stream",
]


class FakeStore:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.items: list[dict[str, Any]] = [{"insight_id": "i-1", "priority": "high"}]
        self.next: Cursor | None = None

    async def list_insights(
        self, workspace: str, where: InsightFilter, after: Cursor | None, limit: int
    ) -> tuple[list[dict[str, Any]], Cursor | None]:
        self.calls.append(("list", workspace, (where, after, limit)))
        return self.items, self.next

    async def insight(self, workspace: str, insight_id: str) -> dict[str, Any] | None:
        self.calls.append(("insight", workspace, insight_id))
        return {"insight_id": insight_id} if workspace == "ws-a" else None

    async def deal(self, workspace: str, deal_id: str) -> dict[str, Any] | None:
        self.calls.append(("deal", workspace, deal_id))
        return {"deal_id": deal_id} if workspace == "ws-a" else None

    async def forecasts(self, workspace: str, period: str | None, limit: int) -> list[Any]:
        self.calls.append(("forecasts", workspace, (period, limit)))
        return []

    async def rule_stats(self, workspace: str, since: dt.datetime) -> list[Any]:
        self.calls.append(("rule_stats", workspace, since))
        return []

    async def summary(self, workspace: str) -> dict[str, Any]:
        self.calls.append(("summary", workspace, None))
        return {"critical": 0}

    async def model(self, workspace: str) -> dict[str, Any] | None:
        self.calls.append(("model", workspace, None))
        return None


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(
    **kw: Any,
) -> tuple[httpx.AsyncClient, FakeStore, MemoryTokens, Clock, CollectorRegistry]:
    settings = ApiSettings(kafka_bootstrap_servers="unused:9092", metrics_enabled=False, **kw)
    store, tokens, clock, registry = FakeStore(), MemoryTokens(), Clock(), CollectorRegistry()
    app = build_app(
        settings,
        store,
        tokens,
        ApiMetrics(registry),
        LiveHub(),
        clock=lambda: NOW,
        monotonic=clock,
    )
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")
    return client, store, tokens, clock, registry


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_the_committed_openapi_document_is_the_served_one() -> None:
    client, *_ = make()
    served = (await client.get("/api/openapi.json")).json()
    committed = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert served == committed == json.loads(json.dumps(openapi_document()))
    assert served["openapi"] == "3.1.0"
    documented = set(served["paths"])
    assert documented == {
        "/api/v1/me",
        "/api/v1/insights",
        "/api/v1/insights/{insight_id}",
        "/api/v1/insights/{insight_id}/answer",
        "/api/v1/deals/{deal_id}",
        "/api/v1/forecasts",
        "/api/v1/stats/rules",
        "/api/v1/summary",
        "/api/v1/model",
        "/api/v1/stream",
    }


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_every_endpoint_needs_a_token(path: str) -> None:
    client, store, _tokens, _, registry = make()
    assert (await client.get(path)).status_code == 401
    answer = await client.get(path, headers=bearer("vos_00000000_" + "x" * 43))
    assert answer.status_code == 401
    assert answer.json()["error"] == "unauthorized"
    assert "invalid_token" in answer.headers["www-authenticate"]
    assert store.calls == []
    assert (
        registry.get_sample_value("vectoros_api_auth_failures_total", {"reason": "missing"}) == 1.0
    )


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_a_token_never_names_another_workspace(path: str) -> None:
    client, store, tokens, _, _ = make()
    token = tokens.add("ws-a")
    answer = await client.get(path, params={"workspace": "ws-b"}, headers=bearer(token))
    assert answer.status_code == 403
    assert store.calls == []


@pytest.mark.parametrize("path", [p for p in ENDPOINTS if p != "/api/v1/stream"])
async def test_every_endpoint_reads_only_the_tokens_workspace(path: str) -> None:
    client, store, tokens, _, _ = make()
    token_b = tokens.add("ws-b")
    answer = await client.get(path, headers=bearer(token_b))
    if path.startswith(("/api/v1/insights/", "/api/v1/deals/")):
        assert answer.status_code == 404  # ws-a's deal and insight do not exist for ws-b
    else:
        assert answer.status_code == 200
    assert {call[1] for call in store.calls} <= {"ws-b"}
    if path != "/api/v1/me":
        assert store.calls


async def test_the_rate_limit_is_per_token() -> None:
    client, _, tokens, clock, registry = make(api_rate_limit_per_second=1, api_rate_limit_burst=2)
    one, two = tokens.add("ws-a"), tokens.add("ws-a")
    for _ in range(2):
        assert (await client.get("/api/v1/me", headers=bearer(one))).status_code == 200
    limited = await client.get("/api/v1/me", headers=bearer(one))
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "1"
    assert (await client.get("/api/v1/me", headers=bearer(two))).status_code == 200
    clock.t += 1.0
    assert (await client.get("/api/v1/me", headers=bearer(one))).status_code == 200
    assert registry.get_sample_value("vectoros_api_rate_limited_total") == 1.0


async def test_lists_have_etags() -> None:
    client, store, tokens, _, _ = make()
    headers = bearer(tokens.add("ws-a"))
    first = await client.get("/api/v1/insights", headers=headers)
    etag = first.headers["etag"]
    again = await client.get("/api/v1/insights", headers={**headers, "If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    store.items = [{"insight_id": "i-2", "priority": "critical"}]
    changed = await client.get("/api/v1/insights", headers={**headers, "If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    for path in ("/api/v1/forecasts", "/api/v1/stats/rules", "/api/v1/summary"):
        answer = await client.get(path, headers=headers)
        tagged = await client.get(
            path, headers={**headers, "If-None-Match": answer.headers["etag"]}
        )
        assert tagged.status_code == 304, path


async def test_list_filters_and_cursor_reach_the_store() -> None:
    client, store, tokens, _, _ = make()
    headers = bearer(tokens.add("ws-a"))
    at = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    store.next = (3, at, "i-9")
    first = (await client.get("/api/v1/insights", headers=headers)).json()
    assert first["next_cursor"] == encode_cursor(3, at, "i-9")
    params = {
        "status": "all",
        "priority": "high",
        "rule": "stale_deal",
        "deal": "d-1",
        "owner": "Ada",
        "since": "7d",
        "limit": "10",
        "cursor": first["next_cursor"],
    }
    assert (await client.get("/api/v1/insights", params=params, headers=headers)).is_success
    where, after, limit = store.calls[-1][2]
    assert where == InsightFilter(
        status=None,
        priority="high",
        rule="stale_deal",
        deal="d-1",
        owner="Ada",
        since=NOW - dt.timedelta(days=7),
    )
    assert after == (3, at, "i-9")
    assert limit == 10


@pytest.mark.parametrize(
    "params",
    [
        {"status": "closed"},
        {"priority": "urgent"},
        {"rule": "no_such_rule"},
        {"limit": "0"},
        {"limit": "ten"},
        {"since": "yesterday"},
        {"cursor": "not-a-cursor"},
        {"cursor": encode_cursor(3, NOW, "x")[:-3]},
    ],
)
async def test_bad_parameters_are_400(params: dict[str, str]) -> None:
    client, store, tokens, _, _ = make()
    answer = await client.get("/api/v1/insights", params=params, headers=bearer(tokens.add("w")))
    assert answer.status_code == 400
    assert answer.json()["error"] == "bad_parameter"
    assert store.calls == []


async def test_a_page_larger_than_the_largest_is_the_largest() -> None:
    """The document allows any limit of at least 1: above VECTOROS_API_PAGE_SIZE_MAX (200 by
    default) the largest page is served, not a 400 (schemathesis found the mismatch)."""
    client, store, tokens, _, _ = make()
    answer = await client.get(
        "/api/v1/insights", params={"limit": "22873391937405"}, headers=bearer(tokens.add("w"))
    )
    assert answer.status_code == 200
    kind, _, (_, _, limit) = store.calls[-1]
    assert kind == "list"
    assert limit == 200


async def test_cors_is_off_unless_configured() -> None:
    preflight = {
        "Origin": "https://app.example.com",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    client, *_ = make()
    answer = await client.options("/api/v1/insights", headers=preflight)
    assert "access-control-allow-origin" not in answer.headers
    client, _, tokens, _, _ = make(api_cors_origins="https://app.example.com")
    answer = await client.options("/api/v1/insights", headers=preflight)
    assert answer.headers["access-control-allow-origin"] == "https://app.example.com"
    other = await client.options(
        "/api/v1/insights", headers={**preflight, "Origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in other.headers
    got = await client.get(
        "/api/v1/insights",
        headers={"Origin": "https://app.example.com", **bearer(tokens.add("w"))},
    )
    assert "etag" in got.headers["access-control-expose-headers"].lower()


def test_cors_origins_must_be_origins() -> None:
    with pytest.raises(ValueError, match="api_cors_origins"):
        ApiSettings(api_cors_origins="https://app.example.com/path")
    assert ApiSettings(api_cors_origins="https://a.example, http://b:8080").api_cors_origins == [
        "https://a.example",
        "http://b:8080",
    ]


async def test_the_page_is_served_with_a_strict_policy() -> None:
    client, *_ = make()
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("app.js", "app.css"):
        assert (await client.get(f"/static/{name}")).status_code == 200
    assert (await client.get("/static/../settings.py")).status_code == 404
    assert (await client.get("/static/nothing.js")).status_code == 404


async def test_requests_are_counted_by_route_and_status() -> None:
    client, _, tokens, _, registry = make()
    await client.get("/api/v1/summary", headers=bearer(tokens.add("w")))
    assert (
        registry.get_sample_value(
            "vectoros_api_requests_total", {"route": "summary", "status": "200"}
        )
        == 1.0
    )


async def test_another_method_is_405_with_allow() -> None:
    client, *_ = make()
    answer = await client.request("TRACE", "/api/v1/me")
    assert answer.status_code == 405
    assert "GET" in answer.headers["allow"]
    assert answer.json()["error"] == "method_not_allowed"
