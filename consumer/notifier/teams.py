"""Microsoft Teams: an Adaptive Card per insight or flood-control message, posted to a Teams
incoming webhook or a Workflows ("Post to a channel when a webhook request is received") URL.

The body is the documented envelope::

    {"type": "message",
     "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
                      "contentUrl": null,
                      "content": {"type": "AdaptiveCard", "version": "1.4", "body": [...],
                                  "actions": [{"type": "Action.OpenUrl", ...}]}}]}

Any 2xx (incoming webhooks answer 200, Workflows 202) is success. The URL is the credential: a
secret, never logged. CRM text is untrusted: TextBlock text is Markdown in Teams, so its
Markdown characters are backslash-escaped (no forged links or emphasis), and it is cut to
``TEXT_MAX``. Like Slack, Teams has no idempotency key: at most once by default.
"""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import orjson
from pydantic import SecretStr

from consumer.notifier.delivery import Clock, post_json
from consumer.notifier.digest import _line, _ordered, headline, insight_of
from consumer.notifier.flood import Message
from consumer.notifier.slack import _money, deal_url, header_text
from schemas.insights import InsightEvent

CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
TEXT_MAX = 2000
LINES_MAX = 20
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!<>|~])")


def escape(text: str, limit: int = TEXT_MAX) -> str:
    """Untrusted text for a TextBlock: Markdown characters escaped, one paragraph, cut."""
    flat = " ".join(text.split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return _MARKDOWN.sub(r"\\\1", flat)


def _text(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def _envelope(body: list[dict[str, Any]], url: str | None) -> dict[str, Any]:
    card: dict[str, Any] = {
        "$schema": CARD_SCHEMA,
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    if url:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open deal", "url": url}]
    return {
        "type": "message",
        "attachments": [{"contentType": CARD_CONTENT_TYPE, "contentUrl": None, "content": card}],
    }


def insight_card(insight: InsightEvent, *, deal_url_template: str | None = None) -> dict[str, Any]:
    data = insight.data
    facts = [
        {"title": "Deal", "value": escape(data.deal_title, 200)},
        {"title": "Value", "value": escape(_money(data.deal_value, data.currency))},
        {"title": "Stage", "value": data.stage.value if data.stage else "—"},
        {"title": "Owner", "value": escape(data.owner_name or data.owner_id or "—", 200)},
    ]
    body = [
        _text(escape(header_text(insight), 150), size="Large", weight="Bolder"),
        _text(escape(insight.title, 300), weight="Bolder"),
        _text(escape(insight.description)),
        {"type": "FactSet", "facts": facts},
        *(_text(f"• {escape(a.action, 300)} ({escape(a.timeline, 100)})") for a in insight.actions),
    ]
    return _envelope(body, deal_url(deal_url_template, insight))


def message_card(message: Message, *, deal_url_template: str | None = None) -> dict[str, Any]:
    items = _ordered(message)
    if message.kind == "alert" and items and items[0].lifecycle != "flapping":
        return insight_card(insight_of(items[0]), deal_url_template=deal_url_template)
    body = [_text(escape(headline(message), 150), size="Large", weight="Bolder")]
    body += [_text("• " + escape(_line(i, insight_of(i)), 400)) for i in items[:LINES_MAX]]
    listed = message.count if message.kind == "burst" else len(items)
    if listed > min(len(items), LINES_MAX):
        body.append(_text(f"and {listed - min(len(items), LINES_MAX)} more", isSubtle=True))
    return _envelope(body, None)


class TeamsClient:
    """Posts cards to one Teams webhook URL (a secret: never logged)."""

    kind = "teams"

    def __init__(
        self,
        http: httpx.AsyncClient,
        url: SecretStr,
        *,
        timeout: float = 10.0,
        wall_clock: Clock | None = None,
    ) -> None:
        self._http = http
        self._url = url
        self._timeout = timeout
        self._wall_clock = wall_clock or time.time

    async def post(self, body: dict[str, Any]) -> None:
        await post_json(
            self._http,
            self._url.get_secret_value(),
            orjson.dumps(body),
            {},
            deadline=self._timeout,
            wall_clock=self._wall_clock,
        )
