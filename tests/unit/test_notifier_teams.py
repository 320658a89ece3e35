"""Microsoft Teams: the Adaptive Card envelope as documented for incoming webhooks and
Workflows, CRM text escaped for Teams' Markdown, and the notifier posting to a stand-in that
answers like Workflows (202) without the secret URL reaching the logs."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from consumer.notifier.flood import Message
from consumer.notifier.metrics import NotifierMetrics
from consumer.notifier.service import NotifierHandler, build_destinations, item_of, secrets_of
from consumer.notifier.settings import NotifierSettings
from consumer.notifier.teams import CARD_CONTENT_TYPE, escape, insight_card, message_card
from tests.unit.test_notifier_service import FakeStore, insight
from vectoros.logs import redact_logs

TEAMS = "https://acme.webhook.office.test/workflows/abc?sig=TEAMSSECRET"


def card_of(body: dict[str, Any]) -> dict[str, Any]:
    assert body["type"] == "message"
    [attachment] = body["attachments"]
    assert attachment["contentType"] == CARD_CONTENT_TYPE
    assert attachment["contentUrl"] is None
    card: dict[str, Any] = attachment["content"]
    assert card["type"] == "AdaptiveCard"
    return card


def texts(card: dict[str, Any]) -> str:
    return "\n".join(b.get("text", "") for b in card["body"])


def test_an_insight_card_escapes_crm_markdown() -> None:
    data = {"deal_id": "d-1", "deal_title": "[Click](https://evil.test) *Acme*", "deal_value": 5.0}
    event = insight(1, data=data, description="see [here](https://evil.test)")
    card = card_of(insight_card(event, deal_url_template="https://crm.test/d/{deal_id}"))
    dumped = json.dumps(card)
    assert "[here](https" not in dumped
    assert "\\\\[here\\\\]\\\\(https" in dumped
    facts = {f["title"]: f["value"] for f in card["body"][3]["facts"]}
    assert facts["Deal"].startswith("\\[Click\\]")
    assert card["actions"] == [
        {"type": "Action.OpenUrl", "title": "Open deal", "url": "https://crm.test/d/deal-1"}
    ]
    assert escape("a" * 3000).endswith("…")


def test_a_digest_card_lists_the_deals() -> None:
    message = Message("grp_1", "r", "ws-1", "digest", tuple(item_of(insight(n)) for n in (1, 2)), 2)
    card = card_of(message_card(message))
    assert "2 insights need attention" in texts(card)
    assert "Deal 1" in texts(card)
    assert "Deal 2" in texts(card)


async def test_the_notifier_posts_to_teams(caplog: pytest.LogCaptureFixture) -> None:
    bodies: list[Any] = []

    def workflows(request: httpx.Request) -> httpx.Response:
        assert request.headers["content-type"] == "application/json"
        bodies.append(json.loads(request.content))
        return httpx.Response(202)

    caplog.set_level(logging.DEBUG)
    settings = NotifierSettings(teams_webhook_urls=TEAMS)
    async with httpx.AsyncClient(transport=httpx.MockTransport(workflows)) as http:
        destinations = build_destinations(settings, http)
        store = FakeStore()
        handler = NotifierHandler(
            settings, destinations, NotifierMetrics(CollectorRegistry()), asyncio.Event(), log=store
        )
        with redact_logs(secrets_of(settings)):  # as run_notifier does
            assert await handler.handle([insight(1)], asyncio.Event()) == ()
    [body] = bodies
    assert "Deal 1 has gone quiet" in texts(card_of(body))
    assert {r.status for r in store.by_type("teams").values()} == {"sent"}
    assert [d.names for d in destinations] == [("teams:0",)]
    assert "TEAMSSECRET" not in caplog.text
