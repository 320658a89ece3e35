"""The gateway on the real broker: documented CRM payloads through the real HTTP server (uvicorn,
``run_gateway``) onto ``deal-events``, and from there through a running monitor."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from consumer.monitor import Monitor
from consumer.monitor.settings import MonitorSettings
from producer.gateway.service import run_gateway
from producer.gateway.settings import GatewaySettings
from schemas.events import (
    ActivityLogged,
    DealClosed,
    DealCreated,
    DealDeleted,
    DealEvent,
    DealUpdated,
    Stage,
    Tick,
    event_adapter,
)
from schemas.insights import Lifecycle, Priority, RuleName
from tests.kafka_utils import (
    WAIT_LIMIT,
    monitor_settings,
    read_all,
    read_insights,
    running_monitor,
    wait_caught_up,
)
from tests.unit.test_gateway_samples import (
    HUBSPOT_CHANGES,
    HUBSPOT_DOC_SAMPLE,
    HUBSPOT_SECRET,
    PIPEDRIVE_PASSWORD,
    PIPEDRIVE_USER,
    SALESFORCE_CREATE,
    SALESFORCE_TOKEN,
    SALESFORCE_UPDATE,
    TWENTY_OPPORTUNITY_ID,
    TWENTY_SECRET,
    dumps,
    hubspot_change,
    hubspot_headers,
    pipedrive_activity_done,
    pipedrive_change,
    pipedrive_create,
    pipedrive_headers,
    salesforce_event,
    salesforce_headers,
    twenty_headers,
    twenty_opportunity,
)
from vectoros.ops_server import Health

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 11, 2, 10, 0, tzinfo=dt.UTC)
# The documented payloads are samples recorded from 2016 on: far behind today, so the gateway and
# the monitor here accept events that old (test_gateway_app.py checks the default bounds).
SAMPLES_AGE = 100 * 365 * 86400.0


def samples_monitor_settings(bootstrap: str, names: Any) -> MonitorSettings:
    return monitor_settings(bootstrap, names, max_event_age=SAMPLES_AGE)


def ms(at: dt.datetime) -> int:
    return int(at.timestamp() * 1000)


def gateway_settings(monitor: MonitorSettings, tmp_path: Path, **kw: Any) -> GatewaySettings:
    stages = tmp_path / "stages.yaml"
    stages.write_text("defaults:\n  pipedrive: {'1': lead, '2': qualified, '4': negotiation}\n")
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": monitor.kafka_bootstrap_servers,
        "topic_events": monitor.topic_events,
        "topic_partitions": monitor.topic_partitions,
        "metrics_enabled": False,
        "gateway_port": 0,
        "gateway_stages_file": stages,
        "gateway_default_currency": "USD",
        "gateway_hubspot_client_secret": HUBSPOT_SECRET,
        "gateway_pipedrive_username": PIPEDRIVE_USER,
        "gateway_pipedrive_password": PIPEDRIVE_PASSWORD,
        "gateway_salesforce_token": SALESFORCE_TOKEN,
        "gateway_twenty_secret": TWENTY_SECRET,
        "max_event_age": SAMPLES_AGE,
    }
    values.update(kw)
    return GatewaySettings(**values)


class Client:
    """Posts webhooks the way each CRM does, to the running gateway."""

    def __init__(self, http: httpx.AsyncClient, base: str) -> None:
        self.http = http
        self.base = base

    async def hubspot(
        self, payload: Any, path: str = "/webhooks/hubspot/ws-hub", **kw: Any
    ) -> httpx.Response:
        body = dumps(payload)
        return await self.http.post(
            self.base + path, content=body, headers=hubspot_headers(body, self.base + path, **kw)
        )

    async def pipedrive(
        self, payload: Any, path: str = "/webhooks/pipedrive/ws-pd", **kw: str
    ) -> httpx.Response:
        return await self.http.post(
            self.base + path, content=dumps(payload), headers=pipedrive_headers(**kw)
        )

    async def salesforce(self, payload: Any, token: str = SALESFORCE_TOKEN) -> httpx.Response:
        return await self.http.post(
            self.base + "/webhooks/salesforce/ws-sf",
            content=dumps(payload),
            headers=salesforce_headers(token),
        )

    async def twenty(self, payload: Any, **kw: str) -> httpx.Response:
        body = dumps(payload)
        return await self.http.post(
            self.base + "/webhooks/twenty/ws-tw", content=body, headers=twenty_headers(body, **kw)
        )


@contextlib.asynccontextmanager
async def running_gateway(
    settings: GatewaySettings,
) -> AsyncIterator[tuple[Client, Health, CollectorRegistry]]:
    """``run_gateway`` in the background, as ``vectoros gateway`` runs it; stopped on exit."""
    registry, health, stop = CollectorRegistry(), Health(), asyncio.Event()
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_gateway(settings, registry, health, stop, on_ready=ready.set_result)
    )
    try:
        waiters: set[asyncio.Future[Any]] = {task, ready}
        done, _ = await asyncio.wait(
            waiters, timeout=WAIT_LIMIT, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            task.result()
        port = ready.result()
        assert health.ready()
        async with httpx.AsyncClient(timeout=WAIT_LIMIT) as http:
            yield Client(http, f"http://127.0.0.1:{port}"), health, registry
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_LIMIT)
    assert not health.ready()


async def topic_events(settings: MonitorSettings) -> list[tuple[str, DealEvent]]:
    out: list[tuple[str, DealEvent]] = []
    for record in await read_all(settings.kafka_bootstrap_servers or "", settings.topic_events):
        event = event_adapter.validate_json(record.value)
        assert not isinstance(event, Tick)
        out.append((record.key.decode(), event))
    return out


def fields(event: DealEvent) -> dict[str, Any]:
    if isinstance(event, DealUpdated):
        return {n: getattr(event.changes, n) for n in sorted(event.changes.model_fields_set)}
    return event.model_dump(
        exclude={"schema_version", "event_id", "workspace_id", "deal_id", "occurred_at", "type"},
        exclude_none=True,
    )


def state_of(monitor: Monitor, deal_id: str) -> Any:
    for partition in monitor.partitions.values():
        if deal_id in partition.deals:
            return partition.deals[deal_id]
    return None


def closed_somewhere(monitor: Monitor, deal_id: str) -> bool:
    return any(deal_id in partition.closed for partition in monitor.partitions.values())


async def test_documented_payloads_of_every_source_become_deal_events(
    kafka_bootstrap: str, unique_name: Any, tmp_path: Path
) -> None:
    ms_ = samples_monitor_settings(kafka_bootstrap, unique_name)
    async with running_gateway(gateway_settings(ms_, tmp_path)) as (client, _, registry):
        responses = [
            await client.hubspot(HUBSPOT_DOC_SAMPLE),
            await client.hubspot(HUBSPOT_CHANGES),
            await client.pipedrive(pipedrive_create()),
            await client.pipedrive(
                pipedrive_change(
                    {"stage_id": 2}, "5b0c3a1e-0000-4000-8000-00000000000a", stage_id=4
                )
            ),
            await client.pipedrive(pipedrive_activity_done()),
            await client.salesforce([SALESFORCE_CREATE, SALESFORCE_UPDATE]),
            await client.twenty(twenty_opportunity("created")),
            await client.twenty(
                twenty_opportunity("deleted", deletedAt="2025-02-12T00:00:00.000Z")
            ),
        ]
        assert [r.status_code for r in responses] == [200] * 8, [r.text for r in responses]
        assert [r.json()["published"] for r in responses] == [1, 6, 1, 1, 1, 2, 1, 1]
        published = registry.get_sample_value(
            "vectoros_gateway_events_published_total", {"source": "hubspot", "type": "deal.updated"}
        )
        assert published == 7

    events = await topic_events(ms_)
    assert all(key == event.deal_id for key, event in events)
    by_deal: dict[str, list[DealEvent]] = {}
    for _, event in events:
        by_deal.setdefault(event.deal_id, []).append(event)

    assert [fields(e) for e in by_deal["hubspot:62515:1246965"]] == [{"stage": Stage.QUALIFIED}]
    assert [fields(e) for e in by_deal["hubspot:62515:777"]] == [
        {"title": "Enterprise SaaS - Alivio"},
        {"currency": "USD", "value": 25000.0},
        {"stage": Stage.LEAD},
        {"probability": 10.0},
        {"close_date": dt.date(2025, 3, 31)},
        {"owner_id": "52550153"},
    ]
    assert {e.workspace_id for e in by_deal["hubspot:62515:777"]} == {"ws-hub"}

    pd = by_deal["pipedrive:12882925:1"]
    assert [type(e) for e in pd] == [DealCreated, DealUpdated, ActivityLogged]
    assert fields(pd[0]) == {
        "title": "test deal",
        "value": 12000.0,
        "currency": "USD",
        "stage": "qualified",
        "probability": 40.0,
        "close_date": dt.date(2024, 12, 31),
        "owner_id": "18487521",
    }
    assert fields(pd[1]) == {"stage": Stage.NEGOTIATION}
    assert fields(pd[2]) == {"activity_type": "call", "subject": "Discovery call"}
    assert {e.workspace_id for e in pd} == {"ws-pd"}

    sf = by_deal["salesforce:0065g00000KxXyZAAV"]
    assert [type(e) for e in sf] == [DealCreated, DealUpdated]
    assert fields(sf[0])["stage"] == "lead"
    assert fields(sf[0])["value"] == 48000.0
    assert fields(sf[1]) == {"probability": 90.0, "stage": Stage.NEGOTIATION}

    tw = by_deal[f"twenty:{TWENTY_OPPORTUNITY_ID}"]
    assert [type(e) for e in tw] == [DealUpdated, DealDeleted]
    assert fields(tw[0])["value"] == 25000.0
    assert fields(tw[0])["currency"] == "EUR"


async def test_hubspot_property_changes_drive_the_monitor(
    kafka_bootstrap: str, unique_name: Any, tmp_path: Path
) -> None:
    ms_ = samples_monitor_settings(kafka_bootstrap, unique_name)
    deal, close = 4242, ms(T0 + dt.timedelta(days=90))
    day1, day2 = T0 + dt.timedelta(days=1), T0 + dt.timedelta(days=2)
    async with (
        running_monitor(ms_) as monitor,
        running_gateway(gateway_settings(ms_, tmp_path)) as (
            client,
            _,
            _,
        ),
    ):
        opened = await client.hubspot(
            [
                hubspot_change(deal, 1, ms(T0), "dealname", "Expansion - Northwind"),
                hubspot_change(deal, 2, ms(T0), "amount", "25000"),
                hubspot_change(deal, 3, ms(T0), "dealstage", "appointmentscheduled"),
                hubspot_change(deal, 4, ms(T0), "hs_deal_stage_probability", "0.1"),
                hubspot_change(deal, 5, ms(T0), "closedate", str(close)),
                hubspot_change(deal, 6, ms(T0), "hubspot_owner_id", "52550153"),
            ]
        )
        moved = await client.hubspot(
            [
                hubspot_change(deal, 8, ms(day1) + 1000, "hs_deal_stage_probability", "0.3"),
                hubspot_change(deal, 7, ms(day1), "dealstage", "qualifiedtobuy"),
            ]
        )
        assert (opened.status_code, moved.status_code) == (200, 200)
        await wait_caught_up(monitor)
        state = state_of(monitor, f"hubspot:62515:{deal}")
        assert state is not None
        assert (state.title, state.value, state.currency, state.stage, state.probability) == (
            "Expansion - Northwind",
            25000.0,
            "USD",
            Stage.QUALIFIED,
            30.0,
        )
        assert (state.owner_id, state.workspace_id) == ("52550153", "ws-hub")
        assert state.open == ()
        won = await client.hubspot([hubspot_change(deal, 9, ms(day2), "dealstage", "closedwon")])
        assert won.status_code == 200
        await wait_caught_up(monitor)
        assert state_of(monitor, f"hubspot:62515:{deal}") is None
        assert closed_somewhere(monitor, f"hubspot:62515:{deal}")

    insights = await read_insights(kafka_bootstrap, ms_.topic_insights)
    assert [(i.rule, i.lifecycle, i.priority) for i in insights] == [
        (RuleName.LOW_PROBABILITY, Lifecycle.RAISED, Priority.HIGH),
        (RuleName.HIGH_VALUE_AT_RISK, Lifecycle.RAISED, Priority.CRITICAL),
        (RuleName.LOW_PROBABILITY, Lifecycle.RESOLVED, Priority.HIGH),
        (RuleName.HIGH_VALUE_AT_RISK, Lifecycle.RESOLVED, Priority.CRITICAL),
    ]
    assert {i.deal_id for i in insights} == {f"hubspot:62515:{deal}"}
    assert insights[0].data.deal_title == "Expansion - Northwind"


async def test_the_same_webhook_three_times_has_one_effect(
    kafka_bootstrap: str, unique_name: Any, tmp_path: Path
) -> None:
    ms_ = samples_monitor_settings(kafka_bootstrap, unique_name)
    deal = 5151
    async with (
        running_monitor(ms_) as monitor,
        running_gateway(gateway_settings(ms_, tmp_path)) as (
            client,
            _,
            _,
        ),
    ):
        assert (await client.pipedrive(pipedrive_create())).status_code == 200
        for attempt in range(3):  # HubSpot: attemptNumber 0, 1, 2; each delivery signed anew
            batch = [
                hubspot_change(deal, 11, ms(T0), "amount", "50000", attempt=attempt),
                hubspot_change(deal, 12, ms(T0), "dealstage", "qualifiedtobuy", attempt=attempt),
                hubspot_change(
                    deal, 13, ms(T0), "hs_deal_stage_probability", "0.05", attempt=attempt
                ),
            ]
            assert (await client.hubspot(batch)).status_code == 200
            # Pipedrive: meta.attempt 1, 2, 3
            assert (await client.pipedrive(pipedrive_activity_done(attempt + 1))).status_code == 200
        await wait_caught_up(monitor)
        assert state_of(monitor, "pipedrive:12882925:1").activity_count == 1
        hub = state_of(monitor, f"hubspot:62515:{deal}")
        assert (hub.value, hub.probability, hub.stage) == (50000.0, 5.0, Stage.QUALIFIED)
        [metric] = list(monitor.metrics.duplicates.collect())
        assert metric.samples[0].value == 8  # 2 x 3 HubSpot events + 2 x 1 Pipedrive activity

    events = await topic_events(ms_)
    hub_ids = [e.event_id for _, e in events if e.deal_id == f"hubspot:62515:{deal}"]
    assert len(hub_ids) == 9
    assert len(set(hub_ids)) == 3
    activity_ids = [e.event_id for _, e in events if isinstance(e, ActivityLogged)]
    assert len(activity_ids) == 3
    assert len(set(activity_ids)) == 1
    insights = await read_insights(kafka_bootstrap, ms_.topic_insights)
    assert sorted(
        (i.rule, i.lifecycle) for i in insights if i.deal_id == f"hubspot:62515:{deal}"
    ) == [
        (RuleName.HIGH_VALUE_AT_RISK, Lifecycle.RAISED),
        (RuleName.LOW_PROBABILITY, Lifecycle.RAISED),
    ]


async def test_authentication_over_http(
    kafka_bootstrap: str, unique_name: Any, tmp_path: Path
) -> None:
    ms_ = samples_monitor_settings(kafka_bootstrap, unique_name)
    stale = str(int((time.time() - 301) * 1000))
    good = [hubspot_change(31, 1, ms(T0), "amount", "100")]
    async with running_gateway(gateway_settings(ms_, tmp_path)) as (client, _, registry):
        body = dumps(good)
        url = client.base + "/webhooks/hubspot/ws-hub"
        tampered = await client.http.post(
            url, content=body.replace(b'"100"', b'"999"'), headers=hubspot_headers(body, url)
        )
        rejected = [
            tampered,
            await client.hubspot(good, secret="not-the-app-secret"),
            await client.hubspot(good, timestamp=stale),
            await client.pipedrive(pipedrive_create(), password="guess"),
            await client.salesforce(SALESFORCE_CREATE, token="stolen-token-0000"),
            await client.twenty(twenty_opportunity("created"), secret="wrong-secret"),
        ]
        accepted = await client.hubspot(good)
        assert [r.status_code for r in rejected] == [401] * 6
        assert accepted.status_code == 200
        failures = sum(
            registry.get_sample_value(
                "vectoros_gateway_auth_failures_total", {"source": source, "reason": reason}
            )
            or 0
            for source in ("hubspot", "pipedrive", "salesforce", "twenty")
            for reason in ("bad_signature", "stale_timestamp", "bad_credentials")
        )
        assert failures == 6

    events = await topic_events(ms_)
    assert [(e.deal_id, fields(e)) for _, e in events] == [
        ("hubspot:62515:31", {"currency": "USD", "value": 100.0})
    ]


async def test_closing_and_deleting_reach_the_monitor(
    kafka_bootstrap: str, unique_name: Any, tmp_path: Path
) -> None:
    ms_ = samples_monitor_settings(kafka_bootstrap, unique_name)
    async with (
        running_monitor(ms_) as monitor,
        running_gateway(gateway_settings(ms_, tmp_path)) as (
            client,
            _,
            _,
        ),
    ):
        await client.salesforce(SALESFORCE_CREATE)
        await client.pipedrive(pipedrive_create())
        await wait_caught_up(monitor)
        assert state_of(monitor, "salesforce:0065g00000KxXyZAAV") is not None
        lost = pipedrive_change(
            {"status": "open"},
            "5b0c3a1e-0000-4000-8000-00000000000b",
            status="lost",
            lost_reason="Budget",
        )
        assert (await client.pipedrive(lost)).status_code == 200
        assert (
            await client.salesforce(salesforce_event("DELETE", {}, sequence=9))
        ).status_code == 200
        await wait_caught_up(monitor)
        assert state_of(monitor, "pipedrive:12882925:1") is None
        assert state_of(monitor, "salesforce:0065g00000KxXyZAAV") is None
    events = await topic_events(ms_)
    assert {type(e) for _, e in events} >= {DealClosed, DealDeleted}
