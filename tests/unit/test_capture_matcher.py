"""Matching captured emails and meetings to deals: by address, by domain, never by the
workspace's own or a free-mail domain; privacy by default; cost independent of deal count."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import pytest

from producer.capture.matcher import (
    CapturedEmail,
    CapturedMeeting,
    DealIndex,
    Matcher,
    WorkspacePolicy,
    address,
)
from schemas.events import (
    DealClosed,
    DealCreated,
    DealUpdated,
    Direction,
    MeetingStatus,
    encode_event,
    event_adapter,
)

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
OWN = WorkspacePolicy(own_domains=frozenset({"vendor.io"}))


def created(deal_id: str, ws: str = "ws", **kw: Any) -> DealCreated:
    return DealCreated(
        event_id=f"c-{deal_id}",
        workspace_id=ws,
        deal_id=deal_id,
        occurred_at=T0,
        title="t",
        value=1,
        currency="USD",
        stage="lead",
        probability=10,
        close_date=T0.date(),
        owner_id="u",
        **kw,
    )  # type: ignore[arg-type]


def index(*events: Any) -> DealIndex:
    out = DealIndex()
    for event in events:
        out.apply(event)
    return out


def mail(sender: str, *to: str, ws: str = "ws", subject: str | None = "Pricing") -> CapturedEmail:
    return CapturedEmail(ws, "msg-1", T0, sender, to, thread_id="thr-1", subject=subject)


DEALS = (
    created("by-contact", contacts=("ana@acme.com",)),
    created("by-domain", account_domains=("globex.com",)),
    created("gmail-contact", contacts=("Bob.Smith@Gmail.com",), account_domains=("gmail.com",)),
    created("own-domain", account_domains=("vendor.io",)),
    created("other-ws", ws="ws-2", contacts=("ana@acme.com",), account_domains=("acme.com",)),
)

CASES = [
    (
        "a contact's address",
        mail("Ana <ANA@acme.com>", "rep@vendor.io"),
        ["by-contact"],
        Direction.INBOUND,
    ),
    (
        "the account's domain",
        mail("rep@vendor.io", "cy@globex.com"),
        ["by-domain"],
        Direction.OUTBOUND,
    ),
    (
        "address and domain, two deals",
        mail("rep@vendor.io", "ana@acme.com", "x@globex.com"),
        ["by-contact", "by-domain"],
        Direction.OUTBOUND,
    ),
    (
        "a free-mail contact by address",
        mail("bob.smith@gmail.com", "rep@vendor.io"),
        ["gmail-contact"],
        Direction.INBOUND,
    ),
    ("free-mail never by domain", mail("someone@gmail.com", "rep@vendor.io"), [], None),
    ("own domain never by domain", mail("rep@vendor.io", "boss@vendor.io"), [], None),
    ("another workspace's deal", mail("ana@acme.com", "rep@vendor.io", ws="ws-3"), [], None),
    ("an unknown sender", mail("eve@initech.com", "rep@vendor.io"), [], None),
]


@pytest.mark.parametrize(
    ("message", "deals", "direction"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_matching(message: CapturedEmail, deals: list[str], direction: Direction | None) -> None:
    events = Matcher(index(*DEALS), {"ws": OWN}).email(message)
    assert [e.deal_id for e in events] == deals
    for event in events:
        assert event.direction is direction
        assert event_adapter.validate_json(encode_event(event)) == event
        assert all("vendor.io" not in p for p in event.participants)  # buyer side only


def test_privacy_by_default_and_by_policy() -> None:
    message = mail("ana@acme.com", "rep@vendor.io", "cy@acme.com")
    (event,) = Matcher(index(*DEALS), {"ws": OWN}).email(message)
    assert event.subject is None
    assert event.participants == ("ana@acme.com", "cy@acme.com")
    policy = WorkspacePolicy(frozenset({"vendor.io"}), subjects=True, domains_only=True)
    (event,) = Matcher(index(*DEALS), {"ws": policy}).email(message)
    assert event.subject == "Pricing"
    assert event.participants == ("acme.com",)
    assert (
        Matcher(index(*DEALS), {"ws": WorkspacePolicy(OWN.own_domains, enabled=False)}).email(
            message
        )
        == []
    )
    assert Matcher(index(*DEALS), {}).email(message) == []  # a workspace never opted in


def test_event_ids_are_stable_per_message_and_deal() -> None:
    m = Matcher(index(*DEALS), {"ws": OWN})
    message = mail("rep@vendor.io", "ana@acme.com", "x@globex.com")
    first, second = m.email(message), m.email(message)
    assert [e.event_id for e in first] == [e.event_id for e in second]
    assert len({e.event_id for e in first}) == 2


def test_the_index_follows_the_deals() -> None:
    idx = index(*DEALS)
    m = Matcher(idx, {"ws": OWN})
    idx.apply(
        DealUpdated(
            event_id="u",
            workspace_id="ws",
            deal_id="by-contact",
            occurred_at=T0,
            changes={"contacts": ("dan@acme.com",)},
        )  # type: ignore[arg-type]
    )
    assert m.email(mail("ana@acme.com", "rep@vendor.io")) == []
    assert [e.deal_id for e in m.email(mail("dan@acme.com", "rep@vendor.io"))] == ["by-contact"]
    idx.apply(
        DealClosed(
            event_id="x", workspace_id="ws", deal_id="by-contact", occurred_at=T0, outcome="won"
        )
    )  # type: ignore[arg-type]
    assert m.email(mail("dan@acme.com", "rep@vendor.io")) == []
    assert ("ws", "dan@acme.com") not in idx.by_address  # nothing left behind


def test_meetings_match_by_attendee() -> None:
    meeting = CapturedMeeting(
        "ws",
        "evt-1",
        MeetingStatus.SCHEDULED,
        T0 + dt.timedelta(days=2),
        T0 + dt.timedelta(days=2, hours=1),
        ("rep@vendor.io", "cy@globex.com"),
        T0,
    )
    (event,) = Matcher(index(*DEALS), {"ws": OWN}).meeting(meeting)
    assert (event.deal_id, event.attendees, event.status) == (
        "by-domain",
        ("cy@globex.com",),
        MeetingStatus.SCHEDULED,
    )
    held = Matcher(index(*DEALS), {"ws": OWN}).meeting(replace(meeting, status=MeetingStatus.HELD))
    assert held[0].event_id != event.event_id  # another status: another event


def test_matching_cost_does_not_grow_with_the_number_of_deals() -> None:
    message = mail("rep@vendor.io", "ana@acme.com", "x@globex.com", "y@gmail.com")
    costs = []
    for n in (10, 10_000):
        idx = index(
            *DEALS,
            *(
                created(f"d{i}", contacts=(f"p{i}@co{i}.com",), account_domains=(f"co{i}.com",))
                for i in range(n)
            ),
        )
        before = idx.lookups
        assert len(Matcher(idx, {"ws": OWN}).email(message)) == 2
        costs.append(idx.lookups - before)
    assert costs[0] == costs[1] == 5  # 3 addresses + 2 domains (gmail.com is not looked up)


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("Ana <Ana@Acme.COM>", "ana@acme.com"),
        (" x@y.io ", "x@y.io"),
        ("nobody", None),
        ("a@b", None),
    ],
)
def test_address(raw: str, want: str | None) -> None:
    assert address(raw) == want
