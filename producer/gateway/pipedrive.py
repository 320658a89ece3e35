"""Pipedrive webhooks v2: ``meta`` (``action``, ``entity``, ``entity_id``, ``id``, ``attempt``,
``timestamp``), ``data`` (the object now) and ``previous`` (only the fields that changed).

Handled:

- ``deal`` ``create`` -> ``deal.created`` when every contract field is known (title, value,
  currency, a mapped ``stage_id``, ``probability``, ``expected_close_date``, ``owner_id``), else a
  partial ``deal.updated`` with what is known; ``status`` won/lost -> ``deal.closed``.
- ``deal`` ``change`` -> ``deal.updated`` with the fields named in ``previous`` (values from
  ``data``); ``status`` becoming won/lost -> ``deal.closed`` (``lost_reason`` as reason);
  re-opening a closed deal is ignored (``reopened``): the monitor has forgotten it.
- ``deal`` ``delete`` -> ``deal.deleted``.
- ``deal`` ``create`` with a ``person_id``, or ``change`` of ``person_id``, of an open deal -> a
  contact lookup: the gateway reads the persons linked to the deal (``producer.gateway.contacts``,
  with ``VECTOROS_GATEWAY_PIPEDRIVE_API_TOKEN``) and publishes their emails as a
  ``deal.updated`` (``contacts``).
- ``activity`` marked done (created done, or ``done`` false -> true) on a deal ->
  ``activity.logged`` (``type`` call/meeting/email/lunch/task/deadline mapped; other custom
  types count as task). Activities not done yet are ignored (``not_done``): a scheduled call is
  not activity.
- ``note`` ``create`` on a deal -> ``activity.logged`` (note).
- Other entities are ignored (``unknown_object``). Webhooks v1 bodies are rejected (400).

``deal_id`` is ``pipedrive:<company_id>:<entity_id>`` (deals) or
``pipedrive:<company_id>:<data.deal_id>`` (activities, notes): Pipedrive ids count per company.
``event_id`` is derived from ``meta.company_id``, ``entity``, ``entity_id``, ``action``,
``meta.id`` and the content of ``data``/``previous``, never from ``meta.attempt``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from producer.gateway.common import (
    ContactLookup,
    Context,
    Normalized,
    PayloadError,
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

SOURCE = "pipedrive"

DEAL_FIELDS: dict[str, str] = {
    "title": "title",
    "value": "value",
    "currency": "currency",
    "probability": "probability",
    "expected_close_date": "close_date",
    "owner_id": "owner_id",
}

ACTIVITY_TYPES: dict[str, ActivityType] = {
    "call": ActivityType.CALL,
    "meeting": ActivityType.MEETING,
    "lunch": ActivityType.MEETING,
    "email": ActivityType.EMAIL,
    "task": ActivityType.TASK,
    "deadline": ActivityType.TASK,
}

_OUTCOMES = {"won": Outcome.WON, "lost": Outcome.LOST}


def _occurred_at(meta: Mapping[str, Any], record: Mapping[str, Any], *keys: str) -> dt.datetime:
    for key in keys:
        if record.get(key):
            return from_any_time(record[key], f"data.{key}")
    if meta.get("timestamp") is None:
        raise PayloadError("invalid_payload", "meta.timestamp is missing")
    return from_any_time(meta["timestamp"], "meta.timestamp")


def normalize(payload: Any, ctx: Context) -> Normalized:
    body = as_object(payload, "body")
    if "current" in body or "v" in body:
        raise PayloadError(
            "unsupported_version", "a Pipedrive webhooks v1 body; create the webhook as v2.0"
        )
    meta = as_object(body.get("meta"), "meta")
    action = as_str(meta.get("action"), "meta.action")
    entity = as_str(meta.get("entity"), "meta.entity")
    data = as_object(body["data"], "data") if body.get("data") is not None else {}
    previous = as_object(body["previous"], "previous") if body.get("previous") is not None else {}
    out = Normalized()
    if action not in ("create", "change", "delete"):
        out.ignore("unsupported_action")
        return out
    entity_id = crm_id(meta.get("entity_id"), "meta.entity_id")
    company = crm_id(meta.get("company_id"), "meta.company_id")
    eid = event_id(
        SOURCE,
        company,
        entity,
        entity_id,
        action,
        meta.get("id", ""),
        content_key({"data": data, "previous": previous}),
    )
    if entity == "deal":
        _deal(ctx, out, meta, action, deal_id(SOURCE, company, entity_id), data, previous, eid)
    elif entity == "activity":
        _activity(ctx, out, meta, action, company, data, previous, eid)
    elif entity == "note":
        if action != "create":
            out.ignore("unsupported_action")
        elif data.get("deal_id") is None:
            out.ignore("no_deal")
        else:
            deal = deal_id(SOURCE, company, crm_id(data["deal_id"], "data.deal_id"))
            at = _occurred_at(meta, data, "add_time", "update_time")
            emit_activity(ctx, out, deal=deal, eid=eid, at=at, activity_type=ActivityType.NOTE)
    else:
        out.ignore("unknown_object")
    return out


def _deal(
    ctx: Context,
    out: Normalized,
    meta: Mapping[str, Any],
    action: str,
    deal: str,
    data: Mapping[str, Any],
    previous: Mapping[str, Any],
    eid: str,
) -> None:
    if action == "delete":
        at = _occurred_at(meta, {}, "update_time")
        emit_deleted(ctx, out, deal=deal, eid=eid, at=at)
        return
    if not data:
        raise PayloadError("invalid_payload", f"data must be the deal for action {action}")
    at = _occurred_at(meta, data, "update_time", "add_time")
    create = action == "create" or not previous
    changed = set(data) if create else set(previous)
    raw = {ours: data.get(theirs) for theirs, ours in DEAL_FIELDS.items() if theirs in changed}
    if "value" in raw and "currency" not in raw and data.get("currency"):
        raw["currency"] = data["currency"]
    outcome = None
    if "status" in changed:
        outcome = _OUTCOMES.get(str(data.get("status")))
        if outcome is None and not create and str(previous.get("status")) in _OUTCOMES:
            out.ignore("reopened")
            return
        if outcome is not None:
            raw["value"] = data.get("value")  # the deal's value at closing
    kwargs: dict[str, Any] = {}
    if "stage_id" in changed:
        kwargs["stage_key"] = data.get("stage_id")
    emit_deal(
        ctx,
        out,
        deal=deal,
        eid=eid,
        at=at,
        raw=raw,
        outcome=outcome,
        reason=data.get("lost_reason"),
        create=create,
        **kwargs,
    )
    person = data.get("person_id")
    is_open = outcome is None and data.get("status", "open") == "open"
    if "person_id" in changed and is_open and (person is not None or not create):
        crm_deal = deal.rsplit(":", 1)[1]
        out.lookups.append(ContactLookup(deal, crm_deal, event_id(SOURCE, eid, "contacts"), at))


def _activity(
    ctx: Context,
    out: Normalized,
    meta: Mapping[str, Any],
    action: str,
    company: str,
    data: Mapping[str, Any],
    previous: Mapping[str, Any],
    eid: str,
) -> None:
    if action == "delete":
        out.ignore("unsupported_action")
        return
    done_now = data.get("done") is True
    became_done = action == "create" or ("done" in previous and previous.get("done") is not True)
    if not (done_now and became_done):
        out.ignore("not_done")
        return
    if data.get("deal_id") is None:
        out.ignore("no_deal")
        return
    deal = deal_id(SOURCE, company, crm_id(data["deal_id"], "data.deal_id"))
    at = _occurred_at(meta, data, "marked_as_done_time", "update_time", "add_time")
    kind = ACTIVITY_TYPES.get(str(data.get("type", "")).lower(), ActivityType.TASK)
    emit_activity(
        ctx, out, deal=deal, eid=eid, at=at, activity_type=kind, subject=data.get("subject")
    )
