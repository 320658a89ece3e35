"""Table tests of the event contracts: what is accepted, and what is rejected with which message."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.events import (
    EVENT_TYPES,
    ActivityLogged,
    DealClosed,
    DealCreated,
    DealDeleted,
    DealFields,
    DealScored,
    DealUpdated,
    EmailLogged,
    MeetingLogged,
    Tick,
    encode_event,
    event_adapter,
)
from schemas.insights import InsightEvent, insight_adapter, insight_id_for

BASE: dict[str, Any] = {
    "schema_version": 1,
    "event_id": "evt-1",
    "workspace_id": "ws-1",
    "deal_id": "deal-1",
    "occurred_at": "2025-03-01T09:30:00Z",
}

CREATED: dict[str, Any] = {
    **BASE,
    "type": "deal.created",
    "title": "Acme renewal",
    "value": 25_000,
    "currency": "USD",
    "stage": "proposal",
    "probability": 40,
    "close_date": "2025-04-15",
    "owner_id": "user-7",
    "owner_name": "Ana",
    "company": "Acme",
}


def ev(**fields: Any) -> dict[str, Any]:
    """A deal.created payload with ``fields`` replaced (``None`` removes a field)."""
    out = {**CREATED, **fields}
    return {k: v for k, v in out.items() if v is not None}


VALID: list[tuple[str, dict[str, Any], type[object]]] = [
    ("created full", CREATED, DealCreated),
    ("created minimal", ev(owner_name=None, company=None, schema_version=None), DealCreated),
    ("created with offset", ev(occurred_at="2025-03-01T11:30:00.123+02:00"), DealCreated),
    ("created probability 0", ev(probability=0, value=0), DealCreated),
    ("created probability 100", ev(probability=100, value=1.5), DealCreated),
    (
        "updated",
        {
            **BASE,
            "type": "deal.updated",
            "changes": {"stage": "negotiation", "probability": 60},
            "previous": {"stage": "proposal", "probability": 40},
        },
        DealUpdated,
    ),
    ("updated one field", {**BASE, "type": "deal.updated", "changes": {"value": 1}}, DealUpdated),
    (
        "activity full",
        {
            **BASE,
            "type": "activity.logged",
            "activity_type": "email",
            "direction": "inbound",
            "subject": "Re: pricing",
        },
        ActivityLogged,
    ),
    (
        "activity minimal",
        {**BASE, "type": "activity.logged", "activity_type": "call"},
        ActivityLogged,
    ),
    (
        "closed won",
        {**BASE, "type": "deal.closed", "outcome": "won", "value": 26_000, "reason": "signed"},
        DealClosed,
    ),
    ("closed lost", {**BASE, "type": "deal.closed", "outcome": "lost"}, DealClosed),
    ("deleted", {**BASE, "type": "deal.deleted"}, DealDeleted),
    (
        "email",
        {
            **BASE,
            "type": "email.logged",
            "direction": "outbound",
            "thread_id": "t-17",
            "participants": ["ana@acme.com", "ben@acme.com"],
        },
        EmailLogged,
    ),
    (
        "email, domains only, with subject",
        {
            **BASE,
            "type": "email.logged",
            "direction": "inbound",
            "participants": ["acme.com"],
            "subject": "Re: pricing",
        },
        EmailLogged,
    ),
    (
        "meeting",
        {
            **BASE,
            "type": "meeting.logged",
            "meeting_id": "evt-9",
            "status": "no-show",
            "start": "2025-03-04T15:00:00Z",
            "end": "2025-03-04T15:30:00+00:00",
            "attendees": ["ana@acme.com"],
        },
        MeetingLogged,
    ),
    (
        "scored",
        {
            **BASE,
            "type": "deal.scored",
            "model_version": 3,
            "win_probability": 0.42,
            "top_factors": [{"feature": "days_since_activity", "effect": -0.12}],
            "close_p10": "2025-04-30",
        },
        DealScored,
    ),
    (
        "scored minimal",
        {**BASE, "type": "deal.scored", "model_version": 1, "win_probability": 1},
        DealScored,
    ),
    ("tick", {"schema_version": 1, "type": "tick", "at": "2025-03-01T10:00:00Z"}, Tick),
    ("tick with id", {"type": "tick", "event_id": "t-1", "at": "2025-03-01T12:00:00+02:00"}, Tick),
]


def test_valid_examples_cover_every_type() -> None:
    assert {payload["type"] for _, payload, _ in VALID} == set(EVENT_TYPES)


@pytest.mark.parametrize(
    ("payload", "model"), [(p, m) for _, p, m in VALID], ids=[v[0] for v in VALID]
)
def test_valid_event(payload: dict[str, Any], model: type[object]) -> None:
    raw = json.dumps(payload).encode()
    event = event_adapter.validate_json(raw)
    assert type(event) is model
    assert event.type == payload["type"]
    assert event_adapter.validate_json(raw, strict=True) == event  # also fine in strict mode
    assert event_adapter.validate_json(encode_event(event)) == event  # wire round trip


def test_occurred_at_keeps_its_offset() -> None:
    event = event_adapter.validate_json(json.dumps(ev(occurred_at="2025-03-01T11:30:00+02:00")))
    assert isinstance(event, DealCreated)
    assert event.occurred_at.utcoffset() is not None
    assert event.occurred_at.isoformat() == "2025-03-01T11:30:00+02:00"


def _without(payload: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != key}


# (id, payload, the field the message must name, pydantic error type)
REJECTED: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown type", ev(type="deal.merged"), "type", "union_tag_invalid"),
    ("missing type", _without(CREATED, "type"), "type", "union_tag_not_found"),
    ("missing event_id", _without(CREATED, "event_id"), "event_id", "missing"),
    ("missing deal_id", _without(CREATED, "deal_id"), "deal_id", "missing"),
    (
        "missing deal_id on activity",
        {**_without(BASE, "deal_id"), "type": "activity.logged", "activity_type": "note"},
        "deal_id",
        "missing",
    ),
    ("empty event_id", ev(event_id=""), "event_id", "string_too_short"),
    ("naive occurred_at", ev(occurred_at="2025-03-01T09:30:00"), "occurred_at", "timezone_aware"),
    ("naive tick", {"type": "tick", "at": "2025-03-01T10:00:00"}, "at", "timezone_aware"),
    ("probability -1", ev(probability=-1), "probability", "greater_than_equal"),
    ("probability 101", ev(probability=101), "probability", "less_than_equal"),
    (
        "model probability above 1",
        {**BASE, "type": "deal.scored", "model_version": 1, "win_probability": 1.5},
        "win_probability",
        "less_than_equal",
    ),
    ("negative value", ev(value=-0.01), "value", "greater_than_equal"),
    (
        "negative closed value",
        {**BASE, "type": "deal.closed", "outcome": "won", "value": -1},
        "value",
        "greater_than_equal",
    ),
    ("unknown field", ev(stage_name="Discovery"), "stage_name", "extra_forbidden"),
    (
        "unknown field in changes",
        {**BASE, "type": "deal.updated", "changes": {"colour": "red"}},
        "colour",
        "extra_forbidden",
    ),
    ("schema_version 2", ev(schema_version=2), "schema_version", "literal_error"),
    ("empty changes", {**BASE, "type": "deal.updated", "changes": {}}, "changes", "value_error"),
    (
        "probability in changes",
        {**BASE, "type": "deal.updated", "changes": {"probability": 101}},
        "probability",
        "less_than_equal",
    ),
    ("currency usd", ev(currency="usd"), "currency", "string_pattern_mismatch"),
    ("currency EURO", ev(currency="EURO"), "currency", "string_pattern_mismatch"),
    ("unknown stage", ev(stage="won"), "stage", "enum"),
    ("bad close_date", ev(close_date="15/04/2025"), "close_date", "date_from_datetime_parsing"),
    (
        "unknown activity type",
        {**BASE, "type": "activity.logged", "activity_type": "sms"},
        "activity_type",
        "enum",
    ),
    ("unknown outcome", {**BASE, "type": "deal.closed", "outcome": "maybe"}, "outcome", "enum"),
    (
        "email without participants",
        {**BASE, "type": "email.logged", "direction": "inbound", "participants": []},
        "participants",
        "value_error",
    ),
    (
        "email with a body",
        {
            **BASE,
            "type": "email.logged",
            "direction": "inbound",
            "participants": ["a@b.co"],
            "body": "hello",
        },
        "body",
        "extra_forbidden",
    ),
    (
        "email participant not an address",
        {**BASE, "type": "email.logged", "direction": "inbound", "participants": ["ana"]},
        "participants",
        "string_pattern_mismatch",
    ),
    (
        "meeting ending before it starts",
        {
            **BASE,
            "type": "meeting.logged",
            "meeting_id": "m",
            "status": "held",
            "start": "2025-03-04T15:00:00Z",
            "end": "2025-03-04T14:00:00Z",
        },
        "end",
        "value_error",
    ),
    (
        "meeting status unknown",
        {
            **BASE,
            "type": "meeting.logged",
            "meeting_id": "m",
            "status": "maybe",
            "start": "2025-03-04T15:00:00Z",
            "end": "2025-03-04T16:00:00Z",
        },
        "status",
        "enum",
    ),
    (
        "tick with deal_id",
        {"type": "tick", "at": "2025-03-01T10:00:00Z", "deal_id": "d"},
        "deal_id",
        "extra_forbidden",
    ),
]


@pytest.mark.parametrize(
    ("payload", "field", "error_type"),
    [(p, f, t) for _, p, f, t in REJECTED],
    ids=[r[0] for r in REJECTED],
)
def test_rejected_event(payload: dict[str, Any], field: str, error_type: str) -> None:
    with pytest.raises(ValidationError) as info:
        event_adapter.validate_json(json.dumps(payload).encode())
    errors = info.value.errors()
    assert len(errors) == 1, errors  # one clear reason, not a cascade over every union member
    (error,) = errors
    assert error["type"] == error_type
    # The message names the offending field: in its location, or in the text when the error is
    # about the whole event (the discriminator, a cross-field rule).
    assert field in error["loc"] or field in error["msg"], error
    assert field in str(info.value)


def test_rejected_not_json() -> None:
    with pytest.raises(ValidationError, match=r"Invalid JSON"):
        event_adapter.validate_json(b"{not json")


def test_update_clearing_a_field_round_trips() -> None:
    event = DealUpdated(**_without(BASE, "schema_version"), changes=DealFields(company=None))
    assert event_adapter.validate_json(encode_event(event)) == event


# ---------------------------------------------------------------- insight events

INSIGHT: dict[str, Any] = {
    "schema_version": 1,
    "insight_id": insight_id_for("ws-1", "deal-1", "stale_deal", 1_740_000_000_000),
    "lifecycle": "raised",
    "rule": "stale_deal",
    "workspace_id": "ws-1",
    "deal_id": "deal-1",
    "type": "risk",
    "title": "Acme renewal has gone quiet",
    "description": "No activity for 9 days.",
    "priority": "high",
    "confidence": 0.8,
    "data": {
        "deal_id": "deal-1",
        "deal_title": "Acme renewal",
        "deal_value": 25_000,
        "key_metrics": {"days_inactive": 9, "stage": "proposal", "ratio": 1.3, "none": None},
    },
    "actions": [
        {"action": "Call", "priority": "high", "timeline": "today", "expected_impact": "re-engage"},
        {"action": "Email", "priority": "medium", "timeline": "this week", "expected_impact": "x"},
    ],
    "source": "rules",
    "detected_at": "2025-03-10T09:30:00Z",
    "raised_at": "2025-03-10T09:30:00Z",
}


def insight(**fields: Any) -> dict[str, Any]:
    out = copy.deepcopy(INSIGHT)
    out.update(fields)
    return out


ACTION = INSIGHT["actions"][0]


@pytest.mark.parametrize(
    "payload",
    [
        INSIGHT,
        insight(actions=[ACTION] * 3),
        insight(confidence=0),
        insight(confidence=1),
        insight(lifecycle="resolved", priority="critical", source="claude-sonnet-4-5"),
    ],
    ids=["valid", "three actions", "confidence 0", "confidence 1", "resolved"],
)
def test_valid_insight(payload: dict[str, Any]) -> None:
    event = insight_adapter.validate_json(json.dumps(payload).encode())
    assert isinstance(event, InsightEvent)
    assert insight_adapter.validate_json(event.model_dump_json()) == event


@pytest.mark.parametrize(
    ("payload", "field", "error_type"),
    [
        (insight(actions=[ACTION]), "actions", "too_short"),
        (insight(actions=[ACTION] * 4), "actions", "too_long"),
        (insight(actions=[]), "actions", "too_short"),
        (insight(confidence=-0.01), "confidence", "greater_than_equal"),
        (insight(confidence=1.01), "confidence", "less_than_equal"),
        (insight(lifecycle="reopened"), "lifecycle", "enum"),
        (insight(rule="gut_feeling"), "rule", "enum"),
        (insight(priority="urgent"), "priority", "enum"),
        (insight(detected_at="2025-03-10T09:30:00"), "detected_at", "timezone_aware"),
        (insight(extra="x"), "extra", "extra_forbidden"),
    ],
    ids=[
        "one action",
        "four actions",
        "no actions",
        "confidence below 0",
        "confidence above 1",
        "bad lifecycle",
        "bad rule",
        "bad priority",
        "naive detected_at",
        "unknown field",
    ],
)
def test_rejected_insight(payload: dict[str, Any], field: str, error_type: str) -> None:
    with pytest.raises(ValidationError) as info:
        insight_adapter.validate_json(json.dumps(payload).encode())
    (error,) = info.value.errors()
    assert error["type"] == error_type
    assert error["loc"][0] == field
    assert field in str(info.value)


def test_insight_id_is_deterministic() -> None:
    args = ("ws-1", "deal-1", "stale_deal", 1_740_000_000_000)
    first = insight_id_for(*args)
    assert first == insight_id_for(*args)
    assert uuid.UUID(first).version == 5
    # Pinned: changing the namespace or the recipe would make replays raise duplicate insights.
    assert first == str(
        uuid.uuid5(
            uuid.UUID("6f1c2d4e-8a3b-5c7d-9e0f-a1b2c3d4e5f6"),
            "ws-1\x1fdeal-1\x1fstale_deal\x1f1740000000000",
        )
    )


@pytest.mark.parametrize(
    "other",
    [
        ("ws-2", "deal-1", "stale_deal", 1_740_000_000_000),
        ("ws-1", "deal-2", "stale_deal", 1_740_000_000_000),
        ("ws-1", "deal-1", "stuck_in_stage", 1_740_000_000_000),
        ("ws-1", "deal-1", "stale_deal", 1_740_000_000_001),
    ],
    ids=["workspace", "deal", "rule", "episode"],
)
def test_insight_id_differs_per_input(other: tuple[str, str, str, int]) -> None:
    assert insight_id_for(*other) != insight_id_for(
        "ws-1", "deal-1", "stale_deal", 1_740_000_000_000
    )
