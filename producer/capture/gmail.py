"""The Gmail connector: Pub/Sub push in, ``users.history.list`` from the saved history id,
``users.messages.get`` (``format=metadata``, headers only) per new message, captured emails to
the matcher, events published, then the cursor saved.

- **Push.** ``users.watch`` points the mailbox at a Pub/Sub topic whose push subscription posts
  to the capture service with a shared token in the URL query (``?token=...``, as Google's push
  endpoints allow). ``decode_push`` refuses a missing or wrong token and a body that is not
  ``{"message": {"data": base64({"emailAddress", "historyId"}), "messageId", ...},
  "subscription"}``.
- **Sync** (``GmailSync.run``): history pages (``historyTypes=messageAdded``, ``pageToken``)
  from the saved cursor; each message not captured before is read (metadata only: From, To, Cc,
  Date, Message-ID, In-Reply-To, References, Subject) and matched; a page's events are published,
  then its message ids logged as captured; the cursor (the last page's ``historyId``) is saved
  only once every page is published. A restart re-reads from the old cursor: logged messages
  are skipped, and a message published but not yet logged is published again with the same
  event ids (UUIDv5 of the Gmail message id), which the monitor drops as duplicates.
- **Expired cursor.** ``history.list`` answering 404 -> a bounded full sync: the profile's
  current ``historyId`` is taken first (the new cursor), then ``messages.list`` with
  ``q=after:<epoch>`` over the last ``full_sync_days`` days, at most ``full_sync_max`` messages.
- **Errors.** 401 -> the access token is refreshed once (OAuth refresh-token grant at the token
  endpoint; the new tokens are handed to ``on_tokens`` to be stored encrypted) and the request
  retried; 429, 503 and a 403 ``rateLimitExceeded``/``userRateLimitExceeded`` -> wait
  ``Retry-After`` (seconds or an HTTP date, capped; without one 1, 2, 4, ... s) and retry, at
  most ``max_attempts`` times.

The access and refresh tokens, the client secret and the push token are never logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import email.utils
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from producer.capture.api import ApiClient, ApiError, OAuthClient, PushEndpoint, revoked
from producer.capture.api import PushRejected as PushRejected
from producer.capture.api import retry_after_seconds as retry_after_seconds
from producer.capture.matcher import CapturedEmail, EventPublisher, Matcher, address
from producer.capture.store import CaptureStore, Channel
from schemas.events import DealEvent

logger = logging.getLogger(__name__)

PROVIDER = "gmail"
API_BASE = "https://gmail.googleapis.com/gmail/v1/users/me"
TOKEN_URL = "https://oauth2.googleapis.com/token"  # noqa: S105 (an endpoint, not a secret)
METADATA_HEADERS = (
    "From",
    "To",
    "Cc",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Subject",
)


GmailError = ApiError
"""The Gmail API refused a request (not 401/429/404 handled here), or kept refusing."""


class NotFound(ApiError):
    """404: for ``history.list`` the start history id is too old (expired)."""


@dataclass(frozen=True, slots=True)
class PushNotice:
    email_address: str
    history_id: str
    message_id: str


def decode_push(body: bytes, token: str | None, expected_token: str) -> PushNotice:
    """Verify and decode a Pub/Sub push of a Gmail notification."""
    if not token or not hmac.compare_digest(token.encode(), expected_token.encode()):
        raise PushRejected("bad_token")
    try:
        envelope = orjson.loads(body)
        message = envelope["message"]
        data = orjson.loads(base64.b64decode(message["data"], validate=False))
        email_address = str(data["emailAddress"]).strip().lower()
        history_id = str(int(data["historyId"]))
        message_id = str(message.get("messageId") or message.get("message_id") or "")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error):
        raise PushRejected("bad_body") from None
    if address(email_address) is None:
        raise PushRejected("bad_body")
    return PushNotice(email_address, history_id, message_id)


def google_oauth(client_id: str, client_secret: str, token_url: str = TOKEN_URL) -> OAuthClient:
    """The deployment's Google OAuth client (Gmail and Calendar share it)."""
    return OAuthClient(client_id, client_secret, token_url)


_RATE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})


def _rate_limited_403(resp: httpx.Response) -> bool:
    """Gmail also signals its usage limits as 403 with ``rateLimitExceeded`` or
    ``userRateLimitExceeded`` in ``error.errors[].reason``: retried like a 429."""
    if resp.status_code != 403:
        return False
    try:
        errors = resp.json()["error"]["errors"]
        return any(e.get("reason") in _RATE_REASONS for e in errors)
    except (ValueError, KeyError, TypeError, AttributeError):
        return False


class GmailClient(ApiClient):
    """The few Gmail API calls capture makes (``producer.capture.api.ApiClient``: one refresh
    on 401, ``Retry-After`` on 429/503 and on Gmail's rate-limit 403)."""

    name = "gmail"

    def __init__(
        self,
        http: httpx.AsyncClient,
        oauth: OAuthClient,
        tokens: dict[str, Any],
        *,
        on_tokens: Callable[[dict[str, Any]], None] = lambda _t: None,
        api_base: str = API_BASE,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        max_attempts: int = 5,
        max_wait_seconds: float = 120.0,
    ) -> None:
        super().__init__(
            http, oauth, tokens, api_base=api_base, on_tokens=on_tokens, sleep=sleep, now=now,
            max_attempts=max_attempts, max_wait_seconds=max_wait_seconds,
        )  # fmt: skip

    def retryable(self, resp: httpx.Response) -> bool:
        return _rate_limited_403(resp)

    def error(self, method: str, path: str, resp: httpx.Response) -> ApiError:
        if resp.status_code == 404:
            return NotFound(f"gmail {method} {path}: 404", 404)
        return super().error(method, path, resp)

    async def _call(
        self, method: str, path: str, *, params: Any = None, json: Any = None
    ) -> dict[str, Any]:
        return await self.call(method, path, params=params, json=json)

    async def watch(
        self, topic_name: str, label_ids: Sequence[str] = ("INBOX", "SENT")
    ) -> dict[str, Any]:
        """``users.watch``: ``{"historyId", "expiration"}`` (re-watch before it, at most 7
        days)."""
        return await self._call(
            "POST",
            "/watch",
            json={
                "topicName": topic_name,
                "labelIds": list(label_ids),
                "labelFilterBehavior": "include",
            },
        )

    async def profile(self) -> dict[str, Any]:
        """``users.getProfile``: ``{"emailAddress", "historyId", ...}``."""
        return await self._call("GET", "/profile")

    async def history_pages(self, start_history_id: str) -> AsyncIterator[dict[str, Any]]:
        """``users.history.list`` pages from ``start_history_id``; ``NotFound`` if expired."""
        token: str | None = None
        while True:
            params: list[tuple[str, str]] = [
                ("startHistoryId", start_history_id),
                ("historyTypes", "messageAdded"),
            ]
            if token:
                params.append(("pageToken", token))
            page = await self._call("GET", "/history", params=params)
            yield page
            token = page.get("nextPageToken")
            if not token:
                return

    async def message_pages(self, query: str, limit: int) -> AsyncIterator[list[str]]:
        """``users.messages.list`` ids matching ``query``, page by page, ``limit`` in all."""
        token: str | None = None
        seen = 0
        while seen < limit:
            params: list[tuple[str, str]] = [
                ("q", query),
                ("maxResults", str(min(500, limit - seen))),
            ]
            if token:
                params.append(("pageToken", token))
            page = await self._call("GET", "/messages", params=params)
            ids = [str(m["id"]) for m in page.get("messages") or () if m.get("id")]
            ids = ids[: limit - seen]
            seen += len(ids)
            yield ids
            token = page.get("nextPageToken")
            if not token:
                return

    async def message_metadata(self, message_id: str) -> dict[str, Any] | None:
        """``users.messages.get?format=metadata`` (headers only); ``None`` if deleted since."""
        params = [("format", "metadata")] + [("metadataHeaders", h) for h in METADATA_HEADERS]
        try:
            return await self._call("GET", f"/messages/{message_id}", params=params)
        except NotFound:
            return None


def captured_email(workspace_id: str, owner: str, message: dict[str, Any]) -> CapturedEmail | None:
    """A ``messages.get`` metadata answer as a captured email (``None`` if it has no sender)."""
    headers: dict[str, list[str]] = {}
    for h in (message.get("payload") or {}).get("headers") or ():
        headers.setdefault(str(h.get("name", "")).lower(), []).append(str(h.get("value", "")))
    sender = (headers.get("from") or [""])[0]
    if not sender:
        return None
    try:
        sent_at = dt.datetime.fromtimestamp(int(message["internalDate"]) / 1000, dt.UTC)
    except (KeyError, TypeError, ValueError):
        date = (headers.get("date") or [""])[0]
        try:
            sent_at = email.utils.parsedate_to_datetime(date)
        except (TypeError, ValueError):
            return None
        if sent_at.tzinfo is None:
            sent_at = sent_at.replace(tzinfo=dt.UTC)
    recipients = tuple(  # the mailbox owner is on the workspace's side, never a participant
        a
        for _name, a in email.utils.getaddresses([*headers.get("to", ()), *headers.get("cc", ())])
        if a and a.strip().lower() != owner
    )
    subject = next(iter(headers.get("subject", ())), None)
    return CapturedEmail(
        workspace_id=workspace_id,
        message_id=str(message["id"]),
        sent_at=sent_at,
        sender=sender,
        recipients=recipients,
        thread_id=str(message["threadId"]) if message.get("threadId") else None,
        subject=subject,
        outbound=address(sender) == owner,
    )


@dataclass(frozen=True, slots=True)
class SyncResult:
    messages: int
    """Messages read and matched (not captured before)."""
    events: int
    cursor: str
    full_sync: bool


class GmailSync:
    """One connected mailbox: sync it from its saved cursor (see the module's docstring)."""

    def __init__(
        self,
        client: GmailClient,
        store: CaptureStore,
        matcher: Matcher,
        publisher: EventPublisher,
        *,
        user_id: str,
        workspace_id: str,
        owner: str,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        full_sync_days: int = 30,
        full_sync_max: int = 2000,
    ) -> None:
        self._client, self._store, self._matcher = client, store, matcher
        self._publisher = publisher
        self._user, self._ws, self._owner = user_id, workspace_id, owner.strip().lower()
        self._now = now
        self._days, self._max = full_sync_days, full_sync_max

    async def run(self) -> SyncResult:
        conn = self._store.connection(self._user, PROVIDER)
        cursor = conn.cursor if conn is not None else None
        if cursor is not None:
            try:
                return await self._incremental(cursor)
            except NotFound:
                logger.warning("gmail: history id expired, bounded full sync (%d days)", self._days)
        return await self._full()

    async def _incremental(self, cursor: str) -> SyncResult:
        messages = events = 0
        latest = cursor
        async for page in self._client.history_pages(cursor):
            ids: dict[str, None] = {}
            for record in page.get("history") or ():
                for added in record.get("messagesAdded") or ():
                    mid = (added.get("message") or {}).get("id")
                    if mid:
                        ids[str(mid)] = None
            m, e = await self._capture(list(ids))
            messages, events = messages + m, events + e
            latest = str(page.get("historyId") or latest)
        self._store.save_cursor(self._user, PROVIDER, latest)  # only after every page published
        return SyncResult(messages, events, latest, full_sync=False)

    async def _full(self) -> SyncResult:
        cursor = str((await self._client.profile())["historyId"])  # taken first: nothing missed
        since = self._now() - dt.timedelta(days=self._days)
        messages = events = 0
        async for ids in self._client.message_pages(f"after:{int(since.timestamp())}", self._max):
            m, e = await self._capture(ids)
            messages, events = messages + m, events + e
        self._store.save_cursor(self._user, PROVIDER, cursor)
        return SyncResult(messages, events, cursor, full_sync=True)

    async def _capture(self, message_ids: list[str]) -> tuple[int, int]:
        """Read, match and publish the messages not captured before; then log them."""
        known = self._store.known(self._user, PROVIDER, message_ids)
        fresh = [m for m in message_ids if m not in known]
        events: list[DealEvent] = []
        read: list[str] = []
        for mid in fresh:
            meta = await self._client.message_metadata(mid)
            read.append(mid)
            if meta is None:
                continue
            mail = captured_email(self._ws, self._owner, meta)
            if mail is not None:
                events.extend(self._matcher.email(mail))
        if events:
            await self._publisher.send(events)
        now_ms = int(self._now().timestamp() * 1000)
        self._store.first_seen(self._user, PROVIDER, read, now_ms)
        return len(read), len(events)


@dataclass(frozen=True, slots=True)
class PushOutcome:
    status: int
    """What to answer Pub/Sub: 204 acknowledges; 503 makes it redeliver later."""
    body: dict[str, Any]


class GmailPush(PushEndpoint[GmailClient]):
    """``POST /capture/gmail/push?token=...``: verify the push, then sync the mailbox it names.

    A Gmail connection is stored under its mailbox address as ``user_id``. No sync before
    ``ready()`` (the deal index caught up): 503, Pub/Sub redelivers. Syncs of one mailbox
    run one at a time (a lock per mailbox), so overlapping pushes cannot both publish a message.
    """

    provider = PROVIDER
    client_class = GmailClient
    default_api_base = API_BASE

    async def handle(
        self,
        body: bytes,
        token: str | None,
        store: CaptureStore,
        matcher: Matcher,
        publisher: EventPublisher,
    ) -> PushOutcome:
        try:
            notice = decode_push(body, token, self._secret)
        except PushRejected as exc:
            logger.warning("gmail push refused: %s", exc.reason)
            return PushOutcome(403 if exc.reason == "bad_token" else 400, {"error": exc.reason})
        if not self._ready():  # the deal index is still catching up: matching would miss deals
            return PushOutcome(503, {"error": "not_ready"})
        return await self.sync(store, matcher, publisher, notice.email_address)

    async def sync(
        self, store: CaptureStore, matcher: Matcher, publisher: EventPublisher, user: str
    ) -> PushOutcome:
        """Sync one mailbox (a push, or the maintenance loop's polling); one at a time per
        mailbox. 204: synced, or nothing to do (disconnected, revoked); 503: failed."""
        async with self.lock(user):
            conn = store.connection(user, PROVIDER)
            if conn is None:  # disconnected: acknowledge, nothing to read
                return PushOutcome(204, {})
            sync = GmailSync(
                self.client(store, user, conn.tokens), store, matcher, publisher,
                user_id=user, workspace_id=conn.workspace_id, owner=user,
                now=self._now, full_sync_days=self._days,
            )  # fmt: skip
            try:
                result = await sync.run()
            except Exception as exc:
                if revoked(exc):  # acknowledged: a redelivery could not do better
                    store.mark_revoked(user, PROVIDER, int(self._now().timestamp() * 1000))
                    logger.warning("gmail: access revoked; connection marked, not retried")
                    return PushOutcome(204, {"revoked": True})
                logger.exception("gmail sync failed; Pub/Sub will redeliver")
                return PushOutcome(503, {"error": "unavailable"})
        return PushOutcome(204, {"messages": result.messages, "events": result.events})

    async def ensure_watch(
        self, store: CaptureStore, user: str, topic: str, renew_before_seconds: int = 86400
    ) -> Channel | None:
        """``users.watch`` for the mailbox when it has no watch or it expires within the
        margin (Gmail's watch lasts at most 7 days; calling it again replaces it)."""
        conn = store.connection(user, PROVIDER)
        if conn is None:
            return None
        now_ms = int(self._now().timestamp() * 1000)
        for current in store.channels(PROVIDER, user):
            if current.expires_ms - renew_before_seconds * 1000 > now_ms:
                return current
        answer = await self.client(store, user, conn.tokens).watch(topic)
        channel = Channel(
            channel_id=f"gmail-watch:{user}",
            user_id=user,
            provider=PROVIDER,
            resource_id=topic,
            expires_ms=int(answer.get("expiration") or now_ms + 7 * 86_400_000),
        )
        store.save_channel(channel)
        logger.info("gmail: mailbox watched, expires at %d", channel.expires_ms)
        return channel
