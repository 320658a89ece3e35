"""The live stream's hub: numbering, per-workspace delivery, resuming with Last-Event-ID,
resets when resuming is not possible, slow clients, shutdown, answers to insights."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

from prometheus_client import CollectorRegistry

from consumer.api.live import CLOSED, LiveEvent, LiveHub
from consumer.api.metrics import ApiMetrics
from consumer.api.service import LiveFeed
from schemas.acks import AckSource, AckState, InsightAck
from schemas.insights import InsightEvent, Lifecycle

AT = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def insight(workspace: str, n: int, lifecycle: Lifecycle = Lifecycle.RAISED) -> InsightEvent:
    return InsightEvent.model_validate(
        {
            "insight_id": f"i-{n}",
            "lifecycle": lifecycle,
            "rule": "stale_deal",
            "workspace_id": workspace,
            "deal_id": f"d-{n}",
            "title": f"Deal {n} went quiet",
            "description": "No activity for 9 days.",
            "priority": "high",
            "confidence": 0.8,
            "data": {"deal_id": f"d-{n}", "deal_title": f"Deal {n}", "deal_value": 1000.0},
            "actions": [
                {"action": "Call", "priority": "high", "timeline": "today", "expected_impact": "x"},
                {
                    "action": "Mail",
                    "priority": "medium",
                    "timeline": "week",
                    "expected_impact": "y",
                },
            ],
            "source": "rules",
            "detected_at": AT,
            "raised_at": AT,
        }
    )


def drain(queue: asyncio.Queue[LiveEvent]) -> list[LiveEvent]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


def test_subscribers_get_only_their_workspace() -> None:
    hub = LiveHub()
    qa, first = hub.subscribe("ws-a", None)
    qb, _ = hub.subscribe("ws-b", None)
    assert first == []
    hub.publish(insight("ws-a", 1))
    hub.publish(insight("ws-b", 2, Lifecycle.RESOLVED))
    [a] = drain(qa)
    [b] = drain(qb)
    assert json.loads(a.data)["insight_id"] == "i-1"
    assert json.loads(b.data)["lifecycle"] == "resolved"
    assert a.frame().startswith(f"id: {a.id}\nevent: insight\ndata: {{".encode())
    assert a.frame().endswith(b"}\n\n")
    assert hub.clients == 2


def test_resume_sends_what_was_missed_in_order() -> None:
    hub = LiveHub()
    seen = hub.publish(insight("ws-a", 1))
    hub.publish(insight("ws-b", 2))
    later = [hub.publish(insight("ws-a", n)) for n in (3, 4)]
    _, first = hub.subscribe("ws-a", seen.id)
    assert first == later
    _, none = hub.subscribe("ws-a", later[-1].id)
    assert none == []


def test_resume_that_cannot_be_served_is_a_reset() -> None:
    hub = LiveHub(buffer=2)
    old = hub.publish(insight("ws-a", 1))
    for n in range(2, 6):
        hub.publish(insight("ws-a", n))
    for last in (old.id, "otherboot-3", "garbage", f"{hub.boot}-999"):
        _, first = hub.subscribe("ws-a", last)
        assert [e.event for e in first] == ["reset"], last


def test_a_gap_resets_every_client_and_the_buffer() -> None:
    hub = LiveHub()
    seen = hub.publish(insight("ws-a", 1))
    queue, _ = hub.subscribe("ws-a", None)
    hub.gap()
    assert [e.event for e in drain(queue)] == ["reset"]
    _, first = hub.subscribe("ws-a", seen.id)
    assert [e.event for e in first] == ["reset"]


def test_a_client_too_far_behind_is_dropped() -> None:
    hub = LiveHub(queue_max=3)
    queue, _ = hub.subscribe("ws-a", None)
    for n in range(5):
        hub.publish(insight("ws-a", n))
    got = drain(queue)
    assert len(got) == 4
    assert got[-1] is CLOSED
    assert hub.clients == 0


def test_close_ends_every_stream() -> None:
    hub = LiveHub()
    queue, _ = hub.subscribe("ws-a", None)
    hub.close()
    assert drain(queue) == [CLOSED]
    late, _ = hub.subscribe("ws-a", None)
    assert drain(late) == [CLOSED]


def answer(insight_id: str, state: AckState = AckState.ACKNOWLEDGED) -> InsightAck:
    return InsightAck(
        ack_id=f"a-{insight_id}",
        insight_id=insight_id,
        state=state,
        actor="slack:U1",
        source=AckSource.SLACK,
        at=AT,
    )


def test_answers_reach_their_workspace_and_resume() -> None:
    hub = LiveHub()
    qa, _ = hub.subscribe("ws-a", None)
    qb, _ = hub.subscribe("ws-b", None)
    seen = hub.publish(insight("ws-a", 1))
    live = hub.publish_ack("ws-a", answer("i-1"))
    [_, got] = drain(qa)
    assert drain(qb) == []
    assert got.event == "ack"
    assert json.loads(got.data) == {
        "insight_id": "i-1",
        "state": "acknowledged",
        "snoozed_until": None,
        "source": "slack",
        "at": AT.isoformat(),
    }
    _, first = hub.subscribe("ws-a", seen.id)
    assert first == [live]


async def test_the_feed_sends_answers_to_their_insights_workspace() -> None:
    hub = LiveHub()
    qa, _ = hub.subscribe("ws-a", None)
    qb, _ = hub.subscribe("ws-b", None)
    asked: list[list[str]] = []

    async def workspaces_of(ids: list[str]) -> dict[str, str]:
        asked.append(ids)
        return {"i-1": "ws-a"}  # i-2 is not stored (yet)

    registry = CollectorRegistry()
    feed = LiveFeed(hub, ApiMetrics(registry), "acks", workspaces_of)
    await feed.handle([answer("i-1"), answer("i-2"), insight("ws-b", 3)], asyncio.Event())
    assert asked == [["i-1", "i-2"]]
    assert [e.event for e in drain(qa)] == ["ack"]
    assert [e.event for e in drain(qb)] == ["insight"]
    assert registry.get_sample_value("vectoros_api_live_events_total", {"lifecycle": "ack"}) == 1
