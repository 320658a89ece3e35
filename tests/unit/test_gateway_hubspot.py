"""HubSpot payloads -> deal events (the pure normalizer)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from producer.gateway import hubspot
from producer.gateway.common import Context, PayloadError
from producer.gateway.stages import StageMap
from schemas.events import (
    ActivityLogged,
    ActivityType,
    DealClosed,
    DealDeleted,
    DealUpdated,
    Outcome,
    Stage,
)
from tests.unit.test_gateway_samples import (
    HUBSPOT_CHANGES,
    HUBSPOT_DOC_SAMPLE,
    hubspot_change,
    hubspot_event,
)

CTX = Context("hubspot", "ws-acme", StageMap(), None)


def changes(event: Any) -> dict[str, Any]:
    assert isinstance(event, DealUpdated)
    return {name: getattr(event.changes, name) for name in event.changes.model_fields_set}


def test_documented_sample() -> None:
    out = hubspot.normalize(HUBSPOT_DOC_SAMPLE, CTX)
    [event] = out.events
    assert event.deal_id == "hubspot:62515:1246965"
    assert event.workspace_id == "ws-acme"
    assert event.occurred_at == dt.datetime(2016, 5, 2, 19, 11, 47, 945000, tzinfo=dt.UTC)
    assert changes(event) == {"stage": Stage.QUALIFIED}
    assert out.ignored == {"no_fields": 1}  # deal.creation carries no properties


def test_each_mapped_property_is_a_partial_update() -> None:
    out = hubspot.normalize(HUBSPOT_CHANGES, CTX)
    assert [changes(e) for e in out.events] == [
        {"title": "Enterprise SaaS - Alivio"},
        {"value": 25000.0},
        {"stage": Stage.LEAD},
        {"probability": 10.0},  # HubSpot's 0.1 is 10 %
        {"close_date": dt.date(2025, 3, 31)},
        {"owner_id": "52550153"},
    ]
    assert {e.deal_id for e in out.events} == {"hubspot:62515:777"}
    assert len({e.event_id for e in out.events}) == 6
    assert out.ignored == {"unmapped_property": 1, "unknown_object": 1}


def test_default_currency_goes_with_an_amount() -> None:
    ctx = Context("hubspot", "ws", StageMap(), "EUR")
    [event] = hubspot.normalize([hubspot_change(1, 2, 1735725600000, "amount", "10")], ctx).events
    assert changes(event) == {"value": 10.0, "currency": "EUR"}


def test_event_id_ignores_attempt_number_and_is_stable() -> None:
    first = hubspot.normalize([hubspot_change(1, 2, 1735725600000, "amount", "10")], CTX)
    retry = hubspot.normalize([hubspot_change(1, 2, 1735725600000, "amount", "10", attempt=3)], CTX)
    assert first.events[0].event_id == retry.events[0].event_id
    other = hubspot.normalize([hubspot_change(1, 3, 1735725600000, "amount", "10")], CTX)
    assert other.events[0].event_id != first.events[0].event_id


@pytest.mark.parametrize(
    ("stage", "outcome"), [("closedwon", Outcome.WON), ("closedlost", Outcome.LOST)]
)
def test_closed_stages_close_the_deal(stage: str, outcome: Outcome) -> None:
    [event] = hubspot.normalize(
        [hubspot_change(5, 6, 1735725600000, "dealstage", stage)], CTX
    ).events
    assert isinstance(event, DealClosed)
    assert event.outcome is outcome


def test_custom_stage_ids_from_config_and_unmapped_ones() -> None:
    stages = StageMap.from_data({"workspaces": {"ws-acme": {"hubspot": {"123456": "negotiation"}}}})
    ctx = Context("hubspot", "ws-acme", stages, None)
    out = hubspot.normalize(
        [
            hubspot_change(5, 6, 1735725600000, "dealstage", "123456"),
            hubspot_change(5, 7, 1735725600000, "dealstage", "999"),
        ],
        ctx,
    )
    assert [changes(e) for e in out.events] == [{"stage": Stage.NEGOTIATION}]
    assert out.ignored == {"unmapped_stage": 1, "no_fields": 1}


def test_deletion_and_generic_object_format() -> None:
    out = hubspot.normalize(
        [
            hubspot_event(5, 6, 1735725600000, "deal.deletion"),
            hubspot_event(
                8,
                9,
                1735725600000,
                "object.propertyChange",
                objectTypeId="0-3",
                propertyName="amount",
                propertyValue="50",
            ),
            hubspot_event(8, 10, 1735725600000, "object.creation", objectTypeId="0-1"),
        ],
        CTX,
    )
    assert isinstance(out.events[0], DealDeleted)
    assert out.events[0].deal_id == "hubspot:62515:5"
    assert changes(out.events[1]) == {"value": 50.0}
    assert out.ignored == {"unknown_object": 1}


def test_engagement_association_is_activity() -> None:
    out = hubspot.normalize(
        [
            hubspot_event(
                5,
                6,
                1735725600000,
                "deal.associationChange",
                associationType="DEAL_TO_CALL",
                fromObjectId=5,
                toObjectId=901,
                associationRemoved=False,
            ),
            hubspot_event(
                5,
                7,
                1735725600000,
                "object.associationChange",
                fromObjectTypeId="0-3",
                toObjectTypeId="0-47",
                fromObjectId=5,
                toObjectId=902,
            ),
            hubspot_event(
                5,
                8,
                1735725600000,
                "deal.associationChange",
                associationType="DEAL_TO_CONTACT",
                fromObjectId=5,
                toObjectId=7,
            ),
            hubspot_event(
                5,
                9,
                1735725600000,
                "deal.associationChange",
                associationType="DEAL_TO_NOTE",
                fromObjectId=5,
                toObjectId=903,
                associationRemoved=True,
            ),
        ],
        CTX,
    )
    assert [(type(e), e.activity_type) for e in out.events if isinstance(e, ActivityLogged)] == [
        (ActivityLogged, ActivityType.CALL),
        (ActivityLogged, ActivityType.MEETING),
    ]
    assert out.ignored == {"association_removed": 1}
    assert [lookup.crm_deal_id for lookup in out.lookups] == ["5"]  # DEAL_TO_CONTACT: contacts


def test_bad_field_values_are_dropped_not_fatal() -> None:
    out = hubspot.normalize(
        [
            hubspot_change(5, 6, 1735725600000, "amount", "-10"),
            hubspot_change(5, 7, 1735725600000, "hs_deal_stage_probability", "1.7"),
            hubspot_change(5, 8, 1735725600000, "closedate", "soon"),
            hubspot_change(5, 9, 1735725600000, "dealname", "x" * 5000),
            hubspot_change(5, 10, 1735725600000, "amount", ""),
        ],
        CTX,
    )
    assert [changes(e) for e in out.events] == [{"title": "x" * 2000}, {"value": None}]
    assert out.ignored == {"invalid_field": 3, "no_fields": 3}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"objectId": 1}, "body must be a JSON array"),
        ([1], "[0] must be a JSON object"),
        ([{"objectId": 1}], "[0].subscriptionType"),
        ([hubspot_change(1, 2, 3, "amount", "1") | {"objectId": None}], "[0].objectId"),
        ([hubspot_change(1, 2, 1735725600000, "amount", "1") | {"eventId": {}}], "[0].eventId"),
        ([hubspot_change(1, 2, "yesterday", "amount", "1")], "[0].occurredAt"),  # type: ignore[arg-type]
    ],
)
def test_malformed_payloads_are_rejected(payload: Any, reason: str) -> None:
    with pytest.raises(PayloadError) as err:
        hubspot.normalize(payload, CTX)
    assert reason in err.value.detail
