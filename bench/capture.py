"""The capture process: provider messages to deal events, and what matching costs.

*Throughput.* One connected Gmail mailbox is synced (``producer.capture.gmail.GmailSync``) from
its cursor through an in-process stand-in of the Gmail API (an ``httpx.MockTransport``: history
pages of 100 message ids, then one ``messages.get?format=metadata`` per message, each a JSON
answer built in advance), with the real captured-id log (SQLite in a temporary directory), the
real matcher and deal index, and the events published to a real topic and acknowledged
(``DealEventPublisher``, acks=all) when a broker is given. Every message names a contact of one
deal, so each one becomes one ``email.logged``. What it leaves out: the network round trips to
Google (minutes of them in a real sync are waiting, not work; a mailbox is one of many synced
concurrently). Target: >= 10,000 messages per minute.

*Matching cost.* The same messages matched (``Matcher.email``) against a workspace of 1,000 and
of 100,000 open deals: the index probes per message are counted (they must be the same) and the
time per message compared.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from cryptography.fernet import Fernet
from pydantic import SecretStr

from bench.env import Session
from producer.capture import gmail
from producer.capture.matcher import CapturedEmail, DealIndex, Matcher, WorkspacePolicy
from producer.capture.store import CaptureStore, TokenCipher
from producer.publisher import DealEventPublisher
from schemas.events import DealCreated, DealEvent
from vectoros.kafka import start_producer
from vectoros.settings import KafkaSettings

WS = "ws-bench"
OWNER = "rep@vendor-bench.io"
POLICY = {WS: WorkspacePolicy(frozenset({"vendor-bench.io"}))}
API = "https://gmail.bench/gmail/v1/users/me"
PAGE = 100
START = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def contact(n: int) -> str:
    return f"buyer{n}@account{n}.example"


def deal_index(deals: int) -> DealIndex:
    index = DealIndex()
    for n in range(deals):
        created = {
            "event_id": f"c-{n}", "workspace_id": WS, "deal_id": f"deal-{n}",
            "occurred_at": "2026-03-01T00:00:00Z", "title": f"Deal {n}", "value": 1000,
            "currency": "USD", "stage": "proposal", "probability": 50,
            "close_date": "2026-06-01", "owner_id": "u",
            "contacts": [contact(n)], "account_domains": [f"account{n}.example"],
        }  # fmt: skip
        index.apply(DealCreated.model_validate(created))
    return index


def metadata(n: int, deals: int) -> bytes:
    """``messages.get?format=metadata`` of message ``n``: half inbound, half outbound."""
    buyer = f"Buyer {n} <{contact(n % deals)}>"
    sender, to = (buyer, OWNER) if n % 2 else (OWNER, buyer)
    at = int((START + dt.timedelta(seconds=n)).timestamp() * 1000)
    return orjson.dumps(
        {
            "id": f"m{n}",
            "threadId": f"t{n // 3}",
            "labelIds": ["INBOX"],
            "internalDate": str(at),
            "payload": {
                "headers": [
                    {"name": "From", "value": sender},
                    {"name": "To", "value": to},
                    {"name": "Date", "value": "Sun, 1 Mar 2026 00:00:00 +0000"},
                    {"name": "Message-ID", "value": f"<m{n}@bench>"},
                    {"name": "Subject", "value": "Pricing"},
                ]
            },
        }
    )


class StandIn:
    """The Gmail API calls of a sync: ``history.list`` pages, ``messages.get``."""

    def __init__(self, messages: int, deals: int) -> None:
        self.bodies = {f"m{n}": metadata(n, deals) for n in range(messages)}
        self.ids = list(self.bodies)
        self.history_id = 1000 + messages

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/gmail/v1/users/me")
        if path == "/history":
            offset = int(request.url.params.get("pageToken", "0"))
            chunk = self.ids[offset : offset + PAGE]
            records = [
                {"id": str(1001 + offset + i), "messagesAdded": [{"message": {"id": m}}]}
                for i, m in enumerate(chunk)
            ]
            body: dict[str, Any] = {"history": records, "historyId": str(self.history_id)}
            if offset + PAGE < len(self.ids):
                body["nextPageToken"] = str(offset + PAGE)
            return httpx.Response(200, content=orjson.dumps(body))
        mid = path.removeprefix("/messages/")
        return httpx.Response(200, content=self.bodies[mid])


class Counting:
    def __init__(self) -> None:
        self.events = 0

    async def send(self, events: Sequence[DealEvent]) -> None:
        self.events += len(events)


@dataclass(frozen=True)
class CaptureResult:
    messages: int
    events: int
    per_minute: float


async def run_sync(messages: int, deals: int, publisher: Any | None = None) -> CaptureResult:
    """One mailbox's sync of ``messages`` new messages (see the module)."""
    stand_in = StandIn(messages, deals)
    index = deal_index(deals)
    sink = publisher or Counting()
    with tempfile.TemporaryDirectory() as tmp:
        store = CaptureStore(
            Path(tmp) / "capture.db", TokenCipher(SecretStr(Fernet.generate_key().decode()))
        )
        store.connect(OWNER, "gmail", WS, '{"access_token": "a", "refresh_token": "r"}')
        store.save_cursor(OWNER, "gmail", "1000")
        oauth = gmail.google_oauth("c", "s", "https://oauth2.bench/token")
        async with httpx.AsyncClient(transport=httpx.MockTransport(stand_in.handler)) as http:
            client = gmail.GmailClient(http, oauth, {"access_token": "a"}, api_base=API)
            sync = gmail.GmailSync(
                client, store, Matcher(index, POLICY), sink,
                user_id=OWNER, workspace_id=WS, owner=OWNER,
            )  # fmt: skip
            started = time.perf_counter()
            result = await sync.run()
            took = time.perf_counter() - started
        store.close()
    events = result.events
    return CaptureResult(result.messages, events, result.messages / took * 60)


@dataclass(frozen=True)
class MatchResult:
    deals: int
    lookups_per_message: float
    micros_per_message: float


def run_matching(messages: int, deals: int) -> MatchResult:
    """``Matcher.email`` over ``messages`` emails against ``deals`` open deals."""
    index = deal_index(deals)
    matcher = Matcher(index, POLICY)
    mails = [
        CapturedEmail(
            workspace_id=WS, message_id=f"m{n}", sent_at=START, sender=contact((n * 7919) % deals),
            recipients=(OWNER,), thread_id=f"t{n}",
        )
        for n in range(messages)
    ]  # fmt: skip
    before = index.lookups
    started = time.perf_counter()
    matched = sum(len(matcher.email(m)) for m in mails)
    took = time.perf_counter() - started
    assert matched == messages, (matched, messages)
    return MatchResult(deals, (index.lookups - before) / messages, took / messages * 1e6)


class KafkaPublisher:
    """What ``vectoros capture`` publishes with: each page's events, then every ack awaited."""

    def __init__(self, producer: Any, topic: str) -> None:
        self._producer, self._topic = producer, topic

    async def send(self, events: Sequence[DealEvent]) -> None:
        publisher = DealEventPublisher(self._producer, self._topic)
        await publisher.publish_many(events)
        await publisher.flush()


async def run_with_broker(session: Session, messages: int, deals: int) -> CaptureResult:
    """``run_sync`` publishing to a fresh topic of the session's broker."""
    topic = session.name("capture")
    await session.create_topics(topic)
    settings = KafkaSettings(kafka_bootstrap_servers=session.bootstrap, metrics_enabled=False)
    producer = await start_producer(settings)
    try:
        return await run_sync(messages, deals, KafkaPublisher(producer, topic))
    finally:
        await producer.stop()
        await session.drop_topics(topic)


if __name__ == "__main__":
    import asyncio

    r = asyncio.run(run_sync(10_000, 1_000))
    print(f"{r.per_minute:,.0f} messages/min, {r.events:,} events")
    for d in (1_000, 100_000):
        m = run_matching(20_000, d)
        print(f"{d:,} deals: {m.lookups_per_message:.1f} lookups, {m.micros_per_message:.1f} us")
