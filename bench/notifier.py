"""The notifier's routing and flood control without I/O: how many insight events per second it
takes (the routing policy's ``route`` + ``item_of`` + ``offer`` + ``due`` on a simulated clock),
and the memory of 100k open groups.

Delivery itself is rate-limited by the channels (1 message/s per Slack URL), so what the
notifier must keep up with is the deciding: target >= 5,000 insights/s."""

from __future__ import annotations

import gc
import resource
import time
from dataclasses import dataclass

from consumer.notifier.flood import FloodControl, FloodPolicy
from consumer.notifier.flood_runner import item_of
from consumer.notifier.routing import parse_policy
from schemas.insights import InsightEvent, insight_adapter

# Every insight matches two routes (the team's channel, the CRM webhook); the first route is
# looked at and skipped for most. Two recipients per insight, as before the policy was routed.
POLICY = parse_policy(
    """
default:
  - rules: [high_value_at_risk]
    value_above: 50000000
    to: [sms:owner]
  - min_priority: high
    to: [slack-team]
  - min_priority: high
    to: [webhook-crm]
"""
)


@dataclass(frozen=True)
class NotifierResult:
    insights: int
    rate: float  # insight events per second (item_of + offer + due)
    messages: int
    groups: int
    state_mib: float  # growth of the peak RSS while the controller filled ``groups`` groups


def insights(count: int, workspaces: int) -> list[InsightEvent]:
    out = []
    for n in range(count):
        out.append(
            insight_adapter.validate_python(
                {
                    "insight_id": f"insight-{n}",
                    "lifecycle": "raised",
                    "rule": ("stale_deal", "low_probability", "high_value_at_risk")[n % 3],
                    "workspace_id": f"ws-{n % workspaces}",
                    "deal_id": f"deal-{n}",
                    "title": f"Deal {n} has gone quiet",
                    "description": "No activity for 9 days.",
                    "priority": ("high", "critical")[n % 2],
                    "confidence": 0.9,
                    "data": {"deal_id": f"deal-{n}", "deal_title": f"Deal {n}", "deal_value": n},
                    "actions": [
                        {
                            "action": "Call",
                            "priority": "high",
                            "timeline": "today",
                            "expected_impact": "x",
                        },
                        {
                            "action": "Mail",
                            "priority": "low",
                            "timeline": "week",
                            "expected_impact": "y",
                        },
                    ],
                    "source": "rules",
                    "detected_at": "2025-03-01T09:00:00+00:00",
                    "raised_at": "2025-03-01T09:00:00+00:00",
                }
            )
        )
    return out


def run_notifier_bench(count: int = 100_000, batch: int = 100) -> NotifierResult:
    """``count`` raised insights over ``count // 2`` workspaces (so about ``count`` open groups
    with two recipients), 1 ms apart on the simulated clock, ``due`` after every batch."""
    events = insights(count, max(1, count // 2))
    gc.collect()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    flood = FloodControl(FloodPolicy(group_wait=3600.0, max_groups=max(count, 1)))
    messages = 0
    started = time.perf_counter()
    for start in range(0, count, batch):
        now = start / 1000.0
        for event in events[start : start + batch]:
            flood.offer(item_of(event), POLICY.route(event), now)
        messages += len(flood.due(now))
    took = time.perf_counter() - started
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    groups = len(flood._groups)
    return NotifierResult(count, count / took, messages, groups, grown / 1024)


if __name__ == "__main__":
    r = run_notifier_bench()
    print(
        f"{r.rate:,.0f} insights/s; {r.groups:,} open groups hold {r.state_mib:.0f} MiB; "
        f"{r.messages} messages"
    )
