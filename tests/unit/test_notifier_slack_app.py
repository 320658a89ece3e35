"""Slack app mode against a stand-in of Slack's Web API (``tests/slack_stand_in.py``): one thread
per deal, the message updated in place when the insight escalates or resolves, the ack buttons,
``ok: false`` errors (retriable or final) and 429 with Retry-After."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr, ValidationError

from consumer.notifier.acks import MemoryAcks
from consumer.notifier.flood import Message
from consumer.notifier.metrics import NotifierMetrics
from consumer.notifier.service import NotifierHandler, build_destinations, item_of, secrets_of
from consumer.notifier.settings import NotifierSettings
from consumer.notifier.slack_app import BUTTONS, MemoryThreads, SlackAppClient
from schemas.acks import AckSource, AckState, InsightAck
from tests.slack_stand_in import SlackWebApi
from tests.unit.test_notifier_service import FakeStore, insight

TOKEN = "xoxb-1234-5678-SECRETTOKEN"
CHANNEL = "C0123TEAM"


def settings(**overrides: Any) -> NotifierSettings:
    values: dict[str, Any] = {
        "slack_bot_token": TOKEN,
        "slack_channels": CHANNEL,
        "slack_api_url": "https://slack.test/api",
        "slack_min_interval_seconds": 0.0,
        "notify_backoff_base_seconds": 0.001,
        "notify_backoff_cap_seconds": 0.001,
    }
    values.update(overrides)
    return NotifierSettings(**values)


class Setup:
    def __init__(self, api: SlackWebApi, http: httpx.AsyncClient, **overrides: Any) -> None:
        self.store = FakeStore()
        self.settings = settings(**overrides)
        self.destinations = build_destinations(self.settings, http)
        self.acks = MemoryAcks()
        self.handler = NotifierHandler(
            self.settings,
            self.destinations,
            NotifierMetrics(CollectorRegistry()),
            asyncio.Event(),
            log=self.store,
            acks=self.acks,
            recorder=self.acks,
        )

    async def feed(self, *insights: Any) -> None:
        assert await self.handler.handle(list(insights), asyncio.Event()) == ()

    def rows(self) -> dict[tuple[str, str], Any]:
        return {(ref.insight_id, ref.lifecycle): row for ref, row in self.store.rows.items()}


def action_ids(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (e["action_id"], e["value"])
        for b in body["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
        if "value" in e
    ]


def deal_insight(n: int, deal: str, rule: str = "stale_deal", **kw: Any) -> Any:
    data = {"deal_id": deal, "deal_title": f"Deal {deal}", "deal_value": 20_000.0}
    return insight(n, deal_id=deal, rule=rule, data=data, **kw)


async def test_one_thread_per_deal_with_the_ack_buttons() -> None:
    api = SlackWebApi(TOKEN, {CHANNEL})
    async with httpx.AsyncClient(transport=httpx.MockTransport(api)) as http:
        setup = Setup(api, http)
        await setup.feed(
            deal_insight(1, "deal-a"),
            deal_insight(2, "deal-b"),
            deal_insight(3, "deal-a", rule="low_probability"),
        )
        await setup.feed(deal_insight(4, "deal-a", rule="close_date_passed"))
    roots = api.roots(CHANNEL)
    assert len(roots) == 2  # one thread per deal
    thread_a = next(r for r in roots if "deal-a" in r.body["text"])
    assert [action_ids(m.body)[0][1] for m in api.replies(thread_a.ts)] == [
        "insight-3",
        "insight-4",
    ]
    assert action_ids(thread_a.body) == [(a, "insight-1") for a, _, _ in BUTTONS]
    assert [a for a, _, _ in BUTTONS] == [
        "vectoros_ack",
        "vectoros_snooze_1d",
        "vectoros_snooze_1w",
        "vectoros_not_useful",
    ]
    assert all(m == "chat.postMessage" for m, _ in api.calls)
    assert {row.status for row in setup.rows().values()} == {"sent"}


async def test_escalation_and_resolution_update_the_message_in_place() -> None:
    api = SlackWebApi(TOKEN, {CHANNEL})
    async with httpx.AsyncClient(transport=httpx.MockTransport(api)) as http:
        setup = Setup(api, http, notify_resolved=True)
        await setup.feed(deal_insight(1, "deal-a"))
        await setup.feed(deal_insight(1, "deal-a", lifecycle="escalated", priority="critical"))
        await setup.feed(deal_insight(1, "deal-a", lifecycle="resolved"))
    [posted] = api.messages.values()
    assert [m for m, _ in api.calls] == ["chat.postMessage", "chat.update", "chat.update"]
    escalated, resolved = posted.updates
    assert escalated["ts"] == resolved["ts"] == posted.ts
    assert escalated["text"].startswith("[CRITICAL] escalated")
    assert action_ids(escalated) == [(a, "insight-1") for a, _, _ in BUTTONS]
    assert resolved["text"].startswith("[HIGH] resolved")
    assert action_ids(resolved) == []  # nothing left to acknowledge
    assert "unfurl_links" not in resolved


async def test_a_step_whose_first_message_is_unknown_goes_into_the_deals_thread() -> None:
    api = SlackWebApi(TOKEN, {CHANNEL})
    async with httpx.AsyncClient(transport=httpx.MockTransport(api)) as http:
        setup = Setup(api, http)
        await setup.feed(deal_insight(1, "deal-a"))
        await setup.feed(deal_insight(2, "deal-a", lifecycle="escalated", priority="critical"))
    [root] = api.roots(CHANNEL)
    [reply] = api.replies(root.ts)
    assert reply.body["text"].startswith("[CRITICAL] escalated")


async def test_ratelimited_waits_retry_after_then_sends_once() -> None:
    api = SlackWebApi(TOKEN, {CHANNEL})
    api.ratelimit(0)
    async with httpx.AsyncClient(transport=httpx.MockTransport(api)) as http:
        setup = Setup(api, http)
        await setup.feed(deal_insight(1, "deal-a"))
    assert len(api.messages) == 1
    [row] = setup.rows().values()
    assert (row.status, row.attempts) == ("sent", 2)


async def test_a_retriable_slack_error_is_retried() -> None:
    api = SlackWebApi(TOKEN, {CHANNEL})
    api.script.append(httpx.Response(200, json={"ok": False, "error": "internal_error"}))
    async with httpx.AsyncClient(transport=httpx.MockTransport(api)) as http:
        setup = Setup(api, http)
        await setup.feed(deal_insight(1, "deal-a"))
    [row] = setup.rows().values()
    assert (row.status, row.attempts, len(api.messages)) == ("sent", 2, 1)


@pytest.mark.parametrize(
    ("token", "channel", "error"),
    [(TOKEN, "C0GONE", "channel_not_found"), ("xoxb-revoked", CHANNEL, "invalid_auth")],
)
async def test_a_final_slack_error_fails_for_good_without_the_token(
    token: str, channel: str, error: str
) -> None:
    api = SlackWebApi(TOKEN, {CHANNEL})
    async with httpx.AsyncClient(transport=httpx.MockTransport(api)) as http:
        setup = Setup(api, http, slack_bot_token=token, slack_channels=channel)
        await setup.feed(deal_insight(1, "deal-a"))
    [row] = setup.rows().values()
    assert (row.status, row.attempts, row.failure_kind) == ("failed", 1, "permanent")
    assert error in (row.error or "")
    assert token not in (row.error or "")
    assert api.messages == {}


async def test_a_digest_is_one_channel_message_and_a_single_alert_a_threaded_insight() -> None:
    api = SlackWebApi(TOKEN, {CHANNEL})
    async with httpx.AsyncClient(transport=httpx.MockTransport(api)) as http:
        client = SlackAppClient(http, SecretStr(TOKEN), base_url="https://slack.test/api")
        items = (item_of(deal_insight(1, "deal-a")), item_of(deal_insight(2, "deal-b")))
        await client.send_message(CHANNEL, Message("grp_1", "r", "ws-1", "digest", items, 2))
        await client.send_message(CHANNEL, Message("grp_2", "r", "ws-1", "alert", items[:1], 1))
        await client.send_message(CHANNEL, Message("grp_3", "r", "ws-1", "alert", items[:1], 1))
    digest, alert = api.roots(CHANNEL)
    assert action_ids(digest.body) == []
    assert action_ids(alert.body)[0] == ("vectoros_ack", "insight-1")
    assert len(api.replies(alert.ts)) == 1  # the same deal's next message is in its thread
    assert isinstance(client.threads, MemoryThreads)


async def test_an_escalation_is_broadcast_from_the_deals_thread() -> None:
    api = SlackWebApi(TOKEN, {CHANNEL})
    async with httpx.AsyncClient(transport=httpx.MockTransport(api)) as http:
        client = SlackAppClient(http, SecretStr(TOKEN), base_url="https://slack.test/api")
        first = item_of(deal_insight(1, "deal-a", priority="critical"))
        other = item_of(deal_insight(2, "deal-b", priority="critical"))
        await client.send_message(CHANNEL, Message("grp_1", "r", "ws-1", "alert", (first,), 1))
        await client.send_message(CHANNEL, Message("esc_1", "r", "ws-1", "escalation", (first,), 1))
        await client.send_message(CHANNEL, Message("esc_2", "r", "ws-1", "escalation", (other,), 1))
    alert, lone = api.roots(CHANNEL)  # deal-b has no thread: its escalation starts in the channel
    (reply,) = api.replies(alert.ts)
    assert reply.body["reply_broadcast"] is True
    assert "Not acknowledged in time" in reply.body["text"]
    assert "Not acknowledged in time" in lone.body["text"]
    assert "reply_broadcast" not in lone.body


def test_the_token_is_a_secret_and_needs_channels() -> None:
    assert TOKEN in secrets_of(settings())
    assert TOKEN not in repr(settings())
    with pytest.raises(ValidationError, match="SLACK_CHANNELS"):
        settings(slack_channels="")
    s = settings(slack_channels="C1, C2")
    assert s.slack_channels == ["C1", "C2"]
    assert s.has_destinations


def answer(insight_id: str, state: str, actor: str = "slack:U061F7AUR") -> InsightAck:
    until = dt.datetime(2025, 3, 8, 9, 0, tzinfo=dt.UTC) if state == "snoozed" else None
    return InsightAck(
        ack_id=f"a-{insight_id}-{state}",
        insight_id=insight_id,
        state=AckState(state),
        snoozed_until=until,
        actor=actor,
        source=AckSource.SLACK,
        at=dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC),
    )


async def test_an_answer_redraws_the_message_without_buttons_and_says_who() -> None:
    api = SlackWebApi(TOKEN, {CHANNEL})
    async with httpx.AsyncClient(transport=httpx.MockTransport(api)) as http:
        setup = Setup(api, http, notify_resolved=True)
        await setup.feed(deal_insight(1, "deal-a"))
        await setup.feed(answer("insight-1", "snoozed"), answer("insight-9", "acknowledged"))
        await setup.feed(answer("insight-1", "not_useful", actor="ana <!channel>"))
        await setup.feed(deal_insight(1, "deal-a", lifecycle="resolved"))  # held: answered
    [posted] = api.messages.values()
    snoozed, not_useful = posted.updates  # insight-9 was never posted here: nothing to redraw
    assert action_ids(snoozed) == []
    notes = [b for b in snoozed["blocks"] if b.get("block_id") == "vectoros_answer"]
    assert notes[0]["elements"][0]["text"] == (
        "💤 Snoozed until 2025-03-08 09:00 UTC by <@U061F7AUR>"
    )
    assert snoozed["blocks"][0] == posted.body["blocks"][0]  # the same header
    texts = [b["elements"][0]["text"] for b in not_useful["blocks"] if b["type"] == "context"]
    assert texts[-1] == "👎 Marked not useful by ana &lt;!channel&gt;"
    assert sum("Snoozed" in t for t in texts) == 0  # the earlier answer is replaced
    assert setup.acks.snoozed == {}
    assert "insight-1" in setup.acks.acked
