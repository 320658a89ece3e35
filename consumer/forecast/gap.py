"""The ``pipeline_gap`` insight: a workspace's probability of reaching its period target fell
below a threshold (pure: no I/O, no clock).

One open insight per (workspace, period) at a time, through the usual lifecycle: raised when a
forecast's probability first falls below ``threshold`` (priority high; critical below half of
it), escalated when it falls under the critical line while open, resolved when a later
forecast reaches the threshold again. Nothing is re-sent while the priority stands or falls
back. Only forecasts of the workspace scope with a target count, and only those with an as-of
time after the last one seen for that (workspace, period): re-running a forecast, or one of an
earlier date, moves nothing, so replays give the same insights.

The insight is keyed by ``deal_id`` = ``pipeline:<period>`` (it is about the period's pipeline,
not one deal); its id is ``insight_id_for(workspace, that, "pipeline_gap", raised as-of ms)``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from schemas.forecasts import DealForecast
from schemas.insights import (
    InsightAction,
    InsightData,
    InsightEvent,
    InsightType,
    Lifecycle,
    Priority,
    RuleName,
    insight_id_for,
)

DEAL_PREFIX = "pipeline:"
MEANING = (
    "The workspace's Monte Carlo forecast gives a low probability of reaching its revenue "
    "target for the period (a pipeline gap, not a problem of one deal)."
)
CONFIDENCE = 0.8
WORKSPACE_SCOPE = "workspace"


@dataclass(frozen=True)
class GapState:
    """What is known of one (workspace, period): the last as-of time seen, the open episode."""

    last_as_of: dt.datetime
    priority: Priority | None = None
    """Of the open insight; None when none is open."""
    raised_at: dt.datetime | None = None


def deal_id(period: str) -> str:
    return DEAL_PREFIX + period


def gap_priority(p_reach: float, threshold: float) -> Priority | None:
    """None at or above ``threshold``; high below it; critical below half of it."""
    if p_reach >= threshold:
        return None
    return Priority.CRITICAL if p_reach < threshold / 2 else Priority.HIGH


def step(
    state: GapState | None, f: DealForecast, threshold: float
) -> tuple[GapState | None, InsightEvent | None]:
    """The state after forecast ``f`` and the insight event to publish, if any."""
    if f.scope != WORKSPACE_SCOPE or f.target is None or f.p_reach_target is None:
        return state, None
    if state is not None and f.as_of <= state.last_as_of:
        return state, None  # the same forecast again, or an older one: nothing moves
    fired = gap_priority(f.p_reach_target, threshold)
    open_priority = None if state is None else state.priority
    raised_at = None if state is None else state.raised_at
    if open_priority is None or raised_at is None:
        if fired is None:
            return GapState(f.as_of), None
        after = GapState(f.as_of, fired, f.as_of)
        return after, _event(f, Lifecycle.RAISED, fired, f.as_of, threshold)
    if fired is None:
        return GapState(f.as_of), _event(f, Lifecycle.RESOLVED, open_priority, raised_at, threshold)
    if fired.rank > open_priority.rank:
        after = GapState(f.as_of, fired, raised_at)
        return after, _event(f, Lifecycle.ESCALATED, fired, raised_at, threshold)
    return GapState(f.as_of, open_priority, raised_at), None


def _money(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f}"


def _event(
    f: DealForecast,
    lifecycle: Lifecycle,
    priority: Priority,
    raised_at: dt.datetime,
    threshold: float,
) -> InsightEvent:
    p = f.p_reach_target or 0.0
    did = deal_id(f.period)
    raised_ms = round(raised_at.timestamp() * 1000)
    if lifecycle is Lifecycle.RESOLVED:
        title = f"{f.period} target back in reach: {p:.0%} likely"
        description = (
            f"The forecast as of {f.as_of.date().isoformat()} gives a {p:.0%} probability of "
            f"reaching the {f.period} target of {_money(f.target)} (threshold {threshold:.0%}); "
            f"P50 {_money(f.p50)}."
        )
    else:
        title = f"{f.period} target at risk: {p:.0%} likely"
        description = (
            f"The forecast as of {f.as_of.date().isoformat()} gives only a {p:.0%} probability "
            f"of reaching the {f.period} target of {_money(f.target)} (threshold "
            f"{threshold:.0%}): P50 {_money(f.p50)} (P10 {_money(f.p10)}, P90 "
            f"{_money(f.p90)}), a gap of {_money(f.gap)} at the median."
        )
    closers = ", ".join(g.deal_id for g in f.gap_closers[:3])
    actions = [
        InsightAction(
            action=(
                f"Focus on the deals that close the gap most: {closers}"
                if closers
                else "Review the open deals expected in the period"
            ),
            priority=priority,
            timeline="this week",
            expected_impact="the largest rise in the probability of reaching the target",
        ),
        InsightAction(
            action="Add pipeline that can still close in the period",
            priority=Priority.HIGH if priority is Priority.CRITICAL else Priority.MEDIUM,
            timeline=f"before {f.period_end.date().isoformat()}",
            expected_impact=f"coverage is {'n/a' if f.coverage is None else f'{f.coverage:.2f}x'}",
        ),
    ]
    return InsightEvent(
        insight_id=insight_id_for(f.workspace_id, did, RuleName.PIPELINE_GAP.value, raised_ms),
        lifecycle=lifecycle,
        rule=RuleName.PIPELINE_GAP,
        workspace_id=f.workspace_id,
        deal_id=did,
        type=InsightType.RISK,
        title=title,
        description=description,
        priority=priority,
        confidence=CONFIDENCE,
        data=InsightData(
            deal_id=did,
            deal_title=f"{f.period} pipeline",
            deal_value=f.target,
            key_metrics={
                "period": f.period,
                "p_reach_target": round(p, 4),
                "threshold": threshold,
                "target": f.target,
                "p10": round(f.p10, 2),
                "p50": round(f.p50, 2),
                "p90": round(f.p90, 2),
                "gap": None if f.gap is None else round(f.gap, 2),
                "coverage": None if f.coverage is None else round(f.coverage, 4),
                "open_deals": f.open_deals,
            },
        ),
        actions=actions,
        source="rules",
        detected_at=f.as_of,
        raised_at=raised_at,
    )
