"""Reading a deal's contacts from the CRM, for the capture matcher (``deal.updated`` with
``contacts`` and ``account_domains``).

CRM webhooks name a deal's contacts and companies by id only. When one joins or leaves a deal
(``producer.gateway.common.ContactLookup``), the gateway asks the CRM for the deal's current
ones and publishes the whole lists (a ``deal.updated`` replaces both), so a lost or reordered
webhook is corrected by the next.

Pipedrive (``PipedriveContacts``, an API token): the persons linked to the deal, as primary
contact or participant (``GET /api/v2/persons?deal_id=``, following
``additional_data.next_cursor``), and their ``emails``. Pipedrive organizations have no domain
field: the deal's account domains are left as they are.

Salesforce (``SalesforceContacts``, a connected app with the client credentials flow enabled):
an access token from ``/services/oauth2/token`` (``grant_type=client_credentials``, fetched
again once on a 401), then two SOQL queries (``GET /services/data/v62.0/query``, following
``nextRecordsUrl``): the opportunity's contact roles' ``Contact.Email`` and its
``Account.Website`` (as a domain). The opportunity id is checked against Salesforce's id
format before it goes into a query.

HubSpot (``HubSpotContacts``, a private app access token with ``crm.objects.deals.read``,
``crm.objects.contacts.read`` and ``crm.objects.companies.read``): the v4 associations of the
deal to ``contacts`` and to ``companies`` (``GET /crm/v4/objects/deals/{id}/associations/
{type}``, following ``paging.next.after``), then those records' ``email`` and ``domain``
properties (``POST /crm/v3/objects/{type}/batch/read``, 100 ids a call). 429 (HubSpot's rate
limits): wait ``Retry-After`` (capped; 1, 2, 4 s without one), at most 4 attempts. The token is
never logged.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import httpx

logger = logging.getLogger(__name__)

HUBSPOT_API = "https://api.hubapi.com"
MAX_CONTACTS = 100
"""At most this many addresses (and domains) per deal: the contract's bound."""


class CrmLookupError(Exception):
    """The CRM did not answer usefully: the webhook is answered 503 and retried."""


Found = tuple[tuple[str, ...], tuple[str, ...] | None]
"""``(contact addresses, account domains)`` of a deal, each sorted and deduplicated; domains
``None`` when the CRM has none to give (they are then left as they were)."""


class ContactResolver(Protocol):
    async def resolve(self, crm_deal_id: str) -> Found: ...


def _address(raw: Any) -> str | None:
    text = str(raw or "").strip().lower()
    local, at, domain = text.rpartition("@")
    if not at or not local or "." not in domain or any(c.isspace() for c in text):
        return None
    return text


def _domain(raw: Any) -> str | None:
    text = str(raw or "").strip().lower().removeprefix("https://").removeprefix("http://")
    text = text.removeprefix("www.").split("/")[0]
    if "." not in text or any(c.isspace() or c == "@" for c in text):
        return None
    return text


class HubSpotContacts:
    def __init__(
        self,
        http: httpx.AsyncClient,
        token: str,
        *,
        api_base: str = HUBSPOT_API,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_attempts: int = 4,
        max_wait_seconds: float = 30.0,
    ) -> None:
        self._http, self._token, self._base = http, token, api_base.rstrip("/")
        self._sleep, self._attempts, self._max_wait = sleep, max_attempts, max_wait_seconds

    async def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        for attempt in range(1, self._attempts + 1):
            resp = await self._http.request(
                method, self._base + path, headers={"Authorization": f"Bearer {self._token}"}, **kw
            )
            if resp.status_code == 429 and attempt < self._attempts:
                header = resp.headers.get("retry-after", "")
                wait = float(header) if header.isdigit() else 2.0 ** (attempt - 1)
                logger.warning("hubspot: 429 on %s, retrying in %.0fs", path, wait)
                await self._sleep(min(wait, self._max_wait))
                continue
            if resp.status_code >= 400:
                raise CrmLookupError(f"hubspot {method} {path}: {resp.status_code}")
            body = resp.json()
            return body if isinstance(body, dict) else {}
        raise CrmLookupError(f"hubspot {method} {path}: still throttled")  # pragma: no cover

    async def _associated(self, crm_deal_id: str, kind: str) -> list[str]:
        ids: list[str] = []
        after: str | None = None
        while True:
            params = {"limit": "500", **({"after": after} if after else {})}
            page = await self._call(
                "GET", f"/crm/v4/objects/deals/{crm_deal_id}/associations/{kind}", params=params
            )
            ids += [str(r["toObjectId"]) for r in page.get("results") or () if "toObjectId" in r]
            after = ((page.get("paging") or {}).get("next") or {}).get("after")
            if not after or len(ids) >= 10 * MAX_CONTACTS:
                return ids

    async def _properties(self, kind: str, ids: list[str], prop: str) -> list[Any]:
        values: list[Any] = []
        for start in range(0, len(ids), 100):
            inputs = [{"id": i} for i in ids[start : start + 100]]
            batch = await self._call(
                "POST",
                f"/crm/v3/objects/{kind}/batch/read",
                json={"properties": [prop], "inputs": inputs},
            )
            values += [(r.get("properties") or {}).get(prop) for r in batch.get("results") or ()]
        return values

    async def resolve(self, crm_deal_id: str) -> Found:
        contacts = await self._associated(crm_deal_id, "contacts")
        companies = await self._associated(crm_deal_id, "companies")
        emails = await self._properties("contacts", contacts, "email") if contacts else []
        domains = await self._properties("companies", companies, "domain") if companies else []
        addresses = sorted({a for a in map(_address, emails) if a})[:MAX_CONTACTS]
        names = sorted({d for d in map(_domain, domains) if d})[:MAX_CONTACTS]
        return tuple(addresses), tuple(names)


class PipedriveContacts:
    def __init__(
        self,
        http: httpx.AsyncClient,
        token: str,
        company_domain: str,
        *,
        api_base: str | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_attempts: int = 4,
    ) -> None:
        self._http, self._token = http, token
        self._base = (api_base or f"https://{company_domain}.pipedrive.com").rstrip("/")
        self._sleep, self._attempts = sleep, max_attempts

    async def _page(self, params: dict[str, str]) -> dict[str, Any]:
        for attempt in range(1, self._attempts + 1):
            resp = await self._http.get(
                self._base + "/api/v2/persons", params=params, headers={"x-api-token": self._token}
            )
            if resp.status_code == 429 and attempt < self._attempts:
                header = resp.headers.get("retry-after", "")
                await self._sleep(min(float(header) if header.isdigit() else 2.0**attempt, 30.0))
                continue
            if resp.status_code >= 400:
                raise CrmLookupError(f"pipedrive GET /api/v2/persons: {resp.status_code}")
            body = resp.json()
            return body if isinstance(body, dict) else {}
        raise CrmLookupError("pipedrive: still throttled")  # pragma: no cover

    async def resolve(self, crm_deal_id: str) -> Found:
        addresses: set[str] = set()
        cursor: str | None = None
        for _ in range(20):  # at most 10,000 persons
            params = {
                "deal_id": crm_deal_id,
                "limit": "500",
                **({"cursor": cursor} if cursor else {}),
            }
            page = await self._page(params)
            for person in page.get("data") or ():
                for email in (person or {}).get("emails") or ():
                    a = _address((email or {}).get("value"))
                    if a:
                        addresses.add(a)
            cursor = (page.get("additional_data") or {}).get("next_cursor")
            if not cursor:
                break
        return tuple(sorted(addresses)[:MAX_CONTACTS]), None


SALESFORCE_API = "/services/data/v62.0"
_SALESFORCE_ID = re.compile(r"^006[A-Za-z0-9]{12}(?:[A-Za-z0-9]{3})?$")


class SalesforceContacts:
    def __init__(
        self,
        http: httpx.AsyncClient,
        instance_url: str,
        client_id: str,
        client_secret: str,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_attempts: int = 4,
    ) -> None:
        self._http, self._base = http, instance_url.rstrip("/")
        self._client = (client_id, client_secret)
        self._sleep, self._attempts = sleep, max_attempts
        self._token: str | None = None

    async def _authenticate(self) -> str:
        resp = await self._http.post(
            self._base + "/services/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_id": self._client[0],
                "client_secret": self._client[1],
            },
        )
        token = resp.json().get("access_token") if resp.status_code == 200 else None
        if not token:
            raise CrmLookupError(f"salesforce token request refused ({resp.status_code})")
        self._token = str(token)
        return self._token

    async def _get(self, url: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        token = self._token or await self._authenticate()
        refreshed = False
        for attempt in range(1, self._attempts + 1):
            resp = await self._http.get(
                self._base + url, params=params, headers={"Authorization": f"Bearer {token}"}
            )
            if resp.status_code == 401 and not refreshed:  # the session expired
                refreshed = True
                token = await self._authenticate()
                continue
            if resp.status_code in (429, 503) and attempt < self._attempts:
                header = resp.headers.get("retry-after", "")
                await self._sleep(min(float(header) if header.isdigit() else 2.0**attempt, 30.0))
                continue
            if resp.status_code >= 400:
                raise CrmLookupError(f"salesforce GET {url.split('?')[0]}: {resp.status_code}")
            body = resp.json()
            return body if isinstance(body, dict) else {}
        raise CrmLookupError("salesforce: still throttled")  # pragma: no cover

    async def _query(self, soql: str) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        page = await self._get(SALESFORCE_API + "/query", {"q": soql})
        while True:
            records += [r for r in page.get("records") or () if isinstance(r, dict)]
            nxt = page.get("nextRecordsUrl")
            if page.get("done", True) or not nxt or len(records) >= 10 * MAX_CONTACTS:
                return records
            page = await self._get(str(nxt))

    async def resolve(self, crm_deal_id: str) -> Found:
        if not _SALESFORCE_ID.match(crm_deal_id):
            raise CrmLookupError("not an opportunity id")
        # the id matched Salesforce's id format: letters and digits only, safe in a literal
        roles_soql = f"SELECT Contact.Email FROM OpportunityContactRole WHERE OpportunityId = '{crm_deal_id}'"  # noqa: S608, E501
        account_soql = f"SELECT Account.Website FROM Opportunity WHERE Id = '{crm_deal_id}'"  # noqa: S608
        roles = await self._query(roles_soql)
        opportunity = await self._query(account_soql)
        emails = {_address((r.get("Contact") or {}).get("Email")) for r in roles}
        sites = {_domain((r.get("Account") or {}).get("Website")) for r in opportunity}
        addresses = sorted(a for a in emails if a)[:MAX_CONTACTS]
        return tuple(addresses), tuple(sorted(d for d in sites if d))
