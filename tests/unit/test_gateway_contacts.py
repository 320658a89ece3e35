"""The gateway fills deals' contacts for email capture: a HubSpot association between a deal
and a contact or company makes it read the deal's contacts' emails and companies' domains
from a stand-in of HubSpot's CRM API (v4 associations with ``paging.next.after``, v3 batch read,
bearer token, 429 Retry-After) and publish them as one ``deal.updated``; a Pipedrive deal whose
person changed, the persons of the deal (``GET /api/v2/persons?deal_id=``, cursor paging); a
Salesforce opportunity contact role, the roles' contacts and the account's website (client
credentials token, SOQL query with ``nextRecordsUrl``)."""

from __future__ import annotations

import urllib.parse
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from producer.gateway import hubspot, pipedrive, salesforce
from producer.gateway.app import build_app
from producer.gateway.common import Context
from producer.gateway.contacts import (
    CrmLookupError,
    HubSpotContacts,
    PipedriveContacts,
    SalesforceContacts,
)
from producer.gateway.metrics import GatewayMetrics
from producer.gateway.stages import StageMap
from schemas.events import DealUpdated
from tests.unit.test_gateway_app import BASE, FakePublisher, settings
from tests.unit.test_gateway_samples import (
    OPPORTUNITY_ID,
    dumps,
    hubspot_event,
    hubspot_headers,
    pipedrive_change,
    pipedrive_create,
    pipedrive_headers,
    salesforce_event,
    salesforce_headers,
)

TOKEN = "pat-na1-test-token"
ASSOCIATION_TYPE = {"category": "HUBSPOT_DEFINED", "typeId": 3, "label": None}


class FakeHubSpot:
    """HubSpot's CRM API as documented, for the calls the resolver makes."""

    def __init__(self) -> None:
        self.associations: dict[tuple[str, str], list[str]] = {
            ("5", "contacts"): ["101", "102", "103"],
            ("5", "companies"): ["201"],
        }
        self.records = {
            ("contacts", "101"): {"email": "Ana@Acme.com"},
            ("contacts", "102"): {"email": "bo@acme.com"},
            ("contacts", "103"): {"email": None},  # a contact without an email
            ("companies", "201"): {"domain": "acme.com"},
        }
        self.page_size = 2
        self.throttle = 0
        self.requests: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return httpx.Response(
                401, json={"status": "error", "category": "INVALID_AUTHENTICATION"}
            )
        if self.throttle:
            self.throttle -= 1
            return httpx.Response(
                429,
                headers={"Retry-After": "2"},
                json={"status": "error", "category": "RATE_LIMITS"},
            )
        parts = request.url.path.strip("/").split("/")
        if parts[:3] == ["crm", "v4", "objects"] and request.method == "GET":
            _, _, _, _, deal, _, kind = parts
            ids = self.associations.get((deal, kind), [])
            start = int(request.url.params.get("after", "0"))
            chunk = ids[start : start + self.page_size]
            body: dict[str, Any] = {
                "results": [
                    {
                        "toObjectId": int(i),
                        "associationTypes": [
                            {"category": "HUBSPOT_DEFINED", "typeId": 3, "label": None}
                        ],
                    }
                    for i in chunk
                ]
            }
            if start + self.page_size < len(ids):
                nxt = str(start + self.page_size)
                body["paging"] = {"next": {"after": nxt, "link": "?after=" + nxt}}
            return httpx.Response(200, json=body)
        if parts[:3] == ["crm", "v3", "objects"] and parts[4:] == ["batch", "read"]:
            kind = parts[3]
            asked = orjson.loads(request.content)
            results = [
                {"id": i["id"], "archived": False, "createdAt": "2025-01-01T00:00:00Z",
                 "properties": {p: self.records[(kind, i["id"])].get(p)
                                for p in asked["properties"]}}
                for i in asked["inputs"]
                if (kind, i["id"]) in self.records
            ]  # fmt: skip
            return httpx.Response(200, json={"status": "COMPLETE", "results": results})
        return httpx.Response(404, json={"status": "error", "category": "OBJECT_NOT_FOUND"})


def deal_to_contact(event: int, removed: bool = False, **kw: Any) -> dict[str, Any]:
    fields = {"associationType": "DEAL_TO_CONTACT", "fromObjectId": 5, "toObjectId": 101}
    fields.update(kw)
    return hubspot_event(
        5, event, 1735725600000, "deal.associationChange", associationRemoved=removed, **fields
    )


def test_deal_and_contact_or_company_associations_ask_for_a_lookup() -> None:
    ctx = Context("hubspot", "ws-acme", StageMap(), None)
    out = hubspot.normalize(
        [
            deal_to_contact(1),
            deal_to_contact(2, associationType="CONTACT_TO_DEAL", fromObjectId=101, toObjectId=5),
            hubspot_event(5, 3, 1735725600000, "object.associationChange",
                          fromObjectTypeId="0-2", toObjectTypeId="0-3", fromObjectId=201,
                          toObjectId=6),
            deal_to_contact(4, removed=True),
        ],
        ctx,
    )  # fmt: skip
    assert [(lk.deal, lk.crm_deal_id) for lk in out.lookups] == [
        ("hubspot:62515:5", "5"),
        ("hubspot:62515:5", "5"),
        ("hubspot:62515:6", "6"),
        ("hubspot:62515:5", "5"),  # a removal changes the list too
    ]
    assert len({lk.eid for lk in out.lookups}) == 4
    assert out.events == []


async def test_the_resolver_pages_associations_and_reads_emails_and_domains() -> None:
    fake = FakeHubSpot()
    fake.throttle = 1
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as http:
        resolver = HubSpotContacts(http, TOKEN, api_base="https://api.hubspot.test", sleep=sleep)
        assert await resolver.resolve("5") == (("ana@acme.com", "bo@acme.com"), ("acme.com",))
    assert waits == [2.0]
    gets = [r for r in fake.requests if r.method == "GET"]
    assert [r.url.params.get("after") for r in gets if r.url.path.endswith("/contacts")] == [
        None,  # the throttled one
        None,
        "2",
    ]
    batch = next(r for r in fake.requests if r.url.path == "/crm/v3/objects/contacts/batch/read")
    assert orjson.loads(batch.content) == {
        "properties": ["email"],
        "inputs": [{"id": "101"}, {"id": "102"}, {"id": "103"}],
    }


async def test_a_refused_token_is_an_error() -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(FakeHubSpot().handler)) as http:
        with pytest.raises(CrmLookupError):
            await HubSpotContacts(http, "wrong", api_base="https://api.hubspot.test").resolve("5")


async def no_sleep(_seconds: float) -> None:
    return None


class Gateway:
    def __init__(self, fake: FakeHubSpot | None, publisher: FakePublisher | None = None) -> None:
        self.fake, self.registry = fake, CollectorRegistry()
        self.publisher = publisher or FakePublisher()
        self.http = httpx.AsyncClient(
            transport=httpx.MockTransport(fake.handler if fake else lambda r: httpx.Response(500))
        )
        contacts = {}
        if fake is not None:
            contacts["hubspot"] = HubSpotContacts(
                self.http, TOKEN, api_base="https://api.hubspot.test", sleep=no_sleep
            )
        self.app = build_app(
            settings(), self.publisher, GatewayMetrics(self.registry), contacts=contacts
        )

    async def post(self, payload: Any) -> httpx.Response:
        body = dumps(payload)
        path = "/webhooks/hubspot/ws-acme"
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            return await client.post(path, content=body, headers=hubspot_headers(body, BASE + path))


async def test_the_gateway_publishes_the_deals_current_contacts_once_per_deal() -> None:
    gw = Gateway(FakeHubSpot())
    resp = await gw.post([deal_to_contact(1), deal_to_contact(2, toObjectId=102)])
    assert resp.status_code == 200
    [[event]] = gw.publisher.sent  # two association changes of one deal: one read, one event
    assert isinstance(event, DealUpdated)
    assert event.deal_id == "hubspot:62515:5"
    assert event.workspace_id == "ws-acme"
    assert event.changes.contacts == ("ana@acme.com", "bo@acme.com")
    assert event.changes.account_domains == ("acme.com",)
    again = Gateway(FakeHubSpot())  # a redelivery: the same event id (the monitor drops it)
    await again.post([deal_to_contact(1), deal_to_contact(2, toObjectId=102)])
    assert again.publisher.sent[0][0].event_id == event.event_id


async def test_without_a_token_the_lookup_is_counted_as_ignored() -> None:
    gw = Gateway(None)
    resp = await gw.post([deal_to_contact(1)])
    assert resp.status_code == 200
    assert resp.json() == {"published": 0, "ignored": {"no_contact_lookup": 1}}


async def test_a_crm_failure_is_503_so_hubspot_retries() -> None:
    fake = FakeHubSpot()
    fake.throttle = 10  # throttled past every attempt
    gw = Gateway(fake)
    resp = await gw.post([deal_to_contact(1)])
    assert resp.status_code == 503
    assert gw.publisher.sent == []


# --- Pipedrive -----------------------------------------------------------------------------------


class FakePipedrive:
    """``GET /api/v2/persons?deal_id=`` as documented: ``data`` with ``emails``, cursor paging
    in ``additional_data.next_cursor``, the ``x-api-token`` header."""

    def __init__(self) -> None:
        self.persons = [
            {"id": 3, "name": "Jane", "emails": [{"value": "Jane@Buyer.io", "primary": True}]},
            {"id": 4, "name": "Max", "emails": [{"value": "max@buyer.io", "primary": True},
                                                {"value": "max@gmail.com", "primary": False}]},
            {"id": 5, "name": "No mail", "emails": []},
        ]  # fmt: skip
        self.requests: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("x-api-token") != TOKEN:
            return httpx.Response(401, json={"success": False, "error": "unauthorized access"})
        assert request.url.path == "/api/v2/persons"
        assert request.url.params["deal_id"] == "1"
        start = int(request.url.params.get("cursor", "0"))
        page = self.persons[start : start + 2]
        more = start + 2 < len(self.persons)
        extra = {"next_cursor": str(start + 2) if more else None}
        return httpx.Response(200, json={"success": True, "data": page, "additional_data": extra})


def test_a_pipedrive_deal_with_a_new_person_asks_for_a_lookup() -> None:
    ctx = Context("pipedrive", "ws-acme", StageMap(), None)
    created = pipedrive.normalize(pipedrive_create(), ctx)
    assert [(lk.deal, lk.crm_deal_id) for lk in created.lookups] == [("pipedrive:12882925:1", "1")]
    assert created.lookups[0].eid not in {e.event_id for e in created.events}
    changed = pipedrive.normalize(pipedrive_change({"person_id": 9}, "u-1", person_id=3), ctx)
    assert len(changed.lookups) == 1
    other = pipedrive.normalize(pipedrive_change({"value": 1}, "u-2", value=2), ctx)
    assert other.lookups == []
    won = pipedrive.normalize(
        pipedrive_change({"person_id": 9, "status": "open"}, "u-3", person_id=3, status="won"), ctx
    )
    assert won.lookups == []  # a closed deal leaves the capture index anyway


async def test_the_gateway_publishes_a_pipedrive_deals_persons_as_contacts() -> None:
    fake = FakePipedrive()
    registry = CollectorRegistry()
    publisher = FakePublisher()
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as http:
        resolver = PipedriveContacts(
            http, TOKEN, "acme", api_base="https://acme.pipedrive.test", sleep=no_sleep
        )
        app = build_app(
            settings(), publisher, GatewayMetrics(registry), contacts={"pipedrive": resolver}
        )
        body = dumps(pipedrive_change({"person_id": 9}, "u-1", person_id=3))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            resp = await client.post(
                "/webhooks/pipedrive/ws-acme", content=body, headers=pipedrive_headers()
            )
    assert resp.status_code == 200
    [[event]] = publisher.sent
    assert isinstance(event, DealUpdated)
    assert event.deal_id == "pipedrive:12882925:1"
    assert event.changes.contacts == ("jane@buyer.io", "max@buyer.io", "max@gmail.com")
    assert "account_domains" not in event.changes.model_fields_set  # Pipedrive has none to give
    assert [r.url.params.get("cursor") for r in fake.requests] == [None, "2"]


# --- Salesforce ----------------------------------------------------------------------------------

ROLE_ID = "00K5e00000AbCdEEA1"


def contact_role(change: str, **fields: Any) -> dict[str, Any]:
    return salesforce_event(change, fields, record_ids=[ROLE_ID], entity="OpportunityContactRole")


def role(email: str | None) -> dict[str, Any]:
    contact = {"Email": email} if email else None
    return {"attributes": {"type": "OpportunityContactRole"}, "Contact": contact}


NEXT_RECORDS = "/services/data/v62.0/query/01g-2000"
CLIENT_FORM = {"grant_type": "client_credentials", "client_id": "ck", "client_secret": "cs"}


class FakeSalesforce:
    """The client credentials token endpoint and the REST query resource as documented
    (``records``, ``done``, ``nextRecordsUrl``); ``expire`` makes the current session invalid."""

    def __init__(self) -> None:
        self.tokens = 0
        self.expired = False
        self.requests: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/services/oauth2/token":
            if dict(urllib.parse.parse_qsl(request.content.decode())) != CLIENT_FORM:
                return httpx.Response(400, json={"error": "invalid_client"})
            self.tokens += 1
            self.expired = False
            token = {"access_token": f"00D!t{self.tokens}", "token_type": "Bearer",
                     "instance_url": "https://acme.my.salesforce.test"}  # fmt: skip
            return httpx.Response(200, json=token)
        if self.expired or request.headers.get("authorization") != f"Bearer 00D!t{self.tokens}":
            error = {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
            return httpx.Response(401, json=[error])
        if request.url.path == NEXT_RECORDS:
            return httpx.Response(
                200, json={"totalSize": 3, "done": True, "records": [role("cfo@acme.com")]}
            )
        assert request.url.path == "/services/data/v62.0/query"
        soql = request.url.params["q"]
        if "FROM OpportunityContactRole" in soql:
            assert soql.endswith(f"WHERE OpportunityId = '{OPPORTUNITY_ID}'")
            records = [role("Ana@Acme.com"), role(None)]
            page = {
                "totalSize": 3,
                "done": False,
                "records": records,
                "nextRecordsUrl": NEXT_RECORDS,
            }
            return httpx.Response(200, json=page)
        assert soql == f"SELECT Account.Website FROM Opportunity WHERE Id = '{OPPORTUNITY_ID}'"
        account = {
            "attributes": {"type": "Opportunity"},
            "Account": {"Website": "https://www.acme.com/"},
        }
        return httpx.Response(200, json={"totalSize": 1, "done": True, "records": [account]})


def test_a_salesforce_contact_role_asks_for_a_lookup_of_its_opportunity() -> None:
    ctx = Context("salesforce", "ws-acme", StageMap(), None)
    out = salesforce.normalize(
        [
            contact_role("CREATE", OpportunityId=OPPORTUNITY_ID, ContactId="0035e00000XyZabAAB"),
            contact_role("DELETE"),
            contact_role("UPDATE", Role="Decision Maker"),  # names no opportunity
            contact_role("CREATE", OpportunityId="006' OR Name != '"),
        ],
        ctx,
    )
    assert [(lk.deal, lk.crm_deal_id) for lk in out.lookups] == [
        (f"salesforce:{OPPORTUNITY_ID}", OPPORTUNITY_ID)
    ]
    assert out.ignored == {"contact_role_removed": 1, "no_deal": 2}


async def test_the_salesforce_resolver_queries_roles_and_the_account_and_reauthenticates() -> None:
    fake = FakeSalesforce()
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as http:
        resolver = SalesforceContacts(http, "https://acme.my.salesforce.test", "ck", "cs")
        assert await resolver.resolve(OPPORTUNITY_ID) == (
            ("ana@acme.com", "cfo@acme.com"),
            ("acme.com",),
        )
        assert fake.tokens == 1
        fake.expired = True  # the session expires: one new token, then the same answers
        assert (await resolver.resolve(OPPORTUNITY_ID))[0] == ("ana@acme.com", "cfo@acme.com")
        assert fake.tokens == 2
        with pytest.raises(CrmLookupError):
            await resolver.resolve("006' OR Name != '")


async def test_the_gateway_publishes_a_salesforce_opportunitys_contacts() -> None:
    fake = FakeSalesforce()
    publisher = FakePublisher()
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as http:
        resolver = SalesforceContacts(http, "https://acme.my.salesforce.test", "ck", "cs")
        app = build_app(
            settings(), publisher, GatewayMetrics(CollectorRegistry()),
            contacts={"salesforce": resolver},
        )  # fmt: skip
        body = dumps(contact_role("CREATE", OpportunityId=OPPORTUNITY_ID))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            resp = await client.post(
                "/webhooks/salesforce/ws-acme", content=body, headers=salesforce_headers()
            )
    assert resp.status_code == 200
    [[event]] = publisher.sent
    assert isinstance(event, DealUpdated)
    assert (event.changes.contacts, event.changes.account_domains) == (
        ("ana@acme.com", "cfo@acme.com"),
        ("acme.com",),
    )
