"""Slack: a pure Block Kit builder for an insight, and a small client for incoming webhooks.

CRM text (deal titles, owner names, descriptions that quote them, enriched text from a model) is
untrusted: it is escaped for Slack mrkdwn (``&``, ``<``, ``>`` -> entities, so nobody can inject
``<!channel>``, ``<@U123>`` or a disguised ``<https://evil|link>``) and cut to Block Kit's limits
(header 150, section text 3000, field 2000 characters) without splitting an entity.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import orjson
from pydantic import SecretStr

from consumer.notifier.delivery import Clock, post_json
from schemas.insights import InsightEvent, Lifecycle, Priority

HEADER_MAX = 150
SECTION_TEXT_MAX = 3000
FIELD_TEXT_MAX = 2000
FALLBACK_TEXT_MAX = 3000
BUTTON_URL_MAX = 3000
MAX_FIELDS = 10

PRIORITY_EMOJI: dict[Priority, str] = {
    Priority.CRITICAL: "🔴",
    Priority.HIGH: "🟠",
    Priority.MEDIUM: "🟡",
    Priority.LOW: "🔵",
}
RESOLVED_EMOJI = "✅"
_ELLIPSIS = "…"
Block = dict[str, Any]


def escape(text: str) -> str:
    """Escape Slack's mrkdwn control characters (``&`` first)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis, never inside an ``&...;`` entity."""
    if len(text) <= limit:
        return text
    cut = text[: max(0, limit - 1)]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:] and len(cut) - amp < 6:
        cut = cut[:amp]
    return cut + _ELLIPSIS


def mrkdwn(text: str, limit: int) -> str:
    """Untrusted text, escaped and cut to ``limit``."""
    return truncate(escape(text), limit)


def plain(text: str, limit: int) -> str:
    """Text for a ``plain_text`` object (no markup is interpreted there), cut to ``limit``."""
    return truncate(" ".join(text.split()), limit)


def deal_url(template: str | None, insight: InsightEvent) -> str | None:
    """The CRM link of the insight's deal, ids URL-quoted; None without a template."""
    if not template:
        return None
    url = template.format(
        deal_id=quote(insight.deal_id, safe=""), workspace_id=quote(insight.workspace_id, safe="")
    )
    return url if len(url) <= BUTTON_URL_MAX else None


def _label(value: str) -> str:
    return value.replace("_", " ")


def _money(value: float | None, currency: str | None) -> str:
    if value is None or math.isnan(value):
        return "—"
    amount = f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"
    return f"{currency} {amount}" if currency else amount


def _metric(value: float | int | str | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _field(name: str, value: str) -> Block:
    return {"type": "mrkdwn", "text": truncate(f"*{name}*\n{escape(value)}", FIELD_TEXT_MAX)}


def header_text(insight: InsightEvent) -> str:
    rule = _label(insight.rule.value).capitalize()
    if insight.lifecycle == Lifecycle.RESOLVED:
        return plain(f"{RESOLVED_EMOJI} Resolved · {rule}", HEADER_MAX)
    emoji = PRIORITY_EMOJI.get(insight.priority, "")
    verb = "Escalated · " if insight.lifecycle == Lifecycle.ESCALATED else ""
    return plain(f"{emoji} {insight.priority.value.capitalize()} · {verb}{rule}", HEADER_MAX)


def fallback_text(insight: InsightEvent) -> str:
    """The top-level ``text``: shown in notifications and by clients without blocks."""
    data = insight.data
    text = (
        f"[{insight.priority.value.upper()}] {insight.lifecycle.value}: {insight.title} "
        f"({data.deal_title}, {_money(data.deal_value, data.currency)})"
    )
    return mrkdwn(text, FALLBACK_TEXT_MAX)


def build_message(insight: InsightEvent, *, deal_url_template: str | None = None) -> dict[str, Any]:
    """The Slack message (``text`` + ``blocks``) announcing one insight lifecycle step."""
    data = insight.data
    title = f"*{truncate(escape(insight.title), SECTION_TEXT_MAX // 3)}*"
    body = truncate(f"{title}\n{escape(insight.description)}", SECTION_TEXT_MAX)

    owner = data.owner_name or data.owner_id or "—"
    fields = [
        _field("Deal", data.deal_title + (f" ({data.company})" if data.company else "")),
        _field("Value", _money(data.deal_value, data.currency)),
        _field("Stage", data.stage.value.capitalize() if data.stage else "—"),
        _field("Owner", owner),
    ]
    if "days_inactive" in data.key_metrics:
        fields.append(_field("Days inactive", _metric(data.key_metrics["days_inactive"])))
    fields.append(_field("Confidence", f"{insight.confidence:.0%}"))

    blocks: list[Block] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": header_text(insight), "emoji": True},
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": body}},
        {"type": "section", "fields": fields[:MAX_FIELDS]},
    ]
    if insight.actions:
        lines = [
            f"• *{escape(a.action)}* ({escape(a.priority.value)}, {escape(a.timeline)}): "
            f"{escape(a.expected_impact)}"
            for a in insight.actions
        ]
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": truncate(
                        "*Recommended actions*\n" + "\n".join(lines), SECTION_TEXT_MAX
                    ),
                },
            }
        )
    url = deal_url(deal_url_template, insight)
    if url is not None:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open deal", "emoji": False},
                        "url": url,
                        "action_id": "open_deal",
                    }
                ],
            }
        )
    context = (
        f"{insight.lifecycle.value} · rule {insight.rule.value} · source {insight.source} · "
        f"detected {insight.detected_at.isoformat()} · insight {insight.insight_id}"
    )
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": mrkdwn(context, 2000)}]}
    )
    return {"text": fallback_text(insight), "blocks": blocks, "unfurl_links": False}


class SlackClient:
    """Posts messages to one Slack incoming webhook. The URL is a secret: it is never logged and
    never part of an error message (see :func:`consumer.notifier.delivery.post_json`)."""

    kind = "slack"

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
        self._wall_clock: Callable[[], float] = wall_clock or time.time

    async def post(self, message: dict[str, Any]) -> None:
        """One attempt; raises a :class:`vectoros.errors.DeliveryError` unless Slack took it."""
        await post_json(
            self._http,
            self._url.get_secret_value(),
            orjson.dumps(message),
            {},
            deadline=self._timeout,
            wall_clock=self._wall_clock,
        )
