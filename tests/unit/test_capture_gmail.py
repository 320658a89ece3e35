"""The Gmail connector against a stand-in of the Gmail API and Google's token endpoint that
follows their documented requests and responses (an ``httpx.MockTransport`` handler): push
verification, history paging, metadata reads, the cursor saved after publishing, 404 -> bounded
full sync, 401 -> one refresh, 429 -> Retry-After, and a restart mid-sync."""

from __future__ import annotations

import base64
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

from producer.capture import gmail
from producer.capture.app import build_app
from producer.capture.matcher import DealIndex, Matcher, WorkspacePolicy
from producer.capture.service import check_config
from producer.capture.settings import CaptureSettings
from producer.capture.store import CaptureStore, TokenCipher
from schemas.events import DealCreated, DealEvent, Direction, EmailLogged
from vectoros.errors import ConfigError

OWNER = "rep@vendor.io"
NOW = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
PUSH_TOKEN = "push-token-for-tests"
OAUTH = gmail.OAuthClient("client-1", "client-secret-1", "https://oauth2.test/token")
API = "https://gmail.test/gmail/v1/users/me"


@dataclass
class Mail:
    id: str
    thread: str
    at_ms: int
    sender: str
    to: str


@dataclass
class FakeGmail:
    """Gmail as documented: a mailbox whose every added message is a history record (ids
    increasing); ``history.list`` pages ``page_size`` records after ``startHistoryId`` (404
    below ``oldest_history``); ``messages.get?format=metadata`` returns only the asked headers;
    bearer tokens checked; scripted 429s; the token endpoint's refresh-token grant."""

    page_size: int = 2
    mails: list[tuple[int, Mail]] = field(default_factory=list)
    oldest_history: int = 0
    valid_token: str = "access-1"
    next_token: str = "access-2"
    throttle: list[str] = field(default_factory=list)
    """Paths that answer one 429 (Retry-After: 7) before serving."""
    requests: list[httpx.Request] = field(default_factory=list)
    refreshes: list[dict[str, str]] = field(default_factory=list)
    history_id: int = 1000

    def add(self, mail: Mail) -> None:
        self.history_id += 1
        self.mails.append((self.history_id, mail))

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        url = request.url
        if url.host == "oauth2.test":
            form = dict(urllib.parse.parse_qsl(request.content.decode()))
            self.refreshes.append(form)
            if form.get("grant_type") != "refresh_token" or form.get("refresh_token") != "r-1":
                return httpx.Response(400, json={"error": "invalid_grant"})
            self.valid_token = self.next_token
            return httpx.Response(
                200,
                json={"access_token": self.next_token, "expires_in": 3599, "token_type": "Bearer"},
            )
        if request.headers.get("authorization") != f"Bearer {self.valid_token}":
            return httpx.Response(401, json={"error": {"code": 401, "status": "UNAUTHENTICATED"}})
        path = url.path.removeprefix("/gmail/v1/users/me")
        if path in self.throttle:
            self.throttle.remove(path)
            return httpx.Response(429, headers={"Retry-After": "7"}, json={"error": {"code": 429}})
        params = url.params
        if path == "/watch" and request.method == "POST":
            return httpx.Response(
                200, json={"historyId": str(self.history_id), "expiration": "1772700000000"}
            )
        if path == "/profile":
            return httpx.Response(
                200, json={"emailAddress": OWNER, "historyId": str(self.history_id)}
            )
        if path == "/history":
            assert params.get("historyTypes") == "messageAdded"
            start = int(params["startHistoryId"])
            if start < self.oldest_history:
                return httpx.Response(404, json={"error": {"code": 404, "message": "notFound"}})
            after = [(h, m) for h, m in self.mails if h > start]
            offset = int(params.get("pageToken", "0"))
            chunk = after[offset : offset + self.page_size]
            body: dict[str, Any] = {
                "history": [
                    {
                        "id": str(h),
                        "messages": [{"id": m.id, "threadId": m.thread}],
                        "messagesAdded": [{"message": {"id": m.id, "threadId": m.thread}}],
                    }
                    for h, m in chunk
                ],
                "historyId": str(self.history_id),
            }
            if offset + self.page_size < len(after):
                body["nextPageToken"] = str(offset + self.page_size)
            return httpx.Response(200, json=body)
        if path == "/messages":
            query = params["q"]
            assert query.startswith("after:")
            since_ms = int(query.removeprefix("after:")) * 1000
            found = [m for _h, m in self.mails if m.at_ms > since_ms]
            offset = int(params.get("pageToken", "0"))
            size = min(self.page_size, int(params.get("maxResults", "100")))
            chunk = found[offset : offset + size]
            body = {
                "messages": [{"id": m.id, "threadId": m.thread} for m in chunk],
                "resultSizeEstimate": len(found),
            }
            if offset + size < len(found):
                body["nextPageToken"] = str(offset + size)
            return httpx.Response(200, json=body)
        if path.startswith("/messages/"):
            assert params.get("format") == "metadata"
            wanted = {h.lower() for h in params.get_list("metadataHeaders")}
            mid = path.removeprefix("/messages/")
            for _h, m in self.mails:
                if m.id == mid:
                    headers = [
                        {"name": "From", "value": m.sender},
                        {"name": "To", "value": m.to},
                        {"name": "Subject", "value": "Pricing"},
                        {"name": "X-Body-Preview", "value": "CONFIDENTIAL"},
                    ]
                    return httpx.Response(
                        200,
                        json={
                            "id": m.id,
                            "threadId": m.thread,
                            "labelIds": ["INBOX"],
                            "internalDate": str(m.at_ms),
                            "payload": {
                                "mimeType": "multipart/alternative",
                                "headers": [h for h in headers if h["name"].lower() in wanted],
                            },
                        },
                    )
            return httpx.Response(404, json={"error": {"code": 404}})
        return httpx.Response(400, json={"error": {"code": 400}})

    def hits(self, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path.endswith(path)]


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


def mail(n: int, *, inbound: bool = True, minutes_ago: int = 60) -> Mail:
    at = int((NOW - dt.timedelta(minutes=minutes_ago)).timestamp() * 1000)
    if inbound:
        return Mail(f"m{n}", f"t{n}", at, "Ana <ana@acme.com>", f"Rep <{OWNER}>")
    return Mail(f"m{n}", f"t{n}", at, f"Rep <{OWNER}>", "Ana <ana@acme.com>, bo@acme.com")


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


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = CaptureStore(
        tmp_path / "capture.db", TokenCipher(SecretStr(Fernet.generate_key().decode()))
    )
    s.connect(
        "u-1",
        "gmail",
        "ws",
        orjson.dumps({"access_token": "access-1", "refresh_token": "r-1"}).decode(),
    )
    yield s
    s.close()


class Rig:
    def __init__(
        self,
        store: CaptureStore,
        fake: FakeGmail,
        publisher: Publisher,
        full_sync_max: int = 100,
        owner: str = OWNER,
    ) -> None:
        self.owner = owner
        self.store, self.fake, self.publisher = store, fake, publisher
        self.full_sync_max = full_sync_max
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def sync(self, http: httpx.AsyncClient) -> gmail.GmailSync:
        conn = self.store.connection("u-1", "gmail")
        assert conn is not None
        client = gmail.GmailClient(
            http,
            OAUTH,
            orjson.loads(conn.tokens),
            on_tokens=lambda t: self.store.save_tokens("u-1", "gmail", orjson.dumps(t).decode()),
            api_base=API,
            sleep=self.sleep,
            now=lambda: NOW,
        )
        return gmail.GmailSync(
            client, self.store, matcher(), self.publisher,
            user_id="u-1", workspace_id="ws", owner=self.owner, now=lambda: NOW, full_sync_days=7,
            full_sync_max=self.full_sync_max,
        )  # fmt: skip

    async def run(self) -> gmail.SyncResult:
        async with httpx.AsyncClient(transport=httpx.MockTransport(self.fake.handler)) as http:
            return await self.sync(http).run()


def emails(events: Sequence[DealEvent]) -> list[EmailLogged]:
    return [e for e in events if isinstance(e, EmailLogged)]


# --- push -----------------------------------------------------------------------------------


def push_body(data: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "message": {
                "data": base64.b64encode(orjson.dumps(data)).decode(),
                "messageId": "2070443601311540",
                "publishTime": "2026-03-02T09:00:00.000Z",
            },
            "subscription": "projects/p/subscriptions/gmail-push",
        }
    )


def test_push_is_decoded_when_the_token_matches() -> None:
    body = push_body({"emailAddress": "Rep@Vendor.io", "historyId": 9876543210})
    notice = gmail.decode_push(body, PUSH_TOKEN, PUSH_TOKEN)
    assert notice == gmail.PushNotice("rep@vendor.io", "9876543210", "2070443601311540")


@pytest.mark.parametrize("token", [None, "", "push-token-for-test", "x" * 40])
def test_forged_push_is_rejected(token: str | None) -> None:
    body = push_body({"emailAddress": OWNER, "historyId": 1})
    with pytest.raises(gmail.PushRejected) as err:
        gmail.decode_push(body, token, PUSH_TOKEN)
    assert err.value.reason == "bad_token"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"subscription": "s"}',
        b'{"message": {"data": "!!!not-base64"}}',
        push_body({"emailAddress": OWNER}),
        push_body({"emailAddress": "nobody", "historyId": 1}),
        push_body({"emailAddress": OWNER, "historyId": "abc"}),
    ],
)
def test_malformed_push_is_rejected(body: bytes) -> None:
    with pytest.raises(gmail.PushRejected) as err:
        gmail.decode_push(body, PUSH_TOKEN, PUSH_TOKEN)
    assert err.value.reason == "bad_body"


# --- watch ----------------------------------------------------------------------------------


async def test_watch_posts_the_topic_and_returns_history_id_and_expiration(
    store: CaptureStore,
) -> None:
    fake = FakeGmail()
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as http:
        client = gmail.GmailClient(http, OAUTH, {"access_token": "access-1"}, api_base=API)
        answer = await client.watch("projects/p/topics/gmail")
    assert answer == {"historyId": "1000", "expiration": "1772700000000"}
    (req,) = fake.hits("/watch")
    assert orjson.loads(req.content) == {
        "topicName": "projects/p/topics/gmail",
        "labelIds": ["INBOX", "SENT"],
        "labelFilterBehavior": "include",
    }


# --- sync -----------------------------------------------------------------------------------


async def test_history_is_paged_from_the_cursor_and_matched_with_direction(
    store: CaptureStore,
) -> None:
    fake = FakeGmail(page_size=2)
    fake.add(mail(0))
    store.save_cursor("u-1", "gmail", str(fake.history_id))  # m0 is before the cursor
    for n, inbound in [(1, True), (2, False), (3, True), (4, False), (5, True)]:
        fake.add(mail(n, inbound=inbound))
    rig = Rig(store, fake, Publisher())
    result = await rig.run()
    assert len(fake.hits("/history")) == 3  # 5 records, 2 a page
    assert [r.url.params.get("pageToken") for r in fake.hits("/history")] == [None, "2", "4"]
    got = {e.thread_id: e.direction for e in emails(rig.publisher.events)}
    assert got == {
        "t1": Direction.INBOUND, "t2": Direction.OUTBOUND, "t3": Direction.INBOUND,
        "t4": Direction.OUTBOUND, "t5": Direction.INBOUND,
    }  # fmt: skip
    outbound = next(e for e in emails(rig.publisher.events) if e.thread_id == "t2")
    assert outbound.participants == ("ana@acme.com", "bo@acme.com")  # To split into addresses
    assert outbound.subject is None  # subjects off by default
    assert result == gmail.SyncResult(5, 5, str(fake.history_id), full_sync=False)
    conn = store.connection("u-1", "gmail")
    assert conn is not None
    assert conn.cursor == str(fake.history_id)
    get = fake.hits("/messages/m1")[0]
    assert get.url.params.get_list("metadataHeaders") == list(gmail.METADATA_HEADERS)


async def test_the_owner_decides_direction_even_outside_the_own_domains(
    store: CaptureStore,
) -> None:
    owner = "rep@vendor-sales.com"  # not one of the workspace's own domains (vendor.io)
    fake = FakeGmail()
    store.save_cursor("u-1", "gmail", str(fake.history_id))
    fake.add(Mail("m1", "t1", 1772440000000, "Rep <REP@vendor-sales.com>", "ana@acme.com"))
    fake.add(Mail("m2", "t2", 1772440000000, "ana@acme.com", "Rep <rep@vendor-sales.com>"))
    rig = Rig(store, fake, Publisher(), owner=owner)
    await rig.run()
    out, back = emails(rig.publisher.events)
    assert (out.thread_id, out.direction) == ("t1", Direction.OUTBOUND)
    assert (back.thread_id, back.direction) == ("t2", Direction.INBOUND)
    assert out.participants == back.participants == ("ana@acme.com",)  # not the owner


async def test_the_cursor_is_saved_only_after_the_events_are_published(
    store: CaptureStore,
) -> None:
    fake = FakeGmail(page_size=10)
    store.save_cursor("u-1", "gmail", "1000")
    fake.add(mail(1))
    rig = Rig(store, fake, Publisher(fail_on_call=1))
    with pytest.raises(ConnectionError):
        await rig.run()
    conn = store.connection("u-1", "gmail")
    assert conn is not None
    assert conn.cursor == "1000"
    assert store.known("u-1", "gmail", ["m1"]) == set()  # not logged: the retry publishes it
    await rig.run()
    assert [e.thread_id for e in emails(rig.publisher.events)] == ["t1"]


async def test_a_restart_in_the_middle_of_a_sync_loses_and_duplicates_nothing(
    store: CaptureStore,
) -> None:
    fake = FakeGmail(page_size=2)
    store.save_cursor("u-1", "gmail", "1000")
    for n in range(1, 8):
        fake.add(mail(n))
    first = Rig(store, fake, Publisher(fail_on_call=3))  # pages 1 and 2 out, then the crash
    with pytest.raises(ConnectionError):
        await first.run()
    assert len(emails(first.publisher.events)) == 4
    conn = store.connection("u-1", "gmail")
    assert conn is not None
    assert conn.cursor == "1000"
    restarted = Rig(store, fake, Publisher())  # a new process: same store, new everything else
    await restarted.run()
    published = emails(first.publisher.events) + emails(restarted.publisher.events)
    assert sorted(e.thread_id or "" for e in published) == [f"t{n}" for n in range(1, 8)]
    assert len({e.event_id for e in published}) == 7
    assert len(fake.hits("/messages/m1")) == 1  # logged in the first run: not read again
    # a redelivery (the same push again) reads history, but publishes nothing new
    again = Rig(store, fake, Publisher())
    assert (await again.run()).messages == 0
    assert again.publisher.events == []


async def test_published_but_not_logged_is_republished_with_the_same_event_ids(
    store: CaptureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeGmail(page_size=10)
    store.save_cursor("u-1", "gmail", "1000")
    fake.add(mail(1))
    rig = Rig(store, fake, Publisher())

    def crash(*_a: Any) -> set[str]:
        raise RuntimeError("killed between publish and log")

    with monkeypatch.context() as m:
        m.setattr(store, "first_seen", crash)
        with pytest.raises(RuntimeError):
            await rig.run()
    await rig.run()
    first, second = emails(rig.publisher.events)
    assert first.event_id == second.event_id  # the monitor drops the second as a duplicate


async def test_expired_history_id_triggers_a_bounded_full_sync(store: CaptureStore) -> None:
    fake = FakeGmail(page_size=2, oldest_history=1003)
    store.save_cursor("u-1", "gmail", "900")  # older than the history Gmail still keeps
    fake.add(mail(1, minutes_ago=10 * 24 * 60))  # 10 days ago: outside the 7-day bound
    for n in range(2, 6):
        fake.add(mail(n))
    rig = Rig(store, fake, Publisher())
    result = await rig.run()
    assert result.full_sync
    assert result.cursor == str(fake.history_id)
    assert len(fake.hits("/history")) == 1  # the 404
    (listed, *rest) = fake.hits("/messages")
    assert listed.url.params["q"] == f"after:{int((NOW - dt.timedelta(days=7)).timestamp())}"
    assert len(rest) == 1  # 4 messages, 2 a page
    assert sorted(e.thread_id or "" for e in emails(rig.publisher.events)) == [
        "t2",
        "t3",
        "t4",
        "t5",
    ]
    conn = store.connection("u-1", "gmail")
    assert conn is not None
    assert conn.cursor == str(fake.history_id)
    fake.add(mail(6))  # and the next sync is incremental again from the new cursor
    rig2 = Rig(store, fake, Publisher())
    assert (await rig2.run()).full_sync is False
    assert [e.thread_id for e in emails(rig2.publisher.events)] == ["t6"]


async def test_full_sync_is_bounded_in_messages(store: CaptureStore) -> None:
    fake = FakeGmail(page_size=2)
    for n in range(1, 8):
        fake.add(mail(n))
    rig = Rig(store, fake, Publisher(), full_sync_max=3)
    result = await rig.run()
    assert result.messages == 3
    assert result.full_sync
    assert [r.url.params["maxResults"] for r in fake.hits("/messages")] == ["3", "1"]


async def test_401_refreshes_the_token_once_and_retries(store: CaptureStore) -> None:
    fake = FakeGmail(valid_token="stale")  # access-1 expired; the refresh gives access-2
    store.save_cursor("u-1", "gmail", "1000")
    fake.add(mail(1))
    rig = Rig(store, fake, Publisher())
    await rig.run()
    assert fake.refreshes == [
        {
            "grant_type": "refresh_token",
            "refresh_token": "r-1",
            "client_id": "client-1",
            "client_secret": "client-secret-1",
        }
    ]
    assert len(emails(rig.publisher.events)) == 1
    conn = store.connection("u-1", "gmail")
    assert conn is not None
    saved = orjson.loads(conn.tokens)
    assert saved["access_token"] == "access-2"
    assert saved["refresh_token"] == "r-1"


async def test_401_after_a_refresh_is_an_error_not_a_loop(store: CaptureStore) -> None:
    fake = FakeGmail(valid_token="stale", next_token="access-2")

    def never_valid(request: httpx.Request) -> httpx.Response:
        resp = fake.handler(request)
        fake.valid_token = "never"
        return resp

    store.save_cursor("u-1", "gmail", "1000")
    rig = Rig(store, fake, Publisher())
    async with httpx.AsyncClient(transport=httpx.MockTransport(never_valid)) as http:
        with pytest.raises(gmail.GmailError) as err:
            await rig.sync(http).run()
    assert err.value.status == 401
    assert len(fake.refreshes) == 1


async def test_revoked_refresh_token_is_an_error(store: CaptureStore) -> None:
    store.save_tokens("u-1", "gmail", '{"access_token": "old", "refresh_token": "revoked"}')
    store.save_cursor("u-1", "gmail", "1000")
    rig = Rig(store, FakeGmail(), Publisher())
    with pytest.raises(gmail.GmailError) as err:
        await rig.run()
    assert err.value.status == 400  # invalid_grant: the user must connect again


async def test_429_waits_retry_after_then_retries(store: CaptureStore) -> None:
    fake = FakeGmail(throttle=["/history", "/messages/m1"])
    store.save_cursor("u-1", "gmail", "1000")
    fake.add(mail(1))
    rig = Rig(store, fake, Publisher())
    await rig.run()
    assert rig.sleeps == [7.0, 7.0]
    assert len(fake.hits("/history")) == 2
    assert len(fake.hits("/messages/m1")) == 2
    assert len(emails(rig.publisher.events)) == 1


async def test_403_rate_limit_backs_off_and_retries_but_other_403_fails(
    store: CaptureStore,
) -> None:
    fake = FakeGmail()
    store.save_cursor("u-1", "gmail", "1000")
    fake.add(mail(1))
    reason = {"domain": "usageLimits", "reason": "userRateLimitExceeded"}
    limited = {"error": {"code": 403, "errors": [reason], "message": "User Rate Limit Exceeded"}}
    script = [limited, limited]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/history") and script:
            return httpx.Response(403, json=script.pop(0))
        return fake.handler(request)

    rig = Rig(store, fake, Publisher())
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        await rig.sync(http).run()
    assert rig.sleeps == [1.0, 2.0]  # no Retry-After: exponential backoff
    assert len(emails(rig.publisher.events)) == 1

    forbidden = {"error": {"code": 403, "errors": [{"reason": "insufficientPermissions"}]}}

    def denied(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json=forbidden)

    async with httpx.AsyncClient(transport=httpx.MockTransport(denied)) as http:
        with pytest.raises(gmail.GmailError) as err:
            await rig.sync(http).run()
    assert err.value.status == 403
    assert rig.sleeps == [1.0, 2.0]  # not retried


def test_retry_after_as_seconds_or_http_date_within_the_cap() -> None:
    assert gmail.retry_after_seconds("12", NOW, 60) == 12
    assert gmail.retry_after_seconds("3600", NOW, 60) == 60
    assert gmail.retry_after_seconds("Mon, 02 Mar 2026 09:00:30 GMT", NOW, 60) == 30
    assert gmail.retry_after_seconds("Mon, 02 Mar 2026 08:00:00 GMT", NOW, 60) == 0
    assert gmail.retry_after_seconds(None, NOW, 60) == 1
    assert gmail.retry_after_seconds("soon", NOW, 60) == 1


def test_metadata_without_a_sender_is_skipped() -> None:
    message = {"id": "m1", "threadId": "t1", "internalDate": "1", "payload": {"headers": []}}
    assert gmail.captured_email("ws", OWNER, message) is None


# --- the push endpoint of the capture service -----------------------------------------------


class Endpoint:
    """The capture app with Gmail on, its outgoing calls going to the stand-in."""

    def __init__(self, store: CaptureStore, fake: FakeGmail, publisher: Publisher) -> None:
        self.store, self.fake, self.publisher = store, fake, publisher
        self.ready = True
        store.connect(OWNER, "gmail", "ws", '{"access_token": "access-1", "refresh_token": "r-1"}')
        store.save_cursor(OWNER, "gmail", str(fake.history_id))

    async def post(self, body: bytes, token: str | None = PUSH_TOKEN) -> httpx.Response:
        async def no_sleep(_s: float) -> None:
            return None

        transport = httpx.MockTransport(self.fake.handler)
        async with httpx.AsyncClient(transport=transport) as google:
            push = gmail.GmailPush(
                google, OAUTH, PUSH_TOKEN, api_base=API, sleep=no_sleep, now=lambda: NOW,
                ready=lambda: self.ready,
            )  # fmt: skip
            app = build_app(matcher(), self.publisher, self.store, "s", gmail=push)
            asgi = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=asgi, base_url="http://capture") as capture:
                query = "" if token is None else "?" + urllib.parse.urlencode({"token": token})
                return await capture.post("/capture/gmail/push" + query, content=body)


async def test_push_endpoint_syncs_the_mailbox_and_saves_its_cursor(store: CaptureStore) -> None:
    fake = FakeGmail()
    endpoint = Endpoint(store, fake, Publisher())
    fake.add(mail(1))
    resp = await endpoint.post(push_body({"emailAddress": OWNER, "historyId": fake.history_id}))
    assert resp.status_code == 204
    assert [e.thread_id for e in emails(endpoint.publisher.events)] == ["t1"]
    conn = store.connection(OWNER, "gmail")
    assert conn is not None
    assert conn.cursor == str(fake.history_id)


@pytest.mark.parametrize(("token", "status"), [(None, 403), ("forged", 403)])
async def test_push_endpoint_rejects_a_forged_push_without_calling_gmail(
    store: CaptureStore, token: str | None, status: int
) -> None:
    fake = FakeGmail()
    endpoint = Endpoint(store, fake, Publisher())
    fake.add(mail(1))
    resp = await endpoint.post(push_body({"emailAddress": OWNER, "historyId": 1}), token)
    assert resp.status_code == status
    assert resp.json() == {"error": "bad_token"}
    assert fake.requests == []
    assert endpoint.publisher.events == []


async def test_push_endpoint_for_a_disconnected_mailbox_is_acknowledged(
    store: CaptureStore,
) -> None:
    fake = FakeGmail()
    endpoint = Endpoint(store, fake, Publisher())
    store.disconnect(OWNER)
    resp = await endpoint.post(push_body({"emailAddress": OWNER, "historyId": 1}))
    assert resp.status_code == 204
    assert fake.requests == []


async def test_push_endpoint_answers_503_until_ready_and_when_the_sync_fails(
    store: CaptureStore,
) -> None:
    fake = FakeGmail()
    endpoint = Endpoint(store, fake, Publisher(fail_on_call=1))
    fake.add(mail(1))
    body = push_body({"emailAddress": OWNER, "historyId": fake.history_id})
    endpoint.ready = False
    assert (await endpoint.post(body)).status_code == 503
    assert fake.requests == []  # nothing read while the deal index catches up
    endpoint.ready = True
    assert (await endpoint.post(body)).status_code == 503  # the broker failed: redelivered
    assert (await endpoint.post(body)).status_code == 204  # the redelivery publishes
    assert [e.thread_id for e in emails(endpoint.publisher.events)] == ["t1"]


def test_gmail_settings_are_all_or_nothing() -> None:
    key = Fernet.generate_key().decode()
    base: dict[str, Any] = {
        "kafka_bootstrap_servers": "127.0.0.1:9",
        "capture_webhook_secret": "s",
        "capture_token_key": key,
    }
    google = {"capture_google_client_id": "c", "capture_google_client_secret": "cs"}
    off = CaptureSettings(**base)
    check_config(off)
    assert not off.gmail_configured()
    on = CaptureSettings(**base, **google, capture_gmail_push_token="t")
    check_config(on)
    assert on.gmail_configured()
    with pytest.raises(ConfigError, match="VECTOROS_CAPTURE_GOOGLE_CLIENT_ID"):
        check_config(CaptureSettings(**base, capture_gmail_push_token="t"))
