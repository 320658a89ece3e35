"""The insight lifecycle: one open insight per (deal, rule), raised once, escalated when its
priority rises, resolved when the condition clears or the deal goes away. Pure.

An episode is identified by the partition-clock instant at which it was raised, so the
``insight_id`` of a replayed stream is the same as the original's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from consumer.rules import Finding
from consumer.state import DealState, OpenInsight
from schemas.insights import Lifecycle, Priority, RuleName


class Resolution(StrEnum):
    CLEARED = "cleared"
    WON = "won"
    LOST = "lost"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class Change:
    """One lifecycle step to publish."""

    rule: RuleName
    lifecycle: Lifecycle
    priority: Priority
    raised_at_ms: int
    finding: Finding | None = None
    resolution: Resolution | None = None


def reconcile(
    deal: DealState, findings: dict[RuleName, Finding], now: int
) -> tuple[DealState, list[Change]]:
    """Compare what fires now with what is open; return the new open set and the changes."""
    changes: list[Change] = []
    still_open: list[OpenInsight] = []
    seen: set[RuleName] = set()
    for item in deal.open:
        seen.add(item.rule)
        finding = findings.get(item.rule)
        if finding is None:
            changes.append(
                Change(
                    item.rule,
                    Lifecycle.RESOLVED,
                    item.priority,
                    item.raised_at_ms,
                    resolution=Resolution.CLEARED,
                )
            )
        elif finding.priority.rank > item.priority.rank:
            changes.append(
                Change(item.rule, Lifecycle.ESCALATED, finding.priority, item.raised_at_ms, finding)
            )
            still_open.append(replace(item, priority=finding.priority))
        else:
            # Same or lower priority: the open insight stands as it is; nothing is re-sent.
            still_open.append(item)
    for rule, finding in findings.items():
        if rule not in seen:
            changes.append(Change(rule, Lifecycle.RAISED, finding.priority, now, finding))
            still_open.append(OpenInsight(rule, finding.priority, now))
    if not changes:
        return deal, changes
    return replace(deal, open=tuple(still_open)), changes


def resolve_all(deal: DealState, why: Resolution) -> list[Change]:
    """The deal closed or was deleted: every open insight resolves."""
    return [
        Change(item.rule, Lifecycle.RESOLVED, item.priority, item.raised_at_ms, resolution=why)
        for item in deal.open
    ]
