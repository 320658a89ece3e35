"""Flood control (``consumer.notifier.flood``) on a fake clock: grouping, cooldown, flapping,
the burst guard, inhibition, bounded memory, and a state that survives a JSON round trip."""

from __future__ import annotations

import json

from consumer.notifier.flood import FloodControl, FloodPolicy, Item, Message
from consumer.notifier.settings import NotifierSettings

R1, R2 = ("slack-team",), ("slack-team", "email-owner")
HIGH, CRITICAL = 2, 3


def item(
    n: int,
    lifecycle: str = "raised",
    *,
    rule: str = "stale_deal",
    deal: str | None = None,
    rank: int = HIGH,
    ws: str = "ws-1",
    episode: int = 0,
    value: float = 20_000.0,
) -> Item:
    deal = deal or f"deal-{n}"
    return Item(f"{deal}/{rule}/{episode}", lifecycle, ws, deal, rule, rank, value, "{}")


def run(
    flood: FloodControl, events: list[tuple[float, Item]], recipients: tuple[str, ...], until: float
) -> list[Message]:
    """Offer ``events`` at their times, calling ``due`` every second like the service's tick."""
    out: list[Message] = []
    pending = sorted(events, key=lambda e: e[0])
    t = 0.0
    while t <= until:
        while pending and pending[0][0] <= t:
            at, it = pending.pop(0)
            flood.offer(it, recipients, at)
        out += flood.due(t)
        t += 1.0
    return out


def test_the_flapping_deal_sends_at_most_two_messages() -> None:
    # a $20K deal's probability toggled between 20 and 50 ten times: low_probability raised and
    # resolved alternately (a new episode each time), one change every 20 s
    flood = FloodControl(FloodPolicy(group_wait=30, group_interval=300, cooldown=3600))
    events = []
    for k in range(10):
        lifecycle = "raised" if k % 2 == 0 else "resolved"
        events.append((20.0 * k, item(1, lifecycle, rule="low_probability", episode=k // 2)))
    messages = run(flood, events, R1, until=4000)
    assert 1 <= len(messages) <= 2
    assert any(i.lifecycle == "flapping" for m in messages for i in m.items)
    assert flood.suppressed["flapping"] >= 5


def test_a_slow_toggle_is_held_by_the_cooldown() -> None:
    # one change every 20 minutes: below the flapping rate; the re-raise falls in the cooldown
    flood = FloodControl(FloodPolicy(group_wait=30, cooldown=3600, flap_threshold=4))
    events = [
        (1200.0 * k, item(1, "raised" if k % 2 == 0 else "resolved", episode=k // 2))
        for k in range(4)
    ]
    messages = run(flood, events, R1, until=4000)
    assert [m.items[0].lifecycle for m in messages] == ["raised", "resolved"]
    assert flood.suppressed == {"cooldown": 1, "unannounced": 1}


def test_a_burst_of_500_in_a_minute_sends_one_summary_per_recipient() -> None:
    flood = FloodControl(FloodPolicy(group_wait=30, burst_threshold=50, burst_window=60))
    events = [(i * 0.12, item(i, rank=HIGH if i % 3 else CRITICAL)) for i in range(500)]
    messages = run(flood, events, R2, until=600)
    assert sorted(m.recipient for m in messages) == sorted(R2)
    for m in messages:
        assert m.kind == "burst"
        assert m.count == 500
        assert dict(m.by_rank) == {CRITICAL: 167, HIGH: 333}
        assert len(m.items) == 5
        assert all(i.rank == CRITICAL for i in m.items)


def test_below_the_burst_threshold_insights_are_grouped_into_one_digest() -> None:
    flood = FloodControl(FloodPolicy(group_wait=30, burst_threshold=50))
    events = [(float(i), item(i)) for i in range(10)]
    messages = run(flood, events, R1, until=100)
    assert [(m.kind, m.count) for m in messages] == [("digest", 10)]


def test_group_wait_then_group_interval() -> None:
    flood = FloodControl(FloodPolicy(group_wait=30, group_interval=300))
    flood.offer(item(1), R1, 0.0)
    assert flood.due(29.0) == []
    first = flood.due(30.0)
    assert [m.kind for m in first] == ["alert"]
    flood.offer(item(2), R1, 40.0)
    flood.offer(item(3), R1, 50.0)
    assert flood.due(329.0) == []  # no sooner than group_interval after the last message
    second = flood.due(330.0)
    assert [(m.kind, m.count) for m in second] == [("digest", 2)]
    assert flood.next_due() is None


def test_prompt_insights_skip_group_wait_and_group_interval_and_still_share_a_message() -> None:
    flood = FloodControl(
        FloodPolicy(group_wait=30, group_interval=300, prompt_rank=CRITICAL, prompt_wait=5)
    )
    flood.offer(item(1, rank=CRITICAL), R1, 0.0)
    flood.offer(item(2), R1, 2.0)  # a high one arriving meanwhile rides along
    assert flood.due(4.0) == []
    assert [(m.kind, m.count) for m in flood.due(5.0)] == [("digest", 2)]
    flood.offer(item(3), R1, 10.0)  # not prompt: waits for group_interval
    flood.offer(item(4, rank=CRITICAL), R1, 20.0)  # prompt: no 5-minute wait
    assert flood.due(24.0) == []
    assert [(m.kind, m.count) for m in flood.due(25.0)] == [("digest", 2)]
    flood.offer(item(4, "resolved", rank=CRITICAL), R1, 30.0)  # a resolution is not urgent
    assert flood.due(35.0) == []
    assert [m.items[0].lifecycle for m in flood.due(325.0)] == ["resolved"]


def test_the_default_settings_keep_the_flapping_deal_quiet_and_high_insights_prompt() -> None:
    policy = NotifierSettings().flood_policy()
    assert policy.prompt_rank == HIGH
    assert policy.prompt_wait <= 5
    flood = FloodControl(policy)
    events = []
    for k in range(10):  # the flapping $20K deal, one change every 2 s
        lifecycle = "raised" if k % 2 == 0 else "resolved"
        events.append((2.0 * k, item(1, lifecycle, rule="low_probability", episode=k // 2)))
    assert len(run(flood, events, R1, until=7200)) <= 2
    flood = FloodControl(policy)
    flood.offer(item(7, rank=HIGH), R1, 0.0)
    assert [m.kind for m in flood.due(policy.prompt_wait)] == ["alert"]


def test_repeat_interval_reminds_of_open_insights_until_resolved() -> None:
    flood = FloodControl(FloodPolicy(group_wait=0, repeat_interval=3600))
    flood.offer(item(1), R1, 0.0)
    assert [m.kind for m in flood.due(0.0)] == ["alert"]
    assert flood.due(3599.0) == []
    reminder = flood.due(3600.0)
    assert [(m.kind, m.items[0].deal_id) for m in reminder] == [("reminder", "deal-1")]
    flood.offer(item(1, "resolved"), R1, 4000.0)
    resolved = flood.due(4000.0 + 300)
    assert [m.items[0].lifecycle for m in resolved] == ["resolved"]
    assert flood.due(100_000.0) == []


def test_escalation_passes_the_cooldown_and_replaces_a_pending_raise() -> None:
    flood = FloodControl(FloodPolicy(group_wait=30, group_interval=60, cooldown=3600))
    flood.offer(item(1), R1, 0.0)
    flood.offer(item(1, "escalated", rank=CRITICAL), R1, 5.0)
    [message] = flood.due(30.0)
    assert [(i.lifecycle, i.rank) for i in message.items] == [("escalated", CRITICAL)]
    # the same rule raised again (new episode) within the cooldown at a priority not above
    assert flood.offer(item(1, episode=1, rank=CRITICAL), R1, 100.0) == "cooldown"
    assert flood.offer(item(1, episode=2), R1, 3700.0) == "queued"


def test_raised_then_resolved_before_the_group_goes_out_sends_nothing() -> None:
    flood = FloodControl(FloodPolicy(group_wait=30))
    flood.offer(item(1), R1, 0.0)
    assert flood.offer(item(1, "resolved"), R1, 10.0) == "cancelled"
    assert flood.due(1000.0) == []


def test_high_value_at_risk_inhibits_stale_deal_and_low_probability() -> None:
    flood = FloodControl(FloodPolicy(group_wait=30))
    flood.offer(item(1, rule="stale_deal"), R1, 0.0)  # pending, dropped by what follows
    flood.offer(item(1, rule="high_value_at_risk", rank=CRITICAL), R1, 1.0)
    assert flood.offer(item(1, rule="low_probability"), R1, 2.0) == "inhibited"
    flood.offer(item(2, rule="stale_deal"), R1, 3.0)  # another deal: not inhibited
    [message] = flood.due(30.0)
    assert sorted((i.deal_id, i.rule) for i in message.items) == [
        ("deal-1", "high_value_at_risk"),
        ("deal-2", "stale_deal"),
    ]
    flood.offer(item(1, "resolved", rule="high_value_at_risk"), R1, 50.0)
    assert flood.offer(item(1, rule="stale_deal", episode=1), R1, 60.0) == "queued"


def test_a_replayed_event_is_ignored() -> None:
    flood = FloodControl(FloodPolicy(group_wait=0))
    assert flood.offer(item(1), R1, 0.0) == "queued"
    assert flood.offer(item(1), R1, 0.0) == "duplicate"
    assert len(flood.due(0.0)) == 1


def test_groups_are_bounded_the_oldest_is_sent_early() -> None:
    flood = FloodControl(FloodPolicy(group_wait=30, max_groups=100, max_keys=1000))
    for n in range(150):
        flood.offer(item(n, ws=f"ws-{n}"), R1, float(n) / 1000)
    assert len(flood._groups) == 100
    early = flood.due(0.2)
    assert sorted(m.workspace_id for m in early) == sorted(f"ws-{n}" for n in range(50))


def test_the_state_survives_a_json_round_trip() -> None:
    policy = FloodPolicy(group_wait=30, burst_threshold=3, repeat_interval=600)
    flood = FloodControl(policy)
    flood.offer(item(1, rule="high_value_at_risk"), R1, 0.0)
    flood.offer(item(2, ws="ws-2"), R1, 0.0)
    flood.due(30.0)
    for n in range(10, 15):
        flood.offer(item(n, ws="ws-3"), R1, 40.0)
    restored = FloodControl.from_state(policy, json.loads(json.dumps(flood.to_state())))
    assert restored.to_state() == flood.to_state()
    assert restored.offer(item(1, rule="stale_deal", episode=9), R1, 50.0) == "inhibited"
    assert restored.offer(item(10, ws="ws-3"), R1, 50.0) == "duplicate"
    assert [(m.kind, m.count) for m in restored.due(100.0)] == [("burst", 5)]


def test_not_before_holds_a_recipients_group_until_then() -> None:
    flood = FloodControl(FloodPolicy(group_wait=30))
    flood.offer(item(1), R2, 0.0, {"email-owner": 8 * 3600.0})
    assert [m.recipient for m in flood.due(30.0)] == ["slack-team"]
    assert flood.due(8 * 3600.0 - 1) == []
    assert [m.recipient for m in flood.due(8 * 3600.0)] == ["email-owner"]
