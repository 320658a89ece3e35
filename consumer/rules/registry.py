"""The registry: every rule the monitor evaluates, one module each. Adding a rule is one module
in ``consumer/rules/catalog/`` and one line in ``MODULES``.

The order here is the evaluation order (the order in which insights raised by one step are
published). It is *not* the wire order: the deal codec and the changelog store each rule's own
``code``, so inserting a rule anywhere changes no stored state.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

from consumer.rules.base import Rule
from schemas.insights import RuleName

MODULES: tuple[str, ...] = (
    "stale_deal",
    "stuck_in_stage",
    "low_probability",
    "high_value_at_risk",
    "close_date_pressure",
    "close_date_passed",
    "velocity_drop",
    "ghosting",
    "meeting_cadence_drop",
    "single_threaded",
    "forecast_risk",
    "win_probability_drop",
    "close_date_unrealistic",
)


def _load(modules: Iterable[str]) -> tuple[Rule[Any], ...]:
    rules: list[Rule[Any]] = []
    for module in modules:
        rule = importlib.import_module(f"consumer.rules.catalog.{module}").RULE
        if not isinstance(rule, Rule):  # pragma: no cover - a broken rule module
            raise TypeError(f"consumer.rules.catalog.{module}.RULE is not a Rule")
        rules.append(rule)
    check(rules)
    return tuple(rules)


def check(rules: Iterable[Rule[Any]]) -> None:
    """Names and codes unique, codes in a byte; a key declared by two rules declared alike."""
    names: set[RuleName] = set()
    codes: set[int] = set()
    keys: dict[str, Any] = {}
    for rule in rules:
        if rule.name in names or rule.code in codes or not 0 <= rule.code < 256:
            raise ValueError(f"rule {rule.name}: duplicate name or code, or code {rule.code}")
        names.add(rule.name)
        codes.add(rule.code)
        for key, info in rule.thresholds.model_fields.items():
            seen = keys.setdefault(key, info)
            if repr(seen) != repr(info):
                raise ValueError(f"rule {rule.name}: key {key!r} declared differently")


RULES: tuple[Rule[Any], ...] = _load(MODULES)
BY_NAME: dict[RuleName, Rule[Any]] = {rule.name: rule for rule in RULES}


def readme_table(rules: Iterable[Rule[Any]] = RULES) -> str:
    """The README's rules table (``tests/unit/test_rules_registry.py`` checks it is current)."""
    lines = ["| rule | fires when | priority |", "|---|---|---|"]
    lines += [f"| `{r.name.value}` | {r.fires_when} | {r.priority_text} |" for r in rules]
    return "\n".join(lines)


def keys(rules: Iterable[Rule[Any]] = RULES) -> dict[str, list[Rule[Any]]]:
    """Every rules-file key and the rules that read it."""
    out: dict[str, list[Rule[Any]]] = {}
    for rule in rules:
        for key in rule.thresholds.model_fields:
            out.setdefault(key, []).append(rule)
    return out
