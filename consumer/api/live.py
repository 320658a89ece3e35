"""The live stream's hub: insight events and answers (acknowledged, snoozed, not useful) of each
workspace, numbered, kept in a bounded buffer for clients that reconnect, and handed to the
connected clients of that workspace.

Event ids are ``<boot>-<seq>``: ``boot`` is random per process, ``seq`` counts up. A client
that reconnects with ``Last-Event-ID`` gets what it missed when the id is this process's and its
events are still buffered; otherwise (another process, a restart, a buffer overrun, a gap in
what this process read) it gets one ``reset`` event: refetch the lists, then follow the stream.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from dataclasses import dataclass, field

import orjson

from schemas.acks import InsightAck
from schemas.insights import InsightEvent


@dataclass(frozen=True, slots=True)
class LiveEvent:
    id: str
    event: str  # "insight", "ack" or "reset"
    data: bytes  # JSON

    def frame(self) -> bytes:
        """The event as server-sent-events lines."""
        return b"id: %s\nevent: %s\ndata: %s\n\n" % (
            self.id.encode(),
            self.event.encode(),
            self.data,
        )


CLOSED = LiveEvent("", "closed", b"{}")
"""Put in a subscriber's queue when the hub closes or drops it (too slow): end the stream."""


def insight_payload(event: InsightEvent) -> dict[str, object]:
    """What a client sees of one insight event (the same fields as the list's items)."""
    return {
        "lifecycle": event.lifecycle.value,
        "insight_id": event.insight_id,
        "deal_id": event.deal_id,
        "rule": event.rule.value,
        "type": event.type.value,
        "priority": event.priority.value,
        "title": event.title,
        "description": event.description,
        "actions": [a.model_dump(mode="json") for a in event.actions],
        "data": event.data.model_dump(mode="json"),
        "confidence": event.confidence,
        "source": event.source,
        "raised_at": event.raised_at.isoformat(),
        "detected_at": event.detected_at.isoformat(),
    }


@dataclass
class _Workspace:
    buffer: deque[tuple[int, LiveEvent]]
    dropped_upto: int = 0  # a client that saw an earlier seq than this one missed events
    subscribers: set[asyncio.Queue[LiveEvent]] = field(default_factory=set)


class LiveHub:
    def __init__(self, buffer: int = 1000, queue_max: int = 1000) -> None:
        self.boot = secrets.token_hex(4)
        self._seq = 0
        self._buffer = buffer
        self._queue_max = queue_max
        self._workspaces: dict[str, _Workspace] = {}
        self._closed = False

    def _ws(self, workspace: str) -> _Workspace:
        found = self._workspaces.get(workspace)
        if found is None:
            found = _Workspace(deque())
            self._workspaces[workspace] = found
        return found

    @property
    def clients(self) -> int:
        return sum(len(w.subscribers) for w in self._workspaces.values())

    def publish(self, event: InsightEvent) -> LiveEvent:
        return self._publish(event.workspace_id, "insight", orjson.dumps(insight_payload(event)))

    def publish_ack(self, workspace: str, ack: InsightAck) -> LiveEvent:
        """An answer to one of ``workspace``'s insights (from the page, Slack, email, the CLI)."""
        payload = {
            "insight_id": ack.insight_id,
            "state": ack.state.value,
            "snoozed_until": None if ack.snoozed_until is None else ack.snoozed_until.isoformat(),
            "source": ack.source.value,
            "at": ack.at.isoformat(),
        }
        return self._publish(workspace, "ack", orjson.dumps(payload))

    def _publish(self, workspace: str, kind: str, data: bytes) -> LiveEvent:
        self._seq += 1
        live = LiveEvent(f"{self.boot}-{self._seq}", kind, data)
        ws = self._ws(workspace)
        ws.buffer.append((self._seq, live))
        while len(ws.buffer) > self._buffer:
            ws.dropped_upto = max(ws.dropped_upto, ws.buffer.popleft()[0])
        if self._buffer == 0:
            ws.dropped_upto = self._seq
        for queue in list(ws.subscribers):
            self._offer(ws, queue, live)
        return live

    def _offer(self, ws: _Workspace, queue: asyncio.Queue[LiveEvent], live: LiveEvent) -> None:
        if queue.qsize() >= self._queue_max:  # a client this far behind starts again
            ws.subscribers.discard(queue)
            queue.put_nowait(CLOSED)
            return
        queue.put_nowait(live)

    def _reset_event(self) -> LiveEvent:
        return LiveEvent(f"{self.boot}-{self._seq}", "reset", b'{"reason":"resume not possible"}')

    def gap(self) -> None:
        """What this process read has a hole (it re-read the topic from its end after an
        outage): nothing buffered can be resumed from, every client gets a reset."""
        for ws in self._workspaces.values():
            ws.buffer.clear()
            ws.dropped_upto = self._seq + 1  # what came before the next event is unknown
            for queue in list(ws.subscribers):
                self._offer(ws, queue, self._reset_event())

    def subscribe(
        self, workspace: str, last_event_id: str | None
    ) -> tuple[asyncio.Queue[LiveEvent], list[LiveEvent]]:
        """A queue of the workspace's next events, and what to send first: the buffered
        events after ``last_event_id``, or a reset when they cannot be known."""
        ws = self._ws(workspace)
        queue: asyncio.Queue[LiveEvent] = asyncio.Queue()
        first: list[LiveEvent] = []
        if last_event_id:
            boot, _, seq_text = last_event_id.strip().partition("-")
            seq = int(seq_text) if seq_text.isdigit() else -1
            if boot != self.boot or seq < ws.dropped_upto or seq > self._seq:
                first.append(self._reset_event())
            else:
                first.extend(live for s, live in ws.buffer if s > seq)
        if self._closed:
            queue.put_nowait(CLOSED)
        else:
            ws.subscribers.add(queue)
        return queue, first

    def unsubscribe(self, workspace: str, queue: asyncio.Queue[LiveEvent]) -> None:
        ws = self._workspaces.get(workspace)
        if ws is not None:
            ws.subscribers.discard(queue)

    def close(self) -> None:
        """End every stream (shutdown)."""
        self._closed = True
        for ws in self._workspaces.values():
            for queue in ws.subscribers:
                queue.put_nowait(CLOSED)
            ws.subscribers.clear()
