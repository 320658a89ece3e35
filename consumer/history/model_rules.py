"""The model-based rules, evaluated where the scores are made. Pure: no I/O, clock or logging.

The registry's rules that read a deal's score (``needs`` ``"score"``: ``forecast_risk``,
``win_probability_drop``, ``close_date_unrealistic``) are evaluated by ``vectoros history`` on
each score it makes (``VECTOROS_HISTORY_MODEL_RULES``, the default), with the same rule modules,
lifecycle (``consumer.lifecycle``) and insight texts (``consumer.templates``) as the monitor's,
against the deal as the history projection knows it at the score's ``as_of``. So with scoring on
the monitor's input is the deal events alone: scoring cannot slow it down.

For each deal the service keeps a ``Watch``: the deal's latest score in the form the monitor
would hold it (``consumer.state.Score``, with the highest probability of each of the last days:
``win_probability_drop``'s window), its open model insights and how many of its events the last
evaluation saw.

* ``on_score``: a newer score (later ``as_of``, or the same with a newer model) is folded in and
  the model rules run at its ``as_of``; an older or repeated one changes nothing (a batch
  handled again) unless the deal changed since the last evaluation (an event older than the
  deal's latest score, from a partition that lagged behind a rescoring): then the rules run
  again with the newer score the watch holds. The service scores every open deal again once
  per ``history_rescore_hours`` of tick time, so an insight that clears by time alone (a drop
  whose peak left the window) clears at the first rescoring after, not at the minute.
* ``on_close``: the deal was won, lost or deleted: its open model insights resolve and the watch
  is closed for good (kept, so that a score made before the close, by a slower process, finds
  it closed).

Deals imported from a CRM export (``DealHistory.source`` ``"import"``) are never evaluated: the
monitor never knew them either.

``to_json`` / ``from_json``: the watch as stored in PostgreSQL (``model_watch``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from consumer.intelligence.projection import DealHistory
from consumer.lifecycle import Resolution, reconcile, resolve_all
from consumer.rules.registry import RULES
from consumer.state import DealState, OpenInsight, Score, fold_score, to_day, to_ms
from consumer.templates import Insight, render
from consumer.thresholds import RuleThresholds
from schemas.events import DealScored, Stage
from schemas.insights import Priority, RuleName

MODEL_RULES = tuple(rule for rule in RULES if "score" in rule.needs)
"""The rules that read the model's score, in the registry's order."""

_STAGES = {stage.value: stage for stage in Stage}


class Watch(NamedTuple):
    """What the history service keeps per deal for the model rules."""

    score: Score | None = None
    open: tuple[OpenInsight, ...] = ()
    events: int = 0
    """How many of the deal's events the last evaluation saw (``DealHistory.event_count``): a
    deal that changed is evaluated again even when its score is not newer."""
    closed: bool = False
    """Won, lost or deleted: never evaluated again (a process that scored the deal before it
    closed cannot raise anything on it)."""


def deal_state(h: DealHistory, watch: Watch) -> DealState:
    """The deal as the monitor would hold it, from its history and watch (what the rules and
    the insight texts read)."""
    last_activity = max((a.at_ms for a in h.activities), default=h.created_ms or 0)
    entered = h.stages[-1].entered_ms if h.stages else (h.created_ms or 0)
    return DealState(
        workspace_id=h.workspace_id,
        deal_id=h.deal_id,
        title=h.title,
        value=h.value,
        currency=h.currency,
        stage=_STAGES.get(h.stage) if h.stage is not None else None,
        probability=h.probability,
        close_day=None if h.close_date is None else to_day(h.close_date),
        owner_id=h.owner_id,
        owner_name=h.owner_name,
        company=h.company,
        created_at_ms=h.created_ms or 0,
        last_activity_at_ms=max(last_activity, h.created_ms or 0),
        stage_entered_at_ms=entered,
        activity_count=len(h.activities),
        open=watch.open,
        score=watch.score,
    )


def on_score(
    h: DealHistory, watch: Watch, scored: DealScored, th: RuleThresholds
) -> tuple[Watch, list[Insight]]:
    """The watch after a score of the deal, and the insights its model rules raise, escalate or
    clear, at the score's ``as_of`` (or the newer score's the watch holds: a deal changed by an
    event older than its latest score is evaluated with that score, at its time)."""
    if watch.closed or h.source != "events":
        return watch, []  # closed; or imported from a CRM export: the monitor never knew it
    score = fold_score(watch.score, scored, to_ms(scored.occurred_at))
    if score is watch.score and h.event_count == watch.events:
        return watch, []  # older or repeated, the deal unchanged: already evaluated
    assert score is not None  # fold_score returns a score unless given none and none
    at = score.as_of_ms
    deal = deal_state(h, Watch(score, watch.open))
    fired: dict[RuleName, Priority] = {}
    for rule in MODEL_RULES:
        finding = rule.find(deal, at, th)
        if finding is not None:
            fired[rule.name] = finding.priority
    deal, changes = reconcile(deal, fired, at)
    return Watch(score, deal.open, h.event_count), [render(c, deal, at, th) for c in changes]


def on_close(h: DealHistory, watch: Watch, th: RuleThresholds) -> tuple[Watch, list[Insight]]:
    """The deal closed or was deleted: its open model insights resolve (at that time), and the
    watch is closed."""
    if watch.closed:
        return watch, []
    if not watch.open:
        return Watch(watch.score, (), h.event_count, closed=True), []
    if h.deleted_ms is not None:
        why, at = Resolution.DELETED, h.deleted_ms
    else:
        why = Resolution.WON if h.outcome == "won" else Resolution.LOST
        at = h.closed_ms or h.updated_ms or 0
    deal = deal_state(h, watch)
    changes = resolve_all(deal, why)
    closed = Watch(watch.score, (), h.event_count, closed=True)
    return closed, [render(c, deal, at, th) for c in changes]


def closed(h: DealHistory) -> bool:
    """Won, lost or deleted: nothing more to watch."""
    return h.outcome is not None or h.deleted_ms is not None


def to_json(watch: Watch) -> dict[str, Any]:
    s = watch.score
    return {
        "score": None
        if s is None
        else [s.as_of_ms, s.model_version, s.probability, s.p10_day, s.factors, s.daily.hex()],
        "open": [[o.rule.value, o.priority.value, o.raised_at_ms] for o in watch.open],
        "events": watch.events,
        "closed": watch.closed,
    }


def from_json(raw: dict[str, Any]) -> Watch:
    s = raw.get("score")
    score = None if s is None else Score(s[0], s[1], s[2], s[3], s[4], bytes.fromhex(s[5]))
    return Watch(
        score,
        tuple(OpenInsight(RuleName(r), Priority(p), at) for r, p, at in raw.get("open", ())),
        raw.get("events", 0),
        raw.get("closed", False),
    )
