"""Answers from the dashboard in-process (ASGI, the fake store, tokens in memory, answers kept
in memory): each button's InsightAck, the token's workspace only, bad bodies, no broker."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from consumer.api.answers import AnswersUnavailable
from consumer.api.app import build_app
from consumer.api.live import LiveHub
from consumer.api.metrics import ApiMetrics
from consumer.api.settings import ApiSettings
from consumer.api.tokens import MemoryTokens
from schemas.acks import AckSource, AckState, InsightAck
from tests.unit.test_api_app import NOW, FakeStore, bearer


class MemoryAnswers:
    def __init__(self) -> None:
        self.sent: list[InsightAck] = []
        self.down = False

    async def answer(self, ack: InsightAck) -> None:
        if self.down:
            raise AnswersUnavailable("KafkaTimeoutError")
        self.sent.append(ack)


def make(
    answers: MemoryAnswers | None, **kw: Any
) -> tuple[httpx.AsyncClient, FakeStore, MemoryTokens, CollectorRegistry]:
    settings = ApiSettings(kafka_bootstrap_servers="unused:9092", metrics_enabled=False, **kw)
    store, tokens, registry = FakeStore(), MemoryTokens(), CollectorRegistry()
    app = build_app(
        settings, store, tokens, ApiMetrics(registry), LiveHub(), clock=lambda: NOW, answers=answers
    )
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")
    return client, store, tokens, registry


URL = "/api/v1/insights/i-1/answer"


@pytest.mark.parametrize(
    ("answer", "state", "until"),
    [
        ("acknowledged", AckState.ACKNOWLEDGED, None),
        ("snooze_1d", AckState.SNOOZED, NOW + dt.timedelta(days=1)),
        ("snooze_1w", AckState.SNOOZED, NOW + dt.timedelta(days=7)),
        ("not_useful", AckState.NOT_USEFUL, None),
    ],
)
async def test_each_button_publishes_its_answer(
    answer: str, state: AckState, until: dt.datetime | None
) -> None:
    answers = MemoryAnswers()
    client, store, tokens, registry = make(answers)
    token = tokens.add("ws-a", "board")
    reply = await client.post(URL, json={"answer": answer}, headers=bearer(token))
    assert reply.status_code == 200, reply.text
    [ack] = answers.sent
    assert ack.insight_id == "i-1"
    assert ack.state == state
    assert ack.snoozed_until == until
    assert ack.source == AckSource.DASHBOARD
    assert ack.at == NOW
    assert ack.actor.startswith("token:")
    assert ack.actor.endswith(" board")
    body = reply.json()
    assert body == {
        "insight_id": "i-1",
        "ack_id": ack.ack_id,
        "ack": {"state": state.value, "snoozed_until": until and until.isoformat()},
    }
    assert ("insight", "ws-a", "i-1") in store.calls
    assert (
        registry.get_sample_value(
            "vectoros_api_answers_total", {"answer": answer, "outcome": "published"}
        )
        == 1.0
    )


async def test_a_token_never_answers_another_workspaces_insight() -> None:
    answers = MemoryAnswers()
    client, store, tokens, _ = make(answers)
    token_b = tokens.add("ws-b")
    reply = await client.post(URL, json={"answer": "snooze_1d"}, headers=bearer(token_b))
    assert reply.status_code == 404
    assert answers.sent == []
    assert {call[1] for call in store.calls} == {"ws-b"}
    named = await client.post(
        URL, params={"workspace": "ws-a"}, json={"answer": "snooze_1d"}, headers=bearer(token_b)
    )
    assert named.status_code == 403
    assert answers.sent == []


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"answer": "snooze_1y"}',
        b'{"answer": "acknowledged", "by": "x"}',
        b'{"answer": 1}',
    ],
)
async def test_a_bad_body_is_400_and_publishes_nothing(body: bytes) -> None:
    answers = MemoryAnswers()
    client, _, tokens, _ = make(answers)
    reply = await client.post(URL, content=body, headers=bearer(tokens.add("ws-a")))
    assert reply.status_code == 400
    assert reply.json()["error"] == "bad_body"
    assert answers.sent == []


async def test_a_large_body_is_413() -> None:
    answers = MemoryAnswers()
    client, _, tokens, _ = make(answers)
    body: dict[str, Any] = {"answer": "acknowledged", "pad": "x" * 2000}
    reply = await client.post(URL, json=body, headers=bearer(tokens.add("ws-a")))
    assert reply.status_code == 413
    assert answers.sent == []


async def test_answers_need_a_token_and_only_post() -> None:
    answers = MemoryAnswers()
    client, store, _, _ = make(answers)
    assert (await client.post(URL, json={"answer": "acknowledged"})).status_code == 401
    assert (await client.get(URL)).status_code == 405
    assert answers.sent == []
    assert store.calls == []


async def test_without_a_broker_or_when_it_fails_the_answer_is_503() -> None:
    client, _, tokens, _ = make(None)
    token = tokens.add("ws-a")
    reply = await client.post(URL, json={"answer": "acknowledged"}, headers=bearer(token))
    assert reply.status_code == 503
    answers = MemoryAnswers()
    answers.down = True
    client, _, tokens, registry = make(answers)
    reply = await client.post(
        URL, json={"answer": "not_useful"}, headers=bearer(tokens.add("ws-a"))
    )
    assert reply.status_code == 503
    assert reply.json()["error"] == "unavailable"
    assert (
        registry.get_sample_value(
            "vectoros_api_answers_total", {"answer": "not_useful", "outcome": "unavailable"}
        )
        == 1.0
    )


async def test_a_page_of_an_allowed_origin_may_post_an_answer() -> None:
    answers = MemoryAnswers()
    client, _, tokens, _ = make(answers, api_cors_origins="https://app.example.com")
    preflight = await client.options(
        URL,
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "content-type" in preflight.headers["access-control-allow-headers"].lower()
    reply = await client.post(
        URL,
        json={"answer": "acknowledged"},
        headers={"Origin": "https://app.example.com", **bearer(tokens.add("ws-a"))},
    )
    assert reply.headers["access-control-allow-origin"] == "https://app.example.com"
    assert len(answers.sent) == 1
