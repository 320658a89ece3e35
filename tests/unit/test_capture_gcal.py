"""The Google Calendar connector against a stand-in of the Calendar API and Google's token
endpoint that follows their documented requests and responses (an ``httpx.MockTransport``
handler): ``events.watch`` channels and their notifications (channel token verified, ``sync``
and ``exists``), ``events.list`` with ``singleEvents`` and ``syncToken`` paging, ``410 Gone`` ->
full sync, attendees' ``responseStatus`` -> meeting status, 401 -> one refresh, 429 ->
Retry-After, and a restart in the middle of a sync."""

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

from producer.capture import gcal
from producer.capture.api import ApiError, OAuthClient
from producer.capture.app import build_app
from producer.capture.matcher import DealIndex, Matcher, WorkspacePolicy
from producer.capture.store import CaptureStore, Channel, TokenCipher
from schemas.events import DealCreated, DealEvent, MeetingLogged, MeetingStatus

OWNER = "rep@vendor.io"
NOW = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
SECRET = "channel-secret-for-tests"
OAUTH = OAuthClient("client-1", "client-secret-1", "https://oauth2.test/token")
API = "https://calendar.test/calendar/v3"
HOOK = "https://capture.example.com/capture/gcal/notify"


def iso(t: dt.datetime) -> str:
    return t.isoformat()


def event(
    eid: str,
    start: dt.datetime,
    *,
    minutes: int = 30,
    answers: dict[str, str] | None = None,
    status: str = "confirmed",
) -> dict[str, Any]:
    """An event resource as ``events.list`` returns it (the fields capture reads and a few
    it must ignore)."""
    people = [{"email": OWNER, "self": True, "organizer": True, "responseStatus": "accepted"}]
    people += [{"email": a, "responseStatus": r} for a, r in (answers or {}).items()]
    people.append({"email": "room-1@resource.calendar.google.com", "resource": True})
    return {
        "kind": "calendar#event",
        "id": eid,
        "status": status,
        "summary": "Pricing review",
        "description": "CONFIDENTIAL agenda",
        "start": {"dateTime": iso(start), "timeZone": "UTC"},
        "end": {"dateTime": iso(start + dt.timedelta(minutes=minutes)), "timeZone": "UTC"},
        "organizer": {"email": OWNER, "self": True},
        "attendees": people,
        "updated": iso(NOW),
    }


@dataclass
class FakeCalendar:
    """The Calendar API as documented: every insert or change of an event bumps the calendar's
    version; ``events.list`` with ``syncToken`` returns the events changed since (cancelled ones
    too), ``410`` with ``fullSyncRequired`` for a token older than ``oldest_token``, ``400`` when
    a sync token comes with ``timeMin``/``timeMax``; without one, the events overlapping
    ``[timeMin, timeMax)`` (cancelled left out); ``nextSyncToken`` on the last page only;
    ``events.watch`` and ``channels.stop``; bearer tokens checked; scripted 429s; the token
    endpoint's refresh-token grant."""

    page_size: int = 2
    events: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    version: int = 0
    oldest_token: int = 0
    valid_token: str = "access-1"
    next_token: str = "access-2"
    throttle: list[str] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    refreshes: list[dict[str, str]] = field(default_factory=list)
    watches: list[dict[str, Any]] = field(default_factory=list)
    stopped: list[dict[str, Any]] = field(default_factory=list)

    def put(self, ev: dict[str, Any]) -> None:
        self.version += 1
        self.events[ev["id"]] = (self.version, ev)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        url = request.url
        if url.host == "oauth2.test":
            form = dict(urllib.parse.parse_qsl(request.content.decode()))
            self.refreshes.append(form)
            if form.get("grant_type") != "refresh_token" or form.get("refresh_token") != "r-1":
                return httpx.Response(400, json={"error": "invalid_grant"})
            self.valid_token = self.next_token
            return httpx.Response(200, json={"access_token": self.next_token, "expires_in": 3599})
        if request.headers.get("authorization") != f"Bearer {self.valid_token}":
            return httpx.Response(401, json={"error": {"code": 401, "status": "UNAUTHENTICATED"}})
        path = url.path.removeprefix("/calendar/v3")
        if path in self.throttle:
            self.throttle.remove(path)
            return httpx.Response(429, headers={"Retry-After": "7"}, json={"error": {"code": 429}})
        if path == "/calendars/primary/events/watch" and request.method == "POST":
            body = orjson.loads(request.content)
            assert body["type"] == "web_hook"
            self.watches.append(body)
            expires = int((NOW + dt.timedelta(seconds=int(body["params"]["ttl"]))).timestamp())
            return httpx.Response(
                200,
                json={
                    "kind": "api#channel",
                    "id": body["id"],
                    "resourceId": f"res-{len(self.watches)}",
                    "resourceUri": f"{API}/calendars/primary/events?alt=json",
                    "token": body["token"],
                    "expiration": str(expires * 1000),
                },
            )
        if path == "/channels/stop" and request.method == "POST":
            self.stopped.append(orjson.loads(request.content))
            return httpx.Response(204)
        if path == "/calendars/primary/events" and request.method == "GET":
            return self._list(url.params)
        return httpx.Response(404, json={"error": {"code": 404}})

    def _list(self, params: httpx.QueryParams) -> httpx.Response:
        assert params.get("singleEvents") == "true"
        token = params.get("syncToken")
        if token is not None:
            if "timeMin" in params or "timeMax" in params:
                reason = {"reason": "syncTokenWithRequestRestrictions"}
                return httpx.Response(400, json={"error": {"code": 400, "errors": [reason]}})
            since = int(token.removeprefix("st-"))
            if since < self.oldest_token:
                reason = {"domain": "global", "reason": "fullSyncRequired"}
                return httpx.Response(
                    410,
                    json={"error": {"code": 410, "errors": [reason], "message": "Gone"}},
                )
            found = [ev for v, ev in sorted(self.events.values(), key=lambda x: x[0]) if v > since]
        else:
            low = dt.datetime.fromisoformat(params["timeMin"]) if "timeMin" in params else None
            high = dt.datetime.fromisoformat(params["timeMax"]) if "timeMax" in params else None
            found = [
                ev
                for _v, ev in sorted(self.events.values(), key=lambda x: x[0])
                if ev["status"] != "cancelled"
                and (low is None or dt.datetime.fromisoformat(ev["end"]["dateTime"]) > low)
                and (high is None or dt.datetime.fromisoformat(ev["start"]["dateTime"]) < high)
            ]
        offset = int(params.get("pageToken", "0"))
        size = min(self.page_size, int(params.get("maxResults", "250")))
        body: dict[str, Any] = {
            "kind": "calendar#events",
            "summary": OWNER,
            "items": found[offset : offset + size],
        }
        if offset + size < len(found):
            body["nextPageToken"] = str(offset + size)
        else:
            body["nextSyncToken"] = f"st-{self.version}"
        return httpx.Response(200, json=body)

    def lists(self) -> list[httpx.QueryParams]:
        return [
            r.url.params
            for r in self.requests
            if r.url.path.endswith("/events") and r.method == "GET"
        ]


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
            close_date="2026-05-01", owner_id="u", account_domains=("acme.com",),
        )  # type: ignore[arg-type]
    )  # fmt: skip
    return Matcher(idx, {"ws": WorkspacePolicy(frozenset({"vendor.io"}))})


def meetings(events: Sequence[DealEvent]) -> list[MeetingLogged]:
    return [e for e in events if isinstance(e, MeetingLogged)]


def statuses(events: Sequence[DealEvent]) -> dict[str, MeetingStatus]:
    return {e.meeting_id: e.status for e in meetings(events)}


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = CaptureStore(
        tmp_path / "capture.db", TokenCipher(SecretStr(Fernet.generate_key().decode()))
    )
    s.connect(
        OWNER,
        "gcal",
        "ws",
        orjson.dumps({"access_token": "access-1", "refresh_token": "r-1"}).decode(),
    )
    yield s
    s.close()


class Rig:
    def __init__(self, store: CaptureStore, fake: FakeCalendar, publisher: Publisher) -> None:
        self.store, self.fake, self.publisher = store, fake, publisher
        self.sleeps: list[float] = []
        self.now = NOW

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def client(self, http: httpx.AsyncClient) -> gcal.CalendarClient:
        conn = self.store.connection(OWNER, "gcal")
        assert conn is not None
        return gcal.CalendarClient(
            http, OAUTH, orjson.loads(conn.tokens), api_base=API,
            on_tokens=lambda t: self.store.save_tokens(OWNER, "gcal", orjson.dumps(t).decode()),
            sleep=self.sleep, now=lambda: self.now,
        )  # fmt: skip

    async def run(self) -> gcal.SyncResult:
        async with httpx.AsyncClient(transport=httpx.MockTransport(self.fake.handler)) as http:
            sync = gcal.CalendarSync(
                self.client(http), self.store, matcher(), self.publisher,
                user_id=OWNER, workspace_id="ws", owner=OWNER, now=lambda: self.now,
                full_sync_days=7,
            )  # fmt: skip
            return await sync.run()


def cursor(store: CaptureStore) -> str | None:
    conn = store.connection(OWNER, "gcal")
    assert conn is not None
    return conn.cursor


# --- the status of a meeting ------------------------------------------------------------------


AT = NOW + dt.timedelta(days=1)
PAST = NOW - dt.timedelta(hours=3)


@pytest.mark.parametrize(
    ("ev", "expected"),
    [
        (event("e", AT, answers={"ana@acme.com": "needsAction"}), MeetingStatus.SCHEDULED),
        (event("e", AT, answers={"ana@acme.com": "accepted"}), MeetingStatus.SCHEDULED),
        (event("e", PAST, answers={"ana@acme.com": "accepted"}), MeetingStatus.HELD),
        (event("e", PAST, answers={"ana@acme.com": "tentative"}), MeetingStatus.HELD),
        (event("e", PAST, answers={"ana@acme.com": "needsAction"}), MeetingStatus.NO_SHOW),
        (
            event("e", PAST, answers={"ana@acme.com": "declined", "bo@acme.com": "accepted"}),
            MeetingStatus.HELD,
        ),
        (event("e", AT, answers={"ana@acme.com": "declined"}), MeetingStatus.CANCELLED),
        (
            event("e", AT, answers={"ana@acme.com": "accepted"}, status="cancelled"),
            MeetingStatus.CANCELLED,
        ),
    ],
)
def test_attendees_answers_decide_the_status(ev: dict[str, Any], expected: MeetingStatus) -> None:
    meeting = gcal.meeting_of("ws", OWNER, ev, NOW)
    assert meeting is not None
    assert meeting.status is expected


def test_held_keeps_the_attendees_who_came_and_is_observed_at_its_end() -> None:
    ev = event("e", PAST, answers={"ana@acme.com": "declined", "Bo@Acme.com": "accepted"})
    meeting = gcal.meeting_of("ws", OWNER, ev, NOW)
    assert meeting is not None
    assert meeting.attendees == ("bo@acme.com",)  # not the owner, the room, or who declined
    assert meeting.observed_at == PAST + dt.timedelta(minutes=30)
    scheduled = gcal.meeting_of("ws", OWNER, event("e", AT, answers={"ana@acme.com": "x"}), NOW)
    assert scheduled is not None
    assert scheduled.observed_at == NOW  # before its start, so it holds off the rules


def test_all_day_internal_and_malformed_events_are_not_meetings() -> None:
    all_day = event("e", AT, answers={"ana@acme.com": "accepted"})
    all_day["start"], all_day["end"] = {"date": "2026-03-03"}, {"date": "2026-03-04"}
    assert gcal.meeting_of("ws", OWNER, all_day, NOW) is None
    assert gcal.meeting_of("ws", OWNER, event("e", AT), NOW) is None  # only the owner and a room
    assert gcal.meeting_of("ws", OWNER, {"id": "e", "status": "cancelled"}, NOW) is None
    bad = event("e", AT, answers={"ana@acme.com": "accepted"})
    bad["start"] = {"dateTime": "tomorrow"}
    assert gcal.meeting_of("ws", OWNER, bad, NOW) is None


def test_a_buyer_organizer_is_an_attendee() -> None:
    ev = event("e", PAST)
    ev["organizer"] = {"email": "ana@acme.com"}
    meeting = gcal.meeting_of("ws", OWNER, ev, NOW)
    assert meeting is not None
    assert (meeting.status, meeting.attendees) == (MeetingStatus.HELD, ("ana@acme.com",))


# --- sync ------------------------------------------------------------------------------------


async def test_first_sync_is_a_bounded_full_sync_that_saves_the_sync_token(
    store: CaptureStore,
) -> None:
    fake = FakeCalendar(page_size=2)
    fake.put(event("old", NOW - dt.timedelta(days=10), answers={"ana@acme.com": "accepted"}))
    fake.put(event("held", PAST, answers={"ana@acme.com": "accepted"}))
    fake.put(event("next", AT, answers={"ana@acme.com": "needsAction"}))
    fake.put(event("inner", AT, answers={"cto@vendor.io": "accepted"}))  # internal
    fake.put(event("later", AT + dt.timedelta(days=2), answers={"bo@acme.com": "accepted"}))
    rig = Rig(store, fake, Publisher())
    result = await rig.run()
    full = fake.lists()[0]
    assert full.get("timeMin") == iso(NOW - dt.timedelta(days=7))
    assert "syncToken" not in full
    assert statuses(rig.publisher.events) == {
        "held": MeetingStatus.HELD,
        "next": MeetingStatus.SCHEDULED,
        "later": MeetingStatus.SCHEDULED,
    }
    assert {e.deal_id for e in rig.publisher.events} == {"d1"}  # matched by account domain
    assert result.full_sync
    assert result.cursor == cursor(store) == "st-5"
    # the due pass re-reads the meetings that ended lately: already captured, not republished
    assert len(rig.publisher.events) == 3


async def test_incremental_sync_pages_from_the_sync_token(store: CaptureStore) -> None:
    fake = FakeCalendar(page_size=2)
    fake.put(event("e0", AT, answers={"ana@acme.com": "accepted"}))
    store.save_cursor(OWNER, "gcal", f"st-{fake.version}")  # e0 was synced before
    for n in range(1, 6):
        fake.put(event(f"e{n}", AT + dt.timedelta(hours=n), answers={"ana@acme.com": "accepted"}))
    rig = Rig(store, fake, Publisher())
    result = await rig.run()
    incremental = [p for p in fake.lists() if "syncToken" in p]
    assert [p.get("pageToken") for p in incremental] == [None, "2", "4"]
    assert all(p["syncToken"] == "st-1" for p in incremental)
    assert sorted(statuses(rig.publisher.events)) == ["e1", "e2", "e3", "e4", "e5"]
    assert not result.full_sync
    assert cursor(store) == "st-6"
    # a moved meeting is a change: rescheduled, published again with its new start
    fake.put(event("e2", AT + dt.timedelta(days=3), answers={"ana@acme.com": "accepted"}))
    fake.put(event("e3", AT, answers={"ana@acme.com": "accepted"}, status="cancelled"))
    again = Rig(store, fake, Publisher())
    await again.run()
    assert [(e.meeting_id, e.status, e.start) for e in meetings(again.publisher.events)] == [
        ("e2", MeetingStatus.SCHEDULED, AT + dt.timedelta(days=3)),
        ("e3", MeetingStatus.CANCELLED, AT),
    ]


async def test_a_scheduled_meeting_becomes_held_once_it_has_ended(store: CaptureStore) -> None:
    fake = FakeCalendar()
    start = NOW + dt.timedelta(hours=2)
    fake.put(event("m", start, answers={"ana@acme.com": "accepted"}))
    fake.put(event("n", start, answers={"bo@acme.com": "needsAction"}))
    rig = Rig(store, fake, Publisher())
    await rig.run()
    assert statuses(rig.publisher.events) == {
        "m": MeetingStatus.SCHEDULED,
        "n": MeetingStatus.SCHEDULED,
    }
    rig.now = NOW + dt.timedelta(hours=4)  # nothing changed in the calendar meanwhile
    rig.publisher = Publisher()
    await rig.run()
    assert statuses(rig.publisher.events) == {"m": MeetingStatus.HELD, "n": MeetingStatus.NO_SHOW}
    held = meetings(rig.publisher.events)[0]
    assert held.occurred_at == start + dt.timedelta(minutes=30)
    rig.publisher = Publisher()
    await rig.run()  # and only once
    assert rig.publisher.events == []


async def test_410_gone_triggers_a_full_sync(store: CaptureStore) -> None:
    fake = FakeCalendar(oldest_token=3)
    store.save_cursor(OWNER, "gcal", "st-1")  # expired
    fake.put(event("a", NOW - dt.timedelta(days=9), answers={"ana@acme.com": "accepted"}))
    fake.put(event("b", AT, answers={"ana@acme.com": "accepted"}))
    fake.put(event("c", AT, answers={"ana@acme.com": "accepted"}))
    rig = Rig(store, fake, Publisher())
    result = await rig.run()
    first, second, *_ = fake.lists()
    assert first.get("syncToken") == "st-1"
    assert "syncToken" not in second
    assert second.get("timeMin") == iso(NOW - dt.timedelta(days=7))
    assert result.full_sync
    assert sorted(statuses(rig.publisher.events)) == ["b", "c"]
    assert cursor(store) == "st-3"


async def test_a_restart_in_the_middle_of_a_sync_loses_and_duplicates_nothing(
    store: CaptureStore,
) -> None:
    fake = FakeCalendar(page_size=2)
    fake.put(event("e0", AT, answers={"ana@acme.com": "accepted"}))
    store.save_cursor(OWNER, "gcal", "st-1")
    for n in range(1, 8):
        fake.put(event(f"e{n}", AT, answers={"ana@acme.com": "accepted"}))
    first = Rig(store, fake, Publisher(fail_on_call=3))  # two pages out, then the crash
    with pytest.raises(ConnectionError):
        await first.run()
    assert len(first.publisher.events) == 4
    assert cursor(store) == "st-1"  # not moved: the restart reads the same changes again
    restarted = Rig(store, fake, Publisher())
    await restarted.run()
    published = meetings(first.publisher.events) + meetings(restarted.publisher.events)
    assert sorted(e.meeting_id for e in published) == [f"e{n}" for n in range(1, 8)]
    assert len({e.event_id for e in published}) == 7
    assert cursor(store) == "st-8"


async def test_the_same_meeting_status_has_the_same_event_id(store: CaptureStore) -> None:
    fake = FakeCalendar()
    fake.put(event("e1", AT, answers={"ana@acme.com": "accepted"}))
    one = Rig(store, fake, Publisher())
    await one.run()
    store.disconnect(OWNER)  # a reconnect starts from nothing: everything is read again
    store.connect(OWNER, "gcal", "ws", '{"access_token": "access-1", "refresh_token": "r-1"}')
    two = Rig(store, fake, Publisher())
    await two.run()
    assert [e.event_id for e in one.publisher.events] == [e.event_id for e in two.publisher.events]


async def test_401_refreshes_the_token_once_and_429_waits_retry_after(
    store: CaptureStore,
) -> None:
    fake = FakeCalendar(valid_token="stale", throttle=["/calendars/primary/events"])
    fake.put(event("e1", AT, answers={"ana@acme.com": "accepted"}))
    rig = Rig(store, fake, Publisher())
    await rig.run()
    assert [f["grant_type"] for f in fake.refreshes] == ["refresh_token"]
    assert rig.sleeps == [7.0]
    assert statuses(rig.publisher.events) == {"e1": MeetingStatus.SCHEDULED}
    conn = store.connection(OWNER, "gcal")
    assert conn is not None
    assert orjson.loads(conn.tokens) == {
        "access_token": "access-2",
        "refresh_token": "r-1",
        "expires_in": 3599,
    }


async def test_a_revoked_grant_is_an_error_with_its_code(store: CaptureStore) -> None:
    store.save_tokens(OWNER, "gcal", '{"access_token": "old", "refresh_token": "revoked"}')
    rig = Rig(store, FakeCalendar(), Publisher())
    with pytest.raises(ApiError) as err:
        await rig.run()
    assert (err.value.status, err.value.code) == (400, "invalid_grant")


# --- watch channels --------------------------------------------------------------------------


def watcher(rig: Rig, http: httpx.AsyncClient, ids: list[str]) -> gcal.CalendarWatch:
    return gcal.CalendarWatch(
        rig.client(http), rig.store, user_id=OWNER, address=HOOK, secret=SECRET,
        ttl_seconds=7 * 86400, renew_before_seconds=86400, now=lambda: rig.now,
        new_id=lambda: ids.pop(0),
    )  # fmt: skip


async def test_a_channel_is_opened_once_and_renewed_before_it_expires(
    store: CaptureStore,
) -> None:
    fake = FakeCalendar()
    rig = Rig(store, fake, Publisher())
    ids = ["ch-1", "ch-2"]
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as http:
        first = await watcher(rig, http, ids).ensure()
        assert fake.watches == [
            {
                "id": "ch-1",
                "type": "web_hook",
                "address": HOOK,
                "token": gcal.channel_token(SECRET, "ch-1"),
                "params": {"ttl": str(7 * 86400)},
            }
        ]
        assert first == store.channel("ch-1")
        assert first.resource_id == "res-1"
        assert first.expires_ms == int((NOW + dt.timedelta(days=7)).timestamp() * 1000)
        rig.now = NOW + dt.timedelta(days=5)
        assert await watcher(rig, http, ids).ensure() == first  # still two days to go
        assert len(fake.watches) == 1
        rig.now = NOW + dt.timedelta(days=6, hours=1)  # within a day of its expiration
        second = await watcher(rig, http, ids).ensure()
    assert second.channel_id == "ch-2"
    assert fake.stopped == [{"id": "ch-1", "resourceId": "res-1"}]
    assert store.channels("gcal") == [second]


# --- notifications and the endpoint ----------------------------------------------------------


def headers(channel_id: str, token: str, state: str = "exists") -> dict[str, str]:
    return {
        "X-Goog-Channel-ID": channel_id,
        "X-Goog-Channel-Token": token,
        "X-Goog-Channel-Expiration": "Mon, 09 Mar 2026 09:00:00 GMT",
        "X-Goog-Resource-ID": "res-1",
        "X-Goog-Resource-URI": f"{API}/calendars/primary/events?alt=json",
        "X-Goog-Resource-State": state,
        "X-Goog-Message-Number": "2",
    }


class Endpoint:
    """The capture app with Calendar on, its outgoing calls going to the stand-in."""

    def __init__(self, store: CaptureStore, fake: FakeCalendar, publisher: Publisher) -> None:
        self.store, self.fake, self.publisher = store, fake, publisher
        self.ready = True
        expires = int((NOW + dt.timedelta(days=7)).timestamp() * 1000)
        store.save_channel(Channel("ch-1", OWNER, "gcal", "res-1", expires))
        store.save_cursor(OWNER, "gcal", f"st-{fake.version}")

    async def post(self, sent: dict[str, str]) -> httpx.Response:
        async def no_sleep(_s: float) -> None:
            return None

        async with httpx.AsyncClient(transport=httpx.MockTransport(self.fake.handler)) as google:
            push = gcal.CalendarPush(
                google, OAUTH, SECRET, api_base=API, sleep=no_sleep, now=lambda: NOW,
                ready=lambda: self.ready,
            )  # fmt: skip
            app = build_app(matcher(), self.publisher, self.store, "s", gcal=push)
            asgi = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=asgi, base_url="http://capture") as capture:
                return await capture.post("/capture/gcal/notify", headers=sent)


async def test_a_notification_syncs_the_calendar_of_its_channel(store: CaptureStore) -> None:
    fake = FakeCalendar()
    endpoint = Endpoint(store, fake, Publisher())
    fake.put(event("e1", AT, answers={"ana@acme.com": "accepted"}))
    resp = await endpoint.post(headers("ch-1", gcal.channel_token(SECRET, "ch-1")))
    assert resp.status_code == 204
    assert statuses(endpoint.publisher.events) == {"e1": MeetingStatus.SCHEDULED}
    assert cursor(store) == f"st-{fake.version}"


async def test_the_sync_message_of_a_new_channel_is_acknowledged_without_reading(
    store: CaptureStore,
) -> None:
    fake = FakeCalendar()
    endpoint = Endpoint(store, fake, Publisher())
    sent = headers("ch-1", gcal.channel_token(SECRET, "ch-1"), state="sync")
    assert (await endpoint.post(sent)).status_code == 204
    assert fake.requests == []


@pytest.mark.parametrize(
    ("sent", "status", "reason"),
    [
        (headers("ch-1", ""), 403, "bad_token"),
        (headers("ch-1", "forged"), 403, "bad_token"),
        (headers("ch-1", gcal.channel_token("another-secret", "ch-1")), 403, "bad_token"),
        (headers("ch-9", gcal.channel_token(SECRET, "ch-9")), 403, "bad_token"),  # unknown
        ({}, 403, "bad_token"),
        (headers("ch-1", gcal.channel_token(SECRET, "ch-1"), state="updated"), 400, "bad_state"),
    ],
)
async def test_a_forged_notification_is_refused_without_calling_google(
    store: CaptureStore, sent: dict[str, str], status: int, reason: str
) -> None:
    fake = FakeCalendar()
    endpoint = Endpoint(store, fake, Publisher())
    fake.put(event("e1", AT, answers={"ana@acme.com": "accepted"}))
    resp = await endpoint.post(sent)
    assert (resp.status_code, resp.json()) == (status, {"error": reason})
    assert fake.requests == []
    assert endpoint.publisher.events == []


async def test_the_endpoint_answers_503_until_ready_and_when_the_sync_fails(
    store: CaptureStore,
) -> None:
    fake = FakeCalendar()
    endpoint = Endpoint(store, fake, Publisher(fail_on_call=1))
    fake.put(event("e1", AT, answers={"ana@acme.com": "accepted"}))
    sent = headers("ch-1", gcal.channel_token(SECRET, "ch-1"))
    endpoint.ready = False
    assert (await endpoint.post(sent)).status_code == 503
    assert fake.requests == []
    endpoint.ready = True
    assert (await endpoint.post(sent)).status_code == 503  # the broker failed: Google retries
    assert (await endpoint.post(sent)).status_code == 204
    assert statuses(endpoint.publisher.events) == {"e1": MeetingStatus.SCHEDULED}


async def test_disconnect_deletes_the_channels_and_later_notifications_are_refused(
    store: CaptureStore,
) -> None:
    fake = FakeCalendar()
    endpoint = Endpoint(store, fake, Publisher())
    assert store.rows_of(OWNER) == 2  # the connection and its channel
    assert store.disconnect(OWNER) == 2
    assert store.rows_of(OWNER) == 0
    resp = await endpoint.post(headers("ch-1", gcal.channel_token(SECRET, "ch-1")))
    assert resp.status_code == 403
    assert fake.requests == []
