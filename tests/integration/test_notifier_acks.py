"""Acks and Slack threads on the real PostgreSQL (migration 0010): an ack event stored once (a
replay or an older answer changes nothing), "not useful" holds, the Slack app's message and
thread ts survive a restart, and ``vectoros insights ack --not-useful``."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from consumer.notifier.acks import PgAcks
from consumer.notifier.flood import Item, Message
from consumer.notifier.log import NotificationLog, NotificationRef
from consumer.notifier.metrics import NotifierMetrics, UsefulnessMetrics
from consumer.notifier.outbox import PgFloodStore
from consumer.notifier.service import NotifierHandler, build_destinations
from consumer.notifier.settings import NotifierSettings
from consumer.notifier.slack_app import PgThreads, SlackAppClient
from consumer.notifier.usefulness import usefulness
from schemas.acks import AckSource, AckState, InsightAck
from tests.databases import fresh_database, migrated_pool
from tests.integration.test_cli import run
from tests.kafka_utils import read_all
from tests.slack_stand_in import SlackWebApi
from tests.unit.test_notifier_service import insight
from vectoros.consume_loop import Resources
from vectoros.db import PgPool
from vectoros.kafka import ensure_topics

T0 = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)
TOKEN = "xoxb-1-2-SECRET"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[PgPool]:
    async with fresh_database(database_url, "acks10") as dsn, migrated_pool(dsn) as pool:
        yield pool


def ack(state: str, at: dt.datetime, n: int, until: dt.datetime | None = None) -> InsightAck:
    return InsightAck(
        ack_id=f"a-{n}",
        insight_id="ins-1",
        state=AckState(state),
        snoozed_until=until,
        actor=f"slack:U{n}",
        source=AckSource.SLACK,
        at=at,
    )


async def test_the_latest_answer_wins_and_a_replay_changes_nothing(pool: PgPool) -> None:
    acks = PgAcks(pool)
    snooze = ack("snoozed", T0, 1, until=T0 + dt.timedelta(days=1))
    await acks.record([snooze])
    assert await acks.held(["ins-1"], T0) == {"ins-1"}
    assert await acks.held(["ins-1"], T0 + dt.timedelta(days=2)) == set()
    await acks.record([ack("not_useful", T0 + dt.timedelta(hours=1), 2)])
    await acks.record([snooze])  # replayed after the newer answer: ignored
    await acks.record([ack("acknowledged", T0 - dt.timedelta(hours=1), 3)])  # older: ignored
    row = await pool.fetchrow("SELECT state, actor, source, ack_id FROM insight_acks")
    assert tuple(row) == ("not_useful", "slack:U2", "slack", "a-2")
    assert await acks.held(["ins-1"], T0 + dt.timedelta(days=30)) == {"ins-1"}


async def test_slack_threads_survive_a_new_client(pool: PgPool) -> None:
    api = SlackWebApi(TOKEN, {"C1"})
    async with httpx.AsyncClient(transport=httpx.MockTransport(api)) as http:
        first = SlackAppClient(http, SecretStr(TOKEN), threads=PgThreads(pool))
        await first.send_insight("C1", insight(1, deal_id="d-1"))
        later = SlackAppClient(http, SecretStr(TOKEN), threads=PgThreads(pool))  # a restart
        await later.send_insight("C1", insight(2, deal_id="d-1"))
        await later.send_insight("C1", insight(1, deal_id="d-1", lifecycle="resolved"))
    [root] = api.roots("C1")
    assert [m.body["text"][:13] for m in api.replies(root.ts)] == ["[HIGH] raised"]
    assert [u["text"][:15] for u in root.updates] == ["[HIGH] resolved"]
    rows = await pool.fetch("SELECT insight_id, thread_ts FROM notify_slack_messages ORDER BY 1")
    assert [(r["insight_id"], r["thread_ts"]) for r in rows] == [
        ("insight-1", root.ts),
        ("insight-2", root.ts),
    ]


async def test_insights_ack_not_useful_command(database_url: str) -> None:
    async with fresh_database(database_url, "ackcli") as dsn:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VECTOROS_")}
        env.update(VECTOROS_DATABASE_URL=dsn)
        done = await asyncio.to_thread(
            run, ["insights", "ack", "ins-9", "--not-useful", "--by", "ana"], env
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "marked not useful ins-9"
        async with migrated_pool(dsn) as pool:
            row = await pool.fetchrow("SELECT state, actor, source FROM insight_acks")
            assert tuple(row) == ("not_useful", "ana", "cli")


async def test_usefulness_counts_not_useful_and_activity_within_72_hours(pool: PgPool) -> None:
    log = NotificationLog(pool, stale_after_seconds=30)
    for n in (1, 2, 3, 4):
        ref = NotificationRef(f"ins-{n}", "raised", "a" * 64)
        await log.claim(
            ref,
            destination_type="slack_app",
            destination_label="slack_app:C1",
            workspace_id="w",
            deal_id=f"d-{n}",
            rule="stale_deal",
            priority="high",
        )
        await log.mark_sent(ref)
    sent = await pool.fetchval("SELECT min(created_at) FROM notifications")
    events = [
        ("d-1", "activity.logged", sent + dt.timedelta(hours=5), {}),  # followed
        ("d-2", "activity.logged", sent + dt.timedelta(hours=73), {}),  # too late
        ("d-3", "meeting.logged", sent + dt.timedelta(hours=1), {"status": "scheduled"}),
        ("d-4", "meeting.logged", sent + dt.timedelta(hours=1), {"status": "held"}),  # followed
        ("d-4", "email.logged", sent - dt.timedelta(hours=1), {}),  # before: not counted twice
    ]
    for i, (deal, kind, at, payload) in enumerate(events):
        await pool.execute(
            "INSERT INTO deal_history_events (workspace_id, deal_id, event_id, occurred_at, type,"
            " payload) VALUES ('w', $1, $2, $3, $4, $5::jsonb)",
            deal,
            f"e-{i}",
            at,
            kind,
            payload,
        )
    await PgAcks(pool).record([ack("not_useful", T0, 1)])  # ins-1
    [row] = await usefulness(pool, sent - dt.timedelta(days=1))
    assert (row.rule, row.notified, row.not_useful, row.followed) == ("stale_deal", 4, 1, 2)
    assert row.to_json()["not_useful_share"] == 0.25
    assert row.followed_share == 0.5
    assert await PgAcks(pool).rules_of(["ins-1", "unknown"]) == {"ins-1": "stale_deal"}


async def test_usefulness_counts_insights_that_went_out_only_inside_a_digest(pool: PgPool) -> None:
    def item(n: int, rule: str = "stale_deal", lifecycle: str = "raised") -> Item:
        return Item(f"ins-{n}", lifecycle, "w", f"d-{n}", rule, 2, 1000.0, "{}")

    messages = [
        Message(
            "grp_digest", "k", "w", "digest", (item(1), item(2), item(3, lifecycle="resolved")), 3
        ),
        Message("grp_alert", "k", "w", "alert", (item(4, "low_probability"),), 1),
        Message("grp_unsent", "k", "w", "digest", (item(5), item(6)), 2),
        Message("grp_burst", "k", "w", "burst", (item(7),), 60),  # a count, not a notification
    ]
    await PgFloodStore(pool, "g").save(b"{}", messages)
    log = NotificationLog(pool, stale_after_seconds=30)
    for message in messages:
        ref = NotificationRef(message.message_id, message.kind, "a" * 64)
        await log.claim(
            ref,
            destination_type="email",
            destination_label="email:u-1",
            workspace_id="w",
            deal_id="*",
            rule=message.kind,
            priority="high",
        )
        if message.message_id != "grp_unsent":
            await log.mark_sent(ref)
    answer = ack("acknowledged", T0, 1).model_copy(update={"insight_id": "ins-2"})
    await PgAcks(pool).record([answer])
    rows = {r.rule: r for r in await usefulness(pool, T0 - dt.timedelta(days=3650))}
    assert {rule: (r.notified, r.acknowledged) for rule, r in rows.items()} == {
        "stale_deal": (2, 1),  # ins-1 and ins-2 in the digest; ins-3 was a resolution
        "low_probability": (1, 0),
    }
    assert await PgAcks(pool).rules_of(["ins-2", "ins-4", "ins-5", "ins-7"]) == {
        "ins-2": "stale_deal",
        "ins-4": "low_probability",
    }


async def test_insights_snooze_publishes_the_answer_when_a_broker_is_set(
    database_url: str, kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("acks")
    await ensure_topics(kafka_bootstrap, {topic: 1})
    async with fresh_database(database_url, "ackpub") as dsn:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VECTOROS_")}
        env.update(
            VECTOROS_DATABASE_URL=dsn,
            VECTOROS_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
            VECTOROS_KAFKA_IDEMPOTENCE="off",
            VECTOROS_TOPIC_ACKS=topic,
        )
        done = await asyncio.to_thread(
            run, ["insights", "snooze", "ins-5", "--until", "1w", "--by", "ana"], env
        )
        assert done.returncode == 0, done.stderr
    [record] = await read_all(kafka_bootstrap, topic)
    ack = InsightAck.model_validate_json(record.value)
    assert record.key == b"ins-5"
    assert (ack.insight_id, ack.state, ack.actor, ack.source) == (
        "ins-5",
        AckState.SNOOZED,
        "ana",
        AckSource.CLI,
    )
    assert ack.snoozed_until is not None


async def test_the_notifier_publishes_usefulness_gauges(pool: PgPool) -> None:
    log = NotificationLog(pool, stale_after_seconds=30)
    for n in (1, 2):
        ref = NotificationRef(f"ins-{n}", "raised", "a" * 64)
        await log.claim(
            ref,
            destination_type="console",
            destination_label="console",
            workspace_id="w",
            deal_id=f"d-{n}",
            rule="close_date_passed",
            priority="high",
        )
        await log.mark_sent(ref)
    await PgAcks(pool).record([ack("acknowledged", T0, 1)])  # ins-1
    registry = CollectorRegistry()
    settings = NotifierSettings(notify_console=True, notify_usefulness_refresh_seconds=0.05)
    async with httpx.AsyncClient() as http:
        handler = NotifierHandler(
            settings,
            build_destinations(settings, http),
            NotifierMetrics(registry),
            asyncio.Event(),
            usefulness_metrics=UsefulnessMetrics(registry),
        )
        await handler.open(Resources(pool=pool, producer=None, consumer=None))  # type: ignore[arg-type]
        try:
            for _ in range(600):  # a bound for "never happens"
                if registry.get_sample_value(
                    "vectoros_notifier_usefulness_notified", {"rule": "close_date_passed"}
                ):
                    break
                await asyncio.sleep(0.05)
        finally:
            await handler.close()
    sample = registry.get_sample_value
    assert sample("vectoros_notifier_usefulness_notified", {"rule": "close_date_passed"}) == 2
    labels = {"rule": "close_date_passed", "measure": "acknowledged"}
    assert sample("vectoros_notifier_usefulness_share", labels) == 0.5
