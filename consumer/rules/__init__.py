"""The risk rules: pure functions of ``(deal, now, thresholds)``, one module each
(``consumer/rules/catalog/``), listed in ``consumer.rules.registry``.

``evaluate`` runs every registered rule's ``check`` (with the numbers behind each finding);
``fired`` says what fires and how badly without building numbers, and ``next_deadline`` when the
answer can next change by time alone; ``assess`` says both at once. They run on every event and
every due deal, so the rules of ``fused.COVERS`` run there as one fused pass
(``consumer.rules.fused``, proven equal to their modules' ``check`` and ``deadline`` on random
deals by ``tests/unit/test_rules_registry.py``) and every other registered rule through its own
functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from consumer.rules import fused
from consumer.rules.base import Finding, Rule
from consumer.rules.registry import BY_NAME, RULES
from consumer.state import DealState
from schemas.insights import Priority, RuleName

if TYPE_CHECKING:  # consumer.thresholds imports the registry
    from consumer.thresholds import RuleThresholds

__all__ = [
    "BY_NAME",
    "RULES",
    "Finding",
    "Rule",
    "assess",
    "evaluate",
    "fired",
    "limits",
    "next_deadline",
]


def limits(th: RuleThresholds) -> fused.Limits:
    """The fused pass's limits for ``th``, with every other registered rule (``Limits.rest``):
    built on first use, then kept in ``th.cache``."""
    found: fused.Limits | None = th.cache.get("limits")
    if found is not None:
        return found
    groups: dict[str | None, list[tuple[Rule[Any], Any]]] = {}
    for r, t in th.checks:
        if r.name not in fused.COVERS:
            groups.setdefault(r.needs[0] if r.needs else None, []).append((r, t))
    rest = tuple((field, tuple(rules)) for field, rules in groups.items())
    th.cache["limits"] = out = fused.Limits.of(th, rest)
    return out


def fired(deal: DealState, now: int, th: RuleThresholds) -> dict[RuleName, Priority]:
    """What fires, and how badly (no numbers)."""
    return assess(deal, now, th)[0]


def assess(
    deal: DealState, now: int, th: RuleThresholds
) -> tuple[dict[RuleName, Priority], int | None]:
    """``fired`` and ``next_deadline`` at once: the hot path (one pass over the fused rules)."""
    return fused.assess(deal, now, th.cache.get("limits") or limits(th))


def evaluate(deal: DealState, now: int, th: RuleThresholds) -> dict[RuleName, Finding]:
    """Every rule that fires for ``deal`` at ``now``, with its numbers, in registry order."""
    out: dict[RuleName, Finding] = {}
    for rule, t in th.checks:
        finding = rule.check(deal, now, t)
        if finding is not None:
            out[finding.rule] = finding
    return out


def next_deadline(deal: DealState, now: int, th: RuleThresholds) -> int | None:
    """The earliest instant after ``now`` at which a rule's answer may change by time alone."""
    return assess(deal, now, th)[1]


def _finder(name: RuleName) -> Any:
    rule = BY_NAME[name]

    def find(deal: DealState, now: int, th: RuleThresholds) -> Finding | None:
        return rule.check(deal, now, th.of(rule))

    find.__name__ = find.__qualname__ = name.value
    find.__doc__ = f"The {name.value} rule's finding (``Rule.check`` with its thresholds)."
    return find


stale_deal = _finder(RuleName.STALE_DEAL)
stuck_in_stage = _finder(RuleName.STUCK_IN_STAGE)
low_probability = _finder(RuleName.LOW_PROBABILITY)
high_value_at_risk = _finder(RuleName.HIGH_VALUE_AT_RISK)
close_date_pressure = _finder(RuleName.CLOSE_DATE_PRESSURE)
close_date_passed = _finder(RuleName.CLOSE_DATE_PASSED)
