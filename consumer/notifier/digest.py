"""What a flood-control message (``flood.Message``) looks like on each channel. Pure builders.

- ``alert``: one insight, rendered exactly as without flood control (``slack.build_message``,
  ``console.format_insight``, ``webhook.payload``), or a flapping note.
- ``digest``: several insights for one recipient, one line each (most urgent first).
- ``reminder``: the insights a group announced that are still open (``repeat_interval``).
- ``burst``: a workspace produced more than the burst threshold in a window: how many, by
  priority, and the most valuable few.
- A flapping note (an item with lifecycle ``flapping``): the deal's rule changed N times in the
  window; it is held until it settles.
"""

from __future__ import annotations

from typing import Any

import orjson

from consumer.notifier.console import _clean, format_insight
from consumer.notifier.flood import Item, Message
from consumer.notifier.slack import (
    FALLBACK_TEXT_MAX,
    HEADER_MAX,
    PRIORITY_EMOJI,
    RESOLVED_EMOJI,
    SECTION_TEXT_MAX,
    Block,
    _money,
    build_message,
    deal_url,
    escape,
    mrkdwn,
    plain,
    truncate,
)
from consumer.notifier.webhook import payload
from schemas.insights import InsightEvent, Priority, insight_adapter

LINES_MAX = 20  # insights listed in one Slack or console message; the rest are counted
_BY_RANK = {p.rank: p for p in Priority}
FLAPPING_EMOJI = "〰️"


def insight_of(item: Item) -> InsightEvent:
    return insight_adapter.validate_json(item.payload)


def _ordered(message: Message) -> list[Item]:
    return sorted(message.items, key=lambda i: (-i.rank, -(i.value or 0.0), i.deal_id))


def _line(item: Item, insight: InsightEvent) -> str:
    data = insight.data
    money = _money(data.deal_value, data.currency)
    if item.lifecycle == "flapping":
        return (
            f"{FLAPPING_EMOJI} {data.deal_title} ({money}): {item.rule.replace('_', ' ')} "
            f"changed {item.count} times; held until it settles"
        )
    emoji = (
        RESOLVED_EMOJI if item.lifecycle == "resolved" else PRIORITY_EMOJI.get(insight.priority, "")
    )
    return f"{emoji} {data.deal_title} ({money}): {insight.title} [{item.lifecycle}]"


def headline(message: Message) -> str:
    """One line saying what the message is about."""
    if message.kind == "burst":
        return f"⚠️ {message.count} new insights in workspace {message.workspace_id}"
    if message.kind == "escalation":
        item = message.items[0]
        data = insight_of(item).data
        owner = data.owner_name or data.owner_id
        whose = f" (owner: {owner})" if owner else ""
        return f"⏫ Not acknowledged in time: {item.rule.replace('_', ' ')}{whose}"
    if message.kind == "reminder":
        return f"⏰ Still open: {message.count} insight(s)"
    if len(message.items) == 1 and message.items[0].lifecycle == "flapping":
        item = message.items[0]
        return f"{FLAPPING_EMOJI} Flapping · {item.rule.replace('_', ' ').capitalize()}"
    top = _BY_RANK.get(max(i.rank for i in message.items), Priority.HIGH)
    return f"{PRIORITY_EMOJI.get(top, '')} {message.count} insights need attention"


def _burst_counts(message: Message) -> str:
    return ", ".join(
        f"{n} {_BY_RANK[rank].value if rank in _BY_RANK else rank}" for rank, n in message.by_rank
    )


def slack_message(message: Message, *, deal_url_template: str | None = None) -> dict[str, Any]:
    """The Slack message (``text`` + ``blocks``) of a flood-control message."""
    items = _ordered(message)
    if message.kind == "alert" and items[0].lifecycle != "flapping":
        return build_message(insight_of(items[0]), deal_url_template=deal_url_template)
    lines = []
    for item in items[:LINES_MAX]:
        insight = insight_of(item)
        text = escape(_line(item, insight))
        url = deal_url(deal_url_template, insight)
        lines.append(f"• <{url}|{text}>" if url else f"• {text}")
    blocks: list[Block] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": plain(headline(message), HEADER_MAX)},
        }
    ]
    if message.kind == "burst":
        summary = (
            f"*{message.count}* new insights ({escape(_burst_counts(message))}); "
            "sent as one summary instead of one message each. The most valuable:"
        )
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": summary}})
    blocks.append(
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": truncate("\n".join(lines), SECTION_TEXT_MAX)},
        }
    )
    listed = len(message.items) if message.kind != "burst" else message.count
    if listed > len(lines):
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"and {listed - len(lines)} more"}],
            }
        )
    return {
        "text": mrkdwn(headline(message), FALLBACK_TEXT_MAX),
        "blocks": blocks,
        "unfurl_links": False,
    }


def console_text(message: Message, *, deal_url_template: str | None = None) -> str:
    items = _ordered(message)
    if message.kind == "alert" and items[0].lifecycle != "flapping":
        insight = insight_of(items[0])
        return format_insight(insight, deal_url(deal_url_template, insight))
    out = [_clean(headline(message))]
    if message.kind == "burst":
        out.append(
            f"    {message.count} new insights ({_burst_counts(message)}); the most valuable:"
        )
    out += [f"    {_clean(_line(i, insight_of(i)))}" for i in items[:LINES_MAX]]
    listed = len(message.items) if message.kind != "burst" else message.count
    if listed > min(len(items), LINES_MAX):
        out.append(f"    and {listed - min(len(items), LINES_MAX)} more")
    return "\n".join(out)


def webhook_body(message: Message) -> dict[str, Any]:
    """The signed webhook body: ``insight.<lifecycle>`` for a single insight (as without flood
    control), ``insights.<kind>`` otherwise, listing every insight event."""
    items = _ordered(message)
    if message.kind == "alert" and items[0].lifecycle != "flapping":
        return payload(insight_of(items[0]))
    latest = max(insight_of(i).detected_at for i in items) if items else None
    return {
        "type": f"insights.{message.kind}",
        "timestamp": latest.isoformat() if latest else None,
        "data": {
            "message_id": message.message_id,
            "workspace_id": message.workspace_id,
            "count": message.count,
            "by_priority": {
                (_BY_RANK[r].value if r in _BY_RANK else str(r)): n for r, n in message.by_rank
            },
            "insights": [
                {
                    "lifecycle": i.lifecycle,
                    "changes": i.count if i.lifecycle == "flapping" else None,
                    "insight": orjson.loads(i.payload),
                }
                for i in items
            ],
        },
    }
