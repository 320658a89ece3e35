"""The rule registry: one module per rule, and everything that reads it."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer import deal_codec
from consumer.changelog import restore
from consumer.deal_codec import rule_codes, unpack
from consumer.lifecycle import Change
from consumer.rules import RULES, assess, evaluate, fired, fused, next_deadline
from consumer.rules.base import Finding, Rule, Text, Thresholds
from consumer.rules.catalog import stale_deal
from consumer.rules.registry import check, keys, readme_table
from consumer.state import (
    DAY_MS,
    DealState,
    Engagement,
    OpenInsight,
    Score,
    pack_scored_days,
    record_activity,
)
from consumer.templates import render
from consumer.thresholds import RuleThresholds
from schemas.events import Stage
from schemas.insights import DEAL_RULES, Lifecycle, Priority, RuleName

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = json.loads((ROOT / "tests/fixtures/changelog-v2.json").read_text(encoding="utf-8"))
TH = RuleThresholds()
T0 = 20_000 * DAY_MS


def test_every_rule_name_is_registered_once_with_its_own_code() -> None:
    assert [r.name for r in RULES] == list(DEAL_RULES)
    assert len({r.code for r in RULES}) == len(RULES)
    check(RULES)


def test_a_duplicate_code_is_refused() -> None:
    twin = dataclasses.replace(stale_deal.RULE, name=RuleName.VELOCITY_DROP)
    with pytest.raises(ValueError, match="duplicate"):
        check([stale_deal.RULE, twin])


def test_the_readme_rules_table_is_the_registry() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_table() in readme
    for key in keys():
        assert f"`{key}" in readme, key


def _deal(**kw: Any) -> DealState:
    base = DealState(
        workspace_id="ws",
        deal_id="d1",
        title="Deal",
        value=5_000,
        currency="USD",
        stage=Stage.LEAD,
        probability=50,
        close_day=T0 // DAY_MS + 60,
        owner_id="u1",
        created_at_ms=T0,
        last_activity_at_ms=T0,
        stage_entered_at_ms=T0,
    )
    return replace(base, **kw)


def _history(days: list[int]) -> bytes:
    out = b""
    for day in sorted(days):
        out = record_activity(out, day)
    return out


NOW0 = T0 + 100 * DAY_MS
engagements = st.one_of(
    st.none(),
    st.builds(
        lambda unanswered, since, held, scheduled, contacts: Engagement(
            unanswered_since_ms=NOW0 - since if unanswered else 0,
            unanswered=unanswered,
            held=tuple(sorted({NOW0 - h for h in held})),
            scheduled=tuple((i, NOW0 + s) for i, s in enumerate(scheduled)),
            contacts=tuple((i, NOW0 // DAY_MS - c) for i, c in enumerate(sorted(contacts)[::-1])),
        ),
        unanswered=st.integers(0, 4),
        since=st.integers(0, 30 * DAY_MS),
        held=st.lists(st.integers(0, 90 * DAY_MS), max_size=8),
        # a scheduled meeting before, at or after the clock
        scheduled=st.lists(st.integers(-5 * DAY_MS, 20 * DAY_MS), max_size=3),
        contacts=st.lists(st.integers(-2, 60), max_size=8),
    ),
)
"""Captured email and meetings (or none): stale_deal's hold-off runs in the fused pass too."""

scores = st.one_of(
    st.none(),
    st.builds(
        lambda p, p10, daily: Score(
            NOW0 - DAY_MS,
            1,
            p,
            None if p10 is None else NOW0 // DAY_MS + p10,
            "stage (-3.5 pts)",
            pack_scored_days([(NOW0 // DAY_MS - d, q) for d, q in daily.items()]),
        ),
        p=st.floats(0, 100),
        p10=st.one_of(st.none(), st.integers(-30, 150)),
        daily=st.dictionaries(st.integers(0, 7), st.floats(0, 100), max_size=8),
    ),
)
"""The model's score (or none): the model-based rules run only on a deal that has one."""

deals = st.builds(
    lambda value, probability, stage, close_in, inactive, in_stage, activity, open_, eng, sc: _deal(
        value=value,
        probability=probability,
        stage=stage,
        close_day=None if close_in is None else (T0 + 100 * DAY_MS) // DAY_MS + close_in,
        last_activity_at_ms=T0 + 100 * DAY_MS - inactive,
        stage_entered_at_ms=T0 + 100 * DAY_MS - in_stage,
        activity=_history([T0 // DAY_MS + 100 - d for d in activity]),
        open=tuple(OpenInsight(r, p, T0) for r, p in open_.items()),
        engagement=eng,
        score=sc,
    ),
    value=st.one_of(st.none(), st.floats(0, 300_000)),
    probability=st.one_of(st.none(), st.floats(0, 100)),
    stage=st.one_of(st.none(), st.sampled_from(list(Stage))),
    close_in=st.one_of(st.none(), st.integers(-60, 120)),
    inactive=st.integers(0, 60 * DAY_MS),
    in_stage=st.integers(0, 90 * DAY_MS),
    # days before the clock's first day (negative: after it, as a restored clock may be)
    activity=st.lists(st.integers(-5, 95), max_size=40),
    open_=st.dictionaries(st.sampled_from(DEAL_RULES), st.sampled_from(list(Priority))),
    eng=engagements,
    sc=scores,
)

only_velocity = st.builds(
    lambda value, activity, silent: DealState(
        "ws",
        "d2",
        value=value,
        last_activity_at_ms=0 if silent is None else T0 + 100 * DAY_MS - silent,
        activity=_history([T0 // DAY_MS + 100 - d for d in activity]),
    ),
    value=st.one_of(st.none(), st.floats(0, 20_000)),
    activity=st.lists(st.integers(-5, 95), max_size=60),
    silent=st.one_of(st.none(), st.integers(0, 30 * DAY_MS)),
)
"""Deals with no stage and no close date: velocity_drop's deadline alone (silent for decades)
or racing stale_deal's."""

velocity_thresholds = st.builds(
    lambda window, before, ratio, least: RuleThresholds(
        velocity_window_days=window,
        velocity_baseline_days=before,
        velocity_drop_ratio=ratio,
        velocity_min_baseline_activities=least,
    ),
    window=st.one_of(st.just(14), st.integers(1, 45)),
    before=st.one_of(st.just(14), st.integers(1, 45)),
    ratio=st.one_of(st.sampled_from([1 / 3, 0.5, 0.25, 0.1]), st.floats(0.01, 0.99)),
    least=st.integers(1, 12),
)


scored_deals = st.builds(
    lambda gap, stage, p, close_in, early, peaks: _deal(
        probability=float(min(100, p + gap)),
        stage=stage,
        close_day=NOW0 // DAY_MS + close_in,
        last_activity_at_ms=NOW0,
        stage_entered_at_ms=NOW0,
        score=Score(
            NOW0 - DAY_MS,
            1,
            float(p),
            NOW0 // DAY_MS + close_in + early,
            "stage (-3.5 pts)",
            pack_scored_days([(NOW0 // DAY_MS - d, float(min(100, p + up))) for d, up in peaks]),
        ),
    ),
    gap=st.sampled_from([-10, 0, 24, 25, 26, 39, 40, 41, 60]),
    stage=st.sampled_from(list(Stage)),
    p=st.integers(0, 60),
    close_in=st.integers(-10, 60),
    early=st.sampled_from([-5, 0, 1, 29, 30, 31, 45]),
    peaks=st.dictionaries(
        st.integers(0, 9), st.sampled_from([0, 19, 20, 21, 34, 35, 36, 50]), max_size=5
    ).map(lambda d: sorted(d.items())),
)
"""Scored deals on the model rules' boundaries at their default thresholds: gaps and drops of
whole points (exactly 20, 25, 35, 40 among them), P10 exactly 30 days after the close date."""

model_thresholds = st.builds(
    lambda gap, critical, drop, high, window, late: RuleThresholds(
        forecast_gap_points=gap,
        forecast_gap_critical_points=min(100.0, gap + critical),
        win_drop_points=drop,
        win_drop_high_points=min(100.0, drop + high),
        win_drop_window_days=window,
        close_unrealistic_high_days=late,
    ),
    gap=st.floats(1, 60),
    critical=st.floats(0, 40),
    drop=st.floats(1, 60),
    high=st.floats(0, 40),
    window=st.integers(1, 7),
    late=st.integers(1, 60),
)
"""The model rules' thresholds (they run in the fused pass too)."""


def _fused_agrees(deal: DealState, now: int, th: RuleThresholds) -> None:
    expected = {r.name: f.priority for r in RULES if (f := r.find(deal, now, th)) is not None}
    assert fired(deal, now, th) == expected
    assert fired(deal, now, th) == {r: f.priority for r, f in evaluate(deal, now, th).items()}
    dues = [d for r in RULES if (d := r.next_deadline(deal, now, th)) is not None]
    due = min(dues) if dues else None
    assert next_deadline(deal, now, th) == due
    assert assess(deal, now, th) == (expected, due)
    assert assess(replace(deal, open=()), now, th) == (expected, due)


@settings(max_examples=300)
@given(deal=scored_deals, later=st.integers(0, 9).map(lambda d: d * DAY_MS))
def test_the_fused_model_rules_are_the_registry_on_their_boundaries(
    deal: DealState, later: int
) -> None:
    """The model rules in the fused pass, at their default thresholds, on deals whose gaps,
    drops and P10 offsets sit on those thresholds (and either side of them)."""
    _fused_agrees(deal, NOW0 + later, TH)


@settings(max_examples=400)
@given(
    deal=st.one_of(deals, only_velocity),
    later=st.integers(0, 30 * DAY_MS),
    th=st.one_of(st.just(TH), velocity_thresholds, model_thresholds),
)
def test_the_fused_path_is_the_registry(deal: DealState, later: int, th: RuleThresholds) -> None:
    """``fired``, ``next_deadline`` and ``assess`` (one fused pass for the rules of
    ``fused.COVERS``, velocity_drop included) agree with every registered rule's own ``check``
    and ``deadline``, whatever the deal's open insights (``assess`` runs before ``reconcile``)."""
    _fused_agrees(deal, T0 + 100 * DAY_MS + later, th)


@settings(max_examples=200)
@given(deal=deals, later=st.integers(0, 30 * DAY_MS))
def test_a_rule_missing_what_it_needs_neither_fires_nor_has_a_deadline(
    deal: DealState, later: int
) -> None:
    """``Rule.needs`` lets the evaluator skip a rule's ``check`` and ``deadline`` on a deal
    missing one of those fields: both must then say nothing, for every rule."""
    now = T0 + 100 * DAY_MS + later
    for rule in RULES:
        for field in rule.needs:
            without = replace(deal, **{field: None})
            assert rule.find(without, now, TH) is None, (rule.name, field)
            assert rule.next_deadline(without, now, TH) is None or rule.name in fused.COVERS, (
                rule.name,
                field,
            )


def test_the_engagement_rules_need_captured_engagement() -> None:
    """A deal without captured email or meetings skips the three engagement rules at once."""
    needing = {r.name for r in RULES if "engagement" in r.needs}
    assert needing == {
        RuleName.GHOSTING,
        RuleName.MEETING_CADENCE_DROP,
        RuleName.SINGLE_THREADED,
    }


def _inserted() -> list[Rule[Any]]:
    """The registry with a new rule in the middle (code 200)."""

    def never(deal: DealState, now: int, th: Thresholds) -> Finding | None:
        return None

    extra: Rule[Thresholds] = Rule(
        name=RuleName.VELOCITY_DROP,  # any name: only codes reach the wire
        code=200,
        thresholds=Thresholds,
        check=never,
        deadline=lambda deal, now, th: None,
        text=lambda deal, m: Text("", ""),
        actions=(),
        confidence=0.5,
        meaning="",
        fires_when="",
        priority_text="",
    )
    rules = [r for r in RULES if r.name is not RuleName.VELOCITY_DROP]
    return [*rules[:2], extra, *rules[2:]]


def test_inserting_a_rule_in_the_middle_changes_no_restored_insight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    records = [(bytes.fromhex(k), bytes.fromhex(v)) for k, v in FIXTURE["records"]]
    before = restore(records, FIXTURE["committed"])
    packed = deal_codec.pack(unpack("d-full", before.deals["d-full"]), None)
    opened = {d: unpack(d, v).open for d, v in before.deals.items()}
    monkeypatch.setattr(deal_codec, "_RULE_BY_CODE", rule_codes(_inserted())[0])
    monkeypatch.setattr(deal_codec, "_RULE_CODE", rule_codes(_inserted())[1])
    after = restore(records, FIXTURE["committed"])
    assert {d: unpack(d, v).open for d, v in after.deals.items()} == opened
    assert unpack("d-full", packed).open == opened["d-full"]
    assert len(opened["d-full"]) == 6


OPTIONAL = ("title", "value", "currency", "stage", "probability", "close_day", "owner_id")


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name.value)
@pytest.mark.parametrize("missing", [(), *[(f,) for f in OPTIONAL], OPTIONAL])
def test_rule_text_has_no_holes_with_fields_missing(
    rule: Rule[Any], missing: tuple[str, ...]
) -> None:
    """A deal known only from partial updates: a rule that needs a missing field does not fire,
    and every text that does render reads without holes."""
    now = T0 + 50 * DAY_MS
    deal = _deal(
        value=50_000,
        probability=5,
        close_day=now // DAY_MS + (-3 if rule.name is RuleName.CLOSE_DATE_PASSED else 3),
        activity=_history([now // DAY_MS - 30 - i for i in range(6)]),
        # emails unanswered for 10 days, 3 weekly meetings until 20 days ago, one contact
        engagement=Engagement(
            unanswered_since_ms=now - 10 * DAY_MS,
            unanswered=3,
            held=(now - 34 * DAY_MS, now - 27 * DAY_MS, now - 20 * DAY_MS),
            contacts=((1, now // DAY_MS - 3),),
        ),
        stage=Stage.NEGOTIATION if rule.name is RuleName.SINGLE_THREADED else Stage.LEAD,
    )
    if "score" in rule.needs:  # the model 40 points below the rep, 35 below its peak, P10 late
        today = now // DAY_MS
        daily = [(today - 3, 55.0), (today - 1, 20.0)]
        factors = "stage_days (-12.0 pts)"
        score = Score(now - DAY_MS, 1, 20.0, today + 30, factors, pack_scored_days(daily))
        deal = replace(deal, probability=60, stage=Stage.NEGOTIATION, score=score)
    deal = replace(deal, **dict.fromkeys(missing))
    finding = rule.find(deal, now, TH)
    if set(missing) & set(rule.needs):
        assert finding is None
        return
    if finding is None:  # a rule that needs a field this table does not list
        pytest.fail(f"{rule.name} did not fire with {missing} missing; list what it needs")
    for lifecycle in (Lifecycle.RAISED, Lifecycle.RESOLVED):
        event = render(Change(rule.name, lifecycle, finding.priority, now), deal, now, TH)
        texts = [event.event().title, event.event().description]
        texts += [a.action for a in event.event().actions]
        for text in texts:
            low = text.lower()
            holes = ("unknown", "  ", " .", " ,", "''", "()", "%%")
            assert not [h for h in holes if h in low], text
            assert "none" not in low.split(), text


def test_velocity_drop_fires_for_the_fixture_deal_in_the_text_test() -> None:
    """The text test above covers velocity_drop firing, not only its absence."""
    now = T0 + 50 * DAY_MS
    deal = _deal(activity=_history([now // DAY_MS - 30 - i for i in range(6)]))
    assert fired(deal, now, TH).get(RuleName.VELOCITY_DROP) is Priority.MEDIUM


def _load(tmp_path: Path, text: str) -> str:
    from consumer.thresholds import RulesConfig
    from vectoros.errors import ConfigError

    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        RulesConfig.load(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_rules_file_errors_are_one_line_naming_file_and_key(tmp_path: Path) -> None:
    from consumer.thresholds import RulesConfig
    from vectoros.errors import ConfigError

    with pytest.raises(ConfigError, match=r"rules file .*missing.yaml: no such file; create it"):
        RulesConfig.load(tmp_path / "missing.yaml")
    assert "YAML syntax error at line 2" in _load(tmp_path, "defaults:\n  stale_days: 7: 8\n")
    msg = _load(tmp_path, "defaults:\n  stale_dayz: 7\n")
    assert "defaults.stale_dayz: unknown key; did you mean 'stale_days'?" in msg
    msg = _load(tmp_path, "workspaces:\n  ws-a:\n    stale_days: -1\n")
    assert "workspaces.ws-a.stale_days: input should be greater than 0 (got -1)" in msg
    msg = _load(tmp_path, "workspaces:\n  ws-a:\n    stuck_days: {proposl: 4}\n")
    assert "workspaces.ws-a.stuck_days.proposl: unknown key; did you mean" in msg
    msg = _load(tmp_path, "defaults:\n  stale_days: 20\n")
    assert "defaults: stale_critical_days must be greater than stale_days" in msg
    assert "unknown top-level key 'default'" in _load(tmp_path, "default: {}\n")
    assert "expected a mapping" in _load(tmp_path, "- 1\n")
