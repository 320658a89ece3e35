"""The Google Calendar connector: ``events.watch`` channels notify the capture service, which
reads the calendar's changes with ``events.list`` from its saved sync token and publishes them
as ``meeting.logged`` events.

- **Watch.** ``CalendarClient.watch`` opens a ``web_hook`` channel on the user's primary
  calendar. Its id is random and stored (``CaptureStore.save_channel``) with the user, the
  ``resourceId`` and the expiration; its token is ``channel_token(secret, channel_id)``, an
  HMAC of the channel id, so the token of one channel says nothing of another's.
  ``CalendarWatch.ensure`` opens one when the user has none or when it expires within the
  renewal margin, and stops the old one.
- **Notifications** (``decode_notification``): ``X-Goog-Channel-ID`` must be a stored channel
  and ``X-Goog-Channel-Token`` its token (compared in constant time), else
  ``PushRejected("bad_token")``; ``X-Goog-Resource-State`` ``sync`` (the channel was opened)
  is acknowledged without reading, ``exists``/``not_exists`` trigger a sync. A notification
  only says "something changed": the sync reads from its own cursor.
- **Sync** (``CalendarSync.run``): ``events.list`` with ``singleEvents=true`` and the saved
  ``syncToken``, following ``nextPageToken``; per page, the meetings not captured before (the
  captured log, keyed by event id, status and start) are matched and published, then logged;
  the ``nextSyncToken`` of the last page is saved only after every page is published. No sync
  token yet, or ``410 Gone`` (the token expired): a bounded full sync over the last
  ``full_sync_days`` days (``timeMin``), whose last page gives the new sync token. Then a
  *due pass*: ``events.list`` over ``[now - due_hours, now]`` (no sync token: nothing changes
  in a calendar when a meeting ends) finds the meetings that have ended since, so a meeting
  listed as ``scheduled`` becomes ``held`` (or ``no-show``) without any edit to it.
- **Status** (``meeting_of``): ``cancelled`` when the event is cancelled or every external
  attendee declined; ``scheduled`` until it ends; after its end ``held`` when an external
  attendee accepted (or answered tentatively), ``no-show`` when none did (the calendar cannot
  see attendance: an invitation nobody on the buyer's side accepted counts as not held).
  All-day events and events with no external attendee are not meetings.
- **Errors.** As every capture client (``producer.capture.api``): 401 -> one refresh; 429, 503
  and a 403 ``rateLimitExceeded``/``userRateLimitExceeded`` -> ``Retry-After``.

Tokens, the channel secret and channel tokens are never logged.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import secrets
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from producer.capture.api import ApiClient, ApiError, PushEndpoint, error_code, revoked
from producer.capture.api import PushRejected as PushRejected
from producer.capture.matcher import (
    CapturedMeeting,
    EventPublisher,
    Matcher,
    address,
    meeting_status,
)
from producer.capture.store import CaptureStore, Channel
from schemas.events import DealEvent

logger = logging.getLogger(__name__)

PROVIDER = "gcal"
API_BASE = "https://www.googleapis.com/calendar/v3"
CALENDAR = "primary"
STATES = frozenset({"sync", "exists", "not_exists"})
_ANSWERS = {"accepted": "accepted", "tentative": "tentative", "declined": "declined"}
"""Calendar's ``responseStatus`` normalised (``needsAction``: none)."""
_RATE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})


class Gone(ApiError):
    """410: the sync token expired (or was invalidated): a full sync is needed."""


def channel_token(secret: str, channel_id: str) -> str:
    """The token a channel is opened with (``X-Goog-Channel-Token`` of its notifications)."""
    return hmac.new(secret.encode(), channel_id.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Notice:
    channel: Channel
    state: str
    message_number: str


def decode_notification(headers: Mapping[str, str], secret: str, store: CaptureStore) -> Notice:
    """Verify a Calendar push notification (headers only; the body is empty)."""
    channel_id = headers.get("x-goog-channel-id") or ""
    token = headers.get("x-goog-channel-token") or ""
    channel = store.channel(channel_id) if channel_id else None
    expected = channel_token(secret, channel_id)
    if not hmac.compare_digest(token.encode(), expected.encode()) or channel is None:
        raise PushRejected("bad_token")
    if channel.provider != PROVIDER:
        raise PushRejected("bad_token")
    state = headers.get("x-goog-resource-state") or ""
    if state not in STATES:
        raise PushRejected("bad_state")
    return Notice(channel, state, headers.get("x-goog-message-number") or "")


class CalendarClient(ApiClient):
    """The few Calendar API calls capture makes."""

    name = "gcal"

    def retryable(self, resp: httpx.Response) -> bool:
        return resp.status_code == 403 and error_code(resp) in _RATE_REASONS

    def error(self, method: str, path: str, resp: httpx.Response) -> ApiError:
        if resp.status_code == 410:
            return Gone(f"gcal {method} {path}: 410", 410, error_code(resp))
        return super().error(method, path, resp)

    async def watch(
        self, channel_id: str, address: str, token: str, ttl_seconds: int, calendar: str = CALENDAR
    ) -> dict[str, Any]:
        """``events.watch``: ``{"id", "resourceId", "resourceUri", "expiration", ...}``."""
        return await self.call(
            "POST",
            f"/calendars/{urllib.parse.quote(calendar)}/events/watch",
            json={
                "id": channel_id,
                "type": "web_hook",
                "address": address,
                "token": token,
                "params": {"ttl": str(ttl_seconds)},
            },
        )

    async def stop(self, channel_id: str, resource_id: str) -> None:
        """``channels.stop``."""
        await self.call(
            "POST", "/channels/stop", json={"id": channel_id, "resourceId": resource_id}
        )

    async def event_pages(
        self,
        *,
        sync_token: str | None = None,
        time_min: dt.datetime | None = None,
        time_max: dt.datetime | None = None,
        calendar: str = CALENDAR,
        page_size: int = 250,
    ) -> AsyncIterator[dict[str, Any]]:
        """``events.list`` pages (``singleEvents=true``); ``Gone`` if the sync token expired."""
        page: str | None = None
        while True:
            params: list[tuple[str, str]] = [
                ("singleEvents", "true"),
                ("maxResults", str(page_size)),
            ]
            if sync_token is not None:
                params.append(("syncToken", sync_token))
            if time_min is not None:
                params.append(("timeMin", time_min.isoformat()))
            if time_max is not None:
                params.append(("timeMax", time_max.isoformat()))
            if page:
                params.append(("pageToken", page))
            body = await self.call(
                "GET", f"/calendars/{urllib.parse.quote(calendar)}/events", params=params
            )
            yield body
            page = body.get("nextPageToken")
            if not page:
                return


def _when(value: Any) -> dt.datetime | None:
    """An event's ``start``/``end``: ``{"dateTime": RFC 3339}``; all-day (``date``): None."""
    if not isinstance(value, dict) or not value.get("dateTime"):
        return None
    try:
        when = dt.datetime.fromisoformat(str(value["dateTime"]))
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def meeting_of(
    workspace_id: str, owner: str, event: dict[str, Any], now: dt.datetime
) -> CapturedMeeting | None:
    """A Calendar event as a captured meeting with its status at ``now`` (see the module)."""
    start, end = _when(event.get("start")), _when(event.get("end"))
    event_id = event.get("id")
    if start is None or end is None or end < start or not event_id:
        return None
    attendees: dict[str, str] = {}
    for person in event.get("attendees") or ():
        if not isinstance(person, dict) or person.get("self") or person.get("resource"):
            continue
        a = address(str(person.get("email") or ""))
        if a is not None and a != owner:
            attendees[a] = str(person.get("responseStatus") or "needsAction")
    host = event.get("organizer") or {}
    organizer = address(str(host.get("email") or ""))
    if organizer is not None and organizer != owner and not host.get("self"):
        attendees.setdefault(organizer, "accepted")  # the buyer invited us
    if not attendees:
        return None
    answers = {a: _ANSWERS.get(r, "none") for a, r in attendees.items()}
    cancelled = event.get("status") == "cancelled"
    status, observed, shown = meeting_status(answers, cancelled, start, end, now)
    return CapturedMeeting(
        workspace_id=workspace_id,
        meeting_id=str(event_id),
        status=status,
        start=start,
        end=end,
        attendees=shown,
        observed_at=observed,
    )


def item_key(meeting: CapturedMeeting) -> str:
    """The meeting's id in the captured log: each status (and each start) is a new item."""
    return f"{meeting.meeting_id}:{meeting.status.value}:{meeting.start.isoformat()}"


@dataclass(frozen=True, slots=True)
class SyncResult:
    meetings: int
    """Meeting statuses matched and published (not captured before)."""
    events: int
    cursor: str | None
    full_sync: bool


class CalendarSync:
    """One connected calendar: sync it from its saved sync token (see the module)."""

    def __init__(
        self,
        client: CalendarClient,
        store: CaptureStore,
        matcher: Matcher,
        publisher: EventPublisher,
        *,
        user_id: str,
        workspace_id: str,
        owner: str,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        full_sync_days: int = 30,
        due_hours: int = 48,
    ) -> None:
        self._client, self._store, self._matcher = client, store, matcher
        self._publisher = publisher
        self._user, self._ws, self._owner = user_id, workspace_id, owner.strip().lower()
        self._now = now
        self._days, self._due = full_sync_days, due_hours

    async def run(self) -> SyncResult:
        conn = self._store.connection(self._user, PROVIDER)
        cursor = conn.cursor if conn is not None else None
        full = cursor is None
        if cursor is not None:
            try:
                meetings, events, cursor = await self._pages(sync_token=cursor)
            except Gone:
                logger.warning("gcal: sync token expired, full sync (%d days)", self._days)
                full = True
        if full:
            since = self._now() - dt.timedelta(days=self._days)
            meetings, events, cursor = await self._pages(time_min=since)
        self._store.save_cursor(self._user, PROVIDER, cursor)  # after every page published
        now = self._now()
        m, e, _ = await self._pages(time_min=now - dt.timedelta(hours=self._due), time_max=now)
        return SyncResult(meetings + m, events + e, cursor, full_sync=full)

    async def _pages(self, **query: Any) -> tuple[int, int, str | None]:
        meetings = events = 0
        cursor: str | None = None
        async for page in self._client.event_pages(**query):
            m, e = await self._capture(page.get("items") or ())
            meetings, events = meetings + m, events + e
            cursor = page.get("nextSyncToken") or cursor
        return meetings, events, cursor

    async def _capture(self, items: Sequence[Any]) -> tuple[int, int]:
        now = self._now()
        found: dict[str, CapturedMeeting] = {}
        for item in items:
            if isinstance(item, dict):
                meeting = meeting_of(self._ws, self._owner, item, now)
                if meeting is not None:
                    found[item_key(meeting)] = meeting
        known = self._store.known(self._user, PROVIDER, found)
        fresh = {k: m for k, m in found.items() if k not in known}
        events: list[DealEvent] = []
        for meeting in fresh.values():
            events.extend(self._matcher.meeting(meeting))
        if events:
            await self._publisher.send(events)
        self._store.first_seen(self._user, PROVIDER, fresh, int(now.timestamp() * 1000))
        return len(fresh), len(events)


class CalendarWatch:
    """Opens and renews a user's ``events.watch`` channel."""

    def __init__(
        self,
        client: CalendarClient,
        store: CaptureStore,
        *,
        user_id: str,
        address: str,
        secret: str,
        ttl_seconds: int = 7 * 86400,
        renew_before_seconds: int = 86400,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        new_id: Callable[[], str] = lambda: secrets.token_hex(16),
    ) -> None:
        self._client, self._store, self._user = client, store, user_id
        self._address, self._secret = address, secret
        self._ttl, self._margin, self._now, self._new_id = (
            ttl_seconds,
            renew_before_seconds,
            now,
            new_id,
        )

    async def ensure(self) -> Channel:
        """The user's channel, opened (or renewed, the old one stopped) when it has none or it
        expires within the renewal margin."""
        now_ms = int(self._now().timestamp() * 1000)
        current = self._store.channels(PROVIDER, self._user)
        live = [c for c in current if c.expires_ms - self._margin * 1000 > now_ms]
        if live:
            return live[-1]
        channel_id = self._new_id()
        answer = await self._client.watch(
            channel_id, self._address, channel_token(self._secret, channel_id), self._ttl
        )
        channel = Channel(
            channel_id=channel_id,
            user_id=self._user,
            provider=PROVIDER,
            resource_id=str(answer.get("resourceId") or "") or None,
            expires_ms=int(answer.get("expiration") or now_ms + self._ttl * 1000),
        )
        self._store.save_channel(channel)
        for old in current:  # the new channel is live: the old ones can go
            if old.resource_id:
                try:
                    await self._client.stop(old.channel_id, old.resource_id)
                except ApiError as exc:  # 404: already expired at Google
                    logger.info("gcal: stopping an old channel answered %s", exc.status)
            self._store.drop_channel(old.channel_id)
        logger.info("gcal: channel opened for a calendar, expires at %d", channel.expires_ms)
        return channel


@dataclass(frozen=True, slots=True)
class PushOutcome:
    status: int
    """What to answer Google: 2xx acknowledges; 503 makes it retry with backoff."""
    body: dict[str, Any]


class CalendarPush(PushEndpoint[CalendarClient]):
    """``POST /capture/gcal/notify``: verify the notification, then sync the calendar its
    channel belongs to (one sync at a time per user). Before ``ready()`` (the deal index caught
    up): 503."""

    provider = PROVIDER
    client_class = CalendarClient
    default_api_base = API_BASE

    async def handle(
        self,
        headers: Mapping[str, str],
        store: CaptureStore,
        matcher: Matcher,
        publisher: EventPublisher,
    ) -> PushOutcome:
        try:
            notice = decode_notification(headers, self._secret, store)
        except PushRejected as exc:
            logger.warning("gcal notification refused: %s", exc.reason)
            return PushOutcome(403 if exc.reason == "bad_token" else 400, {"error": exc.reason})
        if notice.state == "sync":  # the channel was just opened: nothing changed yet
            return PushOutcome(204, {})
        if not self._ready():
            return PushOutcome(503, {"error": "not_ready"})
        return await self.sync(store, matcher, publisher, notice.channel.user_id)

    async def sync(
        self, store: CaptureStore, matcher: Matcher, publisher: EventPublisher, user: str
    ) -> PushOutcome:
        """Sync one calendar (a notification, or the maintenance loop's polling); one at a time
        per user. 204: synced, or nothing to do (disconnected, revoked); 503: failed."""
        async with self.lock(user):
            conn = store.connection(user, PROVIDER)
            if conn is None:  # disconnected meanwhile
                return PushOutcome(204, {})
            sync = CalendarSync(
                self.client(store, user, conn.tokens), store, matcher, publisher,
                user_id=user, workspace_id=conn.workspace_id, owner=user, now=self._now,
                full_sync_days=self._days,
            )  # fmt: skip
            try:
                result = await sync.run()
            except Exception as exc:
                if revoked(exc):  # acknowledged: a redelivery could not do better
                    store.mark_revoked(user, PROVIDER, int(self._now().timestamp() * 1000))
                    logger.warning("gcal: access revoked; connection marked, not retried")
                    return PushOutcome(204, {"revoked": True})
                logger.exception("gcal sync failed; Google will retry the notification")
                return PushOutcome(503, {"error": "unavailable"})
        return PushOutcome(204, {"meetings": result.meetings, "events": result.events})

    async def ensure_watch(self, store: CaptureStore, user: str, address: str) -> Channel | None:
        """The user's channel, opened or renewed before expiry (``CalendarWatch.ensure``)."""
        conn = store.connection(user, PROVIDER)
        if conn is None:
            return None
        watch = CalendarWatch(
            self.client(store, user, conn.tokens), store, user_id=user, address=address,
            secret=self._secret, now=self._now,
        )  # fmt: skip
        return await watch.ensure()
