"""Pipedrive webhooks v2 payloads -> deal events (the pure normalizer)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from producer.gateway import pipedrive
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
    pipedrive_activity_done,
    pipedrive_change,
    pipedrive_create,
    pipedrive_delete,
    pipedrive_meta,
)

STAGES = StageMap.from_data(
    {
        "defaults": {
            "pipedrive": {"1": "lead", "2": "qualified", "3": "proposal", "4": "negotiation"}
        }
    }
)
CTX = Context("pipedrive", "ws-pd", STAGES, None)


def changes(event: Any) -> dict[str, Any]:
    assert isinstance(event, DealUpdated)
    return {name: getattr(event.changes, name) for name in event.changes.model_fields_set}


def test_create_with_every_field_is_deal_created() -> None:
    [event] = pipedrive.normalize(pipedrive_create(), CTX).events
    assert isinstance(event, DealCreated)
    assert event.model_dump(exclude={"event_id", "schema_version"}, exclude_none=True) == {
        "type": "deal.created",
        "workspace_id": "ws-pd",
        "deal_id": "pipedrive:12882925:1",
        "occurred_at": dt.datetime(2024, 9, 27, 14, 25, 28, tzinfo=dt.UTC),
        "title": "test deal",
        "value": 12000.0,
        "currency": "USD",
        "stage": Stage.QUALIFIED,
        "probability": 40.0,
        "close_date": dt.date(2024, 12, 31),
        "owner_id": "18487521",
    }


def test_create_missing_fields_is_a_partial_update() -> None:
    payload = pipedrive_create()
    payload["data"]["probability"] = None
    payload["data"]["expected_close_date"] = None
    [event] = pipedrive.normalize(payload, CTX).events
    assert changes(event) == {
        "title": "test deal",
        "value": 12000.0,
        "currency": "USD",
        "stage": Stage.QUALIFIED,
        "owner_id": "18487521",
    }


def test_unmapped_stage_on_create() -> None:
    out = pipedrive.normalize(pipedrive_create(), Context("pipedrive", "ws", StageMap(), None))
    assert "stage" not in changes(out.events[0])
    assert out.ignored == {"unmapped_stage": 1}


def test_change_uses_the_fields_named_in_previous() -> None:
    payload = pipedrive_change(
        {"stage_id": 2, "value": 12000, "update_time": "2024-09-27T14:25:28Z"},
        "5b0c3a1e-9f7d-4c2b-8e6a-1d0f2e3c4b5a",
        stage_id=4,
        value=15000,
        update_time="2024-09-28T08:00:00Z",
    )
    [event] = pipedrive.normalize(payload, CTX).events
    assert changes(event) == {"stage": Stage.NEGOTIATION, "value": 15000.0, "currency": "USD"}
    assert event.occurred_at == dt.datetime(2024, 9, 28, 8, 0, tzinfo=dt.UTC)


def test_won_and_lost() -> None:
    won = pipedrive_change({"status": "open"}, "a1", status="won")
    lost = pipedrive_change(
        {"status": "open", "lost_reason": None}, "a2", status="lost", lost_reason="Too expensive"
    )
    [w] = pipedrive.normalize(won, CTX).events
    [lo] = pipedrive.normalize(lost, CTX).events
    assert isinstance(w, DealClosed)
    assert w.outcome is Outcome.WON
    assert w.value == 12000.0
    assert isinstance(lo, DealClosed)
    assert lo.outcome is Outcome.LOST
    assert lo.reason == "Too expensive"


def test_reopen_is_ignored() -> None:
    out = pipedrive.normalize(pipedrive_change({"status": "lost"}, "a3", status="open"), CTX)
    assert out.events == []
    assert out.ignored == {"reopened": 1}


def test_delete() -> None:
    [event] = pipedrive.normalize(pipedrive_delete(), CTX).events
    assert isinstance(event, DealDeleted)
    assert event.deal_id == "pipedrive:12882925:1"


def test_activity_marked_done_is_activity_on_its_deal() -> None:
    [event] = pipedrive.normalize(pipedrive_activity_done(), CTX).events
    assert isinstance(event, ActivityLogged)
    assert (event.deal_id, event.activity_type, event.subject) == (
        "pipedrive:12882925:1",
        ActivityType.CALL,
        "Discovery call",
    )
    assert event.occurred_at == dt.datetime(2024, 9, 30, 10, 5, tzinfo=dt.UTC)


def test_activity_not_done_or_without_deal_is_ignored() -> None:
    scheduled = pipedrive_activity_done()
    scheduled["meta"]["action"] = "create"
    scheduled["data"]["done"] = False
    scheduled["previous"] = None
    orphan = pipedrive_activity_done()
    orphan["data"]["deal_id"] = None
    assert pipedrive.normalize(scheduled, CTX).ignored == {"not_done": 1}
    assert pipedrive.normalize(orphan, CTX).ignored == {"no_deal": 1}


def test_note_on_a_deal() -> None:
    payload = {
        "meta": pipedrive_meta("create", "note", 31, "c0ffee00-0000-4000-8000-000000000031"),
        "data": {
            "id": 31,
            "content": "<p>Spoke to CFO</p>",
            "deal_id": 1,
            "add_time": "2024-09-29T12:00:00Z",
        },
        "previous": None,
    }
    [event] = pipedrive.normalize(payload, CTX).events
    assert isinstance(event, ActivityLogged)
    assert event.activity_type is ActivityType.NOTE
    assert event.subject is None


def test_deal_ids_are_per_company() -> None:
    other = pipedrive_create()
    other["meta"]["company_id"] = "777"
    mine = pipedrive.normalize(pipedrive_create(), CTX).events[0]
    theirs = pipedrive.normalize(other, CTX).events[0]
    assert (mine.deal_id, theirs.deal_id) == ("pipedrive:12882925:1", "pipedrive:777:1")


def test_retries_have_the_same_event_id() -> None:
    first = pipedrive.normalize(pipedrive_activity_done(attempt=1), CTX).events[0]
    again = pipedrive.normalize(pipedrive_activity_done(attempt=4), CTX).events[0]
    assert first.event_id == again.event_id


def test_other_entities_are_ignored() -> None:
    payload = {
        "meta": pipedrive_meta("create", "person", 3, "c0ffee00-0000-4000-8000-000000000003"),
        "data": {"id": 3, "name": "Jane"},
        "previous": None,
    }
    assert pipedrive.normalize(payload, CTX).ignored == {"unknown_object": 1}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ([], "invalid_payload"),
        ({"v": 1, "current": {}, "previous": None, "meta": {}}, "unsupported_version"),
        ({"data": {}}, "invalid_payload"),
        ({"meta": {"action": "change", "entity": "deal"}, "data": {"id": 1}}, "invalid_payload"),
        ({"meta": pipedrive_meta("change", "deal", 1, "x"), "data": None}, "invalid_payload"),
        ({"meta": pipedrive_meta("change", "deal", 1, "x", company_id=None)}, "invalid_payload"),
    ],
)
def test_malformed(payload: Any, reason: str) -> None:
    with pytest.raises(PayloadError) as err:
        pipedrive.normalize(payload, CTX)
    assert err.value.reason == reason
