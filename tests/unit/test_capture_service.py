"""The capture service's webhook source (signed), its captured log (no duplicates), tokens
encrypted at rest, and disconnect."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cryptography.fernet import Fernet
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from producer.capture import webhook
from producer.capture.app import build_app
from producer.capture.matcher import DealIndex, Matcher, WorkspacePolicy
from producer.capture.metrics import CaptureMetrics
from producer.capture.store import CaptureStore, TokenCipher
from schemas.events import DealCreated, DealEvent, EmailLogged, MeetingLogged, encode_event

SECRET = "s3cret-for-tests"
NOW = 1_772_442_000.0  # 2026-03-02T09:00:00Z
KEY = Fernet.generate_key().decode()


class Publisher:
    def __init__(self) -> None:
        self.events: list[DealEvent] = []
        self.fail = False

    async def send(self, events: Sequence[DealEvent]) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.events.extend(events)


def deal_index() -> DealIndex:
    idx = DealIndex()
    idx.apply(
        DealCreated(
            event_id="c1", workspace_id="ws", deal_id="d1", occurred_at="2026-03-01T00:00:00Z",
            title="t", value=1, currency="USD", stage="lead", probability=10,
            close_date="2026-05-01", owner_id="u", contacts=("ana@acme.com",),
        )  # type: ignore[arg-type]
    )  # fmt: skip
    return idx


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = CaptureStore(tmp_path / "capture.db", TokenCipher(SecretStr(KEY)))
    yield s
    s.close()


def client(store: CaptureStore, publisher: Publisher) -> httpx.AsyncClient:
    matcher = Matcher(deal_index(), {"ws": WorkspacePolicy(frozenset({"vendor.io"}))})
    app = build_app(matcher, publisher, store, SECRET, clock=lambda: NOW)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://capture")


def signed(body: bytes, secret: str = SECRET, at: float = NOW) -> dict[str, str]:
    ts = str(int(at))
    return {webhook.TIMESTAMP: ts, webhook.SIGNATURE: webhook.sign(secret, ts, body)}


PAYLOAD = {
    "user_id": "u-17",
    "items": [
        {
            "kind": "email", "id": "m-1", "thread_id": "t-1", "sent_at": "2026-03-02T08:00:00Z",
            "from": "Rep <rep@vendor.io>", "to": ["Ana <ana@acme.com>"], "cc": [],
            "subject": "Pricing", "body": "CONFIDENTIAL-BODY-TEXT",
        },
        {
            "kind": "meeting", "id": "e-9", "status": "scheduled",
            "start": "2026-03-05T15:00:00Z", "end": "2026-03-05T16:00:00Z",
            "attendees": ["rep@vendor.io", "ana@acme.com"], "description": "CONFIDENTIAL-BODY-TEXT",
        },
        {
            "kind": "email", "id": "m-2", "sent_at": "2026-03-02T08:30:00Z",
            "from": "rep@vendor.io", "to": ["boss@vendor.io"],
        },
    ],
}  # fmt: skip
BODY = orjson.dumps(PAYLOAD)


async def test_a_signed_post_publishes_matched_metadata_only(store: CaptureStore) -> None:
    pub = Publisher()
    async with client(store, pub) as c:
        r = await c.post("/capture/webhook/ws", content=BODY, headers=signed(BODY))
    assert r.status_code == 200
    assert r.json() == {"items": 3, "new": 3, "events": 2}
    email, meeting = pub.events
    assert isinstance(email, EmailLogged)
    assert isinstance(meeting, MeetingLogged)
    assert (email.deal_id, email.direction.value, email.participants) == (
        "d1",
        "outbound",
        ("ana@acme.com",),
    )
    assert email.subject is None  # subjects are off unless the workspace turns them on
    assert meeting.meeting_id == "e-9"
    assert all(b"CONFIDENTIAL" not in encode_event(e) for e in pub.events)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing_credentials"),
        (signed(BODY, secret="forged"), "bad_signature"),
        (signed(BODY, at=NOW - 301), "stale_timestamp"),
        (signed(b"{}"), "bad_signature"),  # signed another body
    ],
)
async def test_a_forged_or_stale_push_is_refused(
    store: CaptureStore, headers: dict[str, str], reason: str
) -> None:
    pub = Publisher()
    async with client(store, pub) as c:
        r = await c.post("/capture/webhook/ws", content=BODY, headers=headers)
    assert (r.status_code, r.json()) == (401, {"error": reason})
    assert pub.events == []
    assert store.rows_of("u-17") == 0


async def test_a_resent_payload_publishes_nothing_twice(store: CaptureStore) -> None:
    pub = Publisher()
    async with client(store, pub) as c:
        await c.post("/capture/webhook/ws", content=BODY, headers=signed(BODY))
        r = await c.post("/capture/webhook/ws", content=BODY, headers=signed(BODY))
    assert r.json() == {"items": 3, "new": 0, "events": 0}
    assert len(pub.events) == 2


async def test_a_broker_failure_is_503_and_the_retry_publishes(store: CaptureStore) -> None:
    pub = Publisher()
    pub.fail = True
    async with client(store, pub) as c:
        r = await c.post("/capture/webhook/ws", content=BODY, headers=signed(BODY))
        assert r.status_code == 503
        pub.fail = False
        r = await c.post("/capture/webhook/ws", content=BODY, headers=signed(BODY))
    assert r.json()["events"] == 2
    assert len(pub.events) == 2


async def test_a_crash_before_the_broker_acknowledged_loses_nothing(store: CaptureStore) -> None:
    """The process dies while publishing (no chance to undo anything): the items were not logged
    as captured yet, so the tool's retry publishes them (the same event ids)."""

    class Dies(Publisher):
        async def send(self, events: Sequence[DealEvent]) -> None:
            raise asyncio.CancelledError  # what a dying process's request sees

    with contextlib.suppress(asyncio.CancelledError, Exception):
        async with client(store, Dies()) as c:
            await c.post("/capture/webhook/ws", content=BODY, headers=signed(BODY))
    pub = Publisher()
    async with client(store, pub) as c:
        r = await c.post("/capture/webhook/ws", content=BODY, headers=signed(BODY))
    assert r.status_code == 200
    assert len(pub.events) == 2
    async with client(store, pub) as c:  # now logged: a resend publishes nothing more
        r = await c.post("/capture/webhook/ws", content=BODY, headers=signed(BODY))
    assert len(pub.events) == 2


async def test_a_bad_payload_is_400(store: CaptureStore) -> None:
    body = orjson.dumps({"user_id": "u", "items": [{"kind": "email", "id": "x"}]})
    async with client(store, Publisher()) as c:
        r = await c.post("/capture/webhook/ws", content=body, headers=signed(body))
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_payload"


async def test_disconnect_deletes_the_users_data(store: CaptureStore) -> None:
    store.connect("u-17", "gmail", "ws", '{"refresh_token": "1//r-token"}')
    store.save_cursor("u-17", "gmail", "history-42")
    store.connect("u-99", "gmail", "ws", '{"refresh_token": "other"}')
    async with client(store, Publisher()) as c:
        await c.post("/capture/webhook/ws", content=BODY, headers=signed(BODY))
        assert store.rows_of("u-17") == 4
        refused = await c.delete("/capture/users/u-17")
        assert refused.status_code == 401
        r = await c.delete("/capture/users/u-17", headers=signed(b""))
    assert r.json() == {"deleted": 4}
    assert store.rows_of("u-17") == 0
    assert store.connection("u-17", "gmail") is None
    assert store.connection("u-99", "gmail") is not None  # nobody else's


def test_tokens_are_encrypted_at_rest(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    s = CaptureStore(path, TokenCipher(SecretStr(KEY)))
    s.connect("u", "gmail", "ws", '{"refresh_token": "1//plain-refresh"}')
    s.save_tokens("u", "gmail", '{"refresh_token": "1//plain-refreshed"}')
    conn = s.connection("u", "gmail")
    assert conn is not None
    assert conn.tokens == '{"refresh_token": "1//plain-refreshed"}'
    s.close()
    raw = sqlite3.connect(path).execute("SELECT tokens FROM connection").fetchone()[0]
    assert b"plain" not in raw
    other = CaptureStore(path, TokenCipher(SecretStr(Fernet.generate_key().decode())))
    with pytest.raises(ValueError, match="do not decrypt with this key"):
        other.connection("u", "gmail")
    other.close()
    with pytest.raises(ValueError, match="not a Fernet key"):
        TokenCipher(SecretStr("short"))


def test_the_workspaces_file_is_the_opt_in(tmp_path: Path) -> None:
    from producer.capture.settings import load_policies
    from vectoros.errors import ConfigError

    path = tmp_path / "ws.yaml"
    path.write_text(
        "ws-a:\n  own_domains: [Vendor.io]\n  subjects: true\nws-b:\n  own_domains: [b.io]\n"
    )
    policies = load_policies(path)
    assert policies["ws-a"] == WorkspacePolicy(frozenset({"vendor.io"}), subjects=True)
    assert policies["ws-b"].subjects is False
    assert load_policies(None) == {}
    for text, message in (
        ("ws-a:\n  own_domain: [x.io]\n", "ws-a.own_domain: unknown key"),
        ("ws-a: {}\n", "ws-a.own_domains: list the workspace's mail domains"),
        ("- 1\n", "expected a mapping"),
    ):
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_policies(path)


async def test_requests_are_counted_by_source_and_status(store: CaptureStore) -> None:
    registry = CollectorRegistry()
    matcher = Matcher(deal_index(), {"ws": WorkspacePolicy(frozenset({"vendor.io"}))})
    app = build_app(
        matcher, Publisher(), store, SECRET, clock=lambda: NOW, metrics=CaptureMetrics(registry)
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://capture") as c:
        await c.post("/capture/webhook/ws", content=BODY, headers=signed(BODY))
        await c.post("/capture/webhook/ws", content=BODY, headers=signed(BODY, secret="forged"))
        await c.delete("/capture/users/u-17", headers=signed(b""))

    def count(source: str, status: str) -> float:
        labels = {"source": source, "status": status}
        return registry.get_sample_value("vectoros_capture_requests_total", labels) or 0.0

    assert (count("webhook", "200"), count("webhook", "401"), count("disconnect", "200")) == (
        1.0,
        1.0,
        1.0,
    )
