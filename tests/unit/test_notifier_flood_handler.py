"""Flood control inside the notifier (``NotifierHandler`` with ``notify_flood_control``): the
issue's flapping deal and burst through the real handler, destinations and renderers, on a fake
wall clock; state and outbox survive a restart without a duplicate; a failed save is redone
without losing or doubling a message."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import os
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from consumer.notifier.acks import MemoryAcks
from consumer.notifier.delivery import destination_key
from consumer.notifier.digest import slack_message
from consumer.notifier.directory import parse_directory
from consumer.notifier.flood import Message
from consumer.notifier.metrics import NotifierMetrics
from consumer.notifier.outbox import MemoryFloodStore
from consumer.notifier.service import (
    Destination,
    NotifierHandler,
    build_destinations,
    item_of,
    loop_options,
)
from consumer.notifier.settings import NotifierSettings
from tests.unit.test_consume_loop import LIMIT, until
from tests.unit.test_notifier_service import WHSEC, FakeStore, insight, insight_dict
from vectoros.consume_loop import ConsumeLoop, Resources
from vectoros.memory_broker import MemoryBroker

TOPIC = "deal-insights"
GROUP = "vectoros-notifier"
HOOK = "https://receiver.test/hook"


class Messages(io.StringIO):
    """A console stream that keeps each message (one ``write`` per message)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def write(self, text: str) -> int:
        self.messages.append(text)
        return len(text)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("VECTOROS_"):
            monkeypatch.delenv(name)


def settings(**overrides: Any) -> NotifierSettings:
    values: dict[str, Any] = {
        "topic_insights": TOPIC,
        "notify_console": True,
        "notify_flood_control": True,
        "notify_resolved": True,
        "notify_min_priority": "medium",
        "notify_fetch_timeout_ms": 20,
        "notify_flush_tick_seconds": 0.01,
        "notify_db_retry_seconds": 0.01,
        "notify_db_retry_max_seconds": 0.02,
        "notify_group_wait_seconds": 30,
    }
    values.update(overrides)
    return NotifierSettings(**values)


class Setup:
    """A handler with a console (and optionally a webhook) on fake stores and a fake clock."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        log: FakeStore | None = None,
        store: MemoryFloodStore | None = None,
        clock: Clock | None = None,
        **overrides: Any,
    ) -> None:
        self.settings = settings(**overrides)
        self.console = Messages()
        self.log = log or FakeStore()
        self.store = store or MemoryFloodStore()
        self.clock = clock or Clock()
        self.registry = CollectorRegistry()
        self.stop = asyncio.Event()
        self.handler = NotifierHandler(
            self.settings,
            build_destinations(self.settings, http, console_stream=self.console),
            NotifierMetrics(self.registry),
            self.stop,
            log=self.log,
            flood_store=self.store,
            wall_clock=self.clock,
        )

    async def open(self) -> None:
        await self.handler.open(Resources(pool=None, producer=None, consumer=None))  # type: ignore[arg-type]

    async def feed(self, values: list[dict[str, Any]]) -> None:
        decoded = [insight(0, **{**v}) for v in values]
        assert await self.handler.handle(decoded, self.stop) == ()

    async def at(self, seconds: float) -> None:
        """Move the clock and run one tick (what the background tick does)."""
        self.clock.now += seconds
        await self.handler.tick()


def toggles(n: int) -> list[dict[str, Any]]:
    """A $20K deal whose probability goes 20 -> 50 -> 20 ...: low_probability raised and
    resolved alternately, a new episode each time."""
    out = []
    for k in range(n):
        episode = k // 2
        out.append(
            insight_dict(
                1,
                insight_id=f"lowprob-{episode}",
                lifecycle="raised" if k % 2 == 0 else "resolved",
                rule="low_probability",
                priority="high",
                data={"deal_id": "deal-1", "deal_title": "Acme", "deal_value": 20_000.0},
            )
        )
    return out


async def test_the_flapping_deal_sends_at_most_two_messages_through_the_loop() -> None:
    broker = MemoryBroker(partitions=1)
    for value in toggles(20):  # ten toggles each way
        await broker.append(TOPIC, orjson.dumps(value))
    async with httpx.AsyncClient() as http:
        setup = Setup(http)
        loop = ConsumeLoop(setup.handler, broker, loop_options(setup.settings, None))
        task = asyncio.create_task(loop.run(setup.stop))
        tp = TopicPartition(TOPIC, 0)
        await until(lambda: broker.committed_offsets(GROUP).get(tp) == 20, task)
        assert setup.console.messages == []  # held: group_wait has not passed
        setup.clock.now += 4000  # the background tick sends what is due
        await until(lambda: bool(setup.console.messages) and not setup.store.outbox, task)
        setup.stop.set()
        await asyncio.wait_for(task, LIMIT)
    assert 1 <= len(setup.console.messages) <= 2
    assert any("changed" in m and "times" in m for m in setup.console.messages)
    assert setup.registry.get_sample_value(
        "vectoros_notifier_skipped_total", {"reason": "flapping"}
    )


async def test_500_insights_in_a_minute_send_one_summary_per_recipient() -> None:
    requests: list[Any] = []

    def receive(request: httpx.Request) -> httpx.Response:
        requests.append(json.loads(request.content))
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(receive)) as http:
        setup = Setup(http, webhook_urls=HOOK, webhook_secret=WHSEC)
        await setup.open()
        for batch in range(5):  # 5 batches of 100 over 50 s
            await setup.feed([insight_dict(batch * 100 + i) for i in range(100)])
            setup.clock.now += 10
        await setup.at(0)
        assert setup.console.messages == []
        assert requests == []
        await setup.at(60)
        await setup.at(600)
    assert len(setup.console.messages) == 1
    assert "500 new insights" in setup.console.messages[0]
    assert len(requests) == 1
    assert requests[0]["type"] == "insights.burst"
    assert requests[0]["data"]["count"] == 500


async def test_held_messages_survive_a_restart_and_are_sent_once() -> None:
    log, store, clock = FakeStore(), MemoryFloodStore(), Clock()
    async with httpx.AsyncClient() as http:
        first = Setup(http, log=log, store=store, clock=clock)
        await first.open()
        await first.feed([insight_dict(1), insight_dict(2)])
        await first.handler.close()  # "killed": nothing was due yet
        assert first.console.messages == []

        second = Setup(http, log=log, store=store, clock=clock)
        await second.open()
        await second.feed([insight_dict(1), insight_dict(2)])  # the uncommitted batch, replayed
        await second.at(31)
        await second.handler.close()
    assert len(second.console.messages) == 1
    assert "2 insights need attention" in second.console.messages[0]


async def test_a_crash_between_sending_and_clearing_the_outbox_sends_no_duplicate() -> None:
    log, store, clock = FakeStore(), MemoryFloodStore(), Clock()
    async with httpx.AsyncClient() as http:
        first = Setup(http, log=log, store=store, clock=clock)
        await first.open()
        await first.feed([insight_dict(1), insight_dict(2)])
        clock.now += 31

        async def crash(message_id: str) -> None:
            raise ConnectionResetError("killed after the send")

        store.done = crash  # type: ignore[method-assign]
        with pytest.raises(ConnectionResetError):
            await first.handler.tick()
        assert len(first.console.messages) == 1
        del store.done  # back to the class's method
        assert len(store.outbox) == 1

        second = Setup(http, log=log, store=store, clock=clock)
        await second.open()
        await second.at(1)
        await second.handler.close()
        await first.handler.close()
    assert second.console.messages == []
    assert store.outbox == {}


async def test_a_failed_save_is_redone_without_losing_or_doubling_a_message() -> None:
    async with httpx.AsyncClient() as http:
        setup = Setup(http)
        await setup.open()
        await setup.feed([insight_dict(1)])
        setup.clock.now += 31
        setup.store.fail_saves = 1
        with pytest.raises(ConnectionResetError):
            await setup.handler.tick()
        await setup.handler.tick()
        await setup.at(1000)
        await setup.handler.close()
    assert len(setup.console.messages) == 1
    assert "Deal 1 has gone quiet" in setup.console.messages[0]


async def test_without_flood_control_every_insight_is_sent_at_once() -> None:
    async with httpx.AsyncClient() as http:
        setup = Setup(http, notify_flood_control=False)
        await setup.feed([insight_dict(1), insight_dict(2)])
    assert len(setup.console.messages) == 2


def test_slack_digest_lists_deals_escaped_with_links() -> None:
    evil = insight(
        7, data={"deal_id": "deal-7", "deal_title": "<!channel> Acme", "deal_value": 5.0}
    )
    items = (item_of(insight(1)), item_of(evil))
    message = Message("grp_1", "r", "ws-1", "digest", items, 2)
    body = slack_message(message, deal_url_template="https://crm.test/deals/{deal_id}")
    text = json.dumps(body)
    assert "<!channel>" not in text
    assert "&lt;!channel&gt; Acme" in text
    assert "<https://crm.test/deals/deal-7|" in text
    assert body["blocks"][0]["text"]["text"].endswith("2 insights need attention")


def test_slack_burst_summary_counts_by_priority() -> None:
    sample = tuple(item_of(insight(n)) for n in range(5))
    message = Message("grp_2", "r", "ws-1", "burst", sample, 500, ((3, 100), (2, 400)))
    body = slack_message(message)
    text = json.dumps(body)
    assert "500 new insights in workspace ws-1" in text
    assert "100 critical, 400 high" in text
    assert "and 495 more" in text


async def test_acknowledged_and_snoozed_insights_are_held_but_escalations_pass() -> None:
    acks = MemoryAcks()
    async with httpx.AsyncClient() as http:
        setup = Setup(http, notify_flood_control=False)
        setup.handler._acks = acks
        acks.acked.add("insight-1")
        acks.snoozed["insight-2"] = dt.datetime.fromtimestamp(setup.clock.now + 3600, dt.UTC)
        acks.snoozed["insight-3"] = dt.datetime.fromtimestamp(setup.clock.now - 1, dt.UTC)
        await setup.feed(
            [
                insight_dict(1, lifecycle="resolved"),
                insight_dict(2),
                insight_dict(3),  # the snooze is over
                insight_dict(1, lifecycle="escalated", priority="critical"),
            ]
        )
    sent = "\n".join(setup.console.messages)
    assert len(setup.console.messages) == 2
    assert "Deal 3" in sent
    assert "escalated" in sent
    assert (
        setup.registry.get_sample_value(
            "vectoros_notifier_skipped_total", {"reason": "acknowledged"}
        )
        == 2
    )


async def test_a_snooze_after_grouping_takes_the_insight_out_of_the_held_digest() -> None:
    acks = MemoryAcks()
    async with httpx.AsyncClient() as http:
        setup = Setup(http)
        setup.handler._acks = acks
        await setup.open()
        await setup.feed([insight_dict(1), insight_dict(2), insight_dict(3, workspace_id="ws-2")])
        acks.acked.update({"insight-1", "insight-3"})  # while the groups wait
        await setup.at(31)
        await setup.handler.close()
    assert len(setup.console.messages) == 1  # ws-2's group had nothing left to say
    assert "Deal 2 has gone quiet" in setup.console.messages[0]
    assert "Deal 1" not in setup.console.messages[0]
    assert setup.store.outbox == {}


class Inbox:
    """An email destination that records what it is sent (the SMTP path has its own tests)."""

    def __init__(self, owner_id: str, kind: str = "email") -> None:
        self.messages: list[Message] = []

        async def send(insight: Any, msg_id: str) -> None:
            raise AssertionError("flood control sends messages")

        async def send_message(message: Message, msg_id: str) -> None:
            self.messages.append(message)

        self.destination = Destination(
            kind=kind,
            key=destination_key(kind, f"{owner_id}@acme.test"),
            label=f"{kind}:{owner_id}",
            at_most_once=True,
            min_interval=0.0,
            send=send,
            send_message=send_message,
            names=(f"{kind}:{owner_id}",),
        )


DIRECTORY = "owners:\n  u-17: {email: ana@acme.test, manager: u-1}\n  u-1: {email: bo@acme.test}\n"


def critical(n: int, **overrides: Any) -> dict[str, Any]:
    data = {
        "deal_id": f"deal-{n}",
        "deal_title": f"Deal {n}",
        "deal_value": 1.0,
        "owner_id": "u-17",
    }
    return insight_dict(n, priority="critical", data=data, **overrides)


async def escalation_setup(
    http: httpx.AsyncClient, **shared: Any
) -> tuple[Setup, Inbox, MemoryAcks]:
    setup = Setup(http, notify_escalate_after_hours=4, **shared)
    manager, owner = Inbox("u-1"), Inbox("u-17")
    console = build_destinations(setup.settings, http, console_stream=setup.console)
    acks = MemoryAcks()
    setup.handler = NotifierHandler(
        setup.settings,
        [*console, owner.destination, manager.destination],
        NotifierMetrics(CollectorRegistry()),
        setup.stop,
        log=setup.log,
        flood_store=setup.store,
        wall_clock=setup.clock,
        directory=parse_directory(DIRECTORY),
        acks=acks,
    )
    await setup.open()
    return setup, manager, acks


async def test_a_critical_insight_not_acknowledged_escalates_to_the_manager() -> None:
    async with httpx.AsyncClient() as http:
        setup, manager, acks = await escalation_setup(http)
        await setup.feed([critical(1), critical(2), critical(3), insight_dict(4)])
        acks.acked.add("insight-2")
        await setup.at(31)
        await setup.feed([critical(3, lifecycle="resolved")])
        await setup.at(4 * 3600 - 40)  # just before the 4 hours
        assert manager.messages == []
        await setup.at(10)
        await setup.at(10_000)  # once only
        await setup.handler.close()
    assert [(m.kind, m.items[0].insight_id) for m in manager.messages] == [
        ("escalation", "insight-1")
    ]


async def test_escalation_survives_a_restart_without_a_duplicate() -> None:
    log, store, clock = FakeStore(), MemoryFloodStore(), Clock()
    async with httpx.AsyncClient() as http:
        first, _, _ = await escalation_setup(http, log=log, store=store, clock=clock)
        await first.feed([critical(1)])
        await first.handler.close()
        second, manager, _ = await escalation_setup(http, log=log, store=store, clock=clock)
        await second.at(5 * 3600)
        await second.at(5 * 3600)
        await second.handler.close()
    assert len(manager.messages) == 1


async def test_medium_insights_wait_for_the_daily_digest_and_high_ones_do_not() -> None:
    day = dt.datetime(2025, 3, 15, 10, 0, tzinfo=dt.UTC).timestamp()
    async with httpx.AsyncClient() as http:
        clock = Clock()
        clock.now = day
        setup = Setup(http, clock=clock, notify_daily_digest_at="08:00")
        await setup.open()
        await setup.feed([insight_dict(n, priority="medium") for n in (1, 2, 3)])
        await setup.feed([insight_dict(4, priority="high", workspace_id="ws-2")])
        await setup.at(31)
        assert len(setup.console.messages) == 1  # the high one, after group_wait
        assert "Deal 4" in setup.console.messages[0]
        next_morning = dt.datetime(2025, 3, 16, 8, 0, tzinfo=dt.UTC).timestamp()
        await setup.at(next_morning - 1 - setup.clock.now)
        assert len(setup.console.messages) == 1
        await setup.at(1)
        await setup.handler.close()
    assert len(setup.console.messages) == 2
    digest = setup.console.messages[1]
    assert all(f"Deal {n}" in digest for n in (1, 2, 3))


def test_the_daily_digest_needs_flood_control() -> None:
    with pytest.raises(ValueError, match="FLOOD_CONTROL"):
        settings(notify_daily_digest_at="08:00", notify_flood_control=False)


@pytest.mark.parametrize(("via", "to_mail", "to_phone"), [("sms", 0, 1), ("email,sms", 1, 1)])
async def test_escalation_goes_by_the_channels_named(via: str, to_mail: int, to_phone: int) -> None:
    async with httpx.AsyncClient() as http:
        setup = Setup(http, notify_escalate_after_hours=4, notify_escalate_via=via)
        mail, phone = Inbox("u-1"), Inbox("u-1", kind="sms")
        setup.handler = NotifierHandler(
            setup.settings,
            [mail.destination, phone.destination],
            NotifierMetrics(CollectorRegistry()),
            setup.stop,
            log=setup.log,
            flood_store=setup.store,
            wall_clock=setup.clock,
            directory=parse_directory(DIRECTORY),
            acks=MemoryAcks(),
        )
        await setup.open()
        await setup.feed([critical(1)])
        await setup.at(4 * 3600 + 60)
        await setup.at(10_000)  # once only
        await setup.handler.close()
    assert [m.kind for m in mail.messages] == ["escalation"] * to_mail
    assert [m.kind for m in phone.messages] == ["escalation"] * to_phone


@pytest.mark.parametrize("owner", ["u-17", "u-99"])  # u-99: no manager in the directory
async def test_escalation_goes_to_the_teams_channel_named_with_or_without_a_manager(
    owner: str,
) -> None:
    async with httpx.AsyncClient() as http:
        setup = Setup(http, notify_escalate_after_hours=4, notify_escalate_via="email,teams:0")
        mail, channel = Inbox("u-1"), Inbox("0", kind="teams")
        setup.handler = NotifierHandler(
            setup.settings,
            [mail.destination, channel.destination],
            NotifierMetrics(CollectorRegistry()),
            setup.stop,
            log=setup.log,
            flood_store=setup.store,
            wall_clock=setup.clock,
            directory=parse_directory(DIRECTORY),
            acks=MemoryAcks(),
        )
        await setup.open()
        event = critical(1)
        event["data"]["owner_id"] = owner
        await setup.feed([event])
        await setup.at(4 * 3600 + 60)
        await setup.at(10_000)  # once only
        await setup.handler.close()
    # the channel, a shared destination, had the alert too (no policy)
    assert [m.kind for m in channel.messages] == ["alert", "escalation"]
    assert [m.kind for m in mail.messages] == (["escalation"] if owner == "u-17" else [])
