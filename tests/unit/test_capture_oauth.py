"""Connecting a mailbox: the OAuth 2.0 authorization-code flow with PKCE against a stand-in of
Google's and Microsoft's authorize/token endpoints and the identity reads (Gmail profile, the
primary calendar, Graph ``/me``) as documented; offline refresh tokens stored encrypted; a
revoked grant marks the connection, acknowledges the push and is not retried."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
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

from producer.capture import gcal, gmail, graph, oauth, webhook
from producer.capture.api import OAuthClient
from producer.capture.app import build_app
from producer.capture.matcher import DealIndex, Matcher, WorkspacePolicy
from producer.capture.service import check_config, oauth_flow
from producer.capture.settings import CaptureSettings
from producer.capture.store import CaptureStore, Channel, TokenCipher
from schemas.events import DealEvent
from vectoros.errors import ConfigError

NOW = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
SECRET = "webhook-secret-for-tests"
PUBLIC = "https://capture.example.com"
GOOGLE = OAuthClient("g-client", "g-secret", "https://oauth2.test/token")
MICROSOFT = OAuthClient("ms-client", "ms-secret", "https://login.test/token", graph.SCOPE)


@dataclass
class FakeIdentity:
    """The token endpoints (authorization_code grant: the code, client, redirect URI and PKCE
    verifier checked against what the authorize step was given; refresh_token grant: a
    revoked token answers ``invalid_grant``) and the identity reads."""

    issued: dict[str, dict[str, str]] = field(default_factory=dict)
    """code -> the authorize parameters it was issued for."""
    offline: bool = True
    requests: list[httpx.Request] = field(default_factory=list)

    def authorize(self, url: str) -> str:
        """The user consents: the code the provider would redirect back with."""
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
        code = f"code-{len(self.issued) + 1}"
        self.issued[code] = params
        return code

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        url = request.url
        if url.path == "/token":
            form = dict(urllib.parse.parse_qsl(request.content.decode()))
            if form["grant_type"] == "refresh_token":
                return httpx.Response(400, json={"error": "invalid_grant"})
            asked = self.issued.pop(form.get("code", ""), None)
            client = GOOGLE if url.host == "oauth2.test" else MICROSOFT
            if (
                asked is None
                or form["grant_type"] != "authorization_code"
                or form["client_id"] != client.client_id
                or form["client_secret"] != client.client_secret
                or form["redirect_uri"] != asked["redirect_uri"]
                or asked["code_challenge_method"] != "S256"
                or challenge(form["code_verifier"]) != asked["code_challenge"]
            ):
                return httpx.Response(400, json={"error": "invalid_grant"})
            tokens = {"access_token": "at-1", "expires_in": 3599, "token_type": "Bearer"}
            if self.offline:
                tokens["refresh_token"] = "rt-1"
            return httpx.Response(200, json=tokens)
        if request.headers.get("authorization") != "Bearer at-1":
            return httpx.Response(401, json={"error": {"code": 401}})
        if url.path.endswith("/users/me/profile"):
            return httpx.Response(200, json={"emailAddress": "Rep@Vendor.io", "historyId": "9"})
        if url.path.endswith("/calendars/primary"):
            return httpx.Response(200, json={"kind": "calendar#calendar", "id": "rep@vendor.io"})
        if url.path.endswith("/me"):
            return httpx.Response(200, json={"mail": None, "userPrincipalName": "rep@vendor.io"})
        return httpx.Response(404, json={"error": {"code": 404}})


def challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class Publisher:
    def __init__(self) -> None:
        self.events: list[DealEvent] = []

    async def send(self, events: Sequence[DealEvent]) -> None:
        self.events.extend(events)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = CaptureStore(tmp_path / "c.db", TokenCipher(SecretStr(Fernet.generate_key().decode())))
    yield s
    s.close()


class Rig:
    def __init__(self, store: CaptureStore) -> None:
        self.store = store
        self.fake = FakeIdentity()
        self.now = NOW

    def flow(self, http: httpx.AsyncClient) -> oauth.OAuthFlow:
        providers = {
            "gmail": oauth.google("gmail", GOOGLE, "https://accounts.test/auth", "https://gmail.test/gmail/v1/users/me"),
            "gcal": oauth.google("gcal", GOOGLE, "https://accounts.test/auth", "https://calendar.test/calendar/v3"),
            "graph": oauth.microsoft(MICROSOFT, "https://login.test/authorize", "https://graph.test/v1.0"),
        }  # fmt: skip
        return oauth.OAuthFlow(http, self.store, providers, PUBLIC, now=lambda: self.now)

    async def request(self, method: str, path: str, body: bytes = b"") -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.MockTransport(self.fake.handler)) as http:
            matcher = Matcher(DealIndex(), {"ws": WorkspacePolicy(frozenset({"vendor.io"}))})
            app = build_app(
                matcher, Publisher(), self.store, SECRET, clock=lambda: NOW.timestamp(),
                oauth=self.flow(http),
            )  # fmt: skip
            asgi = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=asgi, base_url="http://capture") as capture:
                ts = str(int(NOW.timestamp()))
                headers = {webhook.TIMESTAMP: ts, webhook.SIGNATURE: webhook.sign(SECRET, ts, body)}
                return await capture.request(method, path, content=body, headers=headers)

    async def start(self, provider: str, workspace: str = "ws") -> str:
        resp = await self.request(
            "POST",
            f"/capture/oauth/{provider}/start",
            orjson.dumps({"workspace_id": workspace}),
        )
        assert resp.status_code == 200, resp.text
        return str(resp.json()["authorize_url"])

    async def callback(self, provider: str, **query: str) -> httpx.Response:
        qs = urllib.parse.urlencode(query)
        return await self.request("GET", f"/capture/oauth/{provider}/callback?{qs}")


def query(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


@pytest.mark.parametrize(
    ("provider", "authorize", "offline"),
    [
        ("gmail", "https://accounts.test/auth", {"access_type": "offline", "prompt": "consent"}),
        ("gcal", "https://accounts.test/auth", {"access_type": "offline", "prompt": "consent"}),
        ("graph", "https://login.test/authorize", {"response_mode": "query"}),
    ],
)
async def test_the_code_flow_with_pkce_stores_an_encrypted_offline_connection(
    store: CaptureStore, provider: str, authorize: str, offline: dict[str, str]
) -> None:
    rig = Rig(store)
    url = await rig.start(provider)
    assert url.startswith(authorize + "?")
    asked = query(url)
    assert asked == {
        "client_id": "ms-client" if provider == "graph" else "g-client",
        "redirect_uri": f"{PUBLIC}/capture/oauth/{provider}/callback",
        "response_type": "code",
        "scope": oauth.SCOPES[provider],
        "state": asked["state"],
        "code_challenge": asked["code_challenge"],
        "code_challenge_method": "S256",
        **offline,
    }
    assert len(asked["state"]) >= 32
    code = rig.fake.authorize(url)
    resp = await rig.callback(provider, code=code, state=asked["state"])
    assert (resp.status_code, resp.text) == (200, "connected: you can close this page")
    conn = store.connection("rep@vendor.io", provider)
    assert conn is not None
    assert conn.workspace_id == "ws"
    assert orjson.loads(conn.tokens)["refresh_token"] == "rt-1"
    raw = store._db.execute("SELECT tokens FROM connection").fetchone()[0]
    assert b"rt-1" not in raw  # encrypted at rest
    # the state is single-use: replaying the callback connects nothing more
    again = await rig.callback(provider, code=code, state=asked["state"])
    assert (again.status_code, again.text) == (400, "not connected: unknown_or_expired_state")


async def test_scope_offline_access_is_asked_of_microsoft() -> None:
    assert "offline_access" in oauth.SCOPES["graph"].split()
    assert oauth.SCOPES["gmail"].endswith("gmail.readonly")  # messages.list `q` needs it


def test_pkce_pair_follows_rfc_7636() -> None:
    verifier, s256 = oauth.pkce_pair()
    assert 43 <= len(verifier) <= 128
    assert set(verifier) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
    )
    assert s256 == challenge(verifier)
    assert oauth.pkce_pair()[0] != verifier


async def test_a_forged_expired_or_foreign_state_connects_nothing(store: CaptureStore) -> None:
    rig = Rig(store)
    url = await rig.start("gmail")
    state = query(url)["state"]
    code = rig.fake.authorize(url)
    assert (await rig.callback("gmail", code=code, state="forged")).status_code == 400
    assert (await rig.callback("graph", code=code, state=state)).status_code == 400  # foreign
    url = await rig.start("gmail")
    rig.now = NOW + dt.timedelta(minutes=11)  # past the 10-minute window
    resp = await rig.callback("gmail", code=rig.fake.authorize(url), state=query(url)["state"])
    assert resp.text == "not connected: unknown_or_expired_state"
    assert store.users("gmail") == []
    assert not [r for r in rig.fake.requests if r.url.path == "/token"]  # never exchanged


async def test_a_declined_consent_or_no_offline_access_connects_nothing(
    store: CaptureStore,
) -> None:
    rig = Rig(store)
    url = await rig.start("gcal")
    resp = await rig.callback("gcal", error="access_denied", state=query(url)["state"])
    assert (resp.status_code, resp.text) == (400, "not connected: authorization declined")
    rig.fake.offline = False
    url = await rig.start("gcal")
    resp = await rig.callback("gcal", code=rig.fake.authorize(url), state=query(url)["state"])
    assert resp.text == "not connected: no_offline_access"
    assert store.users("gcal") == []


async def test_start_is_signed_and_only_for_opted_in_workspaces(store: CaptureStore) -> None:
    rig = Rig(store)
    resp = await rig.request("POST", "/capture/oauth/gmail/start", b'{"workspace_id": "other"}')
    assert (resp.status_code, resp.json()) == (400, {"error": "workspace_not_opted_in"})
    resp = await rig.request("POST", "/capture/oauth/imap/start", b'{"workspace_id": "ws"}')
    assert resp.status_code == 404
    async with httpx.AsyncClient(transport=httpx.MockTransport(rig.fake.handler)) as http:
        matcher = Matcher(DealIndex(), {"ws": WorkspacePolicy(frozenset({"vendor.io"}))})
        app = build_app(matcher, Publisher(), store, SECRET, oauth=rig.flow(http))
        asgi = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=asgi, base_url="http://capture") as capture:
            unsigned = await capture.post(
                "/capture/oauth/gmail/start", content=b'{"workspace_id": "ws"}'
            )
    assert unsigned.status_code == 401


# --- revocation ------------------------------------------------------------------------------


async def test_a_revoked_grant_marks_the_connection_and_is_not_retried(
    store: CaptureStore,
) -> None:
    """Calendar: access token expired, and the refresh answers invalid_grant."""
    user = "rep@vendor.io"
    store.connect(user, "gcal", "ws", '{"access_token": "expired", "refresh_token": "rt-1"}')
    store.save_channel(Channel("ch-1", user, "gcal", "res-1", 1 << 50))
    fake = FakeIdentity()
    headers = {
        "x-goog-channel-id": "ch-1",
        "x-goog-channel-token": gcal.channel_token("cs", "ch-1"),
        "x-goog-resource-state": "exists",
    }

    async def no_sleep(_s: float) -> None:
        return None

    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as http:
        push = gcal.CalendarPush(
            http, GOOGLE, "cs", api_base="https://calendar.test/calendar/v3", sleep=no_sleep,
            now=lambda: NOW,
        )  # fmt: skip
        matcher = Matcher(DealIndex(), {"ws": WorkspacePolicy(frozenset({"vendor.io"}))})
        outcome = await push.handle(headers, store, matcher, Publisher())
        assert outcome.status == 204  # acknowledged: a redelivery could not do better
        assert store.revoked(user, "gcal")
        assert store.connection(user, "gcal") is None
        assert store.users("gcal") == []
        assert store.channels("gcal") == []  # its channel is dropped: later pushes are refused
        calls = len(fake.requests)
        again = await push.handle(headers, store, matcher, Publisher())
        assert again.status == 403
        assert len(fake.requests) == calls
    # connecting again makes it live
    store.connect(user, "gcal", "ws", '{"access_token": "at-1", "refresh_token": "rt-2"}')
    assert not store.revoked(user, "gcal")
    assert store.users("gcal") == [user]


async def test_gmail_push_with_a_revoked_grant_is_acknowledged(store: CaptureStore) -> None:
    user = "rep@vendor.io"
    store.connect(user, "gmail", "ws", '{"access_token": "expired", "refresh_token": "rt-1"}')
    store.save_cursor(user, "gmail", "5")
    fake = FakeIdentity()
    body = orjson.dumps(
        {
            "message": {
                "data": base64.b64encode(
                    b'{"emailAddress": "rep@vendor.io", "historyId": 9}'
                ).decode(),
                "messageId": "1",
            },
            "subscription": "s",
        }
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as http:
        push = gmail.GmailPush(http, GOOGLE, "pt", api_base="https://gmail.test/gmail/v1/users/me")
        matcher = Matcher(DealIndex(), {"ws": WorkspacePolicy(frozenset({"vendor.io"}))})
        outcome = await push.handle(body, "pt", store, matcher, Publisher())
    assert outcome.status == 204
    assert store.revoked(user, "gmail")
    assert store.rows_of(user) == 2  # the connection and the revocation mark: data kept
    assert store.disconnect(user) == 2


def test_connector_settings_are_all_or_nothing_and_connecting_needs_a_public_url(
    store: CaptureStore,
) -> None:
    key = Fernet.generate_key().decode()
    base: dict[str, Any] = {
        "kafka_bootstrap_servers": "127.0.0.1:9",
        "capture_webhook_secret": "s",
        "capture_token_key": key,
    }
    google = {"capture_google_client_id": "c", "capture_google_client_secret": "cs"}
    ms = {"capture_ms_client_id": "m", "capture_ms_client_secret": "ms"}
    full = CaptureSettings(
        **base, **google, **ms, capture_gcal_channel_secret="g", capture_graph_secret="x"
    )
    check_config(full)
    assert full.gcal_configured()
    assert full.graph_configured()
    with pytest.raises(ConfigError, match="VECTOROS_CAPTURE_GOOGLE_CLIENT_ID"):
        check_config(CaptureSettings(**base, capture_gcal_channel_secret="g"))
    with pytest.raises(ConfigError, match="VECTOROS_CAPTURE_MS_CLIENT_SECRET"):
        check_config(CaptureSettings(**base, capture_graph_secret="x", capture_ms_client_id="m"))
    http = httpx.AsyncClient()
    assert oauth_flow(full, http, store) is None  # nowhere to redirect back to
    flow = oauth_flow(full.model_copy(update={"capture_public_url": PUBLIC}), http, store)
    assert flow is not None
    assert sorted(flow.providers) == ["gcal", "gmail", "graph"]
    assert flow.redirect_uri("graph") == f"{PUBLIC}/capture/oauth/graph/callback"
    only_ms = CaptureSettings(**base, **ms, capture_public_url=PUBLIC)
    flow = oauth_flow(only_ms, http, store)
    assert flow is not None
    assert sorted(flow.providers) == ["graph"]
