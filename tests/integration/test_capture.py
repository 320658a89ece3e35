"""``vectoros capture`` on the real broker: it learns a deal's contacts from deal-events, takes a
signed webhook through its real HTTP server, and publishes the matched email on deal-events; the
running monitor raises ghosting from it."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cryptography.fernet import Fernet
from prometheus_client import CollectorRegistry

from producer.capture import webhook
from producer.capture.service import run_capture
from producer.capture.settings import CaptureSettings
from schemas.events import DealCreated, EmailLogged, event_adapter
from schemas.insights import RuleName
from tests.kafka_utils import (
    WAIT_LIMIT,
    monitor_settings,
    publisher_for,
    read_all,
    read_insights,
    running_monitor,
    wait_caught_up,
)
from vectoros.kafka import ensure_standard_topics
from vectoros.ops_server import Health

pytestmark = pytest.mark.integration

SECRET = "capture-it-secret"


async def test_a_signed_webhook_reaches_deal_events_and_raises_ghosting(
    kafka_bootstrap: str, unique_name: Any, tmp_path: Path
) -> None:
    mon = monitor_settings(kafka_bootstrap, unique_name)
    await ensure_standard_topics(mon)
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=20)
    deal = DealCreated(
        event_id="c-1", workspace_id="ws", deal_id="d-cap", occurred_at=t0, title="Acme",
        value=5_000, currency="USD", stage="lead", probability=50,
        close_date=(t0 + dt.timedelta(days=90)).date(), owner_id="u",
        contacts=("ana@acme.com",),
    )  # type: ignore[arg-type]  # fmt: skip
    async with publisher_for(mon) as pub:
        await pub.publish_and_wait(deal)
    policies = tmp_path / "ws.yaml"
    policies.write_text("ws:\n  own_domains: [vendor.io]\n")
    settings = CaptureSettings(
        kafka_bootstrap_servers=kafka_bootstrap, topic_events=mon.topic_events,
        topic_partitions=mon.topic_partitions, metrics_enabled=False, capture_port=0,
        capture_webhook_secret=SECRET, capture_token_key=Fernet.generate_key().decode(),
        capture_db_path=tmp_path / "capture.db", capture_workspaces_file=policies,
    )  # type: ignore[arg-type]  # fmt: skip
    stop, ready = asyncio.Event(), asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_capture(settings, CollectorRegistry(), Health(), stop, on_ready=ready.set_result)
    )
    try:
        port = await asyncio.wait_for(ready, WAIT_LIMIT)
        items = [
            {
                "kind": "email",
                "id": f"m-{i}",
                "sent_at": (t0 + dt.timedelta(days=1 + i)).isoformat(),
                "from": "rep@vendor.io",
                "to": ["Ana <ana@acme.com>"],
                "body": "SECRET-BODY",
            }
            for i in range(2)
        ]
        body = orjson.dumps({"user_id": "u-1", "items": items})
        ts = str(int(time.time()))
        headers = {webhook.TIMESTAMP: ts, webhook.SIGNATURE: webhook.sign(SECRET, ts, body)}
        async with httpx.AsyncClient() as http:
            url = f"http://127.0.0.1:{port}/capture/webhook/ws"
            forged = await http.post(
                url, content=body, headers={**headers, webhook.SIGNATURE: "sha256=00"}
            )
            r = await http.post(url, content=body, headers=headers)
            again = await http.post(url, content=body, headers=headers)
        assert forged.status_code == 401
        assert r.json() == {"items": 2, "new": 2, "events": 2}
        assert again.json()["events"] == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_LIMIT)
    records = await read_all(kafka_bootstrap, mon.topic_events)
    assert all(b"SECRET-BODY" not in r.value for r in records)
    emails = [
        e for r in records if isinstance(e := event_adapter.validate_json(r.value), EmailLogged)
    ]
    assert [(e.deal_id, e.direction.value) for e in emails] == [("d-cap", "outbound")] * 2
    async with running_monitor(mon) as monitor, publisher_for(mon) as pub:
        await pub.publish_tick(t0 + dt.timedelta(days=10), await pub.partitions())
        await pub.flush()
        await wait_caught_up(monitor)
    insights = await read_insights(kafka_bootstrap, mon.topic_insights)
    assert RuleName.GHOSTING in {i.rule for i in insights if i.deal_id == "d-cap"}
