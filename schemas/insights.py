"""Insight events: what the monitor publishes on ``deal-insights`` (key ``deal_id``).

The structure follows the seed's insight (type, title, description, priority, confidence, data
with key metrics, 2-3 actions), plus the lifecycle fields that make a stream of them meaningful:
``insight_id`` is deterministic (same deal, rule and episode give the same id), ``lifecycle`` says
whether this event raises, escalates or resolves the insight, or (``enriched``) re-publishes it
with text written by a model.

``enriched`` was added after the first three lifecycles (an additive change: consumers skip
lifecycles they do not handle). The enricher publishes it after a ``raised`` or ``escalated``
event, on the same key, with the same ``insight_id``, ``rule``, ``priority``, ``data``,
``confidence``, ``raised_at`` and ``detected_at`` as the event it enriches; only ``title``,
``description``, ``actions`` and ``source`` (the model's name) differ. Consumers that show
insights replace the text of that exact event (same ``insight_id``, ``detected_at`` and
``priority``) and keep the rule text when no ``enriched`` event comes.
"""

from __future__ import annotations

import hashlib
import uuid
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

from schemas.events import Id, Stage, Text


class Lifecycle(StrEnum):
    """raised: an episode begins; escalated: its priority rose; resolved: it is over;
    enriched: model-written text (title, description, actions) for the raised or escalated
    event with the same insight_id, detected_at and priority (status and priority unchanged)."""

    RAISED = "raised"
    ESCALATED = "escalated"
    RESOLVED = "resolved"
    ENRICHED = "enriched"


class Priority(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _PRIORITY_RANK[self]


_PRIORITY_RANK = {Priority.LOW: 0, Priority.MEDIUM: 1, Priority.HIGH: 2, Priority.CRITICAL: 3}


class InsightType(StrEnum):
    RISK = "risk"
    OPPORTUNITY = "opportunity"
    TREND = "trend"
    RECOMMENDATION = "recommendation"


class RuleName(StrEnum):
    STALE_DEAL = "stale_deal"
    STUCK_IN_STAGE = "stuck_in_stage"
    LOW_PROBABILITY = "low_probability"
    HIGH_VALUE_AT_RISK = "high_value_at_risk"
    CLOSE_DATE_PRESSURE = "close_date_pressure"
    CLOSE_DATE_PASSED = "close_date_passed"
    VELOCITY_DROP = "velocity_drop"
    GHOSTING = "ghosting"
    MEETING_CADENCE_DROP = "meeting_cadence_drop"
    SINGLE_THREADED = "single_threaded"
    FORECAST_RISK = "forecast_risk"
    WIN_PROBABILITY_DROP = "win_probability_drop"
    CLOSE_DATE_UNREALISTIC = "close_date_unrealistic"
    PIPELINE_GAP = "pipeline_gap"
    """Workspace level, from the revenue forecast (not a monitor rule): ``deal_id`` is
    ``pipeline:<period>``."""


WORKSPACE_RULES: frozenset[RuleName] = frozenset({RuleName.PIPELINE_GAP})
"""Rules about a workspace rather than one deal; the monitor's registry has every other one."""
DEAL_RULES: tuple[RuleName, ...] = tuple(r for r in RuleName if r not in WORKSPACE_RULES)
"""The monitor's rules: about one deal each, in its registry and its packed state."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


MetricValue = float | int | str | None


class InsightData(_Model):
    deal_id: Id
    deal_title: str
    deal_value: float | None
    currency: str | None = None
    stage: Stage | None = None
    owner_id: str | None = None
    owner_name: str | None = None
    company: str | None = None
    key_metrics: dict[str, MetricValue] = Field(default_factory=dict)


class InsightAction(_Model):
    action: Text
    priority: Priority
    timeline: Text
    expected_impact: Text


class InsightEvent(_Model):
    schema_version: Literal[1] = 1
    insight_id: str = Field(description="Deterministic: uuid5 of workspace, deal, rule, episode.")
    lifecycle: Lifecycle = Field(
        description=(
            "raised, escalated, resolved; or enriched: the model-written text of the raised or "
            "escalated event with the same insight_id, detected_at and priority."
        )
    )
    rule: RuleName
    workspace_id: Id
    deal_id: Id
    type: InsightType = InsightType.RISK
    title: str
    description: str
    priority: Priority
    confidence: Annotated[float, Field(ge=0, le=1)]
    data: InsightData
    actions: Annotated[list[InsightAction], Field(min_length=2, max_length=3)]
    source: str = Field(description="'rules', or the model that wrote the text (enriched events).")
    detected_at: AwareDatetime = Field(
        description=(
            "Partition clock when this event happened; for an enriched event, the detected_at "
            "of the event whose text it replaces."
        )
    )
    raised_at: AwareDatetime = Field(description="Partition clock when the episode began.")


insight_adapter: TypeAdapter[InsightEvent] = TypeAdapter(InsightEvent)

INSIGHT_NAMESPACE = uuid.UUID("6f1c2d4e-8a3b-5c7d-9e0f-a1b2c3d4e5f6")


_NAMESPACE_BYTES = INSIGHT_NAMESPACE.bytes


def insight_id_for(workspace_id: str, deal_id: str, rule: str, episode_ms: int) -> str:
    """The deterministic id of one episode of one rule on one deal: ``uuid.uuid5`` of
    ``INSIGHT_NAMESPACE`` and ``workspace_id␟deal_id␟rule␟episode_ms``, computed without the
    ``UUID`` object (a third of the cost; the unit tests compare it with ``uuid.uuid5``)."""
    name = f"{workspace_id}\x1f{deal_id}\x1f{rule}\x1f{episode_ms}".encode()
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name, usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
