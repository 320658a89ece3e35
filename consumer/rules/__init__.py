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

from typing import TYPE_CHECKING, Any, NamedTuple

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
    "Plan",
    "Rule",
    "assess",
    "assess_score",
    "evaluate",
    "fired",
    "next_deadline",
    "plan",
]


class Plan(NamedTuple):
    """How to evaluate every registered rule for one ``RuleThresholds``, worked out once
    (``plan``): the fused pass's limits, the other rules, and the rules that read the model's
    score (what a ``deal.scored`` event can change, ``assess_score``)."""

    lim: fused.Limits
    """The fused pass's limits, with every other rule (``Limits.rest``)."""
    score_rules: tuple[tuple[Rule[Any], Any], ...]
    score_names: frozenset[RuleName]


def plan(th: RuleThresholds) -> Plan:
    """``th``'s ``Plan`` (built on first use, then kept in ``th.cache``)."""
    found: Plan | None = th.cache.get("plan")
    if found is not None:
        return found
    groups: dict[str | None, list[tuple[Rule[Any], Any]]] = {}
    for r, t in th.checks:
        if r.name not in fused.COVERS:
            groups.setdefault(r.needs[0] if r.needs else None, []).append((r, t))
    scoring = tuple((r, t) for r, t in th.checks if SCORE in r.needs)
    rest = tuple((field, tuple(rules)) for field, rules in groups.items())
    th.cache["plan"] = out = Plan(
        fused.Limits.of(th, rest),
        scoring,
        frozenset(r.name for r, _ in scoring),
    )
    return out


SCORE = "score"
"""The ``DealState`` field a ``deal.scored`` event changes, and the only one: a rule reads it
only if it lists it in ``Rule.needs`` (proven for every rule by
``tests/unit/test_rules_registry.py``)."""


def fired(deal: DealState, now: int, th: RuleThresholds) -> dict[RuleName, Priority]:
    """What fires, and how badly (no numbers)."""
    return assess(deal, now, th)[0]


def assess(
    deal: DealState, now: int, th: RuleThresholds
) -> tuple[dict[RuleName, Priority], int | None]:
    """``fired`` and ``next_deadline`` at once: the hot path (one pass over the fused rules)."""
    return fused.assess(deal, now, (th.cache.get("plan") or plan(th)).lim)


def assess_score(
    deal: DealState, now: int, th: RuleThresholds, due: int | None
) -> tuple[dict[RuleName, Priority], int | None]:
    """``assess`` after a ``deal.scored`` event, when only the score changed since the deal's
    last evaluation and the clock has not reached that evaluation's deadline ``due`` (the
    caller checks both): every rule that does not read the score still gives what it gave
    then, which is what the deal's open insights hold (``reconcile`` keeps a rule open exactly
    while it fires, at a priority at least the one it fires at: the same again changes
    nothing). So only the score's rules run. The deadline is the earlier of ``due`` and
    theirs: never later than ``assess``'s (earlier only costs one more evaluation)."""
    p = th.cache.get("plan") or plan(th)
    names = p.score_names
    out = {o.rule: o.priority for o in deal.open if o.rule not in names}
    if deal.score is None:
        return out, due
    for rule, t in p.score_rules:
        finding = rule.check(deal, now, t)
        if finding is not None:
            out[rule.name] = finding.priority
        d = rule.deadline(deal, now, t)
        if d is not None and (due is None or d < due):
            due = d
    return out, due


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
