"""Insight text from templates: the deterministic fallback that every insight starts with.

The structure is the seed's: a title, a description with the concrete numbers, 2-3 actions with
priority, timeline and expected impact, and the key metrics. Pure: the same change, deal and
clock always render the same insight (replays are byte-identical).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import NamedTuple

import orjson

from consumer.lifecycle import Change, Resolution
from consumer.rules import RULE_BY_NAME, Finding
from consumer.state import DAY_MS, DealState, from_day
from consumer.thresholds import RuleThresholds
from schemas.insights import (
    InsightEvent,
    Lifecycle,
    Priority,
    RuleName,
    insight_adapter,
    insight_id_for,
)

Metrics = dict[str, float | int | str | None]
ActionSpec = tuple[str, Priority, str, str]

CONFIDENCE: dict[RuleName, float] = {
    RuleName.STALE_DEAL: 0.9,
    RuleName.STUCK_IN_STAGE: 0.8,
    RuleName.LOW_PROBABILITY: 0.75,
    RuleName.HIGH_VALUE_AT_RISK: 0.85,
    RuleName.CLOSE_DATE_PRESSURE: 0.8,
    RuleName.CLOSE_DATE_PASSED: 0.95,
}


def _money(deal: DealState) -> str:
    if deal.value is None:
        return "an unknown amount"
    return f"{deal.value:,.0f} {deal.currency or ''}".strip()


def _name(deal: DealState) -> str:
    return deal.title or deal.deal_id


def _stale(deal: DealState, m: Metrics) -> tuple[str, str, list[ActionSpec]]:
    days = m["days_inactive"]
    return (
        f"'{_name(deal)}' has gone quiet for {days} days",
        f"No calls, emails, meetings or notes have been logged on this {_money(deal)} deal for "
        f"{days} days (threshold {m['threshold_days']:g}). Deals that stay silent this long "
        "rarely close on schedule.",
        [
            (
                "Contact the main stakeholder with a concrete next step",
                Priority.HIGH,
                "within 24 hours",
                "Re-engages the buyer before the deal goes cold",
            ),
            (
                "Confirm the decision timeline and who signs",
                Priority.MEDIUM,
                "this week",
                "Reveals whether the close date is still real",
            ),
            (
                "Log every touchpoint in the CRM",
                Priority.LOW,
                "ongoing",
                "Keeps the activity signal accurate",
            ),
        ],
    )


def _stuck(deal: DealState, m: Metrics) -> tuple[str, str, list[ActionSpec]]:
    return (
        f"'{_name(deal)}' is stuck in {m['stage']} for {m['days_in_stage']} days",
        f"The deal has been in the {m['stage']} stage for {m['days_in_stage']} days, longer than "
        f"the {m['threshold_days']:g}-day norm for that stage. Value at stake: {_money(deal)}.",
        [
            (
                "Identify the blocker to the next stage with the buyer",
                Priority.HIGH,
                "within 2 days",
                "Unblocks progression or exposes a stalled deal",
            ),
            (
                "Agree on a mutual action plan with dates",
                Priority.MEDIUM,
                "this week",
                "Shortens the remaining sales cycle",
            ),
        ],
    )


def _low_probability(deal: DealState, m: Metrics) -> tuple[str, str, list[ActionSpec]]:
    return (
        f"'{_name(deal)}' has a low win probability for its stage",
        f"Probability is {m['probability']:g}% while {m['stage']} deals normally sit at "
        f"{m['stage_min_probability']:g}% or more. Value: {_money(deal)}.",
        [
            (
                "Re-qualify budget, authority, need and timeline",
                Priority.HIGH,
                "this week",
                "Either raises confidence or frees time for better deals",
            ),
            (
                "Review the forecast with the sales manager",
                Priority.MEDIUM,
                "next pipeline review",
                "Keeps the forecast honest",
            ),
        ],
    )


def _high_value(deal: DealState, m: Metrics) -> tuple[str, str, list[ActionSpec]]:
    prob = m["probability"]
    prob_text = "unknown" if prob is None else f"{prob:g}%"
    return (
        f"High-value deal '{_name(deal)}' is at risk",
        f"{_money(deal)} is at stake: {m['days_inactive']} days since the last activity and a "
        f"win probability of {prob_text} ({m['reason']}).",
        [
            (
                "Escalate to the account executive's manager",
                Priority.CRITICAL,
                "today",
                "Senior attention on the largest risks in the pipeline",
            ),
            (
                "Schedule an executive-level call with the buyer",
                Priority.HIGH,
                "within 3 days",
                "Restores momentum on a deal that matters",
            ),
            (
                "Prepare a recovery plan with concrete concessions or value proof",
                Priority.MEDIUM,
                "this week",
                "Raises the chance of saving the deal",
            ),
        ],
    )


def _pressure(deal: DealState, m: Metrics) -> tuple[str, str, list[ActionSpec]]:
    return (
        f"'{_name(deal)}' closes in {m['days_to_close']} days at {m['probability']:g}%",
        f"The close date is {m['days_to_close']} days away but the win probability is only "
        f"{m['probability']:g}%. Value: {_money(deal)}.",
        [
            (
                "Confirm the close plan and remaining steps with the buyer",
                Priority.HIGH,
                "within 2 days",
                "Shows whether the date can hold",
            ),
            (
                "Move the close date if it is no longer realistic",
                Priority.MEDIUM,
                "this week",
                "Keeps the forecast accurate",
            ),
        ],
    )


def _passed(deal: DealState, m: Metrics) -> tuple[str, str, list[ActionSpec]]:
    close = "unknown" if deal.close_day is None else from_day(deal.close_day).isoformat()
    return (
        f"'{_name(deal)}' is past its close date",
        f"The expected close date {close} passed {m['days_overdue']} days ago and the deal is "
        f"still open. Value: {_money(deal)}.",
        [
            (
                "Set a new, realistic close date with the buyer",
                Priority.HIGH,
                "today",
                "Restores an accurate forecast",
            ),
            (
                "Close the deal as lost if the buyer has moved on",
                Priority.MEDIUM,
                "this week",
                "Removes a phantom deal from the pipeline",
            ),
        ],
    )


_TEMPLATES: dict[RuleName, Callable[[DealState, Metrics], tuple[str, str, list[ActionSpec]]]] = {
    RuleName.STALE_DEAL: _stale,
    RuleName.STUCK_IN_STAGE: _stuck,
    RuleName.LOW_PROBABILITY: _low_probability,
    RuleName.HIGH_VALUE_AT_RISK: _high_value,
    RuleName.CLOSE_DATE_PRESSURE: _pressure,
    RuleName.CLOSE_DATE_PASSED: _passed,
}

_RESOLVED_TEXT: dict[Resolution, str] = {
    Resolution.CLEARED: "The condition behind this insight no longer holds.",
    Resolution.WON: "The deal was closed as won.",
    Resolution.LOST: "The deal was closed as lost.",
    Resolution.DELETED: "The deal was deleted in the CRM.",
}

_RESOLVED_ACTIONS: list[ActionSpec] = [
    ("No action needed on this risk", Priority.LOW, "none", "The risk is gone"),
    (
        "Keep the activity cadence that cleared it",
        Priority.LOW,
        "ongoing",
        "Prevents the risk from coming back",
    ),
]


def _snapshot_metrics(deal: DealState, now: int) -> Metrics:
    return {
        "days_inactive": round((now - deal.last_activity_at_ms) / DAY_MS, 1),
        "days_in_stage": round((now - deal.stage_entered_at_ms) / DAY_MS, 1),
        "probability": deal.probability,
    }


class Insight(NamedTuple):
    """One rendered insight event: what the shell needs to route and count it, and its JSON
    (an ``InsightEvent``, serialised once, here)."""

    deal_id: str
    rule: RuleName
    priority: Priority
    lifecycle: Lifecycle
    value: bytes

    def event(self) -> InsightEvent:
        """The event as a validated model (tests, tools; the hot path never needs it)."""
        return insight_adapter.validate_json(self.value)


def _actions_json(actions: list[ActionSpec]) -> orjson.Fragment:
    return orjson.Fragment(
        orjson.dumps(
            [
                {"action": a, "priority": p.value, "timeline": t, "expected_impact": i}
                for a, p, t, i in actions
            ]
        )
    )


_ACTIONS_JSON: dict[RuleName, orjson.Fragment] = {}  # the actions are fixed per rule
_RESOLVED_ACTIONS_JSON = _actions_json(_RESOLVED_ACTIONS)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


_DAYS: dict[int, str] = {}


def _utc(ms: int) -> str:
    """Epoch milliseconds as RFC 3339 UTC with milliseconds, e.g. ``2026-03-02T09:00:00.123Z``
    (the date part cached per day: ~4x cheaper than building a ``datetime`` per timestamp)."""
    day, rest = divmod(ms, DAY_MS)
    date = _DAYS.get(day)
    if date is None:
        if len(_DAYS) > 4096:
            _DAYS.clear()
        d = _EPOCH + dt.timedelta(days=day)
        date = _DAYS[day] = f"{d.year:04d}-{d.month:02d}-{d.day:02d}T"
    seconds, millis = divmod(rest, 1000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return f"{date}{hour:02d}:{minute:02d}:{second:02d}.{millis:03d}Z"


def render(change: Change, deal: DealState, now: int, th: RuleThresholds) -> Insight:
    """The insight event for one lifecycle step of one deal at partition clock ``now``.

    Written straight to JSON with orjson: every value comes from this module and the typed
    state, so building and validating pydantic models would only cost time on the hot path
    (~4x; the contract tests validate what this produces against ``InsightEvent``)."""
    rule = change.rule
    finding: Finding | None = None
    if change.lifecycle is not Lifecycle.RESOLVED:
        finding = RULE_BY_NAME[rule](deal, now, th)
    if finding is None:
        why = change.resolution or Resolution.CLEARED
        metrics = _snapshot_metrics(deal, now)
        metrics["resolution"] = why.value
        title = f"Resolved: {rule.value.replace('_', ' ')} on '{_name(deal)}'"
        description = _RESOLVED_TEXT[why]
        actions = _RESOLVED_ACTIONS_JSON
    else:
        metrics = dict(finding.metrics)
        title, description, specs = _TEMPLATES[rule](deal, metrics)
        actions = _ACTIONS_JSON.get(rule) or _ACTIONS_JSON.setdefault(rule, _actions_json(specs))
    body = {
        "schema_version": 1,
        "insight_id": insight_id_for(deal.workspace_id, deal.deal_id, rule, change.raised_at_ms),
        "lifecycle": change.lifecycle,  # str enums: orjson writes their values (no .value calls)
        "rule": rule,
        "workspace_id": deal.workspace_id,
        "deal_id": deal.deal_id,
        "type": "risk",
        "title": title,
        "description": description,
        "priority": change.priority,
        "confidence": CONFIDENCE[rule],
        "data": {
            "deal_id": deal.deal_id,
            "deal_title": _name(deal),
            "deal_value": deal.value,
            "currency": deal.currency,
            "stage": deal.stage,
            "owner_id": deal.owner_id,
            "owner_name": deal.owner_name,
            "company": deal.company,
            "key_metrics": metrics,
        },
        "actions": actions,
        "source": "rules",
        "detected_at": (detected := _utc(now)),
        "raised_at": detected if change.raised_at_ms == now else _utc(change.raised_at_ms),
    }
    return Insight(deal.deal_id, rule, change.priority, change.lifecycle, orjson.dumps(body))
