"""Where flood control's state and the messages it lets out live between restarts
(tables ``notify_flood_state`` and ``notify_outbox``, migration ``0006_notify_flood.sql``; and
``notify_message_items``, 0012, which insights each message carried, for usefulness).

The order that keeps the notifier's guarantees with messages held for minutes:

1. a batch's events are offered to the flood controller (``flood.py``) in memory;
2. :meth:`FloodStore.save` writes, in one transaction, the controller's new state and the
   messages it let out (deterministic ids);
3. only then are the batch's offsets committed. A crash before 3 replays the batch: the saved
   state already holds its events ("seen"), so they are ignored, and nothing held is lost;
4. each outbox message is delivered through the notification log (claim before send, keyed by
   the message id), then :meth:`FloodStore.done` removes it. A crash between 4's send and its
   removal leaves the message in the outbox; the next start delivers it again, which the log
   turns into a no-op (or, for at-least-once destinations after an unknown outcome, a resend
   with the same ``webhook-id``).

A failed save leaves the database as it was; the service then goes back to the last saved
state in memory too, so the re-run batch produces the same messages.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from consumer.notifier.flood import Message
from vectoros.db import PgPool

# The JSON goes in and out as text (``::text``): the pool's json codec would encode a str as a
# JSON string, and orjson is faster than its stdlib json for a state of many groups.

_SAVE_STATE = """
INSERT INTO notify_flood_state (consumer_group, state, updated_at)
VALUES ($1, $2::text::jsonb, clock_timestamp())
ON CONFLICT (consumer_group) DO UPDATE SET state = EXCLUDED.state, updated_at = EXCLUDED.updated_at
"""
_ADD = """
INSERT INTO notify_outbox (message_id, consumer_group, message) VALUES ($1, $2, $3::text::jsonb)
ON CONFLICT (message_id) DO NOTHING
"""

_ITEMS = """
INSERT INTO notify_message_items (message_id, insight_id, lifecycle, rule, workspace_id, deal_id)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT DO NOTHING
"""
COUNTED_KINDS = frozenset({"alert", "digest"})
"""The messages whose insights count as notified (usefulness): not reminders (already counted),
burst summaries (a count, a sample) or escalations (to a manager)."""


def message_items(messages: list[Message]) -> list[tuple[str, str, str, str, str, str]]:
    """The rows of ``notify_message_items`` for ``messages``: their raised/escalated insights."""
    return [
        (m.message_id, i.insight_id, i.lifecycle, i.rule, i.workspace_id, i.deal_id)
        for m in messages
        if m.kind in COUNTED_KINDS
        for i in m.items
        if i.lifecycle in ("raised", "escalated")
    ]


class FloodStore(Protocol):
    async def load(self) -> tuple[dict[str, Any] | None, list[Message]]: ...
    async def save(self, state: bytes, messages: list[Message]) -> None: ...
    async def done(self, message_id: str) -> None: ...


class PgFloodStore:
    """The two tables, for one consumer group."""

    def __init__(self, pool: PgPool, consumer_group: str) -> None:
        self._pool = pool
        self._group = consumer_group

    async def load(self) -> tuple[dict[str, Any] | None, list[Message]]:
        raw = await self._pool.fetchval(
            "SELECT state::text FROM notify_flood_state WHERE consumer_group = $1", self._group
        )
        rows = await self._pool.fetch(
            "SELECT message::text AS message FROM notify_outbox"
            " WHERE consumer_group = $1 ORDER BY seq",
            self._group,
        )
        state = None if raw is None else orjson.loads(raw)
        return state, [Message.from_json(orjson.loads(r["message"])) for r in rows]

    async def save(self, state: bytes, messages: list[Message]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_SAVE_STATE, self._group, state.decode())
            if messages:
                await conn.executemany(
                    _ADD,
                    [
                        (m.message_id, self._group, orjson.dumps(m.to_json()).decode())
                        for m in messages
                    ],
                )
                items = message_items(messages)
                if items:
                    await conn.executemany(_ITEMS, items)

    async def done(self, message_id: str) -> None:
        await self._pool.execute("DELETE FROM notify_outbox WHERE message_id = $1", message_id)


class MemoryFloodStore:
    """The same, in memory (unit tests); can fail on demand like the notification log's fake."""

    def __init__(self) -> None:
        self.state: bytes | None = None
        self.outbox: dict[str, Message] = {}
        self.fail_saves = 0

    async def load(self) -> tuple[dict[str, Any] | None, list[Message]]:
        state = None if self.state is None else orjson.loads(self.state)
        return state, list(self.outbox.values())

    async def save(self, state: bytes, messages: list[Message]) -> None:
        if self.fail_saves > 0:
            self.fail_saves -= 1
            raise ConnectionResetError("database went away")
        self.state = state
        for m in messages:
            self.outbox.setdefault(m.message_id, m)

    async def done(self, message_id: str) -> None:
        self.outbox.pop(message_id, None)
