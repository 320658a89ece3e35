"""``POST /slack/interactions``: Slack's v0 request signature (checked against Slack's published
example), the 5-minute window, the block_actions payload of the notifier's buttons, and the acks
published on insight-acks (in-process ASGI, fake publisher)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from starlette.datastructures import Headers

from producer.gateway.app import build_app
from producer.gateway.auth import AuthError
from producer.gateway.metrics import GatewayMetrics
from producer.gateway.settings import GatewaySettings
from producer.gateway.slack import slack_signature, verify_slack
from schemas.acks import AckState, InsightAck

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # Slack's documented example secret
NOW = 1_764_670_000.0

# Slack's "Verifying requests from Slack" example (a slash command's form body).
EXAMPLE_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&"
    b"channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&"
    b"command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands"
    b"%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&"
    b"trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
EXAMPLE_TIMESTAMP = "1531420618"
EXAMPLE_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


class FakeAcks:
    def __init__(self, error: Exception | None = None) -> None:
        self.sent: list[InsightAck] = []
        self.error = error

    async def send(self, acks: Sequence[InsightAck]) -> None:
        if self.error is not None:
            raise self.error
        self.sent.extend(acks)


class NoEvents:
    async def send(self, events: Sequence[Any]) -> None:  # pragma: no cover - never called
        raise AssertionError("no deal events from an interaction")


def interaction(*presses: tuple[str, str], user: str = "U061F7AUR") -> bytes:
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": "dana", "team_id": "T9TK3CUKW"},
        "team": {"id": "T9TK3CUKW", "domain": "example"},
        "container": {"type": "message", "message_ts": "1548261231.000200"},
        "channel": {"id": "C0123TEAM", "name": "deals"},
        "response_url": "https://hooks.slack.com/actions/T9TK3CUKW/1/abc",
        "actions": [
            {
                "type": "button",
                "block_id": "vectoros_ack",
                "action_id": action_id,
                "value": value,
                "text": {"type": "plain_text", "text": "x"},
                "action_ts": "1548426417.840180",
            }
            for action_id, value in presses
        ],
    }
    return urlencode({"payload": orjson.dumps(payload).decode()}).encode()


def signed(body: bytes, at: float = NOW, secret: str = SIGNING_SECRET) -> dict[str, str]:
    timestamp = str(int(at))
    return {
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": timestamp,
        "x-slack-signature": slack_signature(secret, timestamp, body),
    }


class Harness:
    def __init__(self, acks: FakeAcks | None = None, **kw: Any) -> None:
        self.registry = CollectorRegistry()
        self.acks = acks or FakeAcks()
        values: dict[str, Any] = {
            "kafka_bootstrap_servers": "unused:9092",
            "metrics_enabled": False,
            "gateway_slack_signing_secret": SIGNING_SECRET,
        }
        values.update(kw)
        self.app = build_app(
            GatewaySettings(**values),
            NoEvents(),
            GatewayMetrics(self.registry),
            clock=lambda: NOW,
            acks=self.acks,
        )

    async def post(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="https://gw.test") as client:
            return await client.post("/slack/interactions", content=body, headers=headers)

    def metric(self, outcome: str, state: str = "-") -> float | None:
        return self.registry.get_sample_value(
            "vectoros_gateway_ack_requests_total",
            {"channel": "slack", "outcome": outcome, "state": state},
        )


def test_the_signature_matches_slacks_published_example() -> None:
    assert slack_signature(SIGNING_SECRET, EXAMPLE_TIMESTAMP, EXAMPLE_BODY) == EXAMPLE_SIGNATURE
    headers = Headers(
        {"x-slack-request-timestamp": EXAMPLE_TIMESTAMP, "x-slack-signature": EXAMPLE_SIGNATURE}
    )
    verify_slack(SecretStr(SIGNING_SECRET), headers, EXAMPLE_BODY, now=1531420618.0, max_age=300)
    with pytest.raises(AuthError, match="stale_timestamp"):
        verify_slack(SecretStr(SIGNING_SECRET), headers, EXAMPLE_BODY, now=1531420919, max_age=300)


async def test_a_good_press_snoozes_and_is_published() -> None:
    harness = Harness()
    body = interaction(("vectoros_snooze_1d", "insight-7"))
    response = await harness.post(body, signed(body))
    assert response.status_code == 200
    assert response.content == b""
    [ack] = harness.acks.sent
    assert (ack.insight_id, ack.state, ack.actor, ack.source.value) == (
        "insight-7",
        AckState.SNOOZED,
        "slack:U061F7AUR",
        "slack",
    )
    assert ack.snoozed_until == dt.datetime.fromtimestamp(NOW, dt.UTC) + dt.timedelta(days=1)
    assert harness.metric("published", "snoozed") == 1


async def test_every_button_means_its_ack_and_other_actions_are_ignored() -> None:
    harness = Harness()
    body = interaction(
        ("vectoros_ack", "i-1"),
        ("vectoros_snooze_1w", "i-2"),
        ("vectoros_not_useful", "i-3"),
        ("open_deal", "https://crm.example/deal/1"),
    )
    assert (await harness.post(body, signed(body))).status_code == 200
    got = [(a.insight_id, a.state.value, a.snoozed_until) for a in harness.acks.sent]
    week = dt.datetime.fromtimestamp(NOW, dt.UTC) + dt.timedelta(days=7)
    assert got == [
        ("i-1", "acknowledged", None),
        ("i-2", "snoozed", week),
        ("i-3", "not_useful", None),
    ]
    assert len({a.ack_id for a in harness.acks.sent}) == 3
    again = Harness()
    await again.post(body, signed(body))
    assert [a.ack_id for a in again.acks.sent] == [a.ack_id for a in harness.acks.sent]


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"x-slack-signature": "v0=" + "0" * 64}, "bad_signature"),
        ({"x-slack-signature": None}, "missing_credentials"),
        ({"x-slack-request-timestamp": str(int(NOW - 10))}, "bad_signature"),  # signed for NOW
        ({}, "stale_timestamp"),
    ],
)
async def test_a_bad_signature_is_refused_and_nothing_is_published(
    headers: dict[str, str | None], reason: str
) -> None:
    harness = Harness()
    body = interaction(("vectoros_ack", "insight-7"))
    sent = signed(body, at=NOW - 301) if not headers else {**signed(body), **headers}
    response = await harness.post(body, {k: v for k, v in sent.items() if v is not None})
    assert response.status_code == 401
    assert response.json() == {"error": reason}
    assert harness.acks.sent == []
    assert harness.metric(reason) == 1


async def test_a_body_changed_after_signing_is_refused() -> None:
    harness = Harness()
    body = interaction(("vectoros_ack", "insight-7"))
    forged = interaction(("vectoros_not_useful", "insight-7"))
    assert (await harness.post(forged, signed(body))).status_code == 401
    assert (await harness.post(body, signed(body, secret="another-secret"))).status_code == 401
    assert harness.acks.sent == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"nothing=here", "no_payload"),
        (urlencode({"payload": "{not json"}).encode(), "invalid_json"),
        (urlencode({"payload": '{"type": "view_submission"}'}).encode(), "unsupported_type"),
        (
            urlencode({"payload": '{"type": "block_actions", "actions": []}'}).encode(),
            "invalid_payload",
        ),
    ],
)
async def test_an_unreadable_payload_is_a_400(body: bytes, reason: str) -> None:
    harness = Harness()
    response = await harness.post(body, signed(body))
    assert (response.status_code, response.json()) == (400, {"error": reason})


async def test_a_broker_failure_answers_503() -> None:
    harness = Harness(FakeAcks(ConnectionError("broker down")))
    body = interaction(("vectoros_ack", "insight-7"))
    assert (await harness.post(body, signed(body))).status_code == 503
    assert harness.metric("publish_failed") == 1


async def test_without_a_signing_secret_the_endpoint_does_not_exist() -> None:
    harness = Harness(gateway_slack_signing_secret=None, gateway_twenty_secret="twenty-secret-1")
    body = interaction(("vectoros_ack", "insight-7"))
    assert (await harness.post(body, signed(body))).status_code == 404
