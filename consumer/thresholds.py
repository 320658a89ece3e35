"""Rule thresholds: each rule's defaults (declared in its module), a rules file, and
per-workspace overrides.

A rules file (YAML or JSON) looks like::

    defaults:                 # optional, overrides the built-in defaults for everyone
      stale_days: 7
    workspaces:
      ws-acme:                # only the keys given change, the rest come from defaults
        stale_days: 5
        stuck_days: {proposal: 45}

The keys are the rules' own (``consumer.rules.registry.keys``). Unknown keys are rejected (a typo
must not silently leave a default in force). Every error is a ``ConfigError`` of one line naming
the file, the key and what to do.
"""

from __future__ import annotations

import difflib
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from consumer.rules.base import Rule, Thresholds
from consumer.rules.registry import RULES, keys
from vectoros.errors import ConfigError

T = TypeVar("T", bound=Thresholds)

_KEYS = keys()


class ThresholdError(ConfigError):
    """A bad threshold: ``key`` (a dotted path; ``None`` when several keys disagree) and what is
    wrong with it and what to do."""

    def __init__(self, key: str | None, problem: str) -> None:
        super().__init__(problem if key is None else f"{key}: {problem}")
        self.key = key
        self.problem = problem


def _unknown(key: str, known: list[str]) -> ThresholdError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(known)}"
    return ThresholdError(key, f"unknown key; {hint} (or remove it)")


class RuleThresholds:
    """Every number the rules use, one ``Thresholds`` model per rule, from flat keyword
    arguments (the rules file's keys). Invalid values raise ``ConfigError``. Days are calendar
    days of 24 h on the partition clock."""

    __slots__ = ("_by_code", "_values", "cache", "checks")

    def __init__(self, **values: Any) -> None:
        unknown = sorted(set(values) - set(_KEYS))
        if unknown:
            raise _unknown(unknown[0], sorted(_KEYS))
        self._by_code: dict[int, Thresholds] = {}
        for rule in RULES:
            own = {k: v for k, v in values.items() if k in rule.thresholds.model_fields}
            try:
                self._by_code[rule.code] = rule.thresholds.model_validate(own)
            except ValidationError as exc:
                raise _describe(exc, rule.thresholds) from None
        self._values: dict[str, Any] = {}
        for model in self._by_code.values():
            self._values.update(model.model_dump())
        self.checks: tuple[tuple[Rule[Any], Thresholds], ...] = tuple(
            (rule, self._by_code[rule.code]) for rule in RULES
        )
        """Every registered rule with its thresholds, in evaluation order."""
        self.cache: dict[str, Any] = {}
        """Derived values the evaluator computes once per thresholds (``consumer.rules``)."""

    def of(self, rule: Rule[T]) -> T:
        """``rule``'s thresholds."""
        return self._by_code[rule.code]  # type: ignore[return-value]  # built by rule.thresholds

    def model_dump(self) -> dict[str, Any]:
        """Every key with its value, as a rules file would give it."""
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in self._values.items()}

    def __getattr__(self, key: str) -> Any:
        try:
            return getattr(self._by_code[_KEYS[key][0].code], key)
        except KeyError:
            raise AttributeError(key) from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RuleThresholds) and self._values == other._values

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return f"RuleThresholds({self._values!r})"


def _describe(exc: ValidationError, model: type[Thresholds]) -> ThresholdError:
    """The first error of ``exc``: the key's path, what is wrong, what to do."""
    err = exc.errors()[0]
    loc = [str(part) for part in err["loc"]]
    msg = str(err["msg"]).removeprefix("Value error, ")
    if not loc:  # a model validator: the message names the keys
        return ThresholdError(None, f"{msg}; change one of them")
    key = ".".join(loc)
    if err["type"] == "extra_forbidden" and len(loc) == 2:
        nested = model.model_fields[loc[0]].annotation
        known = list(getattr(nested, "model_fields", {}))
        return _unknown(key, [f"{loc[0]}.{k}" for k in known])
    got = "" if err["type"] == "missing" else f" (got {err.get('input')!r})"
    return ThresholdError(
        key, f"{msg[:1].lower()}{msg[1:]}{got}; fix the value or remove the key for the default"
    )


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


class RulesConfig:
    """Thresholds for every workspace: defaults plus per-workspace overrides."""

    def __init__(
        self,
        defaults: RuleThresholds | None = None,
        workspaces: dict[str, RuleThresholds] | None = None,
    ) -> None:
        self.defaults = defaults or RuleThresholds()
        self._workspaces = dict(workspaces or {})

    def for_workspace(self, workspace_id: str) -> RuleThresholds:
        return self._workspaces.get(workspace_id, self.defaults)

    @property
    def workspaces(self) -> dict[str, RuleThresholds]:
        """The per-workspace thresholds (a copy)."""
        return dict(self._workspaces)

    @classmethod
    def from_mapping(cls, raw: dict[str, Any], source: str = "rules") -> RulesConfig:
        """``raw`` as a rules file gives it; errors name ``source`` and the key's path."""
        unknown = sorted(set(raw) - {"defaults", "workspaces"})
        if unknown:
            raise ConfigError(
                f"{source}: unknown top-level key {unknown[0]!r}; "
                "use 'defaults' and 'workspaces' only"
            )
        base = _section(raw, "defaults", source)
        merged = _merge(RuleThresholds().model_dump(), base)
        defaults = _build(merged, "defaults", source)
        workspaces = {}
        for ws, over in _section(raw, "workspaces", source).items():
            if over is not None and not isinstance(over, dict):
                raise ConfigError(
                    f"{source}: workspaces.{ws}: expected a mapping of keys to values "
                    f"(got {over!r})"
                )
            workspaces[str(ws)] = _build(_merge(merged, over or {}), f"workspaces.{ws}", source)
        return cls(defaults, workspaces)

    @classmethod
    def load(cls, path: Path | None) -> RulesConfig:
        """Read a rules file; ``None`` gives the built-in defaults."""
        if path is None:
            return cls()
        source = f"rules file {path}"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(
                f"{source}: no such file; create it or unset VECTOROS_RULES_FILE"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise ConfigError(
                f"{source}: cannot be read ({reason}); check VECTOROS_RULES_FILE"
            ) from None
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = "" if mark is None else f" at line {mark.line + 1}, column {mark.column + 1}"
            problem = getattr(exc, "problem", None) or "invalid syntax"
            raise ConfigError(
                f"{source}: YAML syntax error{where} ({problem}); fix the file"
            ) from None
        if not isinstance(raw, dict):
            raise ConfigError(
                f"{source}: expected a mapping with 'defaults' and/or 'workspaces' at the top "
                "level; see the README's Rules section"
            )
        return cls.from_mapping(raw, source)


def _section(raw: dict[str, Any], key: str, source: str) -> dict[str, Any]:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {key}: expected a mapping (got {value!r})")
    return value


def _build(values: dict[str, Any], where: str, source: str) -> RuleThresholds:
    try:
        return RuleThresholds(**{str(k): v for k, v in values.items()})
    except ThresholdError as exc:
        key = where if exc.key is None else f"{where}.{exc.key}"
        raise ConfigError(f"{source}: {key}: {exc.problem}") from None


@cache
def default_thresholds() -> RuleThresholds:
    return RuleThresholds()
