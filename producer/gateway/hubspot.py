"""HubSpot webhooks (v3 signature): a JSON array of events, one property per event.

Handled (legacy ``deal.*`` subscription types, and the generic ``object.*`` ones whose
``objectTypeId`` is ``0-3``, deals):

- ``propertyChange`` of ``dealname``, ``amount``, ``closedate``, ``hs_deal_stage_probability``
  (HubSpot sends 0-1; the contract wants percent, so it is multiplied by 100),
  ``hubspot_owner_id``, ``deal_currency_code`` -> a partial ``deal.updated``; ``dealstage`` ->
  ``deal.updated`` with the mapped stage, or ``deal.closed`` for a stage mapped to won/lost.
  Other properties are ignored (``unmapped_property``).
- ``deletion`` -> ``deal.deleted``.
- ``creation`` carries no properties (HubSpot sends the properties set at creation as
  ``propertyChange`` events): ignored as ``no_fields``.
- ``associationChange`` from a deal to a call/email/meeting/note/task (engagement) ->
  ``activity.logged``; removals are ignored.
- ``associationChange`` between a deal and a contact or a company (either direction, added or
  removed) -> a contact lookup: the gateway reads the deal's contacts' emails and companies'
  domains from HubSpot (``producer.gateway.contacts``, with ``VECTOROS_GATEWAY_HUBSPOT_TOKEN``)
  and publishes them as a ``deal.updated`` (``contacts``, ``account_domains``). Other
  associations are ignored.
- Everything else (contacts, companies, merge, restore, ...): ignored, counted.

``deal_id`` is ``hubspot:<portalId>:<objectId>`` (object ids are unique per HubSpot account);
``event_id`` is derived from ``portalId``, ``subscriptionId``, ``eventId``, ``objectId``,
``occurredAt`` and the property name, never from ``attemptNumber``, so a retried delivery has the
same ids.
"""

from __future__ import annotations

import re
from typing import Any

from producer.gateway.common import (
    ContactLookup,
    Context,
    Normalized,
    PayloadError,
    as_list,
    as_object,
    as_str,
    crm_id,
    deal_id,
    emit_activity,
    emit_deal,
    emit_deleted,
    event_id,
    from_epoch_ms,
)
from schemas.events import ActivityType

SOURCE = "hubspot"
DEAL_OBJECT_TYPE_ID = "0-3"

PROPERTY_FIELDS: dict[str, str] = {
    "dealname": "title",
    "amount": "value",
    "closedate": "close_date",
    "hs_deal_stage_probability": "probability",
    "hubspot_owner_id": "owner_id",
    "deal_currency_code": "currency",
}

ENGAGEMENT_TYPE_IDS: dict[str, ActivityType] = {
    "0-48": ActivityType.CALL,
    "0-49": ActivityType.EMAIL,
    "0-47": ActivityType.MEETING,
    "0-46": ActivityType.NOTE,
    "0-27": ActivityType.TASK,
}
_DEAL_TO_ENGAGEMENT = re.compile(r"^DEAL_TO_(CALL|EMAIL|MEETING|NOTE|TASK)S?$")
_PARTY_TYPE_IDS = frozenset({"0-1", "0-2"})  # contacts, companies
_DEAL_AND_PARTY = re.compile(r"^(DEAL_TO_(CONTACT|COMPANY)|(CONTACT|COMPANY)_TO_DEAL)$")


def _scaled_probability(value: Any) -> Any:
    """``hs_deal_stage_probability`` is a fraction (0.2 = 20 %)."""
    try:
        return float(value) * 100
    except (TypeError, ValueError, OverflowError):
        return value  # left to the field parser, which counts it as invalid


def _object_and_action(item: Any, where: str) -> tuple[str, str]:
    subscription = as_str(item.get("subscriptionType"), f"{where}.subscriptionType")
    obj, _, action = subscription.partition(".")
    if obj == "object":
        type_id = str(item.get("objectTypeId", ""))
        obj = "deal" if type_id == DEAL_OBJECT_TYPE_ID else f"object:{type_id}"
    return obj, action


def normalize(payload: Any, ctx: Context) -> Normalized:
    out = Normalized()
    for index, raw_item in enumerate(as_list(payload, "body")):
        where = f"[{index}]"
        item = as_object(raw_item, where)
        obj, action = _object_and_action(item, where)
        if action == "associationChange":
            _association(item, where, ctx, out)
            continue
        if obj != "deal":
            out.ignore("unknown_object")
            continue
        if action not in ("propertyChange", "deletion", "creation"):
            out.ignore("unsupported_action")
            continue
        object_id = crm_id(item.get("objectId"), f"{where}.objectId")
        portal = crm_id(item.get("portalId"), f"{where}.portalId")
        at = from_epoch_ms(item.get("occurredAt"), f"{where}.occurredAt")
        eid = event_id(
            SOURCE,
            portal,
            item.get("subscriptionId", ""),
            crm_id(item.get("eventId"), f"{where}.eventId"),
            object_id,
            item.get("occurredAt"),
            item.get("subscriptionType"),
            item.get("propertyName", ""),
        )
        deal = deal_id(SOURCE, portal, object_id)
        if action == "deletion":
            emit_deleted(ctx, out, deal=deal, eid=eid, at=at)
        elif action == "creation":
            out.ignore("no_fields")
        else:
            prop = item.get("propertyName")
            value = item.get("propertyValue")
            if not isinstance(prop, str):
                raise PayloadError("invalid_payload", f"{where}.propertyName must be a string")
            if prop == "dealstage":
                emit_deal(ctx, out, deal=deal, eid=eid, at=at, raw={}, stage_key=value)
            elif prop in PROPERTY_FIELDS:
                if prop == "hs_deal_stage_probability":
                    value = _scaled_probability(value)
                raw = {PROPERTY_FIELDS[prop]: value}
                emit_deal(ctx, out, deal=deal, eid=eid, at=at, raw=raw)
            else:
                out.ignore("unmapped_property")
    return out


def _party(item: Any) -> str | None:
    """``from`` or ``to``: which end is the deal when the association joins a deal and a
    contact or company; ``None`` otherwise."""
    association = str(item.get("associationType", "")).upper()
    if _DEAL_AND_PARTY.match(association):
        return "from" if association.startswith("DEAL_") else "to"
    ends = (str(item.get("fromObjectTypeId", "")), str(item.get("toObjectTypeId", "")))
    if ends[0] == DEAL_OBJECT_TYPE_ID and ends[1] in _PARTY_TYPE_IDS:
        return "from"
    if ends[1] == DEAL_OBJECT_TYPE_ID and ends[0] in _PARTY_TYPE_IDS:
        return "to"
    return None


def _association(item: Any, where: str, ctx: Context, out: Normalized) -> None:
    """A deal associated with an engagement: the engagement is activity on the deal. A deal
    associated with (or parted from) a contact or company: its contacts are read again."""
    end = _party(item)
    if end is not None:
        crm_deal = crm_id(item.get(f"{end}ObjectId"), f"{where}.{end}ObjectId")
        portal = crm_id(item.get("portalId"), f"{where}.portalId")
        eid = event_id(
            SOURCE,
            portal,
            item.get("subscriptionId", ""),
            crm_id(item.get("eventId"), f"{where}.eventId"),
            item.get("fromObjectId"),
            item.get("toObjectId"),
            item.get("occurredAt"),
            item.get("associationRemoved"),
        )
        at = from_epoch_ms(item.get("occurredAt"), f"{where}.occurredAt")
        out.lookups.append(ContactLookup(deal_id(SOURCE, portal, crm_deal), crm_deal, eid, at))
        return
    kind: ActivityType | None = None
    association = str(item.get("associationType", "")).upper()
    match = _DEAL_TO_ENGAGEMENT.match(association)
    if match:
        kind = ActivityType(match.group(1).lower())
    elif str(item.get("fromObjectTypeId", "")) == DEAL_OBJECT_TYPE_ID:
        kind = ENGAGEMENT_TYPE_IDS.get(str(item.get("toObjectTypeId", "")))
    if kind is None:
        out.ignore("unknown_object")
        return
    if item.get("associationRemoved") is True:
        out.ignore("association_removed")
        return
    from_id = crm_id(item.get("fromObjectId"), f"{where}.fromObjectId")
    to_id = crm_id(item.get("toObjectId"), f"{where}.toObjectId")
    portal = crm_id(item.get("portalId"), f"{where}.portalId")
    eid = event_id(
        SOURCE,
        portal,
        item.get("subscriptionId", ""),
        crm_id(item.get("eventId"), f"{where}.eventId"),
        from_id,
        to_id,
        item.get("occurredAt"),
    )
    at = from_epoch_ms(item.get("occurredAt"), f"{where}.occurredAt")
    emit_activity(
        ctx, out, deal=deal_id(SOURCE, portal, from_id), eid=eid, at=at, activity_type=kind
    )
