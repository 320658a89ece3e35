"""The context Claude gets for one insight, built from the insight stream itself.

The enricher sees only insight events. From them it keeps a small, bounded memory per deal
(:class:`DealMemory`): the insights open on the deal, the last few lifecycle steps, and the
stages the deal was seen in. With the insight's own ``data`` and ``key_metrics`` that gives the
context of :func:`build_context`: deal facts, the rule and its numbers, stage history, recent
activity figures and the other open insights on the deal.

The memory covers what this process has read since it started (its consumer group's committed
offset); older history is not reloaded after a restart. It is bounded twice: at most
``max_deals`` deals (least recently seen dropped first) and a few entries per deal.

Every string that comes from the CRM is untrusted. Here it is only truncated and stripped of
control characters; :mod:`consumer.enricher.prompt` puts the whole context into a delimited,
escaped data block.
"""

from __future__ import annotations

import re
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from consumer.forecast import gap
from consumer.rules.registry import RULES
from schemas.insights import InsightEvent, Lifecycle, MetricValue, RuleName

MAX_TEXT: Final = 300  # characters of any one untrusted string
MAX_METRICS: Final = 24  # key_metrics entries passed on
RECENT_STEPS: Final = 8
STAGES_KEPT: Final = 8

RULE_MEANING: Final[dict[RuleName, str]] = {
    **{rule.name: rule.meaning for rule in RULES},
    RuleName.PIPELINE_GAP: gap.MEANING,
}

# key_metrics that describe activity (passed on under "activity" as well).
_ACTIVITY_KEYS: Final = re.compile(r"(activit|inactive|touch|email|call|meeting|note|task)")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029]")


def untrusted(value: str | None, limit: int = MAX_TEXT) -> str | None:
    """A CRM string made safe to pass on as data: no control characters, bounded length."""
    if value is None:
        return None
    cleaned = _CONTROL.sub(" ", value).strip()
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def _metric(value: MetricValue) -> MetricValue:
    return untrusted(value, 120) if isinstance(value, str) else value


def _metrics(values: dict[str, MetricValue]) -> dict[str, MetricValue]:
    items = sorted(values.items())[:MAX_METRICS]
    return {str(untrusted(k, 60)): _metric(v) for k, v in items}


def _day(at: datetime) -> str:
    return at.date().isoformat()


@dataclass(frozen=True, slots=True)
class Step:
    """One lifecycle step of an insight on the deal, as remembered."""

    insight_id: str
    rule: RuleName
    lifecycle: Lifecycle
    priority: str
    detected_at: datetime
    raised_at: datetime
    key_metrics: dict[str, MetricValue]

    def describe(self) -> dict[str, Any]:
        return {
            "rule": self.rule.value,
            "lifecycle": self.lifecycle.value,
            "priority": self.priority,
            "since": _day(self.raised_at),
            "at": _day(self.detected_at),
            "key_metrics": _metrics(self.key_metrics),
        }


@dataclass(slots=True)
class DealHistory:
    open: dict[RuleName, Step] = field(default_factory=dict)
    recent: deque[Step] = field(default_factory=lambda: deque(maxlen=RECENT_STEPS))
    stages: deque[tuple[str, datetime]] = field(default_factory=lambda: deque(maxlen=STAGES_KEPT))


class DealMemory:
    """Recent insights per deal, from the stream; bounded (see the module docstring)."""

    def __init__(self, max_deals: int = 10_000) -> None:
        self._max = max_deals
        self._deals: OrderedDict[tuple[str, str], DealHistory] = OrderedDict()

    def __len__(self) -> int:
        return len(self._deals)

    def history(self, workspace_id: str, deal_id: str) -> DealHistory | None:
        return self._deals.get((workspace_id, deal_id))

    def observe(self, insight: InsightEvent) -> DealHistory:
        """Remember one lifecycle step (enriched events add nothing) and return the deal's
        history *before* this step, for the context of the step itself."""
        key = (insight.workspace_id, insight.deal_id)
        history = self._deals.get(key)
        if history is None:
            history = DealHistory()
            self._deals[key] = history
            if len(self._deals) > self._max:
                self._deals.popitem(last=False)
        else:
            self._deals.move_to_end(key)
        before = DealHistory(
            open=dict(history.open),
            recent=deque(history.recent, maxlen=RECENT_STEPS),
            stages=deque(history.stages, maxlen=STAGES_KEPT),
        )
        if insight.lifecycle is Lifecycle.ENRICHED:
            return before
        step = Step(
            insight_id=insight.insight_id,
            rule=insight.rule,
            lifecycle=insight.lifecycle,
            priority=insight.priority.value,
            detected_at=insight.detected_at,
            raised_at=insight.raised_at,
            key_metrics=dict(insight.data.key_metrics),
        )
        if insight.lifecycle is Lifecycle.RESOLVED:
            history.open.pop(insight.rule, None)
        else:
            history.open[insight.rule] = step
        history.recent.append(step)
        stage = insight.data.stage
        if stage is not None and (not history.stages or history.stages[-1][0] != stage.value):
            history.stages.append((stage.value, insight.detected_at))
        return before


def build_context(insight: InsightEvent, before: DealHistory | None) -> dict[str, Any]:
    """The JSON-able context of one raised or escalated insight (see the system prompt)."""
    data = insight.data
    history = before or DealHistory()
    stages = [{"stage": s, "first_seen": _day(at)} for s, at in history.stages]
    if data.stage is not None and (not stages or stages[-1]["stage"] != data.stage.value):
        stages.append({"stage": data.stage.value, "first_seen": _day(insight.detected_at)})
    metrics = _metrics(data.key_metrics)
    activity = {k: v for k, v in metrics.items() if _ACTIVITY_KEYS.search(k)}
    others = [
        step.describe()
        for rule, step in sorted(history.open.items())
        if rule is not insight.rule and step.insight_id != insight.insight_id
    ]
    previous = [step.describe() for step in history.recent][-5:]
    return {
        "deal": {
            "title": untrusted(data.deal_title),
            "company": untrusted(data.company),
            "value": data.deal_value,
            "currency": data.currency,
            "stage": data.stage.value if data.stage is not None else None,
            "owner": untrusted(data.owner_name),
        },
        "alert": {
            "rule": insight.rule.value,
            "meaning": RULE_MEANING[insight.rule],
            "lifecycle": insight.lifecycle.value,
            "priority": insight.priority.value,
            "confidence": insight.confidence,
            "raised_on": _day(insight.raised_at),
            "detected_on": _day(insight.detected_at),
            "key_metrics": metrics,
            "rule_text": {
                "title": untrusted(insight.title),
                "description": untrusted(insight.description, 600),
                "actions": [untrusted(a.action) for a in insight.actions],
            },
        },
        "stage_history": stages,
        "activity": activity,
        "other_open_alerts": others,
        "previous_alerts": previous,
    }
