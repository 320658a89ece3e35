"""Sample webhook bodies, written from each source's public documentation (field names and shapes
as documented), and request signing written out independently of ``producer.gateway.auth``.

Used by the gateway's unit and integration tests. Sources:

- HubSpot: the Webhooks API page ("Example payload": an array of events with ``objectId``,
  ``propertyName``, ``propertyValue``, ``changeSource``, ``eventId``, ``subscriptionId``,
  ``portalId``, ``appId``, ``occurredAt``, ``subscriptionType``, ``attemptNumber``) and
  "Validating requests" (v3 signature).
- Pipedrive: "Guide for Webhooks v2" ("Webhook format": ``meta`` with ``action``, ``entity``,
  ``company_id``, ``correlation_id``, ``entity_id``, ``id``, ``is_bulk_edit``, ``timestamp``,
  ``type``, ``user_id``, ``version``, ``webhook_id``, ``webhook_owner_id``, ``change_source``,
  ``attempt``, ``host``, ``permitted_user_ids``; ``data``; ``previous``) and the v2 deal/activity
  fields of the migration guide.
- Salesforce: "Change Event Message Structure" (CometD: ``data.payload.ChangeEventHeader`` with
  ``entityName``, ``recordIds``, ``changeType``, ``changeOrigin``, ``transactionKey``,
  ``sequenceNumber``, ``commitTimestamp``, ``commitUser``, ``commitNumber``, ``changedFields``;
  ``data.event.replayId``; ``channel``) and the Opportunity fields.
- Twenty: the webhook job of twentyhq/twenty (``targetUrl``, ``eventName``, ``objectMetadata``,
  ``workspaceId``, ``webhookId``, ``eventDate``, ``record``, ``updatedFields``) and
  "Webhook Validation" (``X-Twenty-Webhook-Signature``/``-Timestamp``).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import time
from typing import Any

HUBSPOT_SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
TWENTY_SECRET = "twenty-webhook-secret-0123456789"
PIPEDRIVE_USER = "vectoros"
PIPEDRIVE_PASSWORD = "pipedrive-basic-password"
SALESFORCE_TOKEN = "salesforce-relay-token-0123456789"

PORTAL_ID = 62515
APP_ID = 54321


# -- signing, independent of producer.gateway.auth ----------------------------------------------


def now_ms() -> str:
    return str(int(time.time() * 1000))


def hubspot_headers(
    body: bytes, uri: str, *, secret: str = HUBSPOT_SECRET, timestamp: str | None = None
) -> dict[str, str]:
    """HubSpot's v3 steps: utf-8 string method + URI + body + timestamp, HMAC-SHA256 with the
    app secret, base64."""
    ts = timestamp or now_ms()
    source = "POST" + uri + body.decode("utf-8") + ts
    digest = hmac.new(secret.encode("utf-8"), source.encode("utf-8"), hashlib.sha256).digest()
    return {
        "Content-Type": "application/json",
        "X-HubSpot-Signature-v3": base64.b64encode(digest).decode(),
        "X-HubSpot-Request-Timestamp": ts,
        "X-HubSpot-Signature-Version": "v3",
    }


def twenty_headers(
    body: bytes, *, secret: str = TWENTY_SECRET, timestamp: str | None = None
) -> dict[str, str]:
    """Twenty's steps: "{timestamp}:{JSON payload}", HMAC-SHA256 with the webhook secret, hex."""
    ts = timestamp or now_ms()
    signature = hmac.new(secret.encode(), f"{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Twenty-Webhook-Signature": signature,
        "X-Twenty-Webhook-Timestamp": ts,
        "X-Twenty-Webhook-Nonce": "0123456789abcdef0123456789abcdef",
    }


def pipedrive_headers(
    user: str = PIPEDRIVE_USER, password: str = PIPEDRIVE_PASSWORD
) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Content-Type": "application/json", "Authorization": f"Basic {token}"}


def salesforce_headers(token: str = SALESFORCE_TOKEN) -> dict[str, str]:
    return {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}


def dumps(payload: Any) -> bytes:
    """The CRMs send compact JSON (JSON.stringify / Jackson)."""
    return json.dumps(payload, separators=(",", ":")).encode()


# -- HubSpot --------------------------------------------------------------------------------------


def hubspot_event(
    object_id: int,
    event_id: int,
    occurred_at: int,
    subscription_type: str = "deal.propertyChange",
    *,
    subscription_id: int = 25,
    attempt: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """One event of HubSpot's documented example payload, for a deal."""
    event: dict[str, Any] = {
        "objectId": object_id,
        "changeSource": "CRM",
        "eventId": event_id,
        "subscriptionId": subscription_id,
        "portalId": PORTAL_ID,
        "appId": APP_ID,
        "occurredAt": occurred_at,
        "subscriptionType": subscription_type,
        "attemptNumber": attempt,
    }
    event.update(extra)
    return event


def hubspot_change(
    object_id: int, event_id: int, occurred_at: int, name: str, value: str, **kw: Any
) -> dict[str, Any]:
    return hubspot_event(
        object_id, event_id, occurred_at, propertyName=name, propertyValue=value, **kw
    )


# The documented example, with deal subscription types: a property change and a creation.
HUBSPOT_DOC_SAMPLE: list[dict[str, Any]] = [
    hubspot_change(1246965, 3816279340, 1462216307945, "dealstage", "qualifiedtobuy"),
    hubspot_event(1246978, 3816279480, 1462216307945, "deal.creation", changeFlag="NEW"),
]

# A deal changed property by property (HubSpot sends one property per event), plus noise.
HUBSPOT_CHANGES: list[dict[str, Any]] = [
    hubspot_change(777, 9001, 1735725600000, "dealname", "Enterprise SaaS - Alivio"),
    hubspot_change(777, 9002, 1735725600000, "amount", "25000"),
    hubspot_change(777, 9003, 1735725600000, "dealstage", "appointmentscheduled"),
    hubspot_change(777, 9004, 1735725600000, "hs_deal_stage_probability", "0.1"),
    hubspot_change(777, 9005, 1735725600000, "closedate", "1743379200000"),
    hubspot_change(777, 9006, 1735725600000, "hubspot_owner_id", "52550153"),
    hubspot_change(777, 9007, 1735725600000, "description", "not mapped"),
    hubspot_event(
        1246965,
        9008,
        1735725600000,
        "contact.propertyChange",
        propertyName="lifecyclestage",
        propertyValue="subscriber",
    ),
]


# -- Pipedrive ------------------------------------------------------------------------------------

PIPEDRIVE_DEAL: dict[str, Any] = {
    "add_time": "2024-09-27T14:25:27Z",
    "channel": None,
    "channel_id": None,
    "close_time": None,
    "creator_user_id": 18487521,
    "currency": "USD",
    "custom_fields": {},
    "expected_close_date": "2024-12-31",
    "first_won_time": None,
    "id": 1,
    "label_ids": [],
    "lost_reason": None,
    "lost_time": None,
    "org_id": 2,
    "origin": "ManuallyCreated",
    "origin_id": None,
    "owner_id": 18487521,
    "person_id": 3,
    "pipeline_id": 1,
    "probability": 40,
    "stage_change_time": None,
    "stage_id": 2,
    "status": "open",
    "title": "test deal",
    "update_time": "2024-09-27T14:25:28Z",
    "value": 12000,
    "visible_to": "3",
    "won_time": None,
    "is_archived": False,
    "archive_time": None,
}


def pipedrive_meta(
    action: str, entity: str, entity_id: int, event_uuid: str, **kw: Any
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "action": action,
        "entity": entity,
        "company_id": "12882925",
        "correlation_id": "3d6f8e2a-5c1b-4f7e-9a0d-2b8c7e1f4a6d",
        "entity_id": str(entity_id),
        "id": event_uuid,
        "is_bulk_edit": False,
        "timestamp": "2024-09-27T14:25:28.000Z",
        "type": "general",
        "user_id": "18487521",
        "version": "2.0",
        "webhook_id": "99",
        "webhook_owner_id": "18487521",
        "change_source": "app",
        "attempt": 1,
        "host": "company.pipedrive.com",
        "permitted_user_ids": ["18487521"],
    }
    meta.update(kw)
    return meta


def pipedrive_create() -> dict[str, Any]:
    return {
        "meta": pipedrive_meta("create", "deal", 1, "8a1f0c52-0b7e-4d35-a0f1-6b2c1d9e7f01"),
        "data": copy.deepcopy(PIPEDRIVE_DEAL),
        "previous": None,
    }


def pipedrive_change(previous: dict[str, Any], event_uuid: str, **data: Any) -> dict[str, Any]:
    deal = copy.deepcopy(PIPEDRIVE_DEAL)
    deal.update(data)
    return {
        "meta": pipedrive_meta("change", "deal", 1, event_uuid),
        "data": deal,
        "previous": previous,
    }


def pipedrive_delete() -> dict[str, Any]:
    return {
        "meta": pipedrive_meta("delete", "deal", 1, "8a1f0c52-0b7e-4d35-a0f1-6b2c1d9e7f09"),
        "data": None,
        "previous": copy.deepcopy(PIPEDRIVE_DEAL),
    }


def pipedrive_activity_done(attempt: int = 1) -> dict[str, Any]:
    return {
        "meta": pipedrive_meta(
            "change", "activity", 8, "8a1f0c52-0b7e-4d35-a0f1-6b2c1d9e7f0a", attempt=attempt
        ),
        "data": {
            "id": 8,
            "owner_id": 18487521,
            "type": "call",
            "subject": "Discovery call",
            "done": True,
            "deal_id": 1,
            "person_id": 3,
            "org_id": 2,
            "due_date": "2024-09-30",
            "add_time": "2024-09-27T14:30:00Z",
            "update_time": "2024-09-30T10:05:00Z",
            "marked_as_done_time": "2024-09-30T10:05:00Z",
        },
        "previous": {"done": False, "update_time": "2024-09-27T14:30:00Z"},
    }


# -- Salesforce -----------------------------------------------------------------------------------

OPPORTUNITY_ID = "0065g00000KxXyZAAV"
OWNER_ID = "0055g00000AbCdEAAF"


def salesforce_event(
    change_type: str,
    fields: dict[str, Any],
    *,
    record_ids: list[str] | None = None,
    changed: list[str] | None = None,
    transaction_key: str = "0002343d-9d90-e395-ed20-cf416ba652ad",
    sequence: int = 1,
    replay_id: int = 12345,
    commit_ms: int = 1727447128000,
    entity: str = "Opportunity",
) -> dict[str, Any]:
    """The documented CometD change event message."""
    return {
        "data": {
            "schema": "IeRuaY6cbI_HsV8Rv1Mc5g",
            "payload": {
                "ChangeEventHeader": {
                    "entityName": entity,
                    "recordIds": record_ids or [OPPORTUNITY_ID],
                    "changeType": change_type,
                    "changeOrigin": "com/salesforce/api/soap/58.0;client=SfdcInternalAPI/",
                    "transactionKey": transaction_key,
                    "sequenceNumber": sequence,
                    "commitTimestamp": commit_ms,
                    "commitUser": OWNER_ID,
                    "commitNumber": 10650825061,
                    "changedFields": changed or [],
                },
                **fields,
            },
            "event": {"replayId": replay_id},
        },
        "channel": f"/data/{entity}ChangeEvent",
    }


SALESFORCE_CREATE = salesforce_event(
    "CREATE",
    {
        "Name": "Acme - 200 licenses",
        "AccountId": "0015g00000QwErTAAZ",
        "StageName": "Prospecting",
        "Amount": 48000.0,
        "Probability": 10.0,
        "CloseDate": "2024-12-31",
        "OwnerId": OWNER_ID,
        "CreatedDate": "2024-09-27T14:25:28.000Z",
        "CreatedById": OWNER_ID,
        "LastModifiedDate": "2024-09-27T14:25:28.000Z",
        "LastModifiedById": OWNER_ID,
    },
)

SALESFORCE_UPDATE = salesforce_event(
    "UPDATE",
    {
        "StageName": "Negotiation/Review",
        "Probability": 90.0,
        "LastModifiedDate": "2024-09-28T09:00:00.000Z",
    },
    changed=["StageName", "Probability", "LastModifiedDate"],
    transaction_key="00051c2d-7e11-4a1f-9c3e-aa0f3b2c1d4e",
    replay_id=12346,
    commit_ms=1727514000000,
)


# -- Twenty ---------------------------------------------------------------------------------------

TWENTY_OPPORTUNITY_ID = "6f2d4c7a-1b3e-4e5f-9a8b-0c1d2e3f4a5b"


def twenty_opportunity(
    event: str, updated: list[str] | None = None, **record: Any
) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": TWENTY_OPPORTUNITY_ID,
        "name": "Acme renewal",
        "amount": {"amountMicros": 25_000_000_000, "currencyCode": "EUR"},
        "closeDate": "2025-03-31T00:00:00.000Z",
        "stage": "PROPOSAL",
        "position": 1,
        "pointOfContactId": "2a3b4c5d-0000-4000-8000-000000000001",
        "companyId": "2a3b4c5d-0000-4000-8000-000000000002",
        "createdAt": "2025-02-10T15:30:45.000Z",
        "updatedAt": "2025-02-10T15:30:45.000Z",
        "deletedAt": None,
        "createdBy": {"source": "MANUAL", "workspaceMemberId": None, "name": "Alice Doe"},
    }
    base.update(record)
    payload: dict[str, Any] = {
        "targetUrl": "https://hooks.example.com/webhooks/twenty",
        "eventName": f"opportunity.{event}",
        "objectMetadata": {
            "id": "370985db-22d8-4463-8e5f-2271d30913bd",
            "nameSingular": "opportunity",
        },
        "workspaceId": "20202020-1c25-4d02-bf25-6aeccf7ea419",
        "webhookId": "a1b2c3d4-0000-4000-8000-000000000003",
        "eventDate": "2025-02-10T15:30:50.000Z",
        "record": base,
    }
    if updated is not None:
        payload["updatedFields"] = updated
    return payload


def test_samples_are_json_round_trippable() -> None:
    for sample in (
        HUBSPOT_DOC_SAMPLE,
        HUBSPOT_CHANGES,
        pipedrive_create(),
        pipedrive_activity_done(),
        SALESFORCE_CREATE,
        SALESFORCE_UPDATE,
        twenty_opportunity("created"),
    ):
        assert json.loads(dumps(sample)) == sample
