"""The gateway's HTTP behaviour (in-process ASGI, fake publisher): statuses, reasons, metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from producer.gateway.app import build_app
from producer.gateway.metrics import GatewayMetrics
from producer.gateway.settings import GatewaySettings
from schemas.events import DealEvent
from tests.unit.test_gateway_samples import (
    HUBSPOT_CHANGES,
    HUBSPOT_SECRET,
    PIPEDRIVE_PASSWORD,
    PIPEDRIVE_USER,
    SALESFORCE_CREATE,
    SALESFORCE_TOKEN,
    TWENTY_SECRET,
    dumps,
    hubspot_change,
    hubspot_headers,
    pipedrive_create,
    pipedrive_headers,
    salesforce_headers,
    twenty_headers,
    twenty_opportunity,
)

BASE = "https://hooks.example.com"


class FakePublisher:
    def __init__(self, error: Exception | None = None, delay: float = 0.0) -> None:
        self.sent: list[list[DealEvent]] = []
        self.error = error
        self.delay = delay

    async def send(self, events: Sequence[DealEvent]) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        self.sent.append(list(events))


def settings(**kw: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": "unused:9092",
        "metrics_enabled": False,
        "gateway_default_workspace": "ws-default",
        "gateway_hubspot_client_secret": HUBSPOT_SECRET,
        "gateway_pipedrive_username": PIPEDRIVE_USER,
        "gateway_pipedrive_password": PIPEDRIVE_PASSWORD,
        "gateway_salesforce_token": SALESFORCE_TOKEN,
        "gateway_twenty_secret": TWENTY_SECRET,
        "gateway_default_currency": "USD",
        # the samples are CRM payloads recorded in 2025: far behind today's receive time
        "max_event_age": "3650d",
    }
    values.update(kw)
    return GatewaySettings(**values)


class Harness:
    def __init__(self, publisher: FakePublisher | None = None, **kw: Any) -> None:
        self.registry = CollectorRegistry()
        self.publisher = publisher or FakePublisher()
        self.app = build_app(settings(**kw), self.publisher, GatewayMetrics(self.registry))

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=BASE)

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(f"vectoros_gateway_{name}", labels) or 0.0

    async def hubspot(
        self, payload: Any, path: str = "/webhooks/hubspot/ws-acme", **kw: Any
    ) -> httpx.Response:
        body = dumps(payload)
        async with self.client() as client:
            return await client.post(
                path, content=body, headers=hubspot_headers(body, BASE + path, **kw)
            )


async def test_hubspot_batch_published_in_occurred_at_order() -> None:
    h = Harness()
    late = hubspot_change(1, 11, 1735725700000, "amount", "20")
    early = hubspot_change(1, 10, 1735725600000, "amount", "10")
    response = await h.hubspot([late, early, *HUBSPOT_CHANGES])
    assert response.status_code == 200, response.text
    assert response.json() == {
        "published": 8,
        "ignored": {"unmapped_property": 1, "unknown_object": 1},
    }
    [sent] = h.publisher.sent
    assert [e.workspace_id for e in sent] == ["ws-acme"] * 8
    assert sent[0].occurred_at < sent[-1].occurred_at
    assert h.metric("requests_total", source="hubspot", status="200") == 1
    assert h.metric("events_published_total", source="hubspot", type="deal.updated") == 8
    assert h.metric("ignored_total", source="hubspot", reason="unmapped_property") == 1


async def test_every_source_accepts_its_own_credentials() -> None:
    h = Harness()
    async with h.client() as client:
        body = dumps(pipedrive_create())
        r1 = await client.post("/webhooks/pipedrive", content=body, headers=pipedrive_headers())
        body = dumps(SALESFORCE_CREATE)
        r2 = await client.post("/webhooks/salesforce", content=body, headers=salesforce_headers())
        body = dumps(twenty_opportunity("created"))
        r3 = await client.post("/webhooks/twenty/ws-tw", content=body, headers=twenty_headers(body))
    assert [r.status_code for r in (r1, r2, r3)] == [200, 200, 200]
    workspaces = [batch[0].workspace_id for batch in h.publisher.sent]
    assert workspaces == ["ws-default", "ws-default", "ws-tw"]


async def test_signature_failures_are_401_with_a_metric() -> None:
    h = Harness()
    payload = [hubspot_change(1, 10, 1735725600000, "amount", "10")]
    body = dumps(payload)
    path = "/webhooks/hubspot/ws-acme"
    stale = str(int((time.time() - 600) * 1000))
    async with h.client() as client:
        tampered = await client.post(
            path, content=body.replace(b"10", b"99"), headers=hubspot_headers(body, BASE + path)
        )
        wrong = await client.post(
            path, content=body, headers=hubspot_headers(body, BASE + path, secret="x" * 36)
        )
        old = await client.post(
            path, content=body, headers=hubspot_headers(body, BASE + path, timestamp=stale)
        )
        other_source = await client.post(
            "/webhooks/twenty", content=body, headers=hubspot_headers(body, BASE + path)
        )
    assert [r.status_code for r in (tampered, wrong, old, other_source)] == [401] * 4
    assert tampered.json() == {"error": "bad_signature"}
    assert old.json() == {"error": "stale_timestamp"}
    assert h.metric("auth_failures_total", source="hubspot", reason="bad_signature") == 2
    assert h.metric("auth_failures_total", source="hubspot", reason="stale_timestamp") == 1
    assert h.metric("auth_failures_total", source="twenty", reason="missing_credentials") == 1
    assert h.publisher.sent == []


async def test_public_url_is_what_hubspot_signs() -> None:
    h = Harness(gateway_public_url="https://crm-hooks.example.org/")
    body = dumps([hubspot_change(1, 10, 1735725600000, "amount", "10")])
    path = "/webhooks/hubspot/ws-acme"
    headers = hubspot_headers(body, "https://crm-hooks.example.org" + path + "?portal=1")
    async with h.client() as client:
        response = await client.post(path + "?portal=1", content=body, headers=headers)
    assert response.status_code == 200, response.text


async def test_malformed_bodies_are_400_with_a_reason() -> None:
    h = Harness()
    async with h.client() as client:
        not_json = await client.post(
            "/webhooks/pipedrive", content=b"{nope", headers=pipedrive_headers()
        )
        bad_utf8 = await client.post(
            "/webhooks/pipedrive", content=b'{"a":"\xff"}', headers=pipedrive_headers()
        )
        wrong_shape = await client.post(
            "/webhooks/pipedrive", content=b'{"meta": 1}', headers=pipedrive_headers()
        )
    assert (not_json.status_code, not_json.json()["error"]) == (400, "invalid_json")
    assert bad_utf8.status_code == 400
    assert wrong_shape.status_code == 400
    assert wrong_shape.json() == {
        "error": "invalid_payload",
        "detail": "meta must be a JSON object",
    }
    assert h.metric("rejected_requests_total", source="pipedrive", reason="invalid_json") == 2
    assert h.publisher.sent == []


async def test_nothing_is_published_when_one_item_is_broken() -> None:
    h = Harness()
    good = hubspot_change(1, 10, 1735725600000, "amount", "10")
    response = await h.hubspot([good, {"subscriptionType": "deal.propertyChange"}])
    assert response.status_code == 400
    assert response.json()["detail"] == "[1].objectId must be a string or integer id"
    assert h.publisher.sent == []


async def test_unknown_source_workspace_and_method() -> None:
    h = Harness(
        gateway_twenty_secret=None,
        gateway_workspaces="ws-acme,ws-beta",
        gateway_default_workspace=None,
    )
    async with h.client() as client:
        unknown = await client.post("/webhooks/zoho", content=b"[]")
        disabled = await client.post("/webhooks/twenty", content=b"{}")
        not_allowed = await client.post("/webhooks/pipedrive/ws-gamma", content=b"{}")
        invalid = await client.post("/webhooks/pipedrive/%20x", content=b"{}")
        no_default = await client.post("/webhooks/pipedrive", content=b"{}")
        get = await client.get("/webhooks/pipedrive/ws-acme")
    assert [r.status_code for r in (unknown, disabled, not_allowed, invalid, no_default)] == [
        404
    ] * 5
    assert unknown.json()["error"] == "unknown_source"
    assert not_allowed.json()["error"] == "unknown_workspace"
    assert get.status_code == 405
    assert h.metric("rejected_requests_total", source="other", reason="unknown_source") == 1


async def test_body_size_limit() -> None:
    h = Harness(gateway_max_body_bytes=2048)
    big = b"[" + b" " * 4096 + b"]"

    async def chunks() -> Any:
        for _ in range(8):
            yield b" " * 512

    async with h.client() as client:
        declared = await client.post(
            "/webhooks/pipedrive", content=big, headers=pipedrive_headers()
        )
        streamed = await client.post(
            "/webhooks/pipedrive", content=chunks(), headers=pipedrive_headers()
        )
    assert (declared.status_code, streamed.status_code) == (413, 413)
    assert declared.json()["error"] == "too_large"


@pytest.mark.parametrize(
    ("publisher", "publish_timeout"),
    [(FakePublisher(error=RuntimeError("broker down")), 5.0), (FakePublisher(delay=1.0), 0.05)],
)
async def test_publish_failures_are_503(publisher: FakePublisher, publish_timeout: float) -> None:
    h = Harness(publisher, gateway_publish_timeout_seconds=publish_timeout)
    response = await h.hubspot([hubspot_change(1, 10, 1735725600000, "amount", "10")])
    assert response.status_code == 503
    assert response.json()["error"] == "unavailable"
    assert h.metric("publish_failures_total", source="hubspot") == 1
    assert h.metric("events_published_total", source="hubspot", type="deal.updated") == 0


async def test_only_ignored_items_answer_200_without_publishing() -> None:
    h = Harness()
    contact = hubspot_change(1, 10, 1735725600000, "amount", "1") | {
        "subscriptionType": "contact.propertyChange"
    }
    response = await h.hubspot([contact])
    assert response.status_code == 200
    assert response.json() == {"published": 0, "ignored": {"unknown_object": 1}}
    assert h.publisher.sent == []


async def test_an_implausible_event_time_is_400_and_nothing_is_published() -> None:
    """The same bounds as the monitor's, against the receive time: a webhook whose event is
    over VECTOROS_MAX_CLOCK_SKEW ahead or VECTOROS_MAX_EVENT_AGE behind is refused as a whole."""
    h = Harness(max_clock_skew="1h", max_event_age="400d")
    now_ms = int(time.time() * 1000)
    day_ms = 86_400_000
    future = hubspot_change(7, 70, 32_472_144_000_000, "amount", "10")  # the year 2999
    old = hubspot_change(7, 71, now_ms - 401 * day_ms, "amount", "10")
    epoch = hubspot_change(7, 72, day_ms, "amount", "10")  # 1970-01-02
    fine = hubspot_change(7, 73, now_ms - day_ms, "amount", "10")
    soon = hubspot_change(7, 74, now_ms + 59 * 60_000, "amount", "10")  # 59 minutes ahead
    answers = [await h.hubspot([fine, bad]) for bad in (future, old, epoch)]
    for answer in answers:
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == "implausible_time"
    assert "ahead of the time it was received" in answers[0].json()["detail"]
    assert "behind the time it was received" in answers[1].json()["detail"]
    assert h.publisher.sent == []  # nothing of a refused webhook is published
    assert h.metric("rejected_requests_total", source="hubspot", reason="implausible_time") == 3
    accepted = await h.hubspot([fine, soon])
    assert accepted.status_code == 200, accepted.text
    assert len(h.publisher.sent) == 1
