"""The notifier on the real broker and PostgreSQL, against a real local HTTP server standing in
for Slack and a webhook receiver.

Checked here: Block Kit payloads arrive; a real 429 with ``Retry-After: 2`` makes the notifier
wait at least 2 s (measured at the server: a lower bound, not a timing goal) before it delivers;
a 500 is retried; a 404 is not retried and is recorded as failed in ``notifications``; a restart
on the same group and a full replay by a new group deliver nothing twice; the crash window
(pending rows left by a dead notifier) is resolved as documented in ``consumer/notifier/log.py``;
no secret URL reaches the logs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from consumer.lifecycle import Change, Resolution
from consumer.notifier.delivery import destination_key
from consumer.notifier.log import ClaimState, NotificationLog, NotificationRef
from consumer.notifier.metrics import NotifierMetrics
from consumer.notifier.service import Notifier, build_destinations, run_notifier
from consumer.notifier.settings import NotifierSettings
from consumer.notifier.webhook import webhook_id
from consumer.rules import stale_deal
from consumer.state import DAY_MS, DealState
from consumer.templates import render
from consumer.thresholds import RuleThresholds
from schemas.events import Stage
from schemas.insights import InsightEvent, Lifecycle, Priority
from tests.databases import fresh_database, migrated_pool
from tests.http_stand_in import Hit, StandIn
from vectoros.db import PgPool
from vectoros.kafka import ensure_topics, start_producer
from vectoros.ops_server import Health
from vectoros.settings import KafkaSettings

pytestmark = pytest.mark.integration
logger = logging.getLogger(__name__)

WAIT_LIMIT = 60.0  # a bound for "never happens", not a timing goal
PARTITIONS = 2
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
T0 = 20_000 * DAY_MS


# --- the stand-in for Slack and the webhook receiver --------------------------------------------


@pytest.fixture
async def stand_in() -> AsyncIterator[StandIn]:
    server = StandIn()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


# --- database ------------------------------------------------------------------------------------


@pytest.fixture
async def notify_dsn(database_url: str) -> AsyncIterator[str]:
    """A fresh database on the session's PostgreSQL; dropped afterwards."""
    async with fresh_database(database_url, "notify") as dsn:
        yield dsn


@pytest.fixture
async def pool(notify_dsn: str) -> AsyncIterator[PgPool]:
    async with migrated_pool(notify_dsn) as pool:
        yield pool


async def rows(pool: PgPool) -> list[dict[str, Any]]:
    return [dict(r) for r in await pool.fetch("SELECT * FROM notifications")]


async def eventually(check: Callable[[], Awaitable[bool] | bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_LIMIT
    while True:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


# --- insight events, rendered by the monitor's own templates -------------------------------------


def episode(workspace: str, n: int) -> list[InsightEvent]:
    """stale_deal on deal ``n``: raised (high), escalated (critical), resolved."""
    deal = DealState(
        workspace_id=workspace,
        deal_id=f"deal-{n}",
        title=f"Acme #{n} renewal <!channel> & co",
        value=12_500.0 * n,
        currency="EUR",
        stage=Stage.PROPOSAL,
        probability=50,
        close_day=T0 // DAY_MS + 90,
        owner_id="owner-1",
        owner_name="Ada",
        company=f"Acme {n}",
        created_at_ms=T0,
        last_activity_at_ms=T0,
        stage_entered_at_ms=T0,
    )
    raised_at = T0 + 8 * DAY_MS
    out = []
    for now, lifecycle in (
        (raised_at, Lifecycle.RAISED),
        (T0 + 15 * DAY_MS, Lifecycle.ESCALATED),
        (T0 + 20 * DAY_MS, Lifecycle.RESOLVED),
    ):
        finding = stale_deal(deal, now, RuleThresholds())
        assert finding is not None
        if lifecycle is Lifecycle.RESOLVED:
            change = Change(
                finding.rule, lifecycle, Priority.CRITICAL, raised_at, resolution=Resolution.WON
            )
        else:
            change = Change(finding.rule, lifecycle, finding.priority, raised_at)
        out.append(render(change, deal, now, RuleThresholds()).event())
    return out


async def produce(
    bootstrap: str, topic: str, events: list[InsightEvent], partition: int | None = None
) -> None:
    producer = await start_producer(KafkaSettings(kafka_bootstrap_servers=bootstrap))
    try:
        for event in events:
            await producer.send_and_wait(
                topic,
                event.model_dump_json().encode(),
                key=event.deal_id.encode(),
                partition=partition,
            )
    finally:
        await producer.stop()


_CONTEXT = re.compile(r"^(\w+) · .* insight (\S+)$")


def slack_key(hit: Hit) -> tuple[str, str]:
    """(insight_id, lifecycle) of a Slack message, from its context block."""
    context = hit.json()["blocks"][-1]["elements"][0]["text"]
    match = _CONTEXT.match(context)
    assert match, context
    return match.group(2), match.group(1)


def hook_key(hit: Hit) -> tuple[str, str]:
    data = hit.json()["data"]
    return data["insight_id"], data["lifecycle"]


def delivered(hits: list[Hit], key: Callable[[Hit], tuple[str, str]]) -> list[tuple[str, str]]:
    return [key(h) for h in hits if h.status == 200]


@contextlib.asynccontextmanager
async def running(settings: NotifierSettings) -> AsyncIterator[CollectorRegistry]:
    registry, health, stop = CollectorRegistry(), Health(), asyncio.Event()
    task = asyncio.create_task(run_notifier(settings, registry, health, stop))
    try:
        await eventually(lambda: health.ready() or task.done(), "the notifier to start")
        if task.done():
            task.result()
        yield registry
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_LIMIT)


def verify_signature(hit: Hit) -> None:
    key = base64.b64decode(WHSEC.removeprefix("whsec_"))
    msg_id, ts = hit.headers["webhook-id"], hit.headers["webhook-timestamp"]
    expected = base64.b64encode(
        hmac.digest(key, f"{msg_id}.{ts}.".encode() + hit.body, hashlib.sha256)
    ).decode()
    assert hit.headers["webhook-signature"] == f"v1,{expected}"
    assert abs(int(ts) - time.time()) < 300


# --- the scenario --------------------------------------------------------------------------------


async def test_deliveries_retries_failures_and_restarts(
    kafka_bootstrap: str,
    notify_dsn: str,
    pool: PgPool,
    stand_in: StandIn,
    unique_name: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    topic, group = unique_name("insights"), unique_name("notifier")
    await ensure_topics(kafka_bootstrap, {topic: PARTITIONS})
    workspace = unique_name("ws")

    secret_path = "services/T000/B000/"
    names = {
        "limited": f"{secret_path}limited-SECRET",
        "flaky": f"{secret_path}flaky-SECRET",
        "gone": f"{secret_path}gone-SECRET",
        "hook": "hooks/in-SECRET",
    }
    stand_in.scripts[names["limited"]] = [(429, {"Retry-After": "2"})]
    stand_in.scripts[names["flaky"]] = [(500, {})]
    stand_in.always[names["gone"]] = 404

    def settings(group_id: str) -> NotifierSettings:
        return NotifierSettings(
            kafka_bootstrap_servers=kafka_bootstrap,
            database_url=SecretStr(notify_dsn),
            topic_insights=topic,
            notifier_group_id=group_id,
            metrics_enabled=False,
            slack_webhook_urls=[
                SecretStr(stand_in.url(names[n])) for n in ("limited", "flaky", "gone")
            ],
            webhook_urls=[SecretStr(stand_in.url(names["hook"]))],
            webhook_secret=SecretStr(WHSEC),
            crm_deal_url_template="https://crm.example.com/deals/{deal_id}",
            notify_http_timeout_seconds=5,
            notify_backoff_base_seconds=0.2,
            notify_flood_control=False,  # retries and restarts of one message per insight
        )

    deal1, deal2 = episode(workspace, 1), episode(workspace, 2)
    medium = deal2[0].model_copy(
        update={"insight_id": str(uuid.uuid4()), "priority": Priority.MEDIUM, "deal_id": "deal-3"}
    )
    # deal 1: raised + escalated announced, resolved skipped; deal 2: raised; a medium one skipped
    await produce(kafka_bootstrap, topic, [*deal1, deal2[0], medium])
    wanted = [
        (deal1[0].insight_id, "raised"),
        (deal1[1].insight_id, "escalated"),
        (deal2[0].insight_id, "raised"),
    ]

    async def all_final(expected: int) -> bool:
        found = await rows(pool)
        return len(found) == expected and all(r["status"] != "pending" for r in found)

    async with running(settings(group)) as registry:
        await eventually(lambda: all_final(4 * 3), "12 final notification rows")

    # what the stand-in received
    limited, flaky = stand_in.of(names["limited"]), stand_in.of(names["flaky"])
    gone, hook = stand_in.of(names["gone"]), stand_in.of(names["hook"])
    assert [h.status for h in limited] == [429, 200, 200, 200]
    waited = limited[1].at - limited[0].at
    assert waited >= 2.0, f"retried after {waited:.3f} s despite Retry-After: 2"
    logger.info("429 with Retry-After: 2 -> retry arrived %.3f s later at the server", waited)
    for later, earlier in zip(limited[2:], limited[1:], strict=False):
        assert later.at - earlier.at >= 1.0  # slack_min_interval_seconds per URL
    assert [h.status for h in flaky] == [500, 200, 200, 200]
    assert slack_key(flaky[0]) == slack_key(flaky[1])  # the 500 was retried
    assert [h.status for h in gone] == [404, 404, 404]  # each tried once, never retried
    for hits, key in ((limited, slack_key), (flaky, slack_key), (hook, hook_key)):
        got = delivered(hits, key)
        assert sorted(got) == sorted(wanted)
        # in order per destination: deal 1 raised before deal 1 escalated
        assert got.index(wanted[0]) < got.index(wanted[1])
    for hit in hook:
        verify_signature(hit)
    assert len({h.headers["webhook-id"] for h in hook}) == 3

    # Block Kit, with the hostile deal title escaped
    message = limited[1].json()
    assert [b["type"] for b in message["blocks"]][:3] == ["header", "section", "section"]
    assert message["blocks"][0]["text"]["text"] == "🟠 High · Stale deal"
    field_text = " ".join(f["text"] for f in message["blocks"][2]["fields"])
    assert "Acme #1 renewal &lt;!channel&gt; &amp; co" in field_text
    assert "*Days inactive*" in field_text
    assert "<!channel>" not in limited[1].body.decode()
    buttons = [b for b in message["blocks"] if b["type"] == "actions"]
    assert buttons[0]["elements"][0]["url"] == "https://crm.example.com/deals/deal-1"

    # the log
    by_dest: dict[str, list[dict[str, Any]]] = {}
    for row in await rows(pool):
        by_dest.setdefault(row["destination_label"], []).append(row)
        assert "SECRET" not in row["destination_label"]
        assert "SECRET" not in row["destination_key"]
    gone_key = destination_key("slack", stand_in.url(names["gone"]))
    gone_rows = [r for r in await rows(pool) if r["destination_key"] == gone_key]
    assert len(gone_rows) == 3
    for row in gone_rows:
        assert row["status"] == "failed"
        assert row["failure_kind"] == "permanent"
        assert row["last_status_code"] == 404
        assert row["attempts"] == 1
        assert "channel_not_found" in row["last_error"]
    sent = [r for r in await rows(pool) if r["destination_key"] != gone_key]
    assert {r["status"] for r in sent} == {"sent"}

    def metric(name: str, **labels: str) -> float:
        return registry.get_sample_value(f"vectoros_notifier_{name}", labels) or 0.0

    assert metric("notifications_sent_total", destination="slack") == 6
    assert metric("notifications_sent_total", destination="webhook") == 3
    assert metric("notifications_failed_total", destination="slack", kind="permanent") == 3
    assert metric("retries_total", destination="slack") == 2
    assert metric("skipped_total", reason="lifecycle") == 1
    assert metric("skipped_total", reason="below_threshold") == 1

    # restart on the same group: only new events are delivered, nothing twice
    before = len(stand_in.hits)
    sentinels = [
        e.model_copy(update={"insight_id": str(uuid.uuid4()), "deal_id": f"sentinel-{p}"})
        for p, e in enumerate([deal2[0]] * PARTITIONS)
    ]

    async def sentinels_done(count: int) -> bool:
        found = [r for r in await rows(pool) if r["status"] != "pending"]
        return len(found) == count

    async with running(settings(group)):
        for p, sentinel in enumerate(sentinels):
            await produce(kafka_bootstrap, topic, [sentinel], partition=p)
        await eventually(lambda: sentinels_done(4 * (3 + PARTITIONS)), "the sentinels")
    new = stand_in.hits[before:]
    assert len(new) == 4 * PARTITIONS  # one per sentinel and destination, nothing re-sent
    assert {hook_key(h)[0] for h in new if h.name == names["hook"]} == {
        s.insight_id for s in sentinels
    }

    # a new group replays the whole topic: the log turns every delivery into a no-op
    before = len(stand_in.hits)
    async with running(settings(unique_name("replay"))) as replay:
        await eventually(
            lambda: (
                (
                    replay.get_sample_value(
                        "vectoros_notifier_skipped_total", {"reason": "already_sent"}
                    )
                    or 0
                )
                + (
                    replay.get_sample_value(
                        "vectoros_notifier_skipped_total", {"reason": "already_failed"}
                    )
                    or 0
                )
                >= 4 * (3 + PARTITIONS)
            ),
            "the replay",
        )
    assert stand_in.hits[before:] == []

    # no secret URL in any log line (httpx logs request URLs at INFO)
    assert caplog.records
    assert "SECRET" not in caplog.text
    assert secret_path not in caplog.text


async def claim(log: NotificationLog, ref: NotificationRef, kind: str = "slack") -> ClaimState:
    result = await log.claim(
        ref,
        destination_type=kind,
        destination_label=kind,
        workspace_id="w",
        deal_id="d",
        rule="stale_deal",
        priority="high",
    )
    return result.state


# --- the crash window, on the real table ---------------------------------------------------


async def test_crash_window_and_takeover(pool: PgPool, stand_in: StandIn) -> None:
    slack_url, hook_url = stand_in.url("slack/T/B/x"), stand_in.url("hook")
    settings = NotifierSettings(
        slack_webhook_urls=[SecretStr(slack_url)],
        webhook_urls=[SecretStr(hook_url)],
        webhook_secret=SecretStr(WHSEC),
        metrics_enabled=False,
    )
    workspace = f"ws-{uuid.uuid4().hex[:8]}"
    crashed, untouched = episode(workspace, 1)[0], episode(workspace, 2)[0]
    dead = NotificationLog(pool, stale_after_seconds=30, owner="dead-notifier")
    keys = {
        "slack": destination_key("slack", slack_url),
        "webhook": destination_key("webhook", hook_url),
    }
    for kind, key in keys.items():
        # crashed mid-request on one insight; claimed but never attempted the other
        ref = NotificationRef(crashed.insight_id, "raised", key)
        assert await claim(dead, ref, kind) is ClaimState.NEW
        assert await dead.begin_attempt(ref)
        other = NotificationRef(untouched.insight_id, "raised", key)
        await claim(dead, other, kind)

    log = NotificationLog(pool, stale_after_seconds=30)
    # while the dead notifier's request is recent it might still be alive: wait, do not send
    ref = NotificationRef(crashed.insight_id, "raised", keys["slack"])
    assert await claim(log, ref) is ClaimState.BUSY
    await pool.execute(
        "UPDATE notifications SET attempt_started_at = attempt_started_at - interval '1 hour'"
    )

    async with httpx.AsyncClient() as http:
        registry = CollectorRegistry()
        notifier = Notifier(
            settings,
            build_destinations(settings, http),
            log,
            NotifierMetrics(registry),
            asyncio.Event(),
        )
        assert await notifier.process([crashed, untouched])

    by = {(r["insight_id"], r["destination_type"]): r for r in await rows(pool)}
    slack_crashed = by[(crashed.insight_id, "slack")]
    assert (slack_crashed["status"], slack_crashed["failure_kind"]) == ("failed", "unknown_outcome")
    assert by[(crashed.insight_id, "webhook")]["status"] == "sent"
    assert by[(untouched.insight_id, "slack")]["status"] == "sent"
    assert by[(untouched.insight_id, "webhook")]["status"] == "sent"
    slack_hits = stand_in.of("slack/T/B/x")
    assert [slack_key(h) for h in slack_hits] == [(untouched.insight_id, "raised")]
    hook_hits = {hook_key(h)[0]: h for h in stand_in.of("hook")}
    assert set(hook_hits) == {crashed.insight_id, untouched.insight_id}
    # the resend carries the id the receiver may already have seen
    assert hook_hits[crashed.insight_id].headers["webhook-id"] == webhook_id(
        crashed.insight_id, "raised", keys["webhook"]
    )


async def test_takeover_is_exclusive(pool: PgPool) -> None:
    a = NotificationLog(pool, stale_after_seconds=30, owner="a")
    b = NotificationLog(pool, stale_after_seconds=30, owner="b")
    ref = NotificationRef(str(uuid.uuid4()), "raised", "f" * 64)
    assert await claim(a, ref) is ClaimState.NEW
    assert await claim(b, ref) is ClaimState.RESUMED  # a is not mid-request
    assert not await a.begin_attempt(ref)  # a lost the row: it must not send
    assert await b.begin_attempt(ref)
    assert await claim(a, ref) is ClaimState.BUSY  # b is mid-request
    await b.mark_sent(ref)
    assert await claim(a, ref) is ClaimState.SENT
    await a.mark_failed(ref, "permanent", 404, "late")  # a stale owner cannot overwrite
    row = await a.fetch(ref)
    assert row is not None
    assert (row.status, row.attempts, row.owner) == ("sent", 1, "b")
    with pytest.raises(asyncpg.CheckViolationError):
        await claim(a, NotificationRef("x", "raised", "not-a-hash"))
