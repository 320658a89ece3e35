"""Slack app mode: messages through the Web API with a bot token, next to incoming webhooks.

One destination per channel (``VECTOROS_SLACK_CHANNELS``, names ``slack_app:<position>``):

- ``chat.postMessage`` (``POST {api}/chat.postMessage``, JSON, ``Authorization: Bearer
  xoxb-...``). The first message about a deal in a channel starts the deal's thread; every later
  insight of that deal goes into it (``thread_ts``). Slack answers HTTP 200 with ``{"ok": true,
  "channel": ..., "ts": ...}``; the ``ts`` of each insight's message and of each deal's thread
  are kept (``SlackThreads``: table ``notify_slack_messages``, migration 0010).
- ``chat.update`` (``{channel, ts, text, blocks}``) when the insight escalates or resolves: the
  message is changed in place (a resolved one loses its buttons). Without a known ``ts`` (the
  raised step was never announced) a new message goes into the deal's thread.
- Buttons (Block Kit ``actions``): Acknowledge / Snooze 1 day / Snooze 1 week / Not useful, each
  with the insight id as its ``value``. Slack sends the press to the gateway
  (``POST /slack/interactions``, ``producer/gateway/slack.py``), which checks Slack's signature
  and publishes an ack event.

Errors: Slack reports most errors as HTTP 200 with ``{"ok": false, "error": "..."}``. Those
named in ``RETRIABLE_ERRORS`` are retried like a 5xx; every other error (``channel_not_found``,
``not_in_channel``, ``invalid_auth``, ...) fails the notification for good. HTTP 429 (error
``ratelimited``) waits ``Retry-After`` (see ``delivery.py``). ``chat.postMessage`` has no
idempotency key, so this destination is at most once by default (``VECTOROS_SLACK_AT_MOST_ONCE``).
The bot token is a secret: never logged, never part of an error text.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
import httpx
import orjson
from pydantic import SecretStr

from consumer.notifier.delivery import Clock, HttpRejected, HttpRetriable, post_json
from consumer.notifier.digest import insight_of, slack_message
from consumer.notifier.flood import Message
from consumer.notifier.slack import Block, build_message, escape
from schemas.acks import AckState, InsightAck
from schemas.insights import InsightEvent, Lifecycle
from vectoros.db import TRANSIENT_ERRORS, PgPool

logger = logging.getLogger(__name__)

_DB_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, asyncpg.PostgresError)

SLACK_API = "https://slack.com/api"
RETRIABLE_ERRORS = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout", "ratelimited"}
)

# action_id -> (what the press means, snooze seconds). The gateway reads the same ids.
ACK_ACTION = "vectoros_ack"
SNOOZE_DAY_ACTION = "vectoros_snooze_1d"
SNOOZE_WEEK_ACTION = "vectoros_snooze_1w"
NOT_USEFUL_ACTION = "vectoros_not_useful"
ACK_BLOCK_ID = "vectoros_ack"
ANSWER_BLOCK_ID = "vectoros_answer"
BUTTONS: tuple[tuple[str, str, str | None], ...] = (
    (ACK_ACTION, "Acknowledge", "primary"),
    (SNOOZE_DAY_ACTION, "Snooze 1 day", None),
    (SNOOZE_WEEK_ACTION, "Snooze 1 week", None),
    (NOT_USEFUL_ACTION, "Not useful", "danger"),
)


def ack_buttons(insight_id: str) -> Block:
    """The ``actions`` block of an open insight's message (``value``: the insight id)."""
    elements: list[Block] = []
    for action_id, text, style in BUTTONS:
        button: Block = {
            "type": "button",
            "text": {"type": "plain_text", "text": text, "emoji": False},
            "action_id": action_id,
            "value": insight_id,
        }
        if style is not None:
            button["style"] = style
        elements.append(button)
    return {"type": "actions", "block_id": ACK_BLOCK_ID, "elements": elements}


def app_message(insight: InsightEvent, *, deal_url_template: str | None = None) -> dict[str, Any]:
    """The insight's message with the ack buttons (none once it is resolved)."""
    message = build_message(insight, deal_url_template=deal_url_template)
    if insight.lifecycle != Lifecycle.RESOLVED:
        blocks: list[Block] = list(message["blocks"])
        blocks.insert(len(blocks) - 1, ack_buttons(insight.insight_id))  # before the context
        message["blocks"] = blocks
    return message


@dataclass(frozen=True)
class Posted:
    """An insight's message in a channel: its ``ts`` and the last body sent (to redraw it)."""

    ts: str
    body: dict[str, Any]


class SlackThreads(Protocol):
    """Where each deal's thread and each insight's message are in a channel."""

    async def thread(self, channel: str, workspace_id: str, deal_id: str) -> str | None: ...
    async def message(self, channel: str, insight_id: str) -> Posted | None: ...
    async def remember(
        self,
        channel: str,
        workspace_id: str,
        deal_id: str,
        insight_id: str,
        ts: str,
        body: dict[str, Any],
    ) -> None: ...
    async def redrawn(self, channel: str, insight_id: str, body: dict[str, Any]) -> None: ...


class MemoryThreads:
    """``SlackThreads`` in memory (tests; until the notifier has its database)."""

    def __init__(self) -> None:
        self.threads: dict[tuple[str, str, str], str] = {}
        self.messages: dict[tuple[str, str], Posted] = {}

    async def thread(self, channel: str, workspace_id: str, deal_id: str) -> str | None:
        return self.threads.get((channel, workspace_id, deal_id))

    async def message(self, channel: str, insight_id: str) -> Posted | None:
        return self.messages.get((channel, insight_id))

    async def remember(
        self,
        channel: str,
        workspace_id: str,
        deal_id: str,
        insight_id: str,
        ts: str,
        body: dict[str, Any],
    ) -> None:
        self.threads.setdefault((channel, workspace_id, deal_id), ts)
        self.messages.setdefault((channel, insight_id), Posted(ts, body))

    async def redrawn(self, channel: str, insight_id: str, body: dict[str, Any]) -> None:
        known = self.messages.get((channel, insight_id))
        if known is not None:
            self.messages[(channel, insight_id)] = Posted(known.ts, body)


class PgThreads:
    """``SlackThreads`` in table ``notify_slack_messages`` (one row per insight and channel;
    a deal's thread is its oldest message there)."""

    def __init__(self, pool: PgPool) -> None:
        self._pool = pool

    async def thread(self, channel: str, workspace_id: str, deal_id: str) -> str | None:
        ts: str | None = await self._pool.fetchval(
            "SELECT thread_ts FROM notify_slack_messages WHERE channel = $1 AND workspace_id = $2"
            " AND deal_id = $3 ORDER BY created_at LIMIT 1",
            channel,
            workspace_id,
            deal_id,
        )
        return ts

    async def message(self, channel: str, insight_id: str) -> Posted | None:
        row = await self._pool.fetchrow(
            "SELECT ts, body FROM notify_slack_messages WHERE channel = $1 AND insight_id = $2",
            channel,
            insight_id,
        )
        return None if row is None else Posted(row["ts"], row["body"])

    async def remember(
        self,
        channel: str,
        workspace_id: str,
        deal_id: str,
        insight_id: str,
        ts: str,
        body: dict[str, Any],
    ) -> None:
        thread = await self.thread(channel, workspace_id, deal_id)
        await self._pool.execute(
            "INSERT INTO notify_slack_messages (channel, insight_id, workspace_id, deal_id, ts,"
            " thread_ts, body) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " ON CONFLICT (channel, insight_id) DO NOTHING",
            channel,
            insight_id,
            workspace_id,
            deal_id,
            ts,
            thread or ts,
            body,
        )

    async def redrawn(self, channel: str, insight_id: str, body: dict[str, Any]) -> None:
        await self._pool.execute(
            "UPDATE notify_slack_messages SET body = $3 WHERE channel = $1 AND insight_id = $2",
            channel,
            insight_id,
            body,
        )


def answer_text(ack: InsightAck) -> str:
    """``✅ Acknowledged by <@U123>`` (a Slack user is mentioned; other actors are escaped)."""
    who = ack.actor.removeprefix("slack:")
    actor = f"<@{who}>" if ack.actor.startswith("slack:") and who.isalnum() else escape(ack.actor)
    if ack.state == AckState.SNOOZED and ack.snoozed_until is not None:
        until = ack.snoozed_until.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        return f"💤 Snoozed until {until} by {actor}"
    if ack.state == AckState.NOT_USEFUL:
        return f"👎 Marked not useful by {actor}"
    return f"✅ Acknowledged by {actor}"


def answered_blocks(blocks: list[Block], ack: InsightAck) -> list[Block]:
    """``blocks`` without the ack buttons and without an earlier answer, plus this answer."""
    kept = [b for b in blocks if b.get("block_id") not in (ACK_BLOCK_ID, ANSWER_BLOCK_ID)]
    note: Block = {
        "type": "context",
        "block_id": ANSWER_BLOCK_ID,
        "elements": [{"type": "mrkdwn", "text": answer_text(ack)}],
    }
    return [*kept, note]


class SlackApiError(HttpRejected):
    """Slack answered ``ok: false`` with an error that retrying will not fix."""


class SlackAppClient:
    """Calls Slack's Web API with one bot token (``http`` is any ``httpx.AsyncClient``)."""

    kind = "slack_app"

    def __init__(
        self,
        http: httpx.AsyncClient,
        token: SecretStr,
        *,
        base_url: str = SLACK_API,
        timeout: float = 10.0,
        wall_clock: Clock | None = None,
        threads: SlackThreads | None = None,
    ) -> None:
        self._http = http
        self._token = token
        self._base = base_url.rstrip("/")
        self._timeout = timeout
        self._wall_clock: Callable[[], float] = wall_clock or time.time
        self.threads: SlackThreads = threads or MemoryThreads()

    async def call(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        """One attempt of a Web API ``method``; its answer when ``ok``, else a delivery error."""
        headers = {
            "content-type": "application/json; charset=utf-8",
            "authorization": f"Bearer {self._token.get_secret_value()}",
        }
        response = await post_json(
            self._http,
            f"{self._base}/{method}",
            orjson.dumps(body),
            headers,
            deadline=self._timeout,
            wall_clock=self._wall_clock,
        )
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise HttpRetriable(response.status_code, f"{method}: not JSON") from None
        if not isinstance(answer, dict):
            raise HttpRetriable(response.status_code, f"{method}: not a JSON object")
        if answer.get("ok") is True:
            return answer
        error = str(answer.get("error") or "unknown_error")[:100]
        if error in RETRIABLE_ERRORS:
            raise HttpRetriable(response.status_code, f"{method}: {error}")
        raise SlackApiError(response.status_code, f"{method}: {error}")

    async def _remember(
        self, channel: str, insight: InsightEvent, ts: str, body: dict[str, Any]
    ) -> None:
        try:
            await self.threads.remember(
                channel, insight.workspace_id, insight.deal_id, insight.insight_id, ts, body
            )
        except _DB_ERRORS as exc:  # the message is out anyway
            logger.warning(
                "slack message of insight %s sent but not remembered (%s): later steps post anew",
                insight.insight_id,
                type(exc).__name__,
            )

    async def _redrawn(self, channel: str, insight_id: str, body: dict[str, Any]) -> None:
        try:
            await self.threads.redrawn(channel, insight_id, body)
        except _DB_ERRORS as exc:  # the message is updated anyway
            logger.warning(
                "slack message of insight %s updated but not remembered (%s)",
                insight_id,
                type(exc).__name__,
            )

    async def send_insight(
        self, channel: str, insight: InsightEvent, *, deal_url_template: str | None = None
    ) -> None:
        """Post the insight in its deal's thread, or update its message in place when it
        escalates or resolves."""
        body = app_message(insight, deal_url_template=deal_url_template)
        body["channel"] = channel
        if insight.lifecycle != Lifecycle.RAISED:
            posted = await self.threads.message(channel, insight.insight_id)
            if posted is not None:
                body.pop("unfurl_links", None)  # not a chat.update argument
                await self.call("chat.update", {**body, "ts": posted.ts})
                await self._redrawn(channel, insight.insight_id, body)
                return
        thread = await self.threads.thread(channel, insight.workspace_id, insight.deal_id)
        call = body if thread is None else {**body, "thread_ts": thread}
        answer = await self.call("chat.postMessage", call)
        ts = answer.get("ts")
        if isinstance(ts, str) and ts:
            await self._remember(channel, insight, ts, body)

    async def show_answer(self, channel: str, ack: InsightAck) -> bool:
        """Redraw the insight's message in ``channel`` without its buttons and with who answered
        what (False when the message is not known here)."""
        posted = await self.threads.message(channel, ack.insight_id)
        if posted is None:
            return False
        body = {**posted.body, "blocks": answered_blocks(posted.body.get("blocks", []), ack)}
        body.pop("unfurl_links", None)
        await self.call("chat.update", {**body, "channel": channel, "ts": posted.ts})
        await self._redrawn(channel, ack.insight_id, body)
        return True

    async def send_message(
        self, channel: str, message: Message, *, deal_url_template: str | None = None
    ) -> None:
        """A flood-control message: a single insight's alert as an insight (thread, buttons);
        an escalation as a reply in the deal's thread, broadcast to the channel; digests,
        reminders and burst summaries as one channel message."""
        if (
            message.kind == "alert"
            and len(message.items) == 1
            and message.items[0].lifecycle != "flapping"
        ):
            insight = insight_of(message.items[0])
            await self.send_insight(channel, insight, deal_url_template=deal_url_template)
            return
        body = slack_message(message, deal_url_template=deal_url_template)
        body["channel"] = channel
        if message.kind == "escalation" and message.items:
            # in the deal's thread, and shown in the channel too (``reply_broadcast``)
            item = message.items[0]
            thread = await self.threads.thread(channel, item.workspace_id, item.deal_id)
            if thread is not None:
                body = {**body, "thread_ts": thread, "reply_broadcast": True}
        await self.call("chat.postMessage", body)
