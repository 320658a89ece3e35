"""The maintenance loop against the Gmail, Calendar and Graph stand-ins: push channels opened
and renewed before expiry (Gmail re-watch, Calendar channel, Graph subscriptions), every
connection synced from its cursor (the polling fallback: what a lost push would have brought,
and Calendar meetings that ended becoming held), a revoked grant marked and skipped, one
failing connection not stopping the others."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from producer.capture import gcal, gmail, graph
from producer.capture.maintain import Maintenance, RoundResult, run_maintenance
from producer.capture.matcher import DealIndex, Matcher, WorkspacePolicy
from producer.capture.metrics import CaptureMetrics
from producer.capture.store import CaptureStore, TokenCipher
from schemas.events import DealCreated, EmailLogged, MeetingLogged, MeetingStatus
from tests.unit.test_capture_gcal import FakeCalendar, event
from tests.unit.test_capture_gmail import FakeGmail, Publisher, mail
from tests.unit.test_capture_graph import FakeGraph, message

NOW = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
PUBLIC = "https://capture.example.com"
TOPIC = "projects/p/topics/gmail"
TOKENS = '{"access_token": "access-1", "refresh_token": "r-1"}'
GMAIL_USER, GCAL_USER, GRAPH_USER = "rep@vendor.io", "rep@vendor.io", "rep2@vendor.io"


def matcher() -> Matcher:
    idx = DealIndex()
    idx.apply(
        DealCreated(
            event_id="c1", workspace_id="ws", deal_id="d1", occurred_at="2026-03-01T00:00:00Z",
            title="t", value=1, currency="USD", stage="lead", probability=10,
            close_date="2026-05-01", owner_id="u", contacts=("ana@acme.com",),
            account_domains=("acme.com",),
        )  # type: ignore[arg-type]
    )  # fmt: skip
    return Matcher(idx, {"ws": WorkspacePolicy(frozenset({"vendor.io"}))})


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = CaptureStore(tmp_path / "c.db", TokenCipher(SecretStr(Fernet.generate_key().decode())))
    yield s
    s.close()


class World:
    """The three providers' stand-ins behind one transport, and the capture side."""

    def __init__(self, store: CaptureStore) -> None:
        self.store = store
        self.gmail, self.gcal, self.graph = FakeGmail(), FakeCalendar(), FakeGraph()
        self.now = NOW
        self.publisher = Publisher()
        self.registry = CollectorRegistry()
        self.metrics = CaptureMetrics(self.registry)
        self.broken: set[str] = set()
        """Hosts answering 500."""

    def handler(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host in self.broken:
            return httpx.Response(500, json={"error": {"code": 500}})
        if host == "gmail.test":
            return self.gmail.handler(request)
        if host in ("calendar.test", "oauth2.test"):
            return self.gcal.handler(request)
        return self.graph.handler(request)

    def maintenance(self, http: httpx.AsyncClient) -> Maintenance:
        async def no_sleep(_s: float) -> None:
            return None

        google = gmail.google_oauth("client-1", "client-secret-1", "https://oauth2.test/token")
        ms = graph.graph_oauth("client-1", "client-secret-1", "https://login.test/token")
        clock = {"sleep": no_sleep, "now": lambda: self.now}
        return Maintenance(
            self.store, matcher(), self.publisher, self.metrics,
            gmail=gmail.GmailPush(
                http, google, "push", api_base="https://gmail.test/gmail/v1/users/me", **clock
            ),
            gcal=gcal.CalendarPush(
                http, google, "cs", api_base="https://calendar.test/calendar/v3", **clock
            ),
            graph=graph.GraphPush(http, ms, "gs", api_base="https://graph.test/v1.0", **clock),
            public_url=PUBLIC, gmail_topic=TOPIC,
        )  # fmt: skip

    async def round(self) -> RoundResult:
        async with httpx.AsyncClient(transport=httpx.MockTransport(self.handler)) as http:
            return await self.maintenance(http).round()

    def count(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def connect_all(store: CaptureStore, world: World) -> None:
    store.connect(GMAIL_USER, "gmail", "ws", TOKENS)
    store.save_cursor(GMAIL_USER, "gmail", str(world.gmail.history_id))
    store.connect(GCAL_USER, "gcal", "ws", TOKENS)
    store.connect(GRAPH_USER, "graph", "ws", TOKENS)


async def test_a_round_opens_every_channel_and_syncs_every_connection(
    store: CaptureStore,
) -> None:
    world = World(store)
    connect_all(store, world)
    world.gmail.add(mail(1))
    world.gcal.put(event("ev", NOW + dt.timedelta(days=1), answers={"ana@acme.com": "accepted"}))
    world.graph.put("inbox", message("in0"))
    result = await world.round()
    assert result == RoundResult(watched=3, synced=3, failed=0, revoked=0)
    assert len(world.gmail.hits("/watch")) == 1
    assert [w["address"] for w in world.gcal.watches] == [f"{PUBLIC}/capture/gcal/notify"]
    assert {s["notificationUrl"] for s in world.graph.subscriptions.values()} == {
        f"{PUBLIC}/capture/graph/notify"
    }
    assert len(world.graph.subscriptions) == 3
    threads = sorted(
        e.thread_id or "" for e in world.publisher.events if isinstance(e, EmailLogged)
    )
    assert threads == ["conv-in0", "t1"]  # Graph and Gmail, without any push
    assert [e.meeting_id for e in world.publisher.events if isinstance(e, MeetingLogged)] == ["ev"]
    assert world.count("vectoros_capture_syncs_total", source="gcal", status="ok") == 1
    assert world.count("vectoros_capture_watches_total", source="graph", status="ok") == 1
    assert world.count("vectoros_capture_maintenance_rounds_total") == 1


async def test_channels_are_renewed_only_near_expiry_and_nothing_is_published_twice(
    store: CaptureStore,
) -> None:
    world = World(store)
    connect_all(store, world)
    world.gmail.add(mail(1))
    await world.round()
    published = len(world.publisher.events)
    world.now = NOW + dt.timedelta(hours=12)
    await world.round()
    assert len(world.gmail.hits("/watch")) == 1  # all still live: nothing re-opened
    assert len(world.gcal.watches) == 1
    assert not [r for r in world.graph.requests if r.method == "PATCH"]
    assert len(world.publisher.events) == published
    world.now = NOW + dt.timedelta(days=6, hours=12)  # within a day of every expiry
    await world.round()
    assert len(world.gcal.watches) == 2
    assert world.gcal.stopped == [{"id": world.gcal.watches[0]["id"], "resourceId": "res-1"}]
    assert len([r for r in world.graph.requests if r.method == "PATCH"]) == 3


async def test_polling_turns_an_ended_meeting_into_held_without_a_notification(
    store: CaptureStore,
) -> None:
    world = World(store)
    store.connect(GCAL_USER, "gcal", "ws", TOKENS)
    start = NOW + dt.timedelta(hours=1)
    world.gcal.put(event("ev", start, answers={"ana@acme.com": "accepted"}))
    await world.round()
    world.now = NOW + dt.timedelta(hours=2)
    await world.round()
    statuses = [
        (e.meeting_id, e.status) for e in world.publisher.events if isinstance(e, MeetingLogged)
    ]
    assert statuses == [("ev", MeetingStatus.SCHEDULED), ("ev", MeetingStatus.HELD)]


async def test_a_revoked_grant_is_marked_and_a_failing_provider_does_not_stop_the_round(
    store: CaptureStore,
) -> None:
    world = World(store)
    connect_all(store, world)
    store.save_tokens(GRAPH_USER, "graph", '{"access_token": "old", "refresh_token": "revoked"}')
    world.broken.add("gmail.test")
    world.gcal.put(event("ev", NOW + dt.timedelta(days=1), answers={"ana@acme.com": "accepted"}))
    result = await world.round()
    assert result == RoundResult(watched=1, synced=1, failed=2, revoked=1)
    assert store.revoked(GRAPH_USER, "graph")
    assert [e.meeting_id for e in world.publisher.events if isinstance(e, MeetingLogged)] == ["ev"]
    assert world.count("vectoros_capture_watches_total", source="graph", status="revoked") == 1
    assert world.count("vectoros_capture_syncs_total", source="gmail", status="failed") == 1
    world.broken.clear()
    graph_calls = len(world.graph.requests)
    assert (await world.round()).revoked == 0  # the revoked connection has left the loop
    assert len(world.graph.requests) == graph_calls


async def test_the_loop_runs_a_round_at_once_and_stops_when_asked(store: CaptureStore) -> None:
    world = World(store)
    store.connect(GCAL_USER, "gcal", "ws", TOKENS)
    stop = asyncio.Event()
    async with httpx.AsyncClient(transport=httpx.MockTransport(world.handler)) as http:
        maintenance = world.maintenance(http)
        original = maintenance.round

        async def counted() -> RoundResult:
            result = await original()
            stop.set()  # one round, then the service stops
            return result

        maintenance.round = counted  # type: ignore[method-assign]
        await asyncio.wait_for(run_maintenance(maintenance, 3600, stop), timeout=30)
    assert world.count("vectoros_capture_maintenance_rounds_total") == 1


def test_the_captured_log_is_pruned_per_workspace_retention(store: CaptureStore) -> None:
    day = 86_400_000
    now = int(NOW.timestamp() * 1000)
    store.connect("a@vendor.io", "gmail", "ws-40", TOKENS)
    store.connect("b@vendor.io", "gcal", "ws-7", TOKENS)
    for user, provider in (
        ("a@vendor.io", "gmail"),
        ("b@vendor.io", "gcal"),
        ("tool-1", "webhook"),
    ):
        for age in (10, 35, 45, 400):
            store.first_seen(user, provider, [f"{provider}-{age}"], now - age * day)
    policies = {
        "ws-40": WorkspacePolicy(frozenset({"vendor.io"}), retention_days=40),
        "ws-7": WorkspacePolicy(frozenset({"vendor.io"}), retention_days=7),
        "ws-90": WorkspacePolicy(frozenset({"vendor.io"}), retention_days=90),
    }
    maintenance = Maintenance(
        store, Matcher(DealIndex(), policies), Publisher(), CaptureMetrics(CollectorRegistry()),
        clock_ms=lambda: now,
    )  # fmt: skip
    assert maintenance.prune() == 6

    def kept(user: str, provider: str) -> list[int]:
        ids = [f"{provider}-{age}" for age in (10, 35, 45, 400)]
        return sorted(int(i.split("-")[1]) for i in store.known(user, provider, ids))

    assert kept("a@vendor.io", "gmail") == [10, 35]  # 40 days
    assert kept("b@vendor.io", "gcal") == [10]  # 7 days, but never under 31
    assert kept("tool-1", "webhook") == [10, 35, 45]  # no connection: the longest, 90 days
