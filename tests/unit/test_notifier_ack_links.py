"""Signed answer links: the token (``vectoros.ack_links``), the links in an insight's email, and
the gateway's ``/acks/<token>`` (GET shows a button and changes nothing; POST publishes; a forged
link is 403, an expired one 410)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from consumer.notifier.destinations import answer_links, secrets_of
from consumer.notifier.email import build_email
from consumer.notifier.settings import NotifierSettings
from producer.gateway.app import build_app
from producer.gateway.metrics import GatewayMetrics
from producer.gateway.settings import GatewaySettings
from schemas.acks import InsightAck
from tests.unit.test_gateway_slack_interactions import NoEvents
from tests.unit.test_notifier_service import insight
from vectoros.ack_links import AckLink, BadLink, sign, verify

KEY = "k" * 40
NOW = 1_764_670_000.0
LINK = AckLink("insight-1", "snooze_1d", "u-17", int(NOW) + 3600)


def test_a_token_round_trips_and_refuses_tampering_other_keys_and_expiry() -> None:
    token = sign(KEY.encode(), LINK)
    assert verify(KEY.encode(), token, NOW) == LINK
    body, mac = token.split(".")
    other = sign(KEY.encode(), AckLink("insight-2", "acknowledged", "u-17", LINK.expires))
    for forged, reason in [
        (f"{other.split('.')[0]}.{mac}", "bad_signature"),  # another link's claims
        (sign(b"x" * 40, LINK), "bad_signature"),  # another key
        (f"{body}.{mac[:-2]}", "bad_signature"),
        ("no-dot", "malformed"),
        ("a.b.c", "malformed"),
    ]:
        with pytest.raises(BadLink) as caught:
            verify(KEY.encode(), forged, NOW)
        assert caught.value.reason == reason
    with pytest.raises(BadLink, match="expired"):
        verify(KEY.encode(), token, LINK.expires)
    with pytest.raises(ValueError, match="unknown answer"):
        sign(KEY.encode(), AckLink("i", "delete", "u", 1))


def settings(**kw: Any) -> NotifierSettings:
    values: dict[str, Any] = {
        "notify_console": True,
        "notify_ack_link_url": "https://gw.example.com/",
        "notify_ack_link_key": KEY,
    }
    values.update(kw)
    return NotifierSettings(**values)


def test_an_open_insights_mail_carries_the_three_signed_links_in_both_parts() -> None:
    links = answer_links(settings(), insight(1), "u-17", NOW)
    assert [label for label, _ in links] == ["Acknowledge", "Snooze 1 day", "Not useful"]
    for (_, url), answer in zip(links, ("acknowledged", "snooze_1d", "not_useful"), strict=True):
        assert url.startswith("https://gw.example.com/acks/")
        link = verify(KEY.encode(), url.rsplit("/", 1)[1], NOW)
        assert (link.insight_id, link.answer, link.recipient) == ("insight-1", answer, "u-17")
        assert link.expires == int(NOW + 168 * 3600)
    mail = build_email(
        insight(1),
        sender="a@x.test",
        to="ana@x.test",
        to_name="Ana",
        message_id="m1",
        answer_links=links,
    )
    text, html_part = (p.get_content() for p in mail.iter_parts())
    for _, url in links:
        assert url in text
        assert url in html_part
    assert answer_links(settings(), insight(1, lifecycle="resolved"), "u-17", NOW) == []
    assert answer_links(NotifierSettings(notify_console=True), insight(1), "u-17", NOW) == []


def test_link_settings_go_together_and_the_key_is_a_secret() -> None:
    assert KEY in secrets_of(settings())
    with pytest.raises(ValidationError, match="ACK_LINK"):
        settings(notify_ack_link_url=None)
    with pytest.raises(ValidationError, match="32 characters"):
        settings(notify_ack_link_key="short")
    with pytest.raises(ValidationError, match="http"):
        settings(notify_ack_link_url="ftp://gw.example.com")


class FakeAcks:
    def __init__(self) -> None:
        self.sent: list[InsightAck] = []

    async def send(self, acks: Sequence[InsightAck]) -> None:
        self.sent.extend(acks)


class Gateway:
    def __init__(self, key: str | None = KEY) -> None:
        self.acks = FakeAcks()
        self.registry = CollectorRegistry()
        values: dict[str, Any] = {
            "kafka_bootstrap_servers": "unused:9092",
            "metrics_enabled": False,
            "gateway_ack_link_key": key,
            "gateway_twenty_secret": "twenty-secret-1",
        }
        self.app = build_app(
            GatewaySettings(**values),
            NoEvents(),
            GatewayMetrics(self.registry),
            clock=lambda: NOW,
            acks=self.acks,
        )

    async def call(self, method: str, token: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="https://gw.test") as client:
            return await client.request(method, f"/acks/{token}")


async def test_following_a_link_shows_a_button_and_pressing_it_snoozes_once() -> None:
    gateway = Gateway()
    token = sign(KEY.encode(), LINK)
    shown = await gateway.call("GET", token)
    assert shown.status_code == 200
    assert "<form method='post'>" in shown.text
    assert "Snooze for 1 day" in shown.text
    assert gateway.acks.sent == []  # a mail scanner following the link answers nothing
    pressed = await gateway.call("POST", token)
    again = await gateway.call("POST", token)
    assert (pressed.status_code, again.status_code) == (200, 200)
    first, second = gateway.acks.sent
    assert first.ack_id == second.ack_id  # the notifier stores it once
    assert (first.insight_id, first.state.value, first.actor, first.source.value) == (
        "insight-1",
        "snoozed",
        "email:u-17",
        "email",
    )
    assert first.snoozed_until == dt.datetime.fromtimestamp(NOW, dt.UTC) + dt.timedelta(days=1)
    sample = gateway.registry.get_sample_value
    labels = {"channel": "email", "outcome": "published", "state": "snoozed"}
    assert sample("vectoros_gateway_ack_requests_total", labels) == 2


@pytest.mark.parametrize(
    ("token", "status"),
    [
        (sign(b"z" * 40, LINK), 403),
        (sign(KEY.encode(), AckLink("insight-1", "acknowledged", "u-17", int(NOW) - 1)), 410),
        ("garbage", 403),
    ],
)
async def test_a_forged_or_expired_link_answers_nothing(token: str, status: int) -> None:
    gateway = Gateway()
    for method in ("GET", "POST"):
        assert (await gateway.call(method, token)).status_code == status
    assert gateway.acks.sent == []


async def test_without_a_key_there_are_no_links() -> None:
    gateway = Gateway(key=None)
    assert (await gateway.call("POST", sign(KEY.encode(), LINK))).status_code == 404
