"""The dashboard in a real headless Chromium (Debian's ``chromium`` driven by Playwright), served
by ``run_api`` on the real broker and PostgreSQL: it loads without console errors, an insight
published to the topic appears without a reload and leaves when resolved, the deal drawer shows
the timeline and works from the keyboard, pressing Snooze (from the keyboard) shows the insight
snoozed and publishes the answer, a token of workspace B sees nothing of A, and it fits
1280 px and 390 px (screenshots saved under ``VECTOROS_TEST_ARTIFACTS``, default
``test-artifacts/``)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from consumer.api.settings import ApiSettings
from consumer.api.tokens import PgTokens
from consumer.history.store import write_events
from consumer.sink.store import PostgresInsightStore, SourcePosition
from schemas.acks import AckSource, AckState, InsightAck
from schemas.insights import Lifecycle
from tests.databases import fresh_database, migrated_pool
from tests.integration.test_api_db import deal_events, store_model
from tests.integration.test_api_db import insight as stored_insight
from tests.integration.test_api_live import publish, running_api
from tests.kafka_utils import WAIT_LIMIT, read_all
from tests.unit.test_api_live import insight
from vectoros.kafka import ensure_topics

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("VECTOROS_TEST_ARTIFACTS", ROOT / "test-artifacts"))
WAIT_MS = WAIT_LIMIT * 1000  # a bound for "never happens", not a timing goal

if not Path(CHROMIUM).exists():  # pragma: no cover - `make test` installs it (make browser)
    raise RuntimeError(
        "the browser tests need Debian's chromium: run `make browser` (apt-get install chromium)"
    )

from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright  # noqa: E402


@pytest.fixture
async def served(
    kafka_bootstrap: str, database_url: str, unique_name: Callable[[str], str]
) -> AsyncIterator[tuple[ApiSettings, str, dict[str, str]]]:
    async with fresh_database(database_url, "apiweb") as dsn:
        async with migrated_pool(dsn) as pool:
            tokens = {ws: (await PgTokens(pool).create(ws, "t"))[1] for ws in ("ws-a", "ws-b")}
            stored = [
                stored_insight("ws-a", 1, "stale_deal", Lifecycle.RAISED, "critical", 2),
                stored_insight("ws-a", 2, "ghosting", Lifecycle.RAISED, "high", 2),
                stored_insight("ws-b", 7, "close_date_passed", Lifecycle.RAISED, "critical", 2),
            ]
            await PostgresInsightStore(pool).write_batch(
                [(e, SourcePosition("t", 0, i)) for i, e in enumerate(stored)]
            )
            async with pool.acquire() as conn:
                await write_events(conn, deal_events("ws-a", 1))
            for day, p50 in ((1, 400_000.0), (8, 450_000.0)):
                await pool.execute(
                    "INSERT INTO forecasts (workspace_id, scope, period, as_of, period_start,"
                    " period_end, simulations, open_deals, won, p10, p50, p90, expected,"
                    " weighted_pipeline, commit, best_case, pipeline, target, gap,"
                    " p_reach_target) VALUES ('ws-a', 'workspace', '2026-Q4', $1, $2, $3, 1000,"
                    " 10, 100000, $4, $5, $6, $5, 1, 1, 1, 1, 500000, $7, 0.35)",
                    dt.datetime(2026, 11, day, tzinfo=dt.UTC),
                    dt.datetime(2026, 10, 1, tzinfo=dt.UTC),
                    dt.datetime(2027, 1, 1, tzinfo=dt.UTC),
                    p50 * 0.8,
                    p50,
                    p50 * 1.2,
                    500_000.0 - p50,
                )
            await pool.execute(
                "INSERT INTO insight_acks (insight_id, state, actor)"
                " VALUES ('ws-a-d2-ghosting', 'acknowledged', 'ada')"
            )
            await store_model(pool, "pooled", 0.78, {"rep": 0.66, "stage": 0.6})
            await pool.execute(
                "INSERT INTO deal_scores (workspace_id, deal_id, as_of, model_version,"
                " win_probability, rep_probability, stage, top_factors)"
                " VALUES ('ws-a', 'd1', $1, 1, 0.31, 40, 'proposal', $2)",
                dt.datetime(2026, 11, 2, tzinfo=dt.UTC),
                [
                    {"feature": "days_in_stage", "effect": -0.2},
                    {"feature": "activities_14d", "effect": 0.05},
                ],
            )
            await pool.execute(
                "INSERT INTO forecast_contributions (workspace_id, period, deal_id, as_of,"
                " p_land, expected) VALUES ('ws-a', '2026-Q4', 'd1', $1, 0.62, 12400)",
                dt.datetime(2026, 11, 8, tzinfo=dt.UTC),
            )
        settings = ApiSettings(
            kafka_bootstrap_servers=kafka_bootstrap,
            kafka_idempotence="off",
            database_url=dsn,
            metrics_enabled=False,
            topic_insights=unique_name("insights"),
            topic_acks=unique_name("acks"),
            topic_partitions=2,
            api_port=0,
        )
        await ensure_topics(kafka_bootstrap, {settings.topic_insights: 2})
        async with running_api(settings) as (port, _):
            yield settings, f"http://127.0.0.1:{port}/", tokens


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        chromium = await p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield chromium
        finally:
            await chromium.close()


async def open_page(browser: Browser, width: int, height: int) -> tuple[Page, list[str]]:
    page = await browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", console)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page, errors


async def signed_in(page: Page, url: str, token: str) -> None:
    await page.goto(url)
    await page.fill("#token", token)
    await page.press("#token", "Enter")
    await page.wait_for_selector("#board:not([hidden])", timeout=WAIT_MS)
    await page.wait_for_selector("#live.on", timeout=WAIT_MS)  # the stream is connected


async def test_the_monday_morning_view_follows_the_topic(
    served: tuple[ApiSettings, str, dict[str, str]], browser: Browser, artifacts: Path
) -> None:
    settings, url, tokens = served
    page, errors = await open_page(browser, 1280, 800)
    await signed_in(page, url, tokens["ws-a"])
    await page.wait_for_selector('[data-insight="ws-a-d1-stale_deal"]', timeout=WAIT_MS)
    assert await page.text_content("#critical") == "1"
    assert "Workspace ws-a" in (await page.text_content("#workspace") or "")
    risk = await page.text_content("#risk-rows") or ""
    assert "stale deal" in risk
    assert "ghosting" in risk

    forecast = await page.text_content("#forecast") or ""
    assert "2026-Q4" in forecast
    assert "450,000" in forecast
    assert "chance to reach it 35 %" in forecast
    assert await page.locator("#forecast svg polygon.band").count() == 1
    model = await page.text_content("#model") or ""  # the calibration once a model exists
    assert "Version 1, the model pooled over all workspaces" in model
    assert "Calibration error 22 %" in model
    label = await page.get_attribute("#model svg.reliability", "aria-label") or ""
    assert "12 % predicted, 10 % won" in label  # the reliability diagram of the stored bins
    assert "Rep's probability" in model
    acked = await page.text_content('[data-insight="ws-a-d2-ghosting"]') or ""
    assert "acknowledged" in acked

    await page.evaluate("window.__notReloaded = true")
    fresh = insight("ws-a", 50)  # insight id i-50, deal d-50
    await publish(settings, [fresh])
    await page.wait_for_selector('[data-insight="i-50"]', timeout=WAIT_MS)
    assert "Deal 50 went quiet" in (await page.text_content('[data-insight="i-50"]') or "")
    await publish(settings, [insight("ws-a", 50, Lifecycle.RESOLVED)])
    await page.wait_for_selector('[data-insight="i-50"]', state="detached", timeout=WAIT_MS)
    assert await page.evaluate("window.__notReloaded") is True
    await page.screenshot(path=str(artifacts / "dashboard-1280.png"), full_page=True)

    # the deal drawer from the keyboard: focus the deal's button, Enter, Escape
    opener = page.locator('button[data-deal="d1"]')
    await opener.focus()
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#drawer:not([hidden])", timeout=WAIT_MS)
    assert await page.evaluate("document.activeElement.id") == "drawer-close"
    timeline = await page.text_content("#deal-timeline") or ""
    assert "deal.created: created in proposal" in timeline
    assert "activity.logged: call (outbound)" in timeline
    assert "stale deal raised" in timeline
    assert "Deal 1" in (await page.text_content("#drawer-title") or "")
    facts = await page.text_content("#deal-facts") or ""
    assert "Win probability (model)31 %" in facts
    assert "Rep's probability40 %" in facts
    factors = await page.text_content("#deal-factors") or ""
    assert "days in stage: \u221220 points" in factors  # a minus sign
    assert "activities 14d: +5 points" in factors
    part = await page.text_content("#deal-forecast") or ""
    assert "62 % to be won within 2026-Q4; adds" in part
    assert "12,400 to its expected revenue" in part
    await page.screenshot(path=str(artifacts / "dashboard-drawer-1280.png"))
    await page.keyboard.press("Escape")
    await page.wait_for_selector("#drawer", state="hidden", timeout=WAIT_MS)
    assert await page.evaluate("document.activeElement.dataset.deal") == "d1"

    await page.set_viewport_size({"width": 390, "height": 844})
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    await page.screenshot(path=str(artifacts / "dashboard-390.png"), full_page=True)
    assert errors == []


async def test_a_token_of_b_sees_nothing_of_a(
    served: tuple[ApiSettings, str, dict[str, str]], browser: Browser
) -> None:
    settings, url, tokens = served
    page, errors = await open_page(browser, 390, 844)
    await signed_in(page, url, tokens["ws-b"])
    await page.wait_for_selector('[data-insight="ws-b-d7-close_date_passed"]', timeout=WAIT_MS)
    # one deal id in both workspaces: the same key, so the same partition, A's first
    of_a, of_b = insight("ws-a", 60), insight("ws-b", 60)
    await publish(settings, [of_a, of_b.model_copy(update={"insight_id": "i-60-b"})])
    await page.wait_for_selector('[data-insight="i-60-b"]', timeout=WAIT_MS)
    body = await page.text_content("body") or ""
    assert await page.locator('[data-insight="i-60"]').count() == 0
    assert "ws-a" not in body
    assert "Deal 1" not in body
    assert "Deal 2" not in body
    assert await page.text_content("#critical") == "1"
    assert errors == []


async def test_pressing_snooze_shows_the_insight_snoozed(
    served: tuple[ApiSettings, str, dict[str, str]], browser: Browser, kafka_bootstrap: str
) -> None:
    settings, url, tokens = served
    page, errors = await open_page(browser, 390, 844)
    await signed_in(page, url, tokens["ws-a"])
    card = '[data-insight="ws-a-d1-stale_deal"]'
    await page.wait_for_selector(card, timeout=WAIT_MS)
    assert await page.locator(f"{card} .badge.ack").count() == 0
    snooze = page.locator(f'{card} button[data-answer="snooze_1d"]')
    await snooze.focus()
    await page.keyboard.press("Enter")
    await page.wait_for_selector(f"{card} .badge.ack", timeout=WAIT_MS)
    assert "snoozed until" in (await page.text_content(f"{card} .badge.ack") or "")
    assert "snoozed until" in (await page.text_content("#answer-status") or "")
    assert await page.evaluate("document.activeElement.dataset.answer") == "snooze_1d"
    await page.screenshot(path=str(ARTIFACTS / "dashboard-snoozed-390.png"), full_page=True)

    await page.reload()  # stored: still snoozed after a reload (the token is in the tab)
    await page.wait_for_selector(f"{card} .badge.ack", timeout=WAIT_MS)
    assert "snoozed until" in (await page.text_content(f"{card} .badge.ack") or "")
    await page.wait_for_selector("#live.on", timeout=WAIT_MS)

    # answered elsewhere (another page, Slack...): the page shows it without a reload
    await page.evaluate("window.__notReloaded = true")
    async with httpx.AsyncClient(base_url=url, timeout=WAIT_LIMIT) as client:
        reply = await client.post(
            "api/v1/insights/ws-a-d1-stale_deal/answer",
            json={"answer": "acknowledged"},
            headers={"Authorization": f"Bearer {tokens['ws-a']}"},
        )
        assert reply.status_code == 200
    await page.wait_for_selector(f"{card} .badge.ack:text('acknowledged')", timeout=WAIT_MS)
    assert await page.evaluate("window.__notReloaded") is True
    records = await read_all(kafka_bootstrap, settings.topic_acks)
    acks = [InsightAck.model_validate_json(r.value) for r in records]
    assert [a.state for a in acks] == [AckState.SNOOZED, AckState.ACKNOWLEDGED]
    assert {a.insight_id for a in acks} == {"ws-a-d1-stale_deal"}
    assert {a.source for a in acks} == {AckSource.DASHBOARD}
    assert errors == []
