"""Salesforce Change Data Capture: ``OpportunityChangeEvent`` (and activities on opportunities).

Salesforce does not push CDC over plain HTTP: a relay (a Pub/Sub API or CometD subscriber,
Salesforce Event Relay + Amazon EventBridge API destination, MuleSoft, ...) forwards each event as
JSON with ``Authorization: Bearer <token>``. Accepted bodies: one event (``ChangeEventHeader`` and
fields at the top level), the CometD envelope (``{"data": {"payload": ..., "event":
{"replayId": ...}}}`` or ``{"payload": ..., "event": ...}``), or a JSON array of those.

- ``Opportunity`` ``CREATE``/``UNDELETE`` -> ``deal.created`` when ``Name``, ``Amount``,
  ``StageName`` (mapped), ``Probability``, ``CloseDate``, ``OwnerId`` and a currency
  (``CurrencyIsoCode`` or ``VECTOROS_GATEWAY_DEFAULT_CURRENCY``) are known, else a partial
  ``deal.updated``. ``UPDATE`` -> ``deal.updated`` with the fields in the body (restricted to
  ``changedFields``/``nulledFields`` when they are field names). A ``StageName`` mapped to won or
  lost (or ``IsClosed``/``IsWon`` in the body) -> ``deal.closed``. ``DELETE`` ->
  ``deal.deleted``. One event may cover several ``recordIds``: one deal event per record.
- ``GAP_*`` events carry no data (Salesforce could not build the event): ignored and counted
  (``gap_event``); reconcile those deals from Salesforce. Wildcard record ids are ignored.
- ``Task``/``Event`` ``CREATE`` whose ``WhatId`` is an opportunity (``006`` prefix) ->
  ``activity.logged`` on it (``TaskSubtype`` Call/Email, else task; events are meetings).
- ``OpportunityContactRole`` ``CREATE``/``UNDELETE`` (or an ``UPDATE`` naming its
  ``OpportunityId``) -> a contact lookup: the gateway reads the opportunity's contact roles'
  emails and its account's website (``producer.gateway.contacts``, with
  ``VECTOROS_GATEWAY_SALESFORCE_INSTANCE_URL`` and the client credentials) and publishes them as a
  ``deal.updated`` (``contacts``, ``account_domains``). A ``DELETE`` names only the role's id:
  ignored (``contact_role_removed``); the next change of the opportunity's roles corrects it.
- Other entities are ignored (``unknown_object``).

``deal_id`` is ``salesforce:<record id>``; ``event_id`` is derived from ``transactionKey``,
``sequenceNumber``, ``changeType`` and the record id (the ``replayId``, or the event's content,
when there is no transaction key).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from producer.gateway.common import (
    ContactLookup,
    Context,
    Normalized,
    PayloadError,
    as_list,
    as_object,
    as_str,
    content_key,
    crm_id,
    deal_id,
    emit_activity,
    emit_deal,
    emit_deleted,
    event_id,
    from_any_time,
)
from schemas.events import ActivityType, Outcome

SOURCE = "salesforce"
OPPORTUNITY_PREFIX = "006"
OPPORTUNITY_ID = re.compile(r"^006[A-Za-z0-9]{12}(?:[A-Za-z0-9]{3})?$")
"""A 15- or 18-character opportunity id (also what makes it safe inside a SOQL literal)."""

FIELDS: dict[str, str] = {
    "Name": "title",
    "Amount": "value",
    "CurrencyIsoCode": "currency",
    "Probability": "probability",
    "CloseDate": "close_date",
    "OwnerId": "owner_id",
}


def _events(payload: Any) -> list[tuple[Mapping[str, Any], Any, str]]:
    """(event payload, replayId, where) for every event in the body."""
    items = as_list(payload, "body") if isinstance(payload, list) else [payload]
    found: list[tuple[Mapping[str, Any], Any, str]] = []
    for index, raw in enumerate(items):
        where = f"[{index}]" if isinstance(payload, list) else "body"
        item = as_object(raw, where)
        envelope = as_object(item["data"], f"{where}.data") if "data" in item else item
        if "payload" in envelope:
            event = as_object(envelope.get("event") or {}, f"{where}.event")
            found.append(
                (as_object(envelope["payload"], f"{where}.payload"), event.get("replayId"), where)
            )
        else:
            found.append((envelope, None, where))
    return found


def _date_days(value: Any) -> Any:
    """Pub/Sub API (Avro) sends dates as days since the epoch; CometD as ``YYYY-MM-DD``."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 1_000_000:
        return value * 86_400_000
    return value


def normalize(payload: Any, ctx: Context) -> Normalized:
    out = Normalized()
    for event, replay_id, where in _events(payload):
        header = as_object(event.get("ChangeEventHeader"), f"{where}.ChangeEventHeader")
        entity = as_str(header.get("entityName"), f"{where}.ChangeEventHeader.entityName")
        change = as_str(header.get("changeType"), f"{where}.ChangeEventHeader.changeType")
        record_ids = as_list(header.get("recordIds"), f"{where}.ChangeEventHeader.recordIds")
        if change.startswith("GAP_"):
            out.ignore("gap_event", max(1, len(record_ids)))
            continue
        if entity not in ("Opportunity", "Task", "Event", "OpportunityContactRole"):
            out.ignore("unknown_object")
            continue
        if change not in ("CREATE", "UPDATE", "DELETE", "UNDELETE"):
            out.ignore("unsupported_action")
            continue
        at = from_any_time(
            header.get("commitTimestamp"), f"{where}.ChangeEventHeader.commitTimestamp"
        )
        key = header.get("transactionKey")
        base = (
            (key, header.get("sequenceNumber", ""))
            if key
            else (
                ("replay", replay_id) if replay_id is not None else ("content", content_key(event))
            )
        )
        for position, raw_id in enumerate(record_ids):
            record = crm_id(raw_id, f"{where}.ChangeEventHeader.recordIds[{position}]")
            if record.endswith("*"):
                out.ignore("wildcard_record")
                continue
            eid = event_id(SOURCE, entity, change, *base, record)
            if entity == "Opportunity":
                _opportunity(ctx, out, event, header, change, record, eid, at)
            elif entity == "OpportunityContactRole":
                _contact_role(out, event, change, eid, at)
            else:
                _activity(ctx, out, event, entity, change, eid, at)
    return out


def _opportunity(
    ctx: Context,
    out: Normalized,
    event: Mapping[str, Any],
    header: Mapping[str, Any],
    change: str,
    record: str,
    eid: str,
    at: Any,
) -> None:
    deal = deal_id(SOURCE, record)
    if change == "DELETE":
        emit_deleted(ctx, out, deal=deal, eid=eid, at=at)
        return
    listed = [
        name
        for key in ("changedFields", "nulledFields")
        if isinstance(header.get(key), list)
        for name in header[key]
    ]
    names = [n for n in listed if isinstance(n, str) and not n.startswith("0x")]  # 0x: bitmaps
    create = change in ("CREATE", "UNDELETE")

    def present(name: str) -> bool:
        # Without field names (a CREATE, or Pub/Sub bitmaps) only non-null values count: an
        # Avro-decoded body lists every field, null when unchanged, so a null cannot be told
        # apart from a cleared value there.
        if create or not names:
            return event.get(name) is not None
        return name in names

    raw = {ours: event.get(theirs) for theirs, ours in FIELDS.items() if present(theirs)}
    if "close_date" in raw:
        raw["close_date"] = _date_days(raw["close_date"])
    outcome = None
    if present("IsClosed") and event.get("IsClosed") is True and event.get("IsWon") is not None:
        outcome = Outcome.WON if event.get("IsWon") is True else Outcome.LOST
    kwargs: dict[str, Any] = {"stage_key": event.get("StageName")} if present("StageName") else {}
    emit_deal(
        ctx, out, deal=deal, eid=eid, at=at, raw=raw, outcome=outcome, create=create, **kwargs
    )


def _contact_role(
    out: Normalized, event: Mapping[str, Any], change: str, eid: str, at: Any
) -> None:
    if change == "DELETE":
        out.ignore("contact_role_removed")
        return
    opportunity = event.get("OpportunityId")
    if not isinstance(opportunity, str) or not OPPORTUNITY_ID.match(opportunity):
        out.ignore("no_deal")
        return
    out.lookups.append(ContactLookup(deal_id(SOURCE, opportunity), opportunity, eid, at))


def _activity(
    ctx: Context,
    out: Normalized,
    event: Mapping[str, Any],
    entity: str,
    change: str,
    eid: str,
    at: Any,
) -> None:
    what = event.get("WhatId")
    if change != "CREATE":
        out.ignore("unsupported_action")
        return
    if not isinstance(what, str) or not what.startswith(OPPORTUNITY_PREFIX):
        out.ignore("no_deal")
        return
    if entity == "Event":
        kind = ActivityType.MEETING
    else:
        subtype = str(event.get("TaskSubtype") or "").lower()
        kind = {"call": ActivityType.CALL, "email": ActivityType.EMAIL}.get(
            subtype, ActivityType.TASK
        )
    try:
        deal = deal_id(SOURCE, crm_id(what, "WhatId"))
    except PayloadError:
        out.ignore("no_deal")
        return
    emit_activity(
        ctx, out, deal=deal, eid=eid, at=at, activity_type=kind, subject=event.get("Subject")
    )
