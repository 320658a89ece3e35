"""The console destination: a readable block per notification, for development and the demo."""

from __future__ import annotations

import sys
from typing import TextIO

from consumer.notifier.slack import PRIORITY_EMOJI, RESOLVED_EMOJI
from schemas.insights import InsightEvent, Lifecycle


def _clean(text: str) -> str:
    # CRM text is untrusted: no terminal escape sequences or forged extra lines.
    return "".join(ch if ch.isprintable() else " " for ch in text)


def format_insight(insight: InsightEvent, deal_url: str | None = None) -> str:
    data = insight.data
    emoji = (
        RESOLVED_EMOJI
        if insight.lifecycle == Lifecycle.RESOLVED
        else PRIORITY_EMOJI.get(insight.priority, "")
    )
    value = "—" if data.deal_value is None else f"{data.deal_value:,.0f}"
    if data.currency and data.deal_value is not None:
        value = f"{data.currency} {value}"
    lines = [
        f"{emoji} [{insight.priority.value.upper()}] {insight.lifecycle.value} "
        f"{insight.rule.value}: {_clean(insight.title)}",
        f"    deal {_clean(data.deal_title)} ({_clean(insight.deal_id)}) · value {value} · "
        f"stage {data.stage.value if data.stage else '—'} · "
        f"owner {_clean(data.owner_name or data.owner_id or '—')}",
        f"    {_clean(insight.description)}",
    ]
    lines += [
        f"    → {_clean(a.action)} ({a.priority.value}, {_clean(a.timeline)})"
        for a in insight.actions
    ]
    if deal_url:
        lines.append(f"    {deal_url}")
    return "\n".join(lines)


class ConsoleClient:
    """Writes to a text stream (stdout by default)."""

    kind = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    async def post(self, text: str) -> None:
        stream = self._stream or sys.stdout
        stream.write(text + "\n")
        stream.flush()
