"""The Microsoft Graph connector against a stand-in of Graph and the Microsoft identity
platform's token endpoint that follows their documented requests and responses (an
``httpx.MockTransport`` handler): subscriptions (created with ``clientState``, renewed before
expiry, the ``validationToken`` handshake), change notifications (``clientState`` checked),
delta queries for inbox, sent items and calendar view (``@odata.nextLink`` /
``@odata.deltaLink`` paging, ``@removed``), ``410 syncStateNotFound`` -> resync, 401 -> one
refresh, 429 -> Retry-After, and a restart in the middle of a sync."""

from __future__ import annotations

import datetime as dt
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from producer.capture import graph
from producer.capture.api import ApiError, OAuthClient
from producer.capture.app import build_app
from producer.capture.matcher import DealIndex, Matcher, WorkspacePolicy
from producer.capture.store import CaptureStore, Channel, TokenCipher
from schemas.events import (
    DealCreated,
    DealEvent,
    Direction,
    EmailLogged,
    MeetingLogged,
    MeetingStatus,
)

OWNER = "rep@vendor.io"
NOW = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
SECRET = "client-state-secret-for-tests"
OAUTH = OAuthClient("client-1", "client-secret-1", "https://login.test/token", graph.SCOPE)
API = "https://graph.test/v1.0"
HOOK = "https://capture.example.com/capture/graph/notify"
FOLDERS = {
    "/me/mailFolders/inbox/messages/delta": "inbox",
    "/me/mailFolders/sentitems/messages/delta": "sentitems",
    "/me/calendarView/delta": "events",
}


def utc(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def message(mid: str, *, inbound: bool = True, minutes_ago: int = 60) -> dict[str, Any]:
    """A message resource as a delta page returns it with the ``$select`` capture asks for."""
    at = utc(NOW - dt.timedelta(minutes=minutes_ago))
    buyer = {"emailAddress": {"name": "Ana", "address": "Ana@Acme.com"}}
    rep = {"emailAddress": {"name": "Rep", "address": OWNER}}
    return {
        "@odata.etag": 'W/"CQAAABYAAAA"',
        "id": mid,
        "from": buyer if inbound else rep,
        "toRecipients": [rep] if inbound else [buyer],
        "ccRecipients": [] if inbound else [{"emailAddress": {"address": "bo@acme.com"}}],
        "sentDateTime": at,
        "receivedDateTime": at,
        "conversationId": f"conv-{mid}",
        "internetMessageId": f"<{mid}@mail.test>",
        "subject": "Pricing",
    }


def meeting(
    eid: str, start: dt.datetime, response: str = "accepted", *, cancelled: bool = False
) -> dict[str, Any]:
    """An event resource as a calendar view delta page returns it (times in UTC as asked)."""
    end = start + dt.timedelta(minutes=30)
    return {
        "id": eid,
        "subject": "Pricing review",
        "body": {"contentType": "html", "content": "CONFIDENTIAL"},
        "isAllDay": False,
        "isCancelled": cancelled,
        "isOrganizer": True,
        "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": "UTC"},
        "end": {"dateTime": end.strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": "UTC"},
        "organizer": {"emailAddress": {"name": "Rep", "address": OWNER}},
        "attendees": [
            {
                "type": "required",
                "status": {"response": response, "time": "2026-03-01T10:00:00Z"},
                "emailAddress": {"name": "Ana", "address": "ana@acme.com"},
            },
            {
                "type": "resource",
                "status": {"response": "accepted"},
                "emailAddress": {"address": "room@vendor.io"},
            },
        ],
    }


@dataclass
class FakeGraph:
    """Graph as documented: each folder and the calendar keep a change log (a version per
    change); a delta request without a token returns the current items (the calendar view
    needs ``startDateTime``/``endDateTime``), with a token the changes since; pages of
    ``odata.maxpagesize`` (the ``Prefer`` header) linked by ``@odata.nextLink`` (``$skiptoken``),
    the last with an ``@odata.deltaLink`` (``$deltatoken``); a token older than ``oldest``:
    410 ``syncStateNotFound``; ``/subscriptions`` POST and PATCH; bearer tokens checked;
    scripted 429s; the token endpoint's refresh-token grant (with a scope)."""

    changes: dict[str, list[tuple[int, dict[str, Any]]]] = field(
        default_factory=lambda: {"inbox": [], "sentitems": [], "events": []}
    )
    version: int = 0
    oldest: int = 0
    valid_token: str = "access-1"
    throttle: int = 0
    gone_subscriptions: set[str] = field(default_factory=set)
    requests: list[httpx.Request] = field(default_factory=list)
    refreshes: list[dict[str, str]] = field(default_factory=list)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)

    def put(self, folder: str, item: dict[str, Any]) -> None:
        self.version += 1
        self.changes[folder].append((self.version, item))

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        url = request.url
        if url.host == "login.test":
            form = dict(urllib.parse.parse_qsl(request.content.decode()))
            self.refreshes.append(form)
            if form.get("refresh_token") != "r-1" or "offline_access" not in form.get("scope", ""):
                return httpx.Response(400, json={"error": "invalid_grant"})
            self.valid_token = "access-2"
            return httpx.Response(
                200,
                json={"token_type": "Bearer", "access_token": "access-2", "refresh_token": "r-2"},
            )
        if request.headers.get("authorization") != f"Bearer {self.valid_token}":
            return httpx.Response(
                401, json={"error": {"code": "InvalidAuthenticationToken", "message": "expired"}}
            )
        if self.throttle:
            self.throttle -= 1
            return httpx.Response(
                429,
                headers={"Retry-After": "3"},
                json={"error": {"code": "TooManyRequests", "message": "throttled"}},
            )
        path = url.path.removeprefix("/v1.0")
        if path == "/subscriptions" and request.method == "POST":
            body = orjson.loads(request.content)
            sid = f"sub-{len(self.subscriptions) + 1}"
            self.subscriptions[sid] = body
            return httpx.Response(201, json={"id": sid, **body, "applicationId": "app-1"})
        if path.startswith("/subscriptions/") and request.method == "PATCH":
            sid = path.removeprefix("/subscriptions/")
            if sid in self.gone_subscriptions or sid not in self.subscriptions:
                return httpx.Response(
                    404, json={"error": {"code": "ResourceNotFound", "message": "gone"}}
                )
            self.subscriptions[sid].update(orjson.loads(request.content))
            return httpx.Response(200, json={"id": sid, **self.subscriptions[sid]})
        if path in FOLDERS and request.method == "GET":
            return self._delta(path, FOLDERS[path], request)
        if path == "/me/calendarView" and request.method == "GET":
            return self._view(request)
        return httpx.Response(404, json={"error": {"code": "ResourceNotFound"}})

    def _delta(self, path: str, folder: str, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        prefer = request.headers.get("prefer", "")
        size = int(prefer.split("odata.maxpagesize=")[1].split(",")[0]) if prefer else 10
        if "$skiptoken" in params:
            since, offset = map(int, params["$skiptoken"].split(":"))
        elif "$deltatoken" in params:
            since, offset = int(params["$deltatoken"]), 0
            if since < self.oldest:
                return httpx.Response(
                    410,
                    json={
                        "error": {
                            "code": "syncStateNotFound",
                            "message": "The sync state generation is not found.",
                        }
                    },
                )
        else:
            if folder == "events":
                assert "startDateTime" in params
                assert "endDateTime" in params
            else:
                assert "body" not in params["$select"]
            since, offset = 0, 0
        log = self.changes[folder]
        latest: dict[str, dict[str, Any]] = {}
        for version, item in log:
            if version > since:
                latest[item["id"]] = item  # a delta page has each item's latest state once
        found = list(latest.values())
        chunk = found[offset : offset + size]
        body: dict[str, Any] = {"@odata.context": "https://graph.test/$metadata", "value": chunk}
        base = f"{API}{path}"
        if offset + size < len(found):
            body["@odata.nextLink"] = f"{base}?$skiptoken={since}:{offset + size}"
        else:
            body["@odata.deltaLink"] = f"{base}?$deltatoken={self.version}"
        return httpx.Response(200, json=body)

    def _view(self, request: httpx.Request) -> httpx.Response:
        """``GET /me/calendarView``: the events overlapping the window (UTC as asked)."""
        params = request.url.params
        low = dt.datetime.fromisoformat(params["startDateTime"])
        high = dt.datetime.fromisoformat(params["endDateTime"])
        latest: dict[str, dict[str, Any]] = {}
        for _v, item in self.changes["events"]:
            latest[item["id"]] = item
        found = []
        for item in latest.values():
            if "@removed" in item or item.get("isCancelled"):
                continue
            start = dt.datetime.fromisoformat(item["start"]["dateTime"][:19] + "+00:00")
            end = dt.datetime.fromisoformat(item["end"]["dateTime"][:19] + "+00:00")
            if start < high and end > low:
                found.append(item)
        skip = int(params.get("$skip", "0"))
        body: dict[str, Any] = {"value": found[skip : skip + 10]}
        if skip + 10 < len(found):
            body["@odata.nextLink"] = f"{API}/me/calendarView?$skip={skip + 10}"
        return httpx.Response(200, json=body)

    def deltas(self, folder: str) -> list[httpx.Request]:
        return [r for r in self.requests if FOLDERS.get(r.url.path.removeprefix("/v1.0")) == folder]


class Publisher:
    def __init__(self, fail_on_call: int | None = None) -> None:
        self.events: list[DealEvent] = []
        self.calls = 0
        self.fail_on_call = fail_on_call

    async def send(self, events: Sequence[DealEvent]) -> None:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise ConnectionError("broker down")
        self.events.extend(events)


def matcher() -> Matcher:
    idx = DealIndex()
    idx.apply(
        DealCreated(
            event_id="c1", workspace_id="ws", deal_id="d1", occurred_at="2026-03-01T00:00:00Z",
            title="t", value=1, currency="USD", stage="lead", probability=10,
            close_date="2026-05-01", owner_id="u", contacts=("ana@acme.com",),
        )  # type: ignore[arg-type]
    )  # fmt: skip
    return Matcher(idx, {"ws": WorkspacePolicy(frozenset({"vendor.io"}))})


def emails(events: Sequence[DealEvent]) -> list[EmailLogged]:
    return [e for e in events if isinstance(e, EmailLogged)]


def meetings(events: Sequence[DealEvent]) -> list[MeetingLogged]:
    return [e for e in events if isinstance(e, MeetingLogged)]


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = CaptureStore(
        tmp_path / "capture.db", TokenCipher(SecretStr(Fernet.generate_key().decode()))
    )
    s.connect(OWNER, "graph", "ws", '{"access_token": "access-1", "refresh_token": "r-1"}')
    yield s
    s.close()


class Rig:
    def __init__(self, store: CaptureStore, fake: FakeGraph, publisher: Publisher) -> None:
        self.store, self.fake, self.publisher = store, fake, publisher
        self.sleeps: list[float] = []
        self.now = NOW

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def client(self, http: httpx.AsyncClient) -> graph.GraphClient:
        conn = self.store.connection(OWNER, "graph")
        assert conn is not None
        return graph.GraphClient(
            http, OAUTH, orjson.loads(conn.tokens), api_base=API,
            on_tokens=lambda t: self.store.save_tokens(OWNER, "graph", orjson.dumps(t).decode()),
            sleep=self.sleep, now=lambda: self.now,
        )  # fmt: skip

    async def run(self, page_size: int = 2) -> graph.SyncResult:
        async with httpx.AsyncClient(transport=httpx.MockTransport(self.fake.handler)) as http:
            sync = graph.GraphSync(
                self.client(http), self.store, matcher(), self.publisher,
                user_id=OWNER, workspace_id="ws", owner=OWNER, now=lambda: self.now,
                full_sync_days=7, page_size=page_size,
            )  # fmt: skip
            return await sync.run()


def cursors(store: CaptureStore) -> dict[str, str]:
    conn = store.connection(OWNER, "graph")
    assert conn is not None
    return dict(orjson.loads(conn.cursor)) if conn.cursor else {}


AT = NOW + dt.timedelta(days=1)
PAST = NOW - dt.timedelta(hours=3)


# --- delta sync ------------------------------------------------------------------------------


async def test_first_sync_pages_every_feed_to_its_delta_link(store: CaptureStore) -> None:
    fake = FakeGraph()
    for n in range(3):
        fake.put("inbox", message(f"in{n}"))
    fake.put("sentitems", message("out0", inbound=False))
    fake.put("events", meeting("ev-held", PAST))
    fake.put("events", meeting("ev-next", AT, "none"))
    fake.put("events", meeting("ev-declined", AT, "declined"))
    rig = Rig(store, fake, Publisher())
    result = await rig.run(page_size=2)
    inbox = fake.deltas("inbox")
    assert len(inbox) == 2  # 3 messages, 2 a page: followed the nextLink
    assert inbox[1].url.params["$skiptoken"] == "0:2"
    assert inbox[0].headers["prefer"] == 'odata.maxpagesize=2, IdType="ImmutableId"'
    assert fake.deltas("events")[0].headers["prefer"].endswith('outlook.timezone="UTC"')
    view = fake.deltas("events")[0].url.params
    assert view["startDateTime"] == "2026-02-23T09:00:00Z"
    got = {e.thread_id: e.direction for e in emails(rig.publisher.events)}
    assert got == {
        "conv-in0": Direction.INBOUND,
        "conv-in1": Direction.INBOUND,
        "conv-in2": Direction.INBOUND,
        "conv-out0": Direction.OUTBOUND,
    }
    out = next(e for e in emails(rig.publisher.events) if e.thread_id == "conv-out0")
    assert out.participants == ("ana@acme.com", "bo@acme.com")
    assert out.subject is None  # subjects off by default
    assert {e.meeting_id: e.status for e in meetings(rig.publisher.events)} == {
        "ev-held": MeetingStatus.HELD,
        "ev-next": MeetingStatus.SCHEDULED,
        "ev-declined": MeetingStatus.CANCELLED,
    }
    held = next(e for e in meetings(rig.publisher.events) if e.meeting_id == "ev-held")
    assert held.start == PAST
    assert held.attendees == ("ana@acme.com",)  # not the room
    assert result == graph.SyncResult(7, 7, ())
    assert cursors(store) == {
        "inbox": f"{API}/me/mailFolders/inbox/messages/delta?$deltatoken=7",
        "sent": f"{API}/me/mailFolders/sentitems/messages/delta?$deltatoken=7",
        "events": f"{API}/me/calendarView/delta?$deltatoken=7",
        "events_window": "2026-03-02T09:00:00Z",  # when the calendar view's window was set
    }


async def test_the_next_sync_reads_only_the_changes_from_the_delta_links(
    store: CaptureStore,
) -> None:
    fake = FakeGraph()
    fake.put("inbox", message("in0"))
    fake.put("events", meeting("ev", AT))
    await Rig(store, fake, Publisher()).run()
    fake.put("inbox", message("in1"))
    fake.put("inbox", {"id": "in0", "@removed": {"reason": "deleted"}})
    fake.put("events", meeting("ev", AT, cancelled=True))
    rig = Rig(store, fake, Publisher())
    result = await rig.run()
    assert [r.url.params.get("$deltatoken") for r in fake.deltas("inbox")] == [None, "2"]
    assert [e.thread_id for e in emails(rig.publisher.events)] == ["conv-in1"]
    assert [(e.meeting_id, e.status) for e in meetings(rig.publisher.events)] == [
        ("ev", MeetingStatus.CANCELLED)
    ]
    assert result.resynced == ()
    assert cursors(store)["inbox"].endswith("$deltatoken=5")


async def test_a_meeting_that_ended_is_held_at_the_next_sync(store: CaptureStore) -> None:
    fake = FakeGraph()
    start = NOW + dt.timedelta(hours=1)
    fake.put("events", meeting("ev", start))
    fake.put("events", meeting("nobody", start, "none"))
    rig = Rig(store, fake, Publisher())
    await rig.run()
    rig.now = NOW + dt.timedelta(hours=3)  # nothing changed in the calendar: no delta item
    await rig.run()
    got = [(e.meeting_id, e.status) for e in meetings(rig.publisher.events)]
    assert got == [
        ("ev", MeetingStatus.SCHEDULED),
        ("nobody", MeetingStatus.SCHEDULED),
        ("ev", MeetingStatus.HELD),
        ("nobody", MeetingStatus.NO_SHOW),
    ]
    view = [r for r in fake.requests if r.url.path == "/v1.0/me/calendarView"][-1]
    assert view.url.params["startDateTime"] == "2026-02-28T12:00:00Z"  # 48 hours back
    await rig.run()
    assert len(rig.publisher.events) == 4  # once


async def test_the_calendar_view_window_moves_on_without_republishing(
    store: CaptureStore,
) -> None:
    fake = FakeGraph()
    fake.put("events", meeting("ev", NOW + dt.timedelta(days=40)))
    await Rig(store, fake, Publisher()).run()
    rig = Rig(store, fake, Publisher())
    rig.now = NOW + dt.timedelta(days=3)
    await rig.run()
    assert [r.url.params.get("$deltatoken") for r in fake.deltas("events")] == [None, "1"]
    rig.now = NOW + dt.timedelta(days=8)  # the window set 8 days ago: started again around now
    await rig.run()
    restart = fake.deltas("events")[-1].url.params
    assert "$deltatoken" not in restart
    assert restart["startDateTime"] == "2026-03-03T09:00:00Z"  # 30 days (7 here) back from now
    assert restart["endDateTime"] == "2026-06-08T09:00:00Z"  # 90 days ahead of now
    assert rig.publisher.events == []  # "ev" (still scheduled) was captured already
    assert cursors(store)["events_window"] == "2026-03-10T09:00:00Z"


async def test_an_expired_delta_link_resyncs_that_feed_without_duplicates(
    store: CaptureStore,
) -> None:
    fake = FakeGraph()
    fake.put("inbox", message("in0"))
    await Rig(store, fake, Publisher()).run()
    fake.put("inbox", message("in1"))
    fake.oldest = 100  # every delta token Graph handed out is forgotten
    rig = Rig(store, fake, Publisher())
    result = await rig.run()
    assert set(result.resynced) == {"inbox", "sent", "events"}
    inbox = fake.deltas("inbox")
    assert inbox[-2].url.params.get("$deltatoken") == "1"  # the 410
    assert "$deltatoken" not in inbox[-1].url.params  # from the start again
    assert [e.thread_id for e in emails(rig.publisher.events)] == ["conv-in1"]  # in0: captured
    assert cursors(store)["inbox"].endswith(f"$deltatoken={fake.version}")


async def test_a_restart_in_the_middle_of_a_sync_loses_and_duplicates_nothing(
    store: CaptureStore,
) -> None:
    fake = FakeGraph()
    for n in range(7):
        fake.put("inbox", message(f"in{n}"))
    first = Rig(store, fake, Publisher(fail_on_call=3))  # 2 pages published, then the crash
    with pytest.raises(ConnectionError):
        await first.run(page_size=2)
    assert len(emails(first.publisher.events)) == 4
    assert cursors(store) == {}  # no delta link saved: the restart reads the feed again
    restarted = Rig(store, fake, Publisher())
    await restarted.run(page_size=2)
    published = emails(first.publisher.events) + emails(restarted.publisher.events)
    assert sorted(e.thread_id or "" for e in published) == [f"conv-in{n}" for n in range(7)]
    assert len({e.event_id for e in published}) == 7


async def test_401_refreshes_with_the_scope_once_and_429_waits_retry_after(
    store: CaptureStore,
) -> None:
    fake = FakeGraph(valid_token="stale", throttle=1)
    fake.put("inbox", message("in0"))
    rig = Rig(store, fake, Publisher())
    await rig.run()
    assert fake.refreshes == [
        {
            "grant_type": "refresh_token",
            "refresh_token": "r-1",
            "client_id": "client-1",
            "client_secret": "client-secret-1",
            "scope": graph.SCOPE,
        }
    ]
    assert rig.sleeps == [3.0]
    assert len(emails(rig.publisher.events)) == 1
    conn = store.connection(OWNER, "graph")
    assert conn is not None
    assert orjson.loads(conn.tokens)["refresh_token"] == "r-2"  # Microsoft rotates it


async def test_a_revoked_grant_is_an_error_with_its_code(store: CaptureStore) -> None:
    store.save_tokens(OWNER, "graph", '{"access_token": "old", "refresh_token": "revoked"}')
    with pytest.raises(ApiError) as err:
        await Rig(store, FakeGraph(), Publisher()).run()
    assert (err.value.status, err.value.code) == (400, "invalid_grant")


def test_graph_times_and_all_day_events() -> None:
    ev = meeting("e", AT)
    parsed = graph.meeting_of("ws", OWNER, ev, NOW)
    assert parsed is not None
    assert parsed.start == AT
    ev["isAllDay"] = True
    assert graph.meeting_of("ws", OWNER, ev, NOW) is None
    other = meeting("e", AT)
    other["start"]["timeZone"] = "Pacific Standard Time"  # not what capture asked for
    assert graph.meeting_of("ws", OWNER, other, NOW) is None
    sent = message("m1")
    sent["receivedDateTime"] = "2026-03-02T04:00:00.1234567-05:00"  # an offset is kept
    mail = graph.email_of("ws", OWNER, sent, sent_folder=False)
    assert mail is not None
    assert mail.sent_at == dt.datetime(2026, 3, 2, 9, 0, 0, 123456, tzinfo=dt.UTC)


# --- subscriptions ---------------------------------------------------------------------------


async def test_subscriptions_are_created_once_and_renewed_before_they_expire(
    store: CaptureStore,
) -> None:
    fake = FakeGraph()
    rig = Rig(store, fake, Publisher())

    def subs(http: httpx.AsyncClient) -> graph.GraphSubscriptions:
        return graph.GraphSubscriptions(
            rig.client(http), store, user_id=OWNER, notification_url=HOOK, secret=SECRET,
            now=lambda: rig.now,
        )  # fmt: skip

    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as http:
        first = await subs(http).ensure()
        assert [c.resource_id for c in first] == list(graph.RESOURCES.values())
        assert fake.subscriptions["sub-1"] == {
            "changeType": "created,updated",
            "notificationUrl": HOOK,
            "resource": "me/mailFolders('Inbox')/messages",
            "expirationDateTime": "2026-03-05T09:00:00Z",
            "clientState": graph.client_state(SECRET, OWNER),
        }
        assert fake.subscriptions["sub-3"]["changeType"] == "created,updated,deleted"
        assert first[0].expires_ms == int((NOW + dt.timedelta(days=3)).timestamp() * 1000)
        rig.now = NOW + dt.timedelta(days=1)
        assert await subs(http).ensure() == first  # two days left: nothing to do
        rig.now = NOW + dt.timedelta(days=2, hours=1)  # within a day of expiry: renewed
        fake.gone_subscriptions.add("sub-2")  # ... and one Graph dropped meanwhile
        renewed = await subs(http).ensure()
    patches = [r for r in fake.requests if r.method == "PATCH"]
    assert [r.url.path for r in patches] == [
        "/v1.0/subscriptions/sub-1",
        "/v1.0/subscriptions/sub-2",
        "/v1.0/subscriptions/sub-3",
    ]
    assert orjson.loads(patches[0].content) == {"expirationDateTime": "2026-03-07T10:00:00Z"}
    assert [c.channel_id for c in renewed] == ["sub-1", "sub-4", "sub-3"]
    assert {c.channel_id for c in store.channels("graph", OWNER)} == {"sub-1", "sub-3", "sub-4"}
    assert all(
        c.expires_ms == int((rig.now + dt.timedelta(days=3)).timestamp() * 1000) for c in renewed
    )


# --- the endpoint ----------------------------------------------------------------------------


def notification(sid: str, state: str) -> bytes:
    return orjson.dumps(
        {
            "value": [
                {
                    "subscriptionId": sid,
                    "subscriptionExpirationDateTime": "2026-03-05T09:00:00Z",
                    "changeType": "created",
                    "resource": "Users/u-1/Messages/AAMkAD",
                    "resourceData": {"@odata.type": "#Microsoft.Graph.Message", "id": "AAMkAD"},
                    "clientState": state,
                    "tenantId": "t-1",
                }
            ]
        }
    )


class Endpoint:
    def __init__(self, store: CaptureStore, fake: FakeGraph, publisher: Publisher) -> None:
        self.store, self.fake, self.publisher = store, fake, publisher
        self.ready = True
        expires = int((NOW + dt.timedelta(days=3)).timestamp() * 1000)
        store.save_channel(Channel("sub-1", OWNER, "graph", graph.RESOURCES["inbox"], expires))

    async def post(self, body: bytes = b"", query: str = "") -> httpx.Response:
        async def no_sleep(_s: float) -> None:
            return None

        async with httpx.AsyncClient(transport=httpx.MockTransport(self.fake.handler)) as ms:
            push = graph.GraphPush(
                ms, OAUTH, SECRET, api_base=API, sleep=no_sleep, now=lambda: NOW,
                ready=lambda: self.ready,
            )  # fmt: skip
            app = build_app(matcher(), self.publisher, self.store, "s", graph=push)
            asgi = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=asgi, base_url="http://capture") as capture:
                return await capture.post("/capture/graph/notify" + query, content=body)


async def test_the_validation_handshake_echoes_the_token_as_plain_text(
    store: CaptureStore,
) -> None:
    endpoint = Endpoint(store, FakeGraph(), Publisher())
    token = "Validation: Testing client application reachability for subscription Request-Id: 1"
    resp = await endpoint.post(query="?" + urllib.parse.urlencode({"validationToken": token}))
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    assert resp.text == token
    assert (await endpoint.post(query="?validationToken=")).status_code == 400


async def test_a_notification_syncs_the_users_mailbox_and_calendar(store: CaptureStore) -> None:
    fake = FakeGraph()
    endpoint = Endpoint(store, fake, Publisher())
    fake.put("inbox", message("in0"))
    resp = await endpoint.post(notification("sub-1", graph.client_state(SECRET, OWNER)))
    assert resp.status_code == 202
    assert [e.thread_id for e in emails(endpoint.publisher.events)] == ["conv-in0"]
    assert set(cursors(store)) == {"inbox", "sent", "events", "events_window"}


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (notification("sub-1", "forged"), 403, "bad_client_state"),
        (
            notification("sub-1", graph.client_state("another-secret", OWNER)),
            403,
            "bad_client_state",
        ),
        (
            notification("sub-1", graph.client_state(SECRET, "someone@else.io")),
            403,
            "bad_client_state",
        ),
        (notification("sub-9", graph.client_state(SECRET, OWNER)), 403, "bad_client_state"),
        (b"not json", 400, "bad_body"),
        (b'{"value": 1}', 400, "bad_body"),
    ],
)
async def test_a_forged_notification_is_refused_without_calling_graph(
    store: CaptureStore, body: bytes, status: int, reason: str
) -> None:
    fake = FakeGraph()
    endpoint = Endpoint(store, fake, Publisher())
    fake.put("inbox", message("in0"))
    resp = await endpoint.post(body)
    assert (resp.status_code, resp.json()) == (status, {"error": reason})
    assert fake.requests == []
    assert endpoint.publisher.events == []


async def test_the_endpoint_answers_503_until_ready_and_when_the_sync_fails(
    store: CaptureStore,
) -> None:
    fake = FakeGraph()
    endpoint = Endpoint(store, fake, Publisher(fail_on_call=1))
    fake.put("inbox", message("in0"))
    body = notification("sub-1", graph.client_state(SECRET, OWNER))
    endpoint.ready = False
    assert (await endpoint.post(body)).status_code == 503
    assert fake.requests == []
    endpoint.ready = True
    assert (await endpoint.post(body)).status_code == 503
    assert (await endpoint.post(body)).status_code == 202
    assert [e.thread_id for e in emails(endpoint.publisher.events)] == ["conv-in0"]


async def test_disconnect_deletes_the_subscriptions_too(store: CaptureStore) -> None:
    fake = FakeGraph()
    endpoint = Endpoint(store, fake, Publisher())
    assert store.disconnect(OWNER) == 2
    resp = await endpoint.post(notification("sub-1", graph.client_state(SECRET, OWNER)))
    assert resp.status_code == 403
    assert fake.requests == []
