"""What a rule is: the parts every rule module declares, and the types they share. Pure.

A rule module (``consumer/rules/catalog/<name>.py``) defines one ``Rule``: its name, its wire
code, the model of its rules-file keys (defaults and validation), when it fires and how badly
(``check``), when its answer can next change by time alone (``deadline``), its text, its
confidence and what it means. ``consumer.rules.registry`` lists the modules; everything else
(the evaluator, the deadline index, the deal codec, the templates, the enricher's prompt, the
README's rules table) reads the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from consumer.state import DAY_MS, DealState
from schemas.events import Stage
from schemas.insights import Priority, RuleName

Metrics = dict[str, float | int | str | None]


class Finding(NamedTuple):
    rule: RuleName
    priority: Priority
    metrics: Metrics


class Action(NamedTuple):
    action: str
    priority: Priority
    timeline: str
    expected_impact: str


class Text(NamedTuple):
    title: str
    description: str


class Thresholds(BaseModel):
    """Base of a rule's thresholds: its rules-file keys, with defaults and validation. A key
    declared by two rules is one rules-file key; both declarations must agree (registry test)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PerStage(Thresholds):
    lead: float = Field(gt=0)
    qualified: float = Field(gt=0)
    proposal: float = Field(gt=0)
    negotiation: float = Field(gt=0)

    def for_stage(self, stage: Stage) -> float:
        return getattr(self, stage)  # type: ignore[no-any-return]  # Stage is a str enum


T = TypeVar("T", bound=Thresholds)


@dataclass(frozen=True, slots=True)
class Rule(Generic[T]):
    """One rule, whole. ``code`` is what the deal codec and the changelog store for it: written
    down here, never derived from an order; never change or reuse one."""

    name: RuleName
    code: int
    thresholds: type[T]
    check: Callable[[DealState, int, T], Finding | None]
    """Whether the rule fires for a deal at clock ``now``, how badly, and the numbers. Reads the
    deal's fields, never its open insights: ``check`` and ``deadline`` are evaluated once, before
    the lifecycle reconciles the open insights (``consumer.rules.assess``)."""
    deadline: Callable[[DealState, int, T], int | None]
    """The earliest instant after ``now`` at which ``check``'s answer may change without an
    event (earlier is allowed: the deal is evaluated once more for nothing; later is a bug)."""
    text: Callable[[DealState, Metrics], Text]
    """Title and description from the finding's metrics; must read well with any optional
    deal field unknown."""
    actions: tuple[Action, ...]
    confidence: float
    meaning: str
    """One sentence for the enricher's prompt."""
    fires_when: str
    """The README's "fires when" column, with the default thresholds."""
    priority_text: str
    """The README's "priority" column."""
    needs: tuple[str, ...] = ()
    """The ``DealState`` fields the rule cannot fire without: with one of them ``None``, ``check``
    finds nothing and ``deadline`` has none, so the evaluator does not call them (proven for
    every rule by ``tests/unit/test_rules_registry.py``)."""

    def find(self, deal: DealState, now: int, th: Any) -> Finding | None:
        """``check`` with this rule's part of a ``RuleThresholds``."""
        return self.check(deal, now, th.of(self))

    def next_deadline(self, deal: DealState, now: int, th: Any) -> int | None:
        return self.deadline(deal, now, th.of(self))


def days(ms: int) -> float:
    return ms / DAY_MS


def after(start_ms: int, days: float) -> int:
    """The first millisecond at which more than ``days`` days have passed since ``start_ms``."""
    return start_ms + int(days * DAY_MS) + 1


def money(deal: DealState) -> str | None:
    """``12,000 USD``, or ``None`` when the value is unknown."""
    if deal.value is None:
        return None
    return f"{deal.value:,.0f} {deal.currency or ''}".strip()


def name(deal: DealState) -> str:
    return deal.title or deal.deal_id


def value_sentence(deal: DealState, lead: str = "Value") -> str:
    """`` Value: 12,000 USD.`` (with its leading space), or nothing when the value is unknown."""
    amount = money(deal)
    return "" if amount is None else f" {lead}: {amount}."


def earliest(best: int | None, t: int, now: int) -> int | None:
    """``best`` lowered to ``t`` when ``t`` is after ``now`` and earlier."""
    if t > now and (best is None or t < best):
        return t
    return best
