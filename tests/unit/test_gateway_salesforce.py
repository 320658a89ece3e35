"""Salesforce Change Data Capture events -> deal events (the pure normalizer)."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from producer.gateway import salesforce
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
from tests.unit.test_gateway_samples import (
    OPPORTUNITY_ID,
    OWNER_ID,
    SALESFORCE_CREATE,
    SALESFORCE_UPDATE,
    salesforce_event,
)

CTX = Context("salesforce", "ws-sf", StageMap(), "USD")


def changes(event: Any) -> dict[str, Any]:
    assert isinstance(event, DealUpdated)
    return {name: getattr(event.changes, name) for name in event.changes.model_fields_set}


def test_create_with_default_currency_is_deal_created() -> None:
    [event] = salesforce.normalize(SALESFORCE_CREATE, CTX).events
    assert isinstance(event, DealCreated)
    assert (event.deal_id, event.title, event.value, event.currency) == (
        f"salesforce:{OPPORTUNITY_ID}",
        "Acme - 200 licenses",
        48000.0,
        "USD",
    )
    assert (event.stage, event.probability, event.close_date, event.owner_id) == (
        Stage.LEAD,
        10.0,
        dt.date(2024, 12, 31),
        OWNER_ID,
    )
    assert event.occurred_at == dt.datetime(2024, 9, 27, 14, 25, 28, tzinfo=dt.UTC)


def test_create_without_currency_is_partial() -> None:
    [event] = salesforce.normalize(
        SALESFORCE_CREATE, Context("salesforce", "ws", StageMap())
    ).events
    assert isinstance(event, DealUpdated)
    assert "currency" not in changes(event)


def test_update_takes_the_changed_fields() -> None:
    [event] = salesforce.normalize(SALESFORCE_UPDATE, CTX).events
    assert changes(event) == {"stage": Stage.NEGOTIATION, "probability": 90.0}


def test_update_can_clear_a_named_field() -> None:
    payload = salesforce_event("UPDATE", {"Amount": None}, changed=["Amount", "LastModifiedDate"])
    [event] = salesforce.normalize(payload, CTX).events
    assert changes(event) == {"value": None}


def test_pubsub_bitmaps_fall_back_to_non_null_fields() -> None:
    payload = salesforce_event(
        "UPDATE", {"Amount": 10.0, "Name": None, "CloseDate": 20089}, changed=["0x0A"]
    )
    [event] = salesforce.normalize(payload, CTX).events
    assert changes(event) == {"value": 10.0, "currency": "USD", "close_date": dt.date(2025, 1, 1)}


def test_one_event_for_several_records() -> None:
    ids = ["0065g00000AAAAAAAA", "0065g00000BBBBBBBB"]
    payload = salesforce_event(
        "UPDATE", {"Probability": 50.0}, record_ids=ids, changed=["Probability"]
    )
    out = salesforce.normalize(payload, CTX)
    assert [e.deal_id for e in out.events] == [f"salesforce:{i}" for i in ids]
    assert len({e.event_id for e in out.events}) == 2


def test_closed_stages_and_is_won() -> None:
    won = salesforce_event("UPDATE", {"StageName": "Closed Won"}, changed=["StageName"])
    lost = salesforce_event(
        "UPDATE",
        {"StageName": "Lost to competitor", "IsClosed": True, "IsWon": False, "Amount": 5.0},
        changed=["StageName", "IsClosed", "Amount"],
    )
    [w] = salesforce.normalize(won, CTX).events
    [lo] = salesforce.normalize(lost, CTX).events
    assert isinstance(w, DealClosed)
    assert w.outcome is Outcome.WON
    assert isinstance(lo, DealClosed)
    assert lo.outcome is Outcome.LOST
    assert lo.value == 5.0


def test_delete_gap_and_other_entities() -> None:
    out = salesforce.normalize(
        [
            salesforce_event("DELETE", {}),
            salesforce_event("GAP_UPDATE", {}),
            salesforce_event("CREATE", {"Name": "Jane"}, entity="Contact"),
            salesforce_event("UPDATE", {"Name": "x"}, record_ids=["006*"], changed=["Name"]),
        ],
        CTX,
    )
    assert [type(e) for e in out.events] == [DealDeleted]
    assert out.ignored == {"gap_event": 1, "unknown_object": 1, "wildcard_record": 1}


def test_tasks_and_events_on_opportunities_are_activity() -> None:
    out = salesforce.normalize(
        [
            salesforce_event(
                "CREATE",
                {"WhatId": OPPORTUNITY_ID, "Subject": "Call", "TaskSubtype": "Call"},
                entity="Task",
                record_ids=["00T5g00000CcCcCAAA"],
            ),
            salesforce_event(
                "CREATE",
                {"WhatId": OPPORTUNITY_ID, "Subject": "Demo"},
                entity="Event",
                record_ids=["00U5g00000DdDdDAAA"],
            ),
            salesforce_event(
                "CREATE",
                {"WhatId": "0015g00000QwErTAAZ", "Subject": "Account task"},
                entity="Task",
                record_ids=["00T5g00000EeEeEAAA"],
            ),
        ],
        CTX,
    )
    assert [(e.deal_id, e.activity_type) for e in out.events if isinstance(e, ActivityLogged)] == [
        (f"salesforce:{OPPORTUNITY_ID}", ActivityType.CALL),
        (f"salesforce:{OPPORTUNITY_ID}", ActivityType.MEETING),
    ]
    assert out.ignored == {"no_deal": 1}


def test_event_ids_come_from_transaction_key_not_replay_id() -> None:
    again = copy.deepcopy(SALESFORCE_UPDATE)
    again["data"]["event"]["replayId"] = 99999  # redelivered after a relay restart
    assert (
        salesforce.normalize(SALESFORCE_UPDATE, CTX).events[0].event_id
        == salesforce.normalize(again, CTX).events[0].event_id
    )


def test_bare_payload_form() -> None:
    bare = SALESFORCE_UPDATE["data"]["payload"]
    assert (
        salesforce.normalize(bare, CTX).events
        == salesforce.normalize(SALESFORCE_UPDATE, CTX).events
    )


@pytest.mark.parametrize(
    "payload",
    [
        "x",
        {"data": {"payload": {"Name": "no header"}}},
        salesforce_event("UPDATE", {})
        | {"data": {"payload": {"ChangeEventHeader": {"entityName": "Opportunity"}}}},
        {
            "ChangeEventHeader": {
                "entityName": "Opportunity",
                "changeType": "UPDATE",
                "recordIds": "006",
            }
        },
    ],
)
def test_malformed(payload: Any) -> None:
    with pytest.raises(PayloadError):
        salesforce.normalize(payload, CTX)
