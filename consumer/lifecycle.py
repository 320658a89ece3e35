"""The insight lifecycle: one open insight per (deal, rule), raised once, escalated when its
priority rises, resolved when the condition clears or the deal goes away. Pure.

An episode is identified by the partition-clock instant at which it was raised, so the
``insight_id`` of a replayed stream is the same as the original's.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from consumer.state import DealState, OpenInsight, copy_state
from schemas.insights import Lifecycle, Priority, RuleName


class Resolution(StrEnum):
    CLEARED = "cleared"
    WON = "won"
    LOST = "lost"
    DELETED = "deleted"
    FORGOTTEN = "forgotten"  # never identified (no stage, no value) and silent: dropped


class Change(NamedTuple):
    """One lifecycle step to publish."""

    rule: RuleName
    lifecycle: Lifecycle
    priority: Priority
    raised_at_ms: int
    resolution: Resolution | None = None


def reconcile(
    deal: DealState, fired: dict[RuleName, Priority], now: int
) -> tuple[DealState, list[Change]]:
    """Compare what fires now with what is open; return the new open set and the changes."""
    if not deal.open and not fired:
        return deal, []  # the common case: nothing open, nothing firing
    changes: list[Change] = []
    still_open: list[OpenInsight] = []
    for item in deal.open:
        priority = fired.get(item.rule)
        if priority is None:
            changes.append(
                Change(
                    item.rule,
                    Lifecycle.RESOLVED,
                    item.priority,
                    item.raised_at_ms,
                    resolution=Resolution.CLEARED,
                )
            )
        elif priority.rank > item.priority.rank:
            changes.append(Change(item.rule, Lifecycle.ESCALATED, priority, item.raised_at_ms))
            still_open.append(OpenInsight(item.rule, priority, item.raised_at_ms))
        else:
            # Same or lower priority: the open insight stands as it is; nothing is re-sent.
            still_open.append(item)
    if len(still_open) < len(fired) or changes:
        seen = {item.rule for item in deal.open}
        for rule, priority in fired.items():
            if rule not in seen:
                changes.append(Change(rule, Lifecycle.RAISED, priority, now))
                still_open.append(OpenInsight(rule, priority, now))
    if not changes:
        return deal, changes
    new = copy_state(deal)
    new.open = tuple(still_open)
    return new, changes


def resolve_all(deal: DealState, why: Resolution) -> list[Change]:
    """The deal closed or was deleted: every open insight resolves."""
    return [
        Change(item.rule, Lifecycle.RESOLVED, item.priority, item.raised_at_ms, resolution=why)
        for item in deal.open
    ]
