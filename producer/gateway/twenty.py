"""Twenty CRM webhooks: ``eventName`` (``opportunity.created``/``updated``/``deleted``...),
``objectMetadata``, ``workspaceId``, ``eventDate``, ``record`` (the record after the change) and,
on updates, ``updatedFields``. The shorter form of Twenty's docs page (``event``, ``data``,
``timestamp``) is accepted too.

- ``opportunity.created``/``restored`` -> a partial ``deal.updated`` (Twenty opportunities have
  no probability, so ``deal.created`` is only possible with a custom ``probability`` field):
  ``name`` -> title, ``amount.amountMicros`` / 1e6 -> value, ``amount.currencyCode`` ->
  currency, ``closeDate`` -> close date, ``stage`` -> mapped stage, ``ownerId`` -> owner.
  A stage mapped to won/lost (default: ``CUSTOMER`` = won) -> ``deal.closed``.
- ``opportunity.updated`` -> ``deal.updated`` with the fields in ``updatedFields``.
- ``opportunity.deleted``/``destroyed`` -> ``deal.deleted``.
- ``noteTarget.created``/``taskTarget.created`` with an ``opportunityId`` (a note or task
  attached to an opportunity) -> ``activity.logged`` (note/task).
- Other objects are ignored (``unknown_object``).

``deal_id`` is ``twenty:<record id>``; ``event_id`` is derived from ``workspaceId``,
``eventName``, the record id and its ``updatedAt``/``deletedAt`` (Twenty sends no event id).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from producer.gateway.common import (
    Context,
    Normalized,
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
from schemas.events import ActivityType

SOURCE = "twenty"

FIELDS: dict[str, str] = {
    "name": "title",
    "closeDate": "close_date",
    "probability": "probability",
    "ownerId": "owner_id",
}
TARGETS: dict[str, ActivityType] = {
    "noteTarget": ActivityType.NOTE,
    "taskTarget": ActivityType.TASK,
}


def _amount(record: Mapping[str, Any]) -> dict[str, Any]:
    amount = record.get("amount")
    if not isinstance(amount, Mapping):
        return {"value": None}
    micros = amount.get("amountMicros")
    raw: dict[str, Any] = {"currency": amount.get("currencyCode")}
    try:
        raw["value"] = None if micros is None else float(micros) / 1_000_000
    except (TypeError, ValueError, OverflowError):
        raw["value"] = micros  # left to the field parser, which counts it as invalid
    return raw


def normalize(payload: Any, ctx: Context) -> Normalized:
    body = as_object(payload, "body")
    name = as_str(body.get("eventName", body.get("event")), "eventName")
    record = as_object(body.get("record", body.get("data")), "record")
    obj, _, action = name.partition(".")
    meta = body.get("objectMetadata")
    if isinstance(meta, Mapping) and isinstance(meta.get("nameSingular"), str):
        obj = meta["nameSingular"]
    out = Normalized()
    record_id = crm_id(record.get("id"), "record.id")
    version = record.get("deletedAt") or record.get("updatedAt") or record.get("createdAt")
    stamp = version or body.get("eventDate") or body.get("timestamp")
    if stamp is None:
        out.ignore("no_timestamp")
        return out
    at = from_any_time(stamp, "record.updatedAt")
    updated = body.get("updatedFields")
    eid = event_id(
        SOURCE,
        body.get("workspaceId", ""),
        name,
        record_id,
        stamp,
        content_key(updated) if isinstance(updated, list) else "",
    )
    if obj in TARGETS:
        target = record.get("opportunityId")
        if action != "created":
            out.ignore("unsupported_action")
        elif target is None:
            out.ignore("no_deal")
        else:
            deal = deal_id(SOURCE, crm_id(target, "record.opportunityId"))
            emit_activity(ctx, out, deal=deal, eid=eid, at=at, activity_type=TARGETS[obj])
        return out
    if obj != "opportunity":
        out.ignore("unknown_object")
        return out
    deal = deal_id(SOURCE, record_id)
    if action in ("deleted", "destroyed"):
        emit_deleted(ctx, out, deal=deal, eid=eid, at=at)
        return out
    if action not in ("created", "updated", "restored", "upserted"):
        out.ignore("unsupported_action")
        return out
    create = action != "updated" or not isinstance(updated, list)
    changed = set(record) if create else {str(f) for f in updated or []}
    if "owner" in changed:
        changed.add("ownerId")
    raw = {ours: record.get(theirs) for theirs, ours in FIELDS.items() if theirs in changed}
    if "amount" in changed:
        raw.update(_amount(record))
    kwargs: dict[str, Any] = {"stage_key": record.get("stage")} if "stage" in changed else {}
    emit_deal(ctx, out, deal=deal, eid=eid, at=at, raw=raw, create=create, **kwargs)
    return out
