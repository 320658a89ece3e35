"""``vectoros send``: publish deal events written by hand (or by a script) as JSON.

The input is one JSON object, a JSON array of objects, or JSON lines (one object per line).
Every event is checked against the contract exactly as the monitor checks it
(``consumer.decode.decode``) before anything is published: one bad event and nothing is sent.
Events are keyed by their ``deal_id`` (as every producer must). Ticks are refused: a tick goes
to every partition of the topic (``vectoros tick --once`` sends one round).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson

from consumer.decode import decode
from schemas.events import DealEvent, Tick, encode_event
from vectoros.errors import EventRejected


@dataclass(frozen=True)
class Parsed:
    """The events of an input, or the reasons it cannot be sent (one per bad event)."""

    events: list[DealEvent]
    errors: list[str]


@dataclass(frozen=True)
class Sent:
    event: DealEvent
    partition: int
    offset: int


def _loads_or_raw(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return line  # decode() reports it as invalid JSON


def _items(text: bytes) -> tuple[list[tuple[str, bytes | Any]], list[str]]:
    """(label, item) pairs: parsed JSON values, or raw bytes of a line that is not JSON."""
    stripped = text.strip()
    if not stripped:
        return [], ["the input is empty: give one JSON object, a JSON array or JSON lines"]
    try:
        whole = orjson.loads(stripped)
    except orjson.JSONDecodeError:  # JSON lines (or broken JSON: each line says why)
        return [
            (f"line {n}", _loads_or_raw(line))
            for n, line in enumerate(text.splitlines(), 1)
            if line.strip()
        ], []
    if isinstance(whole, list):
        return [(f"event {n}", item) for n, item in enumerate(whole, 1)], []
    return [("event 1", whole)], []


def parse_events(text: bytes, *, max_bytes: int) -> Parsed:
    """Validate every event of ``text``; ``errors`` names each bad one (index or line)."""
    items, errors = _items(text)
    events: list[DealEvent] = []
    for label, item in items:
        if isinstance(item, bytes):  # a line that did not parse: let decode say why
            value = item
            key = None
        else:
            value = orjson.dumps(item)
            deal_id = item.get("deal_id") if isinstance(item, dict) else None
            key = deal_id.encode() if isinstance(deal_id, str) else None
        try:
            event = decode(value, key, max_bytes=max_bytes)
        except EventRejected as exc:
            errors.append(f"{label}: {exc.reason}: {exc.detail}")
            continue
        if isinstance(event, Tick):
            errors.append(
                f"{label}: ticks cannot be sent (a tick goes to every partition); "
                "use `vectoros tick --once`"
            )
            continue
        events.append(event)
    return Parsed(events, errors)


async def send_events(producer: Any, topic: str, events: list[DealEvent]) -> list[Sent]:
    """Publish ``events`` in order, keyed by ``deal_id``; wait for every acknowledgement."""
    futures = [
        await producer.send(topic, value=encode_event(event), key=event.deal_id.encode())
        for event in events
    ]
    metadata = await asyncio.gather(*futures)
    return [Sent(e, m.partition, m.offset) for e, m in zip(events, metadata, strict=True)]
