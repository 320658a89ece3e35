"""The monitor on the real broker: seed case, going cold, replay, closing, poison messages."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest

from producer.simulator import SimTick, SimulationSpec, generate
from schemas.events import (
    ActivityLogged,
    DealClosed,
    DealCreated,
    DealDeleted,
    DealFields,
    DealUpdated,
    encode_event,
)
from schemas.insights import Lifecycle, Priority, RuleName
from tests.kafka_utils import (
    monitor_settings,
    publish,
    publisher_for,
    read_all,
    read_insights,
    running_monitor,
    wait_caught_up,
)

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
_ids = itertools.count()


def eid() -> str:
    return f"it-{next(_ids)}"


def created(deal_id: str, at: dt.datetime, **kw: Any) -> DealCreated:
    fields: dict[str, Any] = {
        "title": f"Deal {deal_id}",
        "value": 5_000,
        "currency": "USD",
        "stage": "negotiation",
        "probability": 80,
        "close_date": (at + dt.timedelta(days=60)).date(),
        "owner_id": "owner-1",
    }
    fields.update(kw)
    return DealCreated(
        event_id=eid(), workspace_id="ws-it", deal_id=deal_id, occurred_at=at, **fields
    )


def activity(deal_id: str, at: dt.datetime) -> ActivityLogged:
    return ActivityLogged(
        event_id=eid(),
        workspace_id="ws-it",
        deal_id=deal_id,
        occurred_at=at,
        activity_type="email",  # type: ignore[arg-type]
    )


async def test_seed_case_gives_exactly_one_low_probability_insight(
    kafka_bootstrap: str, unique_name: Any
) -> None:
    settings = monitor_settings(kafka_bootstrap, unique_name)
    deal = "alivio-1"
    events = [
        created(
            deal,
            NOW - dt.timedelta(days=10),
            title="Enterprise SaaS - Alivio Clothing LTD",
            value=8_000,
            probability=12,
            stage="lead",
            close_date=(NOW + dt.timedelta(days=60)).date(),
        ),
        activity(deal, NOW - dt.timedelta(days=2)),
    ]
    async with running_monitor(settings) as monitor:
        await publish(settings, events)
        async with publisher_for(settings) as pub:
            await pub.publish_tick(NOW, await pub.partitions())
            await pub.flush()
        await wait_caught_up(monitor)
    insights = await read_insights(kafka_bootstrap, settings.topic_insights)
    assert [(i.rule, i.lifecycle, i.priority) for i in insights] == [
        (RuleName.LOW_PROBABILITY, Lifecycle.RAISED, Priority.MEDIUM)
    ]
    only = insights[0]
    assert only.data.deal_title == "Enterprise SaaS - Alivio Clothing LTD"
    assert "12%" in only.description
    assert "15%" in only.description
    assert 2 <= len(only.actions) <= 3


async def test_going_cold_raises_escalates_resolves(kafka_bootstrap: str, unique_name: Any) -> None:
    settings = monitor_settings(kafka_bootstrap, unique_name)
    day0 = NOW - dt.timedelta(days=30)
    deal = "cold-1"
    async with running_monitor(settings) as monitor, publisher_for(settings) as pub:
        parts = await pub.partitions()
        await pub.publish_many([created(deal, day0), activity(deal, day0)])
        for day in range(1, 17):
            if day == 16:
                await pub.publish(activity(deal, day0 + dt.timedelta(days=16)))
            await pub.publish_tick(day0 + dt.timedelta(days=day), parts)
        await pub.flush()
        await wait_caught_up(monitor)
    stale = [
        i
        for i in await read_insights(kafka_bootstrap, settings.topic_insights)
        if i.rule is RuleName.STALE_DEAL
    ]
    assert [(i.lifecycle, i.priority) for i in stale] == [
        (Lifecycle.RAISED, Priority.HIGH),
        (Lifecycle.ESCALATED, Priority.CRITICAL),
        (Lifecycle.RESOLVED, Priority.CRITICAL),
    ]
    assert len({i.insight_id for i in stale}) == 1
    assert stale[0].detected_at == day0 + dt.timedelta(days=8)
    assert stale[1].detected_at == day0 + dt.timedelta(days=15)


async def test_replay_gives_identical_insight_streams(
    kafka_bootstrap: str, unique_name: Any
) -> None:
    first = monitor_settings(kafka_bootstrap, unique_name)
    spec = SimulationSpec(deals=60, days=45, seed=7)
    async with running_monitor(first) as monitor, publisher_for(first) as pub:
        parts = await pub.partitions()
        for item in generate(spec):
            if isinstance(item, SimTick):
                await pub.publish_tick(item.at, parts)
            else:
                await pub.publish(item)
        await pub.flush()
        await wait_caught_up(monitor)
    # a fresh group over the same event log, publishing to a fresh insights topic
    second = first.model_copy(
        update={
            "monitor_group_id": unique_name("g"),
            "topic_insights": unique_name("insights"),
            "topic_dlq": unique_name("dlq"),
        }
    )
    async with running_monitor(second) as monitor:
        await wait_caught_up(monitor)

    def by_partition(records: list[Any]) -> dict[int, list[bytes]]:
        out: dict[int, list[bytes]] = {}
        for r in records:
            out.setdefault(r.partition, []).append(r.value)
        return out

    a = await read_all(kafka_bootstrap, first.topic_insights)
    b = await read_all(kafka_bootstrap, second.topic_insights)
    assert len(a) > 20, "the scenario should produce a fair number of insights"
    assert by_partition(a) == by_partition(b)


async def test_closed_and_deleted_deals_resolve_and_stay_quiet(
    kafka_bootstrap: str, unique_name: Any
) -> None:
    settings = monitor_settings(kafka_bootstrap, unique_name)
    t = NOW - dt.timedelta(days=40)
    async with running_monitor(settings) as monitor, publisher_for(settings) as pub:
        parts = await pub.partitions()
        await pub.publish_many(
            [
                created("won-1", t, probability=5),
                created("gone-1", t, probability=5),
                DealClosed(
                    event_id=eid(),
                    workspace_id="ws-it",
                    deal_id="won-1",
                    occurred_at=t + dt.timedelta(days=1),
                    outcome="won",  # type: ignore[arg-type]
                ),
                DealDeleted(
                    event_id=eid(),
                    workspace_id="ws-it",
                    deal_id="gone-1",
                    occurred_at=t + dt.timedelta(days=1),
                ),
                DealUpdated(
                    event_id=eid(),
                    workspace_id="ws-it",
                    deal_id="won-1",
                    occurred_at=t + dt.timedelta(days=2),
                    changes=DealFields(probability=1),
                ),
                activity("gone-1", t + dt.timedelta(days=2)),
            ]
        )
        for day in range(3, 30, 3):
            await pub.publish_tick(t + dt.timedelta(days=day), parts)
        await pub.flush()
        await wait_caught_up(monitor)
    insights = await read_insights(kafka_bootstrap, settings.topic_insights)
    seen = sorted((i.deal_id, i.rule.value, i.lifecycle.value) for i in insights)
    assert seen == [
        ("gone-1", "low_probability", "raised"),
        ("gone-1", "low_probability", "resolved"),
        ("won-1", "low_probability", "raised"),
        ("won-1", "low_probability", "resolved"),
    ]
    resolutions = {
        i.deal_id: i.data.key_metrics["resolution"]
        for i in insights
        if i.lifecycle is Lifecycle.RESOLVED
    }
    assert resolutions == {"won-1": "won", "gone-1": "deleted"}


POISON: list[tuple[bytes | None, bytes, str]] = [
    (b"d-x", b"{not json", "invalid_json"),
    (b"d-x", b"\xff\xfe\x00garbage", "invalid_utf8"),
    (b"d-x", b"[1, 2, 3]", "not_an_object"),
    (b"d-x", b'{"deal_id": "d-x"}', "missing_type"),
    (b"d-x", b'{"type": "deal.exploded", "deal_id": "d-x"}', "unknown_type"),
    (b"d-x", b'{"type": "deal.deleted", "schema_version": 2}', "unsupported_schema_version"),
    (
        b"d-x",
        b'{"type":"activity.logged","event_id":"p1","workspace_id":"w","deal_id":"d-x",'
        b'"occurred_at":"2026-01-01T00:00:00","activity_type":"call"}',
        "schema_violation",
    ),
    (
        b"other-key",
        b'{"type":"deal.deleted","event_id":"p2","workspace_id":"w","deal_id":"d-x",'
        b'"occurred_at":"2026-01-01T00:00:00Z"}',
        "key_mismatch",
    ),
    (
        b"d-x",
        b'{"type":"tick","at":"2026-01-01T00:00:00Z","pad":"' + b"x" * 70_000 + b'"}',
        "oversized",
    ),
]


async def test_poison_messages_go_to_the_dlq_and_valid_ones_are_processed(
    kafka_bootstrap: str, unique_name: Any
) -> None:
    settings = monitor_settings(kafka_bootstrap, unique_name, partitions=2)
    valid = [created(f"ok-{n}", NOW, probability=1) for n in range(len(POISON))]
    async with running_monitor(settings) as monitor, publisher_for(settings) as pub:
        producer = pub._producer
        for good, (key, value, _) in zip(valid, POISON, strict=True):
            stamp = int(NOW.timestamp() * 1000)  # the record timestamp a live producer gives
            await producer.send(settings.topic_events, key=key, value=value, timestamp_ms=stamp)
            await producer.send(
                settings.topic_events,
                key=good.deal_id.encode(),
                value=encode_event(good),
                timestamp_ms=stamp,
            )
        await pub.flush()
        await producer.flush()
        await wait_caught_up(monitor)
    raised = {i.deal_id for i in await read_insights(kafka_bootstrap, settings.topic_insights)}
    assert raised == {v.deal_id for v in valid}
    dlq = await read_all(kafka_bootstrap, settings.topic_dlq)
    reasons = sorted(dict(r.headers)["vectoros-dlq-reason"].decode() for r in dlq)
    assert reasons == sorted(reason for _, _, reason in POISON)
    for record in dlq:
        headers = dict(record.headers)
        assert headers["vectoros-source-topic"].decode() == settings.topic_events
        assert int(headers["vectoros-source-offset"]) >= 0
        assert headers["vectoros-dlq-detail"]
