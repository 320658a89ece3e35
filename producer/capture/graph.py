"""The Microsoft Graph connector (Outlook mail and calendar): change-notification subscriptions
tell the capture service that a mailbox or calendar changed; delta queries read what changed
from the saved delta links; captured emails and meetings go to the matcher and are published.

- **Subscriptions** (``GraphSubscriptions.ensure``): one per resource (``me/mailFolders('Inbox')
  /messages``, ``me/mailFolders('SentItems')/messages``, ``me/events``), created with
  ``POST /subscriptions`` (``notificationUrl``, ``expirationDateTime``, ``clientState``) and
  stored with the user and their expiry; renewed with ``PATCH /subscriptions/{id}`` when they
  expire within the renewal margin (a renewal answered 404: created again). ``clientState`` is
  ``client_state(secret, user_id)``, an HMAC of the user id.
- **Handshake.** Creating a subscription makes Graph post ``?validationToken=...`` to the
  notification URL: answered 200 with the token as ``text/plain`` (``validation_answer``).
- **Notifications** (``decode_notifications``): ``{"value": [{"subscriptionId",
  "clientState", "changeType", "resource", ...}]}``; an item is accepted only when its
  subscription is a stored one and its ``clientState`` that user's (constant-time compare);
  none accepted: ``PushRejected("bad_client_state")``. A notification only says "something
  changed": the sync reads its own delta links.
- **Sync** (``GraphSync.run``): per feed (inbox, sent items, calendar view) the saved delta
  link, or the feed's start URL, followed through ``@odata.nextLink`` pages to the
  ``@odata.deltaLink``; per page, the items not captured before are matched and published,
  then logged; a feed's delta link is saved only after all its pages are published. Messages
  are read with ``$select`` (sender, recipients, times, conversation; never a body) and
  ``Prefer: IdType="ImmutableId"`` (ids that survive a move: stable event ids), events with
  ``Prefer: outlook.timezone="UTC"``. ``@removed`` entries are skipped. A delta link Graph no
  longer knows (``410``, or an error code ``syncStateNotFound``/``syncStateInvalid``/
  ``resyncRequired``): that feed starts again from its start URL (a full resync; captured items
  are not published twice). The calendar view spans ``full_sync_days`` back and
  ``ahead_days`` ahead; as that window is fixed when the delta starts, the calendar view
  starts again from a window around now every ``window_days`` (7): what it had captured is
  not published again. Then a *due pass* (``GET /me/calendarView`` over the last 48 hours)
  finds the meetings that have ended, as Calendar's does: no delta says a meeting was held.
- **Errors.** As every capture client (``producer.capture.api``): 401 -> one refresh (Microsoft
  identity platform, with the scope); 429 and 503 -> ``Retry-After``.

Tokens, the client secret and client states are never logged.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from producer.capture.api import ApiClient, ApiError, OAuthClient, PushEndpoint, error_code, revoked
from producer.capture.api import PushRejected as PushRejected
from producer.capture.matcher import (
    CapturedEmail,
    CapturedMeeting,
    EventPublisher,
    Matcher,
    address,
    meeting_status,
)
from producer.capture.store import CaptureStore, Channel
from schemas.events import DealEvent

logger = logging.getLogger(__name__)

PROVIDER = "graph"
API_BASE = "https://graph.microsoft.com/v1.0"
TOKEN_URL = "https://login.microsoftonline.com/common/oauth2/v2.0/token"  # noqa: S105
SCOPE = "offline_access Mail.Read Calendars.Read"
RESOURCES = {
    "inbox": "me/mailFolders('Inbox')/messages",
    "sent": "me/mailFolders('SentItems')/messages",
    "events": "me/events",
}
DELTA = {
    "inbox": "/me/mailFolders/inbox/messages/delta",
    "sent": "/me/mailFolders/sentitems/messages/delta",
    "events": "/me/calendarView/delta",
}
MESSAGE_FIELDS = (
    "from,toRecipients,ccRecipients,sentDateTime,receivedDateTime,conversationId,"
    "internetMessageId,subject"
)
RESYNC_CODES = frozenset({"syncStateNotFound", "syncStateInvalid", "resyncRequired"})
_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d)?)(\.\d+)?(Z|[+-]\d\d:\d\d)?$")
"""Graph's times: RFC 3339, or a ``dateTime`` without offset and with 7 fractional digits."""
_ANSWERS = {"accepted": "accepted", "tentativelyAccepted": "tentative", "declined": "declined"}
"""Graph's ``status.response`` normalised (``none``/``notResponded``: none)."""


def graph_oauth(client_id: str, client_secret: str, token_url: str = TOKEN_URL) -> OAuthClient:
    return OAuthClient(client_id, client_secret, token_url, scope=SCOPE)


class ResyncRequired(ApiError):
    """The delta link is no longer valid: the feed must start again."""


def client_state(secret: str, user_id: str) -> str:
    """The ``clientState`` of a user's subscriptions (echoed in every notification)."""
    return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def validation_answer(token: str | None) -> str | None:
    """The subscription handshake: the ``validationToken`` to echo as ``text/plain``."""
    if token is None or not 0 < len(token) <= 1024:
        return None
    return token


def decode_notifications(body: bytes, secret: str, store: CaptureStore) -> list[str]:
    """The users whose subscriptions sent valid items (in order, once each)."""
    try:
        items = orjson.loads(body)["value"]
        if not isinstance(items, list):
            raise TypeError
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise PushRejected("bad_body") from None
    users: dict[str, None] = {}
    for item in items:
        if not isinstance(item, dict):
            continue
        channel = store.channel(str(item.get("subscriptionId") or ""))
        state = str(item.get("clientState") or "")
        if channel is None or channel.provider != PROVIDER:
            continue
        if hmac.compare_digest(state.encode(), client_state(secret, channel.user_id).encode()):
            users[channel.user_id] = None
    if not users:
        raise PushRejected("bad_client_state")
    return list(users)


class GraphClient(ApiClient):
    name = "graph"

    def error(self, method: str, path: str, resp: httpx.Response) -> ApiError:
        code = error_code(resp)
        if resp.status_code == 410 or code in RESYNC_CODES:
            return ResyncRequired(
                f"graph {method} {path}: {resp.status_code}", resp.status_code, code
            )
        return super().error(method, path, resp)

    async def page(self, url: str, params: Any = None, prefer: str | None = None) -> dict[str, Any]:
        headers = {"Prefer": prefer} if prefer else None
        return await self.call("GET", url, params=params, headers=headers)

    async def subscribe(
        self, resource: str, notification_url: str, expires: dt.datetime, state: str
    ) -> dict[str, Any]:
        change = "created,updated,deleted" if resource == RESOURCES["events"] else "created,updated"
        return await self.call(
            "POST",
            "/subscriptions",
            json={
                "changeType": change,
                "notificationUrl": notification_url,
                "resource": resource,
                "expirationDateTime": _iso(expires),
                "clientState": state,
            },
        )

    async def renew(self, subscription_id: str, expires: dt.datetime) -> dict[str, Any]:
        return await self.call(
            "PATCH",
            f"/subscriptions/{urllib.parse.quote(subscription_id)}",
            json={"expirationDateTime": _iso(expires)},
        )


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _parse(value: Any) -> dt.datetime | None:
    """An RFC 3339 time, or Graph's ``{"dateTime": "...0000000", "timeZone": "UTC"}``."""
    if isinstance(value, dict):
        if str(value.get("timeZone") or "UTC") != "UTC":
            return None  # asked for UTC (Prefer: outlook.timezone); anything else is unexpected
        value = value.get("dateTime")
    if not isinstance(value, str):
        return None
    match = _TIME.match(value.strip())
    if match is None:
        return None
    head, fraction, zone = match.groups()
    text = head + (fraction[:7] if fraction else "") + ("+00:00" if zone in (None, "Z") else zone)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when


def _addr(recipient: Any) -> str | None:
    if not isinstance(recipient, dict):
        return None
    return address(str((recipient.get("emailAddress") or {}).get("address") or ""))


def email_of(
    workspace_id: str, owner: str, message: dict[str, Any], sent_folder: bool
) -> CapturedEmail | None:
    """A Graph message (delta item) as a captured email; ``None`` without sender or time."""
    sender = _addr(message.get("from"))
    outbound = sent_folder or sender == owner
    when = _parse(message.get("sentDateTime" if outbound else "receivedDateTime"))
    when = when or _parse(message.get("sentDateTime"))
    if sender is None or when is None or not message.get("id"):
        return None
    recipients = tuple(
        a
        for r in (*(message.get("toRecipients") or ()), *(message.get("ccRecipients") or ()))
        if (a := _addr(r)) is not None and a != owner
    )
    return CapturedEmail(
        workspace_id=workspace_id,
        message_id=str(message["id"]),
        sent_at=when,
        sender=sender,
        recipients=recipients,
        thread_id=str(message["conversationId"]) if message.get("conversationId") else None,
        subject=str(message["subject"]) if message.get("subject") else None,
        outbound=outbound,
    )


def meeting_of(
    workspace_id: str, owner: str, event: dict[str, Any], now: dt.datetime
) -> CapturedMeeting | None:
    """A Graph event (calendar view delta item) as a captured meeting with its status at
    ``now`` (``producer.capture.matcher.meeting_status``)."""
    start, end = _parse(event.get("start")), _parse(event.get("end"))
    if start is None or end is None or end < start or not event.get("id"):
        return None
    if event.get("isAllDay"):
        return None
    answers: dict[str, str] = {}
    for person in event.get("attendees") or ():
        if not isinstance(person, dict) or person.get("type") == "resource":
            continue
        a = _addr(person)
        if a is not None and a != owner:
            response = str((person.get("status") or {}).get("response") or "none")
            answers[a] = _ANSWERS.get(response, "none")
    organizer = _addr(event.get("organizer"))
    if organizer is not None and organizer != owner and not event.get("isOrganizer"):
        answers.setdefault(organizer, "accepted")
    if not answers:
        return None
    status, observed, shown = meeting_status(
        answers, bool(event.get("isCancelled")), start, end, now
    )
    return CapturedMeeting(
        workspace_id=workspace_id,
        meeting_id=str(event["id"]),
        status=status,
        start=start,
        end=end,
        attendees=shown,
        observed_at=observed,
    )


@dataclass(frozen=True, slots=True)
class SyncResult:
    items: int
    """Emails and meeting statuses matched and published (not captured before)."""
    events: int
    resynced: tuple[str, ...]
    """The feeds whose delta link had expired."""


class GraphSync:
    """One connected Microsoft 365 mailbox and calendar (see the module)."""

    def __init__(
        self,
        client: GraphClient,
        store: CaptureStore,
        matcher: Matcher,
        publisher: EventPublisher,
        *,
        user_id: str,
        workspace_id: str,
        owner: str,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        full_sync_days: int = 30,
        ahead_days: int = 90,
        page_size: int = 50,
        window_days: int = 7,
        due_hours: int = 48,
    ) -> None:
        self._window_days, self._due_hours = window_days, due_hours
        self._client, self._store, self._matcher = client, store, matcher
        self._publisher = publisher
        self._user, self._ws, self._owner = user_id, workspace_id, owner.strip().lower()
        self._now = now
        self._days, self._ahead, self._page_size = full_sync_days, ahead_days, page_size

    def _cursors(self) -> dict[str, str]:
        conn = self._store.connection(self._user, PROVIDER)
        raw = conn.cursor if conn is not None else None
        try:
            loaded = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            loaded = {}
        return {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}

    def _start(self, feed: str) -> tuple[str, Any]:
        if feed == "events":
            now = self._now()
            window = [
                ("startDateTime", _iso(now - dt.timedelta(days=self._days))),
                ("endDateTime", _iso(now + dt.timedelta(days=self._ahead))),
            ]
            return DELTA[feed], window
        return DELTA[feed], [("$select", MESSAGE_FIELDS)]

    def _prefer(self, feed: str) -> str:
        size = f"odata.maxpagesize={self._page_size}"
        if feed == "events":
            return f'{size}, outlook.timezone="UTC"'
        return f'{size}, IdType="ImmutableId"'

    async def run(self) -> SyncResult:
        items = events = 0
        resynced: list[str] = []
        for feed in DELTA:
            cursors = self._cursors()
            link = cursors.get(feed)
            if feed == "events" and link and self._window_aged(cursors):
                link = None  # a calendar view's window is fixed when it starts: move it on
            fresh = link is None
            try:
                i, e, new = await self._feed(feed, link)
            except ResyncRequired:
                if link is None:
                    raise
                logger.warning("graph: %s delta link expired, resync", feed)
                resynced.append(feed)
                fresh = True
                i, e, new = await self._feed(feed, None)
            items, events = items + i, events + e
            cursors = self._cursors()
            cursors[feed] = new  # only after every page of the feed is published
            if feed == "events" and fresh:
                cursors["events_window"] = _iso(self._now())
            self._store.save_cursor(self._user, PROVIDER, orjson.dumps(cursors).decode())
        i, e = await self._due()
        return SyncResult(items + i, events + e, tuple(resynced))

    async def _due(self) -> tuple[int, int]:
        """The meetings that ended lately (``GET /me/calendarView`` over the last
        ``due_hours``): nothing changes in a calendar when a meeting ends, so no delta says it
        was held."""
        now = self._now()
        url: str = "/me/calendarView"
        params: Any = [
            ("startDateTime", _iso(now - dt.timedelta(hours=self._due_hours))),
            ("endDateTime", _iso(now)),
        ]
        items = events = 0
        for _ in range(100):
            page = await self._client.page(url, params, self._prefer("events"))
            i, e = await self._capture("events", page.get("value") or ())
            items, events = items + i, events + e
            next_link = page.get("@odata.nextLink")
            if not next_link:
                break
            url, params = str(next_link), None
        return items, events

    def _window_aged(self, cursors: dict[str, str]) -> bool:
        started = _parse(cursors.get("events_window"))
        return started is None or started + dt.timedelta(days=self._window_days) <= self._now()

    async def _feed(self, feed: str, link: str | None) -> tuple[int, int, str]:
        url, params = (link, None) if link else self._start(feed)
        items = events = 0
        while True:
            page = await self._client.page(url, params, self._prefer(feed))
            i, e = await self._capture(feed, page.get("value") or ())
            items, events = items + i, events + e
            next_link = page.get("@odata.nextLink")
            if next_link:
                url, params = str(next_link), None
                continue
            delta = page.get("@odata.deltaLink")
            if not delta:
                raise ApiError(f"graph {feed}: a last page without @odata.deltaLink")
            return items, events, str(delta)

    async def _capture(self, feed: str, values: Sequence[Any]) -> tuple[int, int]:
        now = self._now()
        emails: dict[str, CapturedEmail] = {}
        meetings: dict[str, CapturedMeeting] = {}
        for value in values:
            if not isinstance(value, dict) or "@removed" in value:
                continue
            if feed == "events":
                meeting = meeting_of(self._ws, self._owner, value, now)
                if meeting is not None:
                    m = meeting
                    meetings[f"event:{m.meeting_id}:{m.status.value}:{m.start.isoformat()}"] = m
            else:
                mail = email_of(self._ws, self._owner, value, sent_folder=feed == "sent")
                if mail is not None:
                    emails[f"message:{mail.message_id}"] = mail
        keys = [*emails, *meetings]
        known = self._store.known(self._user, PROVIDER, keys)
        out: list[DealEvent] = []
        for key, mail in emails.items():
            if key not in known:
                out.extend(self._matcher.email(mail))
        for key, meeting in meetings.items():
            if key not in known:
                out.extend(self._matcher.meeting(meeting))
        if out:
            await self._publisher.send(out)
        fresh = [k for k in keys if k not in known]
        self._store.first_seen(self._user, PROVIDER, fresh, int(now.timestamp() * 1000))
        return len(fresh), len(out)


class GraphSubscriptions:
    """Creates and renews a user's change-notification subscriptions."""

    def __init__(
        self,
        client: GraphClient,
        store: CaptureStore,
        *,
        user_id: str,
        notification_url: str,
        secret: str,
        lifetime: dt.timedelta = dt.timedelta(days=3),
        renew_before: dt.timedelta = dt.timedelta(days=1),
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._client, self._store, self._user = client, store, user_id
        self._url, self._secret = notification_url, secret
        self._lifetime, self._margin, self._now = lifetime, renew_before, now

    async def ensure(self) -> list[Channel]:
        """One live subscription per resource: created, or renewed within the margin."""
        now = self._now()
        expires = now + self._lifetime
        by_resource = {c.resource_id: c for c in self._store.channels(PROVIDER, self._user)}
        out: list[Channel] = []
        for resource in RESOURCES.values():
            current = by_resource.get(resource)
            if current is not None and current.expires_ms > _ms(now + self._margin):
                out.append(current)
                continue
            answer: dict[str, Any] | None = None
            if current is not None:
                try:
                    answer = await self._client.renew(current.channel_id, expires)
                except ApiError as exc:
                    if exc.status != 404:
                        raise
                    logger.info("graph: a subscription to renew was gone, creating it again")
                    self._store.drop_channel(current.channel_id)
            if answer is None:
                answer = await self._client.subscribe(
                    resource, self._url, expires, client_state(self._secret, self._user)
                )
            until = _parse(answer.get("expirationDateTime")) or expires
            channel = Channel(
                channel_id=str(answer.get("id") or (current.channel_id if current else "")),
                user_id=self._user,
                provider=PROVIDER,
                resource_id=resource,
                expires_ms=_ms(until),
            )
            self._store.save_channel(channel)
            out.append(channel)
        return out


def _ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class PushOutcome:
    status: int
    body: dict[str, Any]


class GraphPush(PushEndpoint[GraphClient]):
    """``POST /capture/graph/notify``: the validation handshake, or notifications: verified,
    then each user's mailbox and calendar synced (one sync at a time per user). 202 when
    synced; 503 when a sync failed (Graph retries) or before the deal index caught up."""

    provider = PROVIDER
    client_class = GraphClient
    default_api_base = API_BASE

    async def handle(
        self, body: bytes, store: CaptureStore, matcher: Matcher, publisher: EventPublisher
    ) -> PushOutcome:
        try:
            users = decode_notifications(body, self._secret, store)
        except PushRejected as exc:
            logger.warning("graph notification refused: %s", exc.reason)
            return PushOutcome(
                403 if exc.reason == "bad_client_state" else 400, {"error": exc.reason}
            )
        if not self._ready():
            return PushOutcome(503, {"error": "not_ready"})
        synced = 0
        for user in users:
            outcome = await self.sync(store, matcher, publisher, user)
            if outcome.status >= 500:
                return outcome
            synced += int(outcome.body.get("events", 0))
        return PushOutcome(202, {"events": synced})

    async def sync(
        self, store: CaptureStore, matcher: Matcher, publisher: EventPublisher, user: str
    ) -> PushOutcome:
        """Sync one mailbox and calendar (a notification, or the maintenance loop's polling);
        one at a time per user. 202: synced, or nothing to do (disconnected, revoked); 503."""
        async with self.lock(user):
            conn = store.connection(user, PROVIDER)
            if conn is None:
                return PushOutcome(202, {})
            sync = GraphSync(
                self.client(store, user, conn.tokens), store, matcher, publisher,
                user_id=user, workspace_id=conn.workspace_id, owner=user, now=self._now,
                full_sync_days=self._days,
            )  # fmt: skip
            try:
                result = await sync.run()
            except Exception as exc:
                if revoked(exc):  # the others are synced; this one waits for a reconnect
                    store.mark_revoked(user, PROVIDER, int(self._now().timestamp() * 1000))
                    logger.warning("graph: access revoked; connection marked, not retried")
                    return PushOutcome(202, {"revoked": True})
                logger.exception("graph sync failed; Graph will retry the notification")
                return PushOutcome(503, {"error": "unavailable"})
        return PushOutcome(202, {"items": result.items, "events": result.events})

    async def ensure_subscriptions(
        self, store: CaptureStore, user: str, notification_url: str
    ) -> list[Channel]:
        """The user's subscriptions, created or renewed before expiry."""
        conn = store.connection(user, PROVIDER)
        if conn is None:
            return []
        subs = GraphSubscriptions(
            self.client(store, user, conn.tokens), store, user_id=user,
            notification_url=notification_url, secret=self._secret, now=self._now,
        )  # fmt: skip
        return await subs.ensure()
