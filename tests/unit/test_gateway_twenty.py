"""Twenty webhook payloads -> deal events (the pure normalizer)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from producer.gateway import twenty
from producer.gateway.common import Context, PayloadError
from producer.gateway.stages import StageMap
from schemas.events import (
    ActivityLogged,
    ActivityType,
    DealClosed,
    DealCreated,
    DealDeleted,
    DealUpdated,
    Outcome,
    Stage,
)
from tests.unit.test_gateway_samples import TWENTY_OPPORTUNITY_ID, twenty_opportunity

CTX = Context("twenty", "ws-tw", StageMap(), None)


def changes(event: Any) -> dict[str, Any]:
    assert isinstance(event, DealUpdated)
    return {name: getattr(event.changes, name) for name in event.changes.model_fields_set}


def test_created_is_a_partial_update_without_probability() -> None:
    [event] = twenty.normalize(twenty_opportunity("created"), CTX).events
    assert event.deal_id == f"twenty:{TWENTY_OPPORTUNITY_ID}"
    assert changes(event) == {
        "title": "Acme renewal",
        "value": 25000.0,
        "currency": "EUR",
        "close_date": dt.date(2025, 3, 31),
        "stage": Stage.PROPOSAL,
    }


def test_created_with_probability_and_owner_is_deal_created() -> None:
    payload = twenty_opportunity("created", probability=30, ownerId="member-1")
    [event] = twenty.normalize(payload, CTX).events
    assert isinstance(event, DealCreated)
    assert (event.probability, event.owner_id) == (30.0, "member-1")


def test_updated_takes_updated_fields() -> None:
    payload = twenty_opportunity(
        "updated", ["stage", "amount"], stage="MEETING", updatedAt="2025-02-11T09:00:00.000Z"
    )
    [event] = twenty.normalize(payload, CTX).events
    assert changes(event) == {"stage": Stage.QUALIFIED, "value": 25000.0, "currency": "EUR"}
    assert event.occurred_at == dt.datetime(2025, 2, 11, 9, tzinfo=dt.UTC)


def test_customer_stage_closes_won() -> None:
    [event] = twenty.normalize(
        twenty_opportunity("updated", ["stage"], stage="CUSTOMER"), CTX
    ).events
    assert isinstance(event, DealClosed)
    assert event.outcome is Outcome.WON


def test_deleted() -> None:
    payload = twenty_opportunity("deleted", deletedAt="2025-02-12T00:00:00.000Z")
    [event] = twenty.normalize(payload, CTX).events
    assert isinstance(event, DealDeleted)


def test_note_and_task_targets_are_activity() -> None:
    for obj, kind in (("noteTarget", ActivityType.NOTE), ("taskTarget", ActivityType.TASK)):
        payload = {
            "eventName": f"{obj}.created",
            "objectMetadata": {"id": "m", "nameSingular": obj},
            "workspaceId": "w",
            "eventDate": "2025-02-10T15:30:50.000Z",
            "record": {
                "id": "t-1",
                "opportunityId": TWENTY_OPPORTUNITY_ID,
                "createdAt": "2025-02-10T15:30:45.000Z",
            },
        }
        [event] = twenty.normalize(payload, CTX).events
        assert isinstance(event, ActivityLogged)
        assert event.activity_type is kind


def test_redelivery_same_id_new_update_new_id() -> None:
    a = twenty.normalize(twenty_opportunity("updated", ["stage"]), CTX).events[0]
    b = twenty.normalize(twenty_opportunity("updated", ["stage"]), CTX).events[0]
    c = twenty.normalize(
        twenty_opportunity("updated", ["stage"], updatedAt="2025-02-10T16:00:00.000Z"), CTX
    ).events[0]
    assert a.event_id == b.event_id != c.event_id


def test_docs_short_form_and_other_objects() -> None:
    person = {
        "event": "person.created",
        "data": {"id": "abc12345", "firstName": "Alice", "createdAt": "2025-02-10T15:30:45Z"},
        "timestamp": "2025-02-10T15:30:50Z",
    }
    assert twenty.normalize(person, CTX).ignored == {"unknown_object": 1}


@pytest.mark.parametrize(
    "payload",
    [
        [],
        {"record": {"id": "x"}},
        {"eventName": "opportunity.updated", "record": {"name": "no id"}},
    ],
)
def test_malformed(payload: Any) -> None:
    with pytest.raises(PayloadError):
        twenty.normalize(payload, CTX)
