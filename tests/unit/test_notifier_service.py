"""The notifier's selection and delivery loop with an in-memory log and a mock HTTP transport."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from consumer.notifier.log import Claim, ClaimState, NotificationRef
from consumer.notifier.metrics import NotifierMetrics
from consumer.notifier.service import DB_ERRORS, Notifier, build_destinations, run_notifier
from consumer.notifier.settings import NotifierSettings
from schemas.insights import insight_adapter
from vectoros.errors import ConfigError
from vectoros.logs import redact_logs
from vectoros.ops_server import Health

SLACK = "https://hooks.slack.test/services/T0/B0/SLACKSECRET"
HOOK = "https://receiver.test/in?token=HOOKSECRET"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def insight_dict(n: int = 1, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "insight_id": f"insight-{n}",
        "lifecycle": "raised",
        "rule": "stale_deal",
        "workspace_id": "ws-1",
        "deal_id": f"deal-{n}",
        "title": f"Deal {n} has gone quiet",
        "description": "No activity for 9 days.",
        "priority": "high",
        "confidence": 0.9,
        "data": {
            "deal_id": f"deal-{n}",
            "deal_title": f"Deal {n}",
            "deal_value": 1000.0 * n,
            "key_metrics": {"days_inactive": 9.0},
        },
        "actions": [
            {"action": "Call", "priority": "high", "timeline": "today", "expected_impact": "x"},
            {"action": "Mail", "priority": "low", "timeline": "week", "expected_impact": "y"},
        ],
        "source": "rules",
        "detected_at": "2025-03-01T09:00:00+00:00",
        "raised_at": "2025-03-01T09:00:00+00:00",
    }
    data.update(overrides)
    return data


def insight(n: int = 1, **overrides: Any) -> Any:
    return insight_adapter.validate_python(insight_dict(n, **overrides))


@dataclass
class Row:
    status: str = "pending"
    attempts: int = 0
    in_flight: bool = False
    owner: str = "me"
    stale: bool = False
    failure_kind: str | None = None
    status_code: int | None = None
    error: str | None = None
    meta: dict[str, str] = field(default_factory=dict)


class FakeStore:
    """The semantics of NotificationLog (see log.py), in memory; can fail on demand."""

    def __init__(self) -> None:
        self.rows: dict[NotificationRef, Row] = {}
        self.fail: dict[str, int] = {}  # method name -> how many calls fail

    def _maybe_fail(self, name: str) -> None:
        if self.fail.get(name, 0) > 0:
            self.fail[name] -= 1
            raise ConnectionResetError("database went away")

    async def claim(
        self, ref: NotificationRef, *, own_requests_settled: bool = True, **meta: str
    ) -> Claim:
        self._maybe_fail("claim")
        row = self.rows.get(ref)
        if row is None:
            self.rows[ref] = Row(meta=meta)
            return Claim(ClaimState.NEW)
        if row.status == "sent":
            return Claim(ClaimState.SENT)
        if row.status == "failed":
            return Claim(ClaimState.FAILED)
        mine = row.owner == "me" and own_requests_settled
        if not row.in_flight or row.stale or mine:
            unknown = row.in_flight and not mine
            row.owner = "me"
            state = ClaimState.UNKNOWN_OUTCOME if unknown else ClaimState.RESUMED
            return Claim(state, row.attempts)
        return Claim(ClaimState.BUSY)

    async def begin_attempt(self, ref: NotificationRef) -> bool:
        row = self.rows[ref]
        if row.owner != "me" or row.status != "pending":
            return False
        row.in_flight, row.attempts = True, row.attempts + 1
        self._maybe_fail("begin_attempt")  # applied, but the answer is lost
        return True

    async def attempt_failed(
        self, ref: NotificationRef, status_code: int | None, error: str
    ) -> None:
        row = self.rows[ref]
        row.in_flight, row.status_code, row.error = False, status_code, error

    async def mark_sent(self, ref: NotificationRef) -> None:
        self._maybe_fail("mark_sent")
        row = self.rows[ref]
        row.status, row.in_flight = "sent", False

    async def mark_failed(
        self, ref: NotificationRef, kind: str, status_code: int | None, error: str | None
    ) -> None:
        self._maybe_fail("mark_failed")
        row = self.rows[ref]
        row.status, row.in_flight = "failed", False
        row.failure_kind, row.status_code, row.error = kind, status_code, error

    def by_type(self, kind: str) -> dict[str, Row]:
        return {
            ref.insight_id: row
            for ref, row in self.rows.items()
            if row.meta.get("destination_type") == kind
        }


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


Handler = Callable[[httpx.Request], httpx.Response]


class Receiver:
    """The mock HTTP side: a script per host, every request recorded with the fake time."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.scripts: dict[str, list[httpx.Response | Exception]] = {}
        self.requests: dict[str, list[tuple[float, httpx.Request]]] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        self.requests.setdefault(host, []).append((self.clock(), request))
        script = self.scripts.get(host) or []
        step = script.pop(0) if script else httpx.Response(200, text="ok")
        if isinstance(step, Exception):
            raise step
        return step

    def bodies(self, host: str) -> list[Any]:
        return [json.loads(r.content) for _, r in self.requests.get(host, [])]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("VECTOROS_"):
            monkeypatch.delenv(name)


@dataclass
class World:
    notifier: Notifier
    store: FakeStore
    receiver: Receiver
    clock: FakeClock
    registry: CollectorRegistry
    console: io.StringIO
    http: httpx.AsyncClient

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(f"vectoros_notifier_{name}", labels)
        return value or 0.0

    def rebuild(self, **settings: Any) -> Notifier:
        """A fresh notifier process on the same log (a restart)."""
        return make_notifier(self, **settings)


def make_settings(**overrides: Any) -> NotifierSettings:
    values: dict[str, Any] = {
        "slack_webhook_urls": [SLACK],
        "webhook_urls": [HOOK],
        "webhook_secret": WHSEC,
        "notify_console": True,
        "crm_deal_url_template": "https://crm.test/deals/{deal_id}",
        "notify_max_attempts": 4,
    }
    values.update(overrides)
    return NotifierSettings(**values)


def make_notifier(world: World, **overrides: Any) -> Notifier:
    settings = make_settings(**overrides)
    destinations = build_destinations(
        settings, world.http, console_stream=world.console, wall_clock=lambda: 1_750_000_000.0
    )
    return Notifier(
        settings,
        destinations,
        world.store,
        world.notifier.metrics,
        asyncio.Event(),
        clock=world.clock,
        sleep=world.clock.sleep,
        rand=lambda: 0.5,
    )


@pytest.fixture
async def world() -> AsyncIterator[World]:
    clock = FakeClock()
    receiver = Receiver(clock)
    registry = CollectorRegistry()
    console = io.StringIO()
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as http:
        settings = make_settings()
        store = FakeStore()
        notifier = Notifier(
            settings,
            build_destinations(settings, http, console_stream=console),
            store,
            NotifierMetrics(registry),
            asyncio.Event(),
            clock=clock,
            sleep=clock.sleep,
            rand=lambda: 0.5,
        )
        yield World(notifier, store, receiver, clock, registry, console, http)


# -- selection ------------------------------------------------------------------------------------


def test_selection(world: World) -> None:
    n = world.notifier
    assert n.select(orjson.dumps(insight_dict(1))) is not None
    assert n.select(orjson.dumps(insight_dict(2, lifecycle="escalated", priority="critical")))
    assert n.select(orjson.dumps(insight_dict(3, priority="medium"))) is None
    assert n.select(orjson.dumps(insight_dict(4, lifecycle="resolved"))) is None
    # a lifecycle this version does not know (the enricher's) is skipped, not "invalid"
    assert n.select(orjson.dumps(insight_dict(5, lifecycle="enriched"))) is None
    assert n.select(b"not json") is None
    assert n.select(None) is None
    assert n.select(orjson.dumps(insight_dict(6, confidence=7))) is None
    assert world.metric("skipped_total", reason="below_threshold") == 1
    assert world.metric("skipped_total", reason="lifecycle") == 2
    assert world.metric("skipped_total", reason="invalid") == 3


def test_resolved_and_lower_threshold_when_configured(world: World) -> None:
    n = world.rebuild(notify_resolved=True, notify_min_priority="low")
    assert n.select(orjson.dumps(insight_dict(4, lifecycle="resolved", priority="low")))
    assert n.select(orjson.dumps(insight_dict(3, priority="medium")))


# -- delivery -------------------------------------------------------------------------------------


async def test_delivers_everywhere_once(world: World) -> None:
    batch = [insight(1), insight(2, lifecycle="escalated", priority="critical")]
    assert await world.notifier.process(batch)
    slack = world.receiver.bodies("hooks.slack.test")
    assert [b["blocks"][0]["type"] for b in slack] == ["header", "header"]
    assert slack[1]["blocks"][0]["text"]["text"].startswith("🔴 Critical · Escalated")
    hooks = world.receiver.requests["receiver.test"]
    assert [json.loads(r.content)["type"] for _, r in hooks] == [
        "insight.raised",
        "insight.escalated",
    ]
    assert all(r.headers["webhook-signature"].startswith("v1,") for _, r in hooks)
    assert world.console.getvalue().count("Deal ") >= 2
    assert "https://crm.test/deals/deal-1" in world.console.getvalue()
    assert {row.status for row in world.store.rows.values()} == {"sent"}
    assert len(world.store.rows) == 6
    for kind in ("slack", "webhook", "console"):
        assert world.metric("notifications_sent_total", destination=kind) == 2

    # a replay (a restart before the commit, or another group member) sends nothing again
    again = world.rebuild()
    assert await again.process(batch)
    assert len(world.receiver.requests["hooks.slack.test"]) == 2
    assert len(world.receiver.requests["receiver.test"]) == 2
    assert world.metric("skipped_total", reason="already_sent") == 6


async def test_429_retry_after_is_honoured(world: World) -> None:
    world.receiver.scripts["hooks.slack.test"] = [
        httpx.Response(429, headers={"Retry-After": "2"}, text="rate_limited")
    ]
    assert await world.notifier.process([insight(1), insight(2)])
    times = [t for t, _ in world.receiver.requests["hooks.slack.test"]]
    assert len(times) == 3
    assert times[1] - times[0] >= 2.0  # the retry waited Retry-After
    assert times[2] - times[1] >= 1.0  # the next message kept the 1 s spacing
    rows = world.store.by_type("slack")
    assert rows["insight-1"].status == "sent"
    assert rows["insight-1"].attempts == 2
    assert world.metric("retries_total", destination="slack") == 1


async def test_500_is_retried(world: World) -> None:
    world.receiver.scripts["receiver.test"] = [httpx.Response(500), httpx.Response(503)]
    assert await world.notifier.process([insight(1)])
    assert len(world.receiver.requests["receiver.test"]) == 3
    assert world.store.by_type("webhook")["insight-1"].status == "sent"
    assert world.metric("retries_total", destination="webhook") == 2
    ids = {r.headers["webhook-id"] for _, r in world.receiver.requests["receiver.test"]}
    assert len(ids) == 1  # every retry carries the same webhook-id


async def test_404_is_recorded_and_not_retried(world: World) -> None:
    world.receiver.scripts["hooks.slack.test"] = [httpx.Response(404, text="channel_not_found")]
    assert await world.notifier.process([insight(1)])
    assert len(world.receiver.requests["hooks.slack.test"]) == 1
    row = world.store.by_type("slack")["insight-1"]
    assert row.status == "failed"
    assert row.failure_kind == "permanent"
    assert row.status_code == 404
    assert row.error is not None
    assert "channel_not_found" in row.error
    assert world.metric("notifications_failed_total", destination="slack", kind="permanent") == 1
    assert world.metric("retries_total", destination="slack") == 0
    # the other destinations are unaffected
    assert world.store.by_type("webhook")["insight-1"].status == "sent"
    # and a replay does not try again
    assert await world.rebuild().process([insight(1)])
    assert len(world.receiver.requests["hooks.slack.test"]) == 1
    assert world.metric("skipped_total", reason="already_failed") == 1


async def test_a_dead_destination_is_bounded_and_does_not_block_the_others(world: World) -> None:
    world.receiver.scripts["hooks.slack.test"] = [httpx.Response(500)] * 100
    batch = [insight(n) for n in range(1, 8)]
    assert await world.notifier.process(batch)
    rows = world.store.by_type("slack")
    kinds = [rows[f"insight-{n}"].failure_kind for n in range(1, 8)]
    # 3 exhausted budgets open the circuit; the rest fail at once, recorded
    assert kinds == ["exhausted"] * 3 + ["circuit_open"] * 4
    assert len(world.receiver.requests["hooks.slack.test"]) == 3 * 4
    assert all(r.status == "sent" for r in world.store.by_type("webhook").values())


async def test_crash_window_slack_is_at_most_once(world: World) -> None:
    ref_slack = NotificationRef("insight-1", "raised", world.notifier.destinations[0].key)
    ref_hook = NotificationRef("insight-1", "raised", world.notifier.destinations[1].key)
    # a notifier died mid-request on both: rows pending, in flight, stale
    for ref, kind in ((ref_slack, "slack"), (ref_hook, "webhook")):
        world.store.rows[ref] = Row(
            attempts=1, in_flight=True, owner="dead", stale=True, meta={"destination_type": kind}
        )
    assert await world.notifier.process([insight(1)])
    assert "hooks.slack.test" not in world.receiver.requests  # not resent
    slack = world.store.rows[ref_slack]
    assert (slack.status, slack.failure_kind) == ("failed", "unknown_outcome")
    assert world.metric("notifications_failed_total", destination="slack", kind="unknown_outcome")
    # the signed webhook is resent, with the id receivers dedupe on
    assert world.store.rows[ref_hook].status == "sent"
    (_, request) = world.receiver.requests["receiver.test"][0]
    assert request.headers["webhook-id"].startswith("msg_")


async def test_pending_row_that_never_went_out_is_resumed(world: World) -> None:
    ref = NotificationRef("insight-1", "raised", world.notifier.destinations[0].key)
    world.store.rows[ref] = Row(
        attempts=1, in_flight=False, owner="dead", meta={"destination_type": "slack"}
    )
    assert await world.notifier.process([insight(1)])
    assert len(world.receiver.requests["hooks.slack.test"]) == 1
    assert world.store.rows[ref].status == "sent"


async def test_ambiguous_timeout_on_slack_is_not_repeated(world: World) -> None:
    world.receiver.scripts["hooks.slack.test"] = [httpx.ReadTimeout("slow")]
    world.receiver.scripts["receiver.test"] = [httpx.ReadTimeout("slow")]
    assert await world.notifier.process([insight(1)])
    assert len(world.receiver.requests["hooks.slack.test"]) == 1
    assert world.store.by_type("slack")["insight-1"].failure_kind == "unknown_outcome"
    assert len(world.receiver.requests["receiver.test"]) == 2
    assert world.store.by_type("webhook")["insight-1"].status == "sent"


async def test_database_error_reruns_the_batch_without_resending(world: World) -> None:
    world.store.fail["mark_sent"] = 1  # the first outcome cannot be recorded
    world.store.fail["claim"] = 1
    batch = [insight(1), insight(2)]
    with pytest.raises(DB_ERRORS):  # the consume loop backs off, then runs the batch again
        await world.notifier.process(batch)
    assert await world.notifier.process(batch)
    for kind in ("slack", "webhook", "console"):
        rows = world.store.by_type(kind)
        assert {r.status for r in rows.values()} == {"sent"}, kind
    assert len(world.receiver.requests["hooks.slack.test"]) == 2
    assert len(world.receiver.requests["receiver.test"]) == 2
    assert world.console.getvalue().count("Deal 1 has gone quiet") == 1


async def test_lost_begin_attempt_write_is_resumed_by_its_own_process(world: World) -> None:
    # the row says "in flight" but this process knows it never sent: no unknown outcome
    world.store.fail["begin_attempt"] = 1
    with pytest.raises(DB_ERRORS):  # one failed run: the consume loop pauses, then re-runs it
        await world.notifier.process([insight(1)])
    assert await world.notifier.process([insight(1)])
    assert world.store.by_type("slack")["insight-1"].status == "sent"
    assert len(world.receiver.requests["hooks.slack.test"]) == 1


async def test_stop_interrupts_a_wait(world: World) -> None:
    stop = asyncio.Event()
    settings = make_settings(webhook_urls=[], notify_console=False)
    n = Notifier(
        settings,
        build_destinations(settings, world.http),
        world.store,
        NotifierMetrics(CollectorRegistry()),
        stop,
    )
    world.receiver.scripts["hooks.slack.test"] = [
        httpx.Response(429, headers={"Retry-After": "60"})
    ]
    task = asyncio.create_task(n.process([insight(1)]))
    await asyncio.sleep(0.2)
    stop.set()
    assert await asyncio.wait_for(task, 5) is False
    row = world.store.by_type("slack")["insight-1"]
    assert (row.status, row.in_flight) == ("pending", False)  # resumable, nothing in doubt


def test_redact_logs_scrubs_httpx_lines(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="httpx"), redact_logs([SLACK]):
        logging.getLogger("httpx").info('HTTP Request: %s %s "%s"', "POST", SLACK, "200 OK")
    assert "SLACKSECRET" not in caplog.text
    assert "POST ***" in caplog.text


def test_destinations_are_labelled_without_secrets(world: World) -> None:
    labels = [d.label for d in world.notifier.destinations]
    assert [d.kind for d in world.notifier.destinations] == ["slack", "webhook", "console"]
    for label in labels:
        assert "SECRET" not in label
    assert "SECRET" not in repr(world.notifier.destinations)


async def test_run_notifier_refuses_to_start_without_destinations() -> None:
    with pytest.raises(ConfigError, match="no destination"):
        await run_notifier(NotifierSettings(), CollectorRegistry(), Health(), asyncio.Event())


async def test_escalation_to_a_channel_not_configured_is_refused_at_start() -> None:
    settings = NotifierSettings(
        notify_console=True, notify_escalate_after_hours=4, notify_escalate_via="teams:0"
    )
    with pytest.raises(ConfigError, match=r"teams:0.*not configured"):
        await run_notifier(settings, CollectorRegistry(), Health(), asyncio.Event())
    with pytest.raises(ConfigError, match="DIRECTORY_FILE"):  # email needs the directory
        await run_notifier(
            settings.model_copy(update={"notify_escalate_via": ["email"]}),
            CollectorRegistry(),
            Health(),
            asyncio.Event(),
        )
