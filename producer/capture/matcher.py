"""Matching captured emails and meetings to deals: pure, no I/O, no clock.

``DealIndex`` learns each open deal's contacts and account domains from the deal events
(``contacts``/``account_domains`` of ``deal.created`` and ``deal.updated``; ``deal.closed`` and
``deal.deleted`` remove it) and indexes them by ``(workspace, address)`` and ``(workspace,
domain)``: matching one message costs one lookup per participant and per participant domain,
whatever the number of deals. ``Matcher`` turns a captured message into one event per open deal
of the workspace with a matching contact address, or a matching account domain (the workspace's
own domains and free-mail domains never match by domain).

Privacy by default (``WorkspacePolicy``): only metadata reaches the events (direction, time,
thread, buyer-side participants); never a body; the subject only when the workspace turned
subjects on; participants reduced to their domains when the workspace says so.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.utils import getaddresses
from typing import Protocol

from schemas.events import (
    DealClosed,
    DealCreated,
    DealDeleted,
    DealEvent,
    DealUpdated,
    Direction,
    EmailLogged,
    MeetingLogged,
    MeetingStatus,
)

FREE_MAIL: frozenset[str] = frozenset(
    (
        "gmail.com", "googlemail.com", "yahoo.com", "yahoo.co.uk", "yahoo.fr", "ymail.com",
        "outlook.com", "hotmail.com", "hotmail.co.uk", "hotmail.fr", "live.com", "msn.com",
        "icloud.com", "me.com", "mac.com", "aol.com", "proton.me", "protonmail.com", "pm.me",
        "gmx.com", "gmx.de", "gmx.net", "web.de", "yandex.com", "yandex.ru", "mail.ru",
        "zoho.com", "qq.com", "163.com", "126.com", "fastmail.com", "hey.com", "tutanota.com",
        "free.fr", "orange.fr", "laposte.net", "libero.it", "t-online.de", "naver.com",
    )
)  # fmt: skip
"""Domains shared by unrelated people: an address there matches a deal only as a contact."""

_NAMESPACE = uuid.UUID("6b1f0c52-5d8e-4c3a-9a57-c0a7b1e5f316")


def address(raw: str) -> str | None:
    """``Ana <Ana@Acme.com>`` -> ``ana@acme.com``; ``None`` if it is not an address."""
    parsed = getaddresses([raw])
    text = (parsed[0][1] if parsed else raw).strip().lower()
    local, at, domain = text.rpartition("@")
    if not at or not local or "." not in domain or any(c.isspace() for c in text):
        return None
    return text


def domain_of(addr: str) -> str:
    return addr.rpartition("@")[2]


@dataclass(frozen=True, slots=True)
class WorkspacePolicy:
    """What a workspace allows capture to keep. Off by default: ``enabled`` is the opt-in."""

    own_domains: frozenset[str]
    enabled: bool = True
    subjects: bool = False
    domains_only: bool = False
    retention_days: int = 365
    """How long the capture service keeps a connection's captured-message log."""


@dataclass(frozen=True, slots=True)
class CapturedEmail:
    """One email as a connector read it (headers only)."""

    workspace_id: str
    message_id: str
    """The provider's id (Gmail message id, Graph message id, the webhook's id): stable."""
    sent_at: dt.datetime
    sender: str
    recipients: tuple[str, ...]
    thread_id: str | None = None
    subject: str | None = None
    outbound: bool | None = None
    """Set by a connector that knows (Gmail: sent by the mailbox owner, who is then not a
    participant); ``None``/``False``: outbound when the sender's domain is one of the
    workspace's own."""


@dataclass(frozen=True, slots=True)
class CapturedMeeting:
    """One calendar event as a connector read it."""

    workspace_id: str
    meeting_id: str
    status: MeetingStatus
    start: dt.datetime
    end: dt.datetime
    attendees: tuple[str, ...]
    observed_at: dt.datetime


CAME = frozenset({"accepted", "tentative"})
"""Answers of an attendee that count as attending (normalised: ``accepted``, ``tentative``,
``declined``, ``none``)."""


def meeting_status(
    answers: dict[str, str], cancelled: bool, start: dt.datetime, end: dt.datetime, now: dt.datetime
) -> tuple[MeetingStatus, dt.datetime, tuple[str, ...]]:
    """A calendar event's status at ``now`` from its external attendees' answers: the status,
    when it was observed, and the attendees to report. ``cancelled`` when the event is, or when
    every external attendee declined; ``scheduled`` until its end (observed now, before its
    start, so it holds off the rules); after its end ``held`` when an external attendee accepted
    or answered tentatively (observed at its end, with those attendees), ``no-show`` when none
    did (a calendar cannot see attendance: an invitation nobody accepted counts as not held)."""
    given = set(answers.values())
    if cancelled or given == {"declined"}:
        return MeetingStatus.CANCELLED, now, tuple(answers)
    if end > now:
        return MeetingStatus.SCHEDULED, now, tuple(answers)
    if given & CAME:
        return MeetingStatus.HELD, end, tuple(a for a, r in answers.items() if r in CAME)
    return MeetingStatus.NO_SHOW, end, tuple(answers)


@dataclass(slots=True)
class _Deal:
    workspace_id: str
    contacts: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()


@dataclass(slots=True)
class DealIndex:
    """Open deals by contact address and by account domain, per workspace."""

    by_address: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    by_domain: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    deals: dict[str, _Deal] = field(default_factory=dict)
    lookups: int = 0
    """Index probes made by ``matching`` so far (what matching costs)."""

    def apply(self, event: DealEvent) -> None:
        """Learn from one deal event (others are ignored)."""
        if isinstance(event, DealClosed | DealDeleted):
            self._forget(event.deal_id)
            return
        if isinstance(event, DealCreated):
            contacts, domains = event.contacts, event.account_domains
        elif isinstance(event, DealUpdated):
            changes = event.changes
            contacts = changes.contacts if "contacts" in changes.model_fields_set else None
            domains = (
                changes.account_domains if "account_domains" in changes.model_fields_set else None
            )
            if contacts is None and domains is None and event.deal_id in self.deals:
                return
        else:
            return
        old = self.deals.get(event.deal_id) or _Deal(event.workspace_id)
        new = _Deal(
            event.workspace_id,
            old.contacts if contacts is None else frozenset(filter(None, map(address, contacts))),
            old.domains if domains is None else frozenset(d.strip().lower() for d in domains),
        )
        self._forget(event.deal_id)
        self.deals[event.deal_id] = new
        ws = new.workspace_id
        for a in new.contacts:
            self.by_address.setdefault((ws, a), set()).add(event.deal_id)
        for d in new.domains:
            self.by_domain.setdefault((ws, d), set()).add(event.deal_id)

    def _forget(self, deal_id: str) -> None:
        old = self.deals.pop(deal_id, None)
        if old is None:
            return
        for key, index in [((old.workspace_id, a), self.by_address) for a in old.contacts] + [
            ((old.workspace_id, d), self.by_domain) for d in old.domains
        ]:
            ids = index.get(key)
            if ids is not None:
                ids.discard(deal_id)
                if not ids:
                    del index[key]

    def matching(
        self, workspace_id: str, external: Iterable[str], policy: WorkspacePolicy
    ) -> list[str]:
        """The open deals of the workspace that any of ``external`` (normalised addresses of
        the buyer side) matches, by address or by a domain that may match, in id order."""
        found: set[str] = set()
        for a in external:
            self.lookups += 1
            found.update(self.by_address.get((workspace_id, a), ()))
            d = domain_of(a)
            if d not in policy.own_domains and d not in FREE_MAIL:
                self.lookups += 1
                found.update(self.by_domain.get((workspace_id, d), ()))
        return sorted(found)


def _external(addresses: Iterable[str], policy: WorkspacePolicy) -> list[str]:
    out: dict[str, None] = {}
    for raw in addresses:
        a = address(raw)
        if a is not None and domain_of(a) not in policy.own_domains:
            out[a] = None
    return list(out)


def _shown(external: list[str], policy: WorkspacePolicy) -> tuple[str, ...]:
    if policy.domains_only:
        return tuple(dict.fromkeys(domain_of(a) for a in external))
    return tuple(external)


def event_id(*parts: str) -> str:
    """A stable event id from provider ids: the same message gives the same id every time
    (a re-read after a restart is a duplicate the monitor drops)."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(parts)))


class EventPublisher(Protocol):
    """Where the deal events the matcher makes go (``service._Publisher``: to ``deal-events``,
    acknowledged): the webhook app and every provider's sync publish through it."""

    async def send(self, events: Sequence[DealEvent]) -> None: ...


class Matcher:
    """Captured messages to deal events, with the workspaces' policies."""

    def __init__(self, index: DealIndex, policies: dict[str, WorkspacePolicy]) -> None:
        self.index = index
        self.policies = policies

    def email(self, mail: CapturedEmail) -> list[EmailLogged]:
        policy = self.policies.get(mail.workspace_id)
        if policy is None or not policy.enabled:
            return []
        sender = address(mail.sender)
        if sender is None:
            return []
        outbound = mail.outbound or domain_of(sender) in policy.own_domains
        senders = () if mail.outbound else (mail.sender,)  # a known owner is our side
        external = _external((*senders, *mail.recipients), policy)
        if not external:
            return []  # internal mail
        deals = self.index.matching(mail.workspace_id, external, policy)
        subject = mail.subject[:2000] if policy.subjects and mail.subject else None
        shown = _shown(external, policy)[:100]
        return [
            EmailLogged(
                event_id=event_id("email", mail.workspace_id, mail.message_id, deal_id),
                workspace_id=mail.workspace_id,
                deal_id=deal_id,
                occurred_at=mail.sent_at,
                direction=Direction.OUTBOUND if outbound else Direction.INBOUND,
                thread_id=mail.thread_id[:200] if mail.thread_id else None,
                participants=shown,
                subject=subject,
            )
            for deal_id in deals
        ]

    def meeting(self, meeting: CapturedMeeting) -> list[MeetingLogged]:
        policy = self.policies.get(meeting.workspace_id)
        if policy is None or not policy.enabled:
            return []
        external = _external(meeting.attendees, policy)
        if not external:
            return []
        deals = self.index.matching(meeting.workspace_id, external, policy)
        status, start = meeting.status.value, meeting.start.isoformat()
        return [
            MeetingLogged(
                event_id=event_id(
                    "meeting", meeting.workspace_id, meeting.meeting_id, status, start, deal_id
                ),
                workspace_id=meeting.workspace_id,
                deal_id=deal_id,
                occurred_at=meeting.observed_at,
                meeting_id=meeting.meeting_id[:200],
                status=meeting.status,
                start=meeting.start,
                end=meeting.end,
                attendees=_shown(external, policy)[:100],
            )
            for deal_id in deals
        ]
