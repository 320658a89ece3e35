"""Routing (``consumer.notifier.routing``): the seed's policy, its validation, and the notifier
sending each insight only where the policy says, with and without flood control."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import zoneinfo
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from consumer.notifier.directory import parse_directory
from consumer.notifier.metrics import NotifierMetrics
from consumer.notifier.outbox import MemoryFloodStore
from consumer.notifier.routing import QuietHours, load_policy, parse_policy
from consumer.notifier.service import NotifierHandler, build_destinations
from tests.unit.test_notifier_flood_handler import Clock, Messages, settings
from tests.unit.test_notifier_service import WHSEC, FakeStore, insight
from vectoros.consume_loop import Resources

SEED = """
default:
  - rules: [high_value_at_risk]
    value_above: 50000
    to: [webhook:0]          # the SMS gateway
  - min_priority: critical
    to: [console]            # email to the owner, once that channel exists
  - min_priority: high
    to: [slack:0]            # the team's channel
workspaces:
  ws-quiet:
    - min_priority: critical
      stages: [negotiation]
      to: [slack:0]
      stop: true
    - min_priority: low
      to: [console]
"""


def make(
    rule: str = "stale_deal",
    priority: str = "high",
    value: float | None = 1000.0,
    ws: str = "ws-1",
    stage: str | None = None,
    n: int = 1,
) -> Any:
    data: dict[str, Any] = {"deal_id": f"deal-{n}", "deal_title": "Acme", "deal_value": value}
    if stage:
        data["stage"] = stage
    return insight(n, rule=rule, priority=priority, workspace_id=ws, data=data)


@pytest.mark.parametrize(
    ("rule", "priority", "value", "expected"),
    [
        ("high_value_at_risk", "critical", 80_000.0, ("webhook:0", "console", "slack:0")),
        ("high_value_at_risk", "critical", 50_000.0, ("console", "slack:0")),  # not above
        ("high_value_at_risk", "high", None, ("slack:0",)),  # no value never matches
        ("stale_deal", "critical", 900_000.0, ("console", "slack:0")),  # SMS only for HVAR
        ("stale_deal", "high", 10.0, ("slack:0",)),
        ("stale_deal", "medium", 10.0, ()),
    ],
)
def test_the_seed_policy(
    rule: str, priority: str, value: float | None, expected: tuple[str, ...]
) -> None:
    assert parse_policy(SEED).route(make(rule, priority, value)) == expected


def test_a_workspace_section_replaces_the_default_and_stop_ends_it() -> None:
    policy = parse_policy(SEED)
    assert policy.route(make(priority="critical", ws="ws-quiet", stage="negotiation")) == (
        "slack:0",
    )
    assert policy.route(make(priority="critical", ws="ws-quiet", stage="lead")) == ("console",)
    assert policy.route(make(priority="low", ws="ws-quiet")) == ("console",)


def test_a_bad_policy_is_refused_with_where(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("default:\n  - min_priority: urgent\n    to: [console]\n")
    with pytest.raises(ValueError, match=r"default\.0\.min_priority"):
        load_policy(path)
    path.write_text("default:\n  - min_priority: high\n    too: [console]\n")
    with pytest.raises(ValueError, match="policy"):
        load_policy(path)
    with pytest.raises(ValueError, match="cannot read"):
        load_policy(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="slack:3"):
        parse_policy("default:\n  - to: [slack:3, console]\n").check({"console", "slack:0"})


class Routed:
    """A handler with the seed policy on console + one Slack URL + one webhook (mocked)."""

    def __init__(self, http: httpx.AsyncClient, **overrides: Any) -> None:
        self.settings = settings(
            slack_webhook_urls="https://hooks.slack.test/services/T/B/x",
            webhook_urls="https://sms-gateway.test/in",
            webhook_secret=WHSEC,
            **overrides,
        )
        self.console = Messages()
        self.clock = Clock()
        self.stop = asyncio.Event()
        self.registry = CollectorRegistry()
        self.handler = NotifierHandler(
            self.settings,
            build_destinations(self.settings, http, console_stream=self.console),
            NotifierMetrics(self.registry),
            self.stop,
            log=FakeStore(),
            flood_store=MemoryFloodStore(),
            wall_clock=self.clock,
            policy=parse_policy(SEED),
        )


def recorder() -> tuple[dict[str, list[Any]], httpx.MockTransport]:
    seen: dict[str, list[Any]] = {}

    def receive(request: httpx.Request) -> httpx.Response:
        seen.setdefault(request.url.host, []).append(json.loads(request.content))
        return httpx.Response(200)

    return seen, httpx.MockTransport(receive)


BATCH = [
    make("high_value_at_risk", "critical", 80_000.0, n=1),
    make("high_value_at_risk", "critical", 20_000.0, n=2),
    make("stale_deal", "high", 90_000.0, n=3),
    make("stale_deal", "medium", 90_000.0, n=4),
]


async def test_the_notifier_sends_sms_only_for_the_right_deals() -> None:
    seen, transport = recorder()
    async with httpx.AsyncClient(transport=transport) as http:
        routed = Routed(http, notify_flood_control=False)
        assert await routed.handler.handle(BATCH, routed.stop) == ()
    sms = seen.get("sms-gateway.test", [])
    assert [b["data"]["deal_id"] for b in sms] == ["deal-1"]
    assert len(seen["hooks.slack.test"]) == 3  # high and above
    assert len(routed.console.messages) == 2  # critical
    unrouted = routed.registry.get_sample_value(
        "vectoros_notifier_skipped_total", {"reason": "unrouted"}
    )
    assert unrouted == 1


async def test_with_flood_control_each_recipient_gets_its_own_group() -> None:
    seen, transport = recorder()
    async with httpx.AsyncClient(transport=transport) as http:
        routed = Routed(http)
        await routed.handler.open(Resources(pool=None, producer=None, consumer=None))  # type: ignore[arg-type]
        assert await routed.handler.handle(BATCH, routed.stop) == ()
        routed.clock.now += 31
        await routed.handler.tick()
        await routed.handler.close()
    assert [b["data"]["deal_id"] for b in seen["sms-gateway.test"]] == ["deal-1"]
    [slack] = seen["hooks.slack.test"]
    assert "3 insights need attention" in slack["text"]
    [console] = routed.console.messages
    assert "2 insights need attention" in console


PARIS = zoneinfo.ZoneInfo("Europe/Paris")


def paris(day: int, hour: int, minute: int = 0) -> float:
    return dt.datetime(2026, 1, day, hour, minute, tzinfo=PARIS).timestamp()


def test_quiet_hours_over_midnight_and_within_a_day() -> None:
    night = QuietHours(start=dt.time(22), end=dt.time(7), tz="Europe/Paris")
    assert night.until(paris(15, 23)) == paris(16, 7)
    assert night.until(paris(16, 3)) == paris(16, 7)
    assert night.until(paris(16, 7)) is None
    assert night.until(paris(15, 21, 59)) is None
    lunch = QuietHours(start=dt.time(12), end=dt.time(13), tz="Europe/Paris")
    assert lunch.until(paris(15, 12, 30)) == paris(15, 13)
    assert lunch.until(paris(15, 13, 30)) is None
    with pytest.raises(ValueError, match="unknown time zone"):
        QuietHours(start=dt.time(1), end=dt.time(2), tz="Mars/Olympus")


QUIET = """
default:
  - rules: [high_value_at_risk]
    to: [console]
    urgent: true
  - min_priority: high
    to: [console]
quiet_hours:
  console: {start: "22:00", end: "07:00", tz: Europe/Paris}
"""


async def test_quiet_hours_hold_then_deliver_and_urgent_goes_through() -> None:
    async with httpx.AsyncClient() as http:
        s = settings()
        console = Messages()
        clock = Clock()
        clock.now = paris(15, 23)
        handler = NotifierHandler(
            s,
            build_destinations(s, http, console_stream=console),
            NotifierMetrics(CollectorRegistry()),
            asyncio.Event(),
            log=FakeStore(),
            flood_store=MemoryFloodStore(),
            wall_clock=clock,
            policy=parse_policy(QUIET),
        )
        await handler.open(Resources(pool=None, producer=None, consumer=None))  # type: ignore[arg-type]
        stop = asyncio.Event()
        assert await handler.handle([make("stale_deal", "high", ws="ws-1", n=1)], stop) == ()
        urgent = make("high_value_at_risk", "critical", 90_000.0, ws="ws-2", n=2)
        assert await handler.handle([urgent], stop) == ()
        clock.now += 31
        await handler.tick()
        assert len(console.messages) == 1  # the urgent one, in the night
        assert "high_value_at_risk" in console.messages[0]
        clock.now = paris(16, 6, 59)
        await handler.tick()
        assert len(console.messages) == 1  # still quiet
        clock.now = paris(16, 7)
        await handler.tick()
        await handler.close()
    assert len(console.messages) == 2
    assert "Deal 1 has gone quiet" in console.messages[1]


DIRECTORY = """
owners:
  u-17: {name: Ana, email: ana@acme.test, tz: Europe/Paris, manager: u-1}
  u-1: {name: Bo, email: bo@acme.test}
"""


async def test_email_owner_and_manager_resolve_through_the_directory() -> None:
    directory = parse_directory(DIRECTORY)
    s = settings(smtp_host="127.0.0.1")
    async with httpx.AsyncClient() as http:
        destinations = build_destinations(s, http, directory=directory)
    keys = {d.label: d.key for d in destinations}
    policy = parse_policy(
        "default:\n  - min_priority: critical\n    to: [email:owner, email:manager]\n"
        "  - min_priority: high\n    to: [console]\n"
    )
    handler = NotifierHandler(
        s,
        destinations,
        NotifierMetrics(CollectorRegistry()),
        asyncio.Event(),
        log=FakeStore(),
        policy=policy,
        directory=directory,
    )
    ana = {"deal_id": "d", "deal_title": "A", "deal_value": 1.0, "owner_id": "u-17"}
    boss = {"deal_id": "d", "deal_title": "A", "deal_value": 1.0, "owner_id": "u-1"}
    assert handler.recipients(insight(1, priority="critical", data=ana)) == (
        keys["email:u-17"],
        keys["email:u-1"],
        keys["console"],
    )
    assert handler.recipients(insight(1, priority="critical", data=boss)) == (
        keys["email:u-1"],
        keys["console"],
    )
    assert handler.recipients(insight(1, priority="high", data=ana)) == (keys["console"],)
    # without a policy: the shared destinations and the owner's own address
    plain = NotifierHandler(
        s, destinations, NotifierMetrics(CollectorRegistry()), asyncio.Event(), log=FakeStore()
    )
    assert plain.recipients(insight(1, data=ana)) == (keys["console"], keys["email:u-17"])


def test_a_bad_directory_is_refused() -> None:
    with pytest.raises(ValueError, match="manager 'u-9' is not in the directory"):
        parse_directory("owners:\n  u-1: {manager: u-9}\n")
    with pytest.raises(ValueError, match="not an email address"):
        parse_directory("owners:\n  u-1: {email: 'bo at acme'}\n")


PERSONAL_QUIET = """
default:
  - min_priority: high
    to: [email:owner, console]
quiet_hours:
  email:*: {start: "22:00", end: "07:00"}
  console: {start: "12:00", end: "13:00", tz: UTC}
"""

TIME_ZONES = """
owners:
  u-tokyo: {email: aki@acme.test, tz: Asia/Tokyo}
  u-ny: {email: ned@acme.test, tz: America/New_York}
  u-utc: {email: uma@acme.test}
"""


async def test_quiet_hours_per_person_follow_the_directorys_time_zone() -> None:
    s = settings(smtp_host="127.0.0.1")
    directory = parse_directory(TIME_ZONES)
    async with httpx.AsyncClient() as http:
        destinations = build_destinations(s, http, directory=directory)
    handler = NotifierHandler(
        s,
        destinations,
        NotifierMetrics(CollectorRegistry()),
        asyncio.Event(),
        log=FakeStore(),
        policy=parse_policy(PERSONAL_QUIET),
        directory=directory,
    )
    keys = {d.names[0]: d.key for d in destinations}
    at = dt.datetime(2025, 3, 15, 14, 0, tzinfo=dt.UTC).timestamp()  # 23:00 Tokyo, 10:00 NY
    quiet = {}
    for owner in ("u-tokyo", "u-ny", "u-utc"):
        data = {"deal_id": "d", "deal_title": "D", "deal_value": 1.0, "owner_id": owner}
        one = insight(1, data=data)
        held = handler.quiet_hours(one)
        assert set(held) == {keys[f"email:{owner}"], keys["console"]}
        quiet[owner] = held[keys[f"email:{owner}"]].until(at)
    tokyo_morning = dt.datetime(2025, 3, 16, 7, 0, tzinfo=zoneinfo.ZoneInfo("Asia/Tokyo"))
    assert quiet == {"u-tokyo": tokyo_morning.timestamp(), "u-ny": None, "u-utc": None}


def test_quiet_hours_without_a_time_zone_are_only_for_a_persons_destinations() -> None:
    with pytest.raises(ValueError, match="tz is required"):
        parse_policy('quiet_hours:\n  slack:0: {start: "22:00", end: "07:00"}\n')


async def test_the_daily_digest_is_at_each_persons_local_time() -> None:
    s = settings(smtp_host="127.0.0.1", notify_daily_digest_at="08:00")
    directory = parse_directory(TIME_ZONES)
    async with httpx.AsyncClient() as http:
        destinations = build_destinations(s, http, directory=directory)
    handler = NotifierHandler(
        s,
        destinations,
        NotifierMetrics(CollectorRegistry()),
        asyncio.Event(),
        log=FakeStore(),
        policy=parse_policy(PERSONAL_QUIET.replace("min_priority: high", "min_priority: medium")),
        directory=directory,
    )
    keys = {d.names[0]: d.key for d in destinations}
    at = dt.datetime(2025, 3, 15, 10, 0, tzinfo=dt.UTC).timestamp()  # 19:00 Tokyo
    data = {"deal_id": "d", "deal_title": "D", "deal_value": 1.0, "owner_id": "u-tokyo"}
    holds = handler.holds(insight(1, data=data, priority="medium"))
    tokyo = dt.datetime(2025, 3, 16, 8, 0, tzinfo=zoneinfo.ZoneInfo("Asia/Tokyo")).timestamp()
    assert holds[keys["email:u-tokyo"]].until(at) == tokyo  # 08:00 in Tokyo
    assert (
        holds[keys["console"]].until(at)
        == dt.datetime(2025, 3, 16, 8, 0, tzinfo=dt.UTC).timestamp()
    )  # a shared destination: VECTOROS_NOTIFY_DAILY_DIGEST_TZ (UTC)
    high = handler.holds(insight(1, data=data, priority="high"))
    assert high[keys["email:u-tokyo"]].until(at) is None  # 19:00 in Tokyo: not quiet, no digest
