"""Point-in-time snapshots of past deals and their features.

A snapshot is a deal seen at an instant ``t`` while it was open. Its features are computed from
``as_of(history, t)``: a copy of the history that keeps only what happened strictly before
``t`` (the fields as they were then, no outcome), so a feature cannot see the future by
construction; the owner's past win rate counts only deals closed before ``t``. The label is the
deal's eventual outcome (1 won, 0 lost) and, for the close-date model, the days from ``t`` to
its close.
"""

from __future__ import annotations

import bisect
import copy
import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from consumer.intelligence.projection import DAY_MS, DealHistory

STAGE_INDEX = {"lead": 0, "qualified": 1, "proposal": 2, "negotiation": 3}

FEATURES: tuple[str, ...] = (
    "stage",
    "days_in_stage",
    "deal_age_days",
    "stages_visited",
    "activities_7d",
    "activities_30d",
    "activities_90d",
    "inbound_30d",
    "outbound_30d",
    "meetings_30d",
    "days_since_activity",
    "activities_total",
    "close_date_pushes",
    "days_to_expected_close",
    "log_value",
    "value_changes",
    "rep_probability",
    "owner_win_rate",
    "owner_closed_deals",
    "workspace",
)
CATEGORICAL: tuple[str, ...] = ("stage", "workspace")
NAN = float("nan")
ATTRIBUTE_PREFIX = "attr:"
"""A CRM attribute's feature is named this and the attribute: ``attr:segment``."""
OTHER = 0
"""The code of a categorical attribute's value not seen often enough in training (or never)."""


@dataclass(frozen=True)
class AttributeCodes:
    """The CRM attributes a model uses as features (``DealHistory.attributes``: the columns an
    import keeps, ``attributes.categorical`` / ``.numeric`` of its mapping), fitted on the
    training deals only. A categorical attribute becomes ordinal codes, 1.. for its values seen
    in at least ``min_count`` training deals (the ``max_values`` most frequent), ``OTHER`` (0)
    for any other value, including every value first seen after training; a numeric one is
    taken as it is. Missing stays missing."""

    categorical: dict[str, dict[str, int]] = field(default_factory=dict)
    numeric: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """The features' names, in column order (categorical ones first)."""
        return tuple(ATTRIBUTE_PREFIX + n for n in (*self.categorical, *self.numeric))

    @property
    def categorical_mask(self) -> list[bool]:
        return [True] * len(self.categorical) + [False] * len(self.numeric)

    def row(self, attributes: dict[str, str | float]) -> list[float]:
        out = []
        for name, codes in self.categorical.items():
            value = attributes.get(name)
            out.append(NAN if value is None else float(codes.get(str(value), OTHER)))
        for name in self.numeric:
            value = attributes.get(name)
            out.append(
                float(value)
                if isinstance(value, int | float) and not isinstance(value, bool)
                else NAN
            )
        return out

    @classmethod
    def fit(
        cls,
        training: Iterable[DealHistory],
        *,
        min_count: int = 10,
        max_values: int = 50,
        max_attributes: int = 20,
    ) -> AttributeCodes:
        """From the deals a model is trained on (never later ones): an attribute with any text
        value is categorical, one with only numbers numeric; the ``max_attributes`` present on
        the most deals, ties by name."""
        present: dict[str, int] = {}
        texts: dict[str, dict[str, int]] = {}
        for h in training:
            for name, value in h.attributes.items():
                present[name] = present.get(name, 0) + 1
                counts = texts.setdefault(name, {})
                if isinstance(value, str):
                    counts[value] = counts.get(value, 0) + 1
        kept = sorted(present, key=lambda n: (-present[n], n))[:max_attributes]
        categorical: dict[str, dict[str, int]] = {}
        numeric = []
        for name in sorted(kept):
            counts = texts[name]
            if not counts:
                numeric.append(name)
                continue
            frequent = sorted(
                (v for v in counts if counts[v] >= min_count), key=lambda v: (-counts[v], v)
            )[:max_values]
            categorical[name] = {v: i for i, v in enumerate(sorted(frequent), start=OTHER + 1)}
        return cls(categorical, tuple(numeric))


def feature_names(attributes: AttributeCodes | None = None) -> tuple[str, ...]:
    """Every feature's name in column order: ``FEATURES``, then the attributes'."""
    return FEATURES if attributes is None else FEATURES + attributes.names


def as_of(h: DealHistory, t: int) -> DealHistory:
    """What was known about the deal just before ``t``: events at or after ``t`` removed, the
    fields rolled back to their values then, no outcome."""
    past = copy.copy(h)
    past.stages = [copy.copy(s) for s in h.stages if s.entered_ms < t]
    for s in past.stages:
        if s.left_ms is not None and s.left_ms >= t:
            s.left_ms = None
    past.stage = past.stages[-1].stage if past.stages else None
    past.activities = [a for a in h.activities if a.at_ms < t]
    past.close_date_changes = [c for c in h.close_date_changes if c[0] < t]
    past.value_changes = [c for c in h.value_changes if c[0] < t]
    past.probabilities = [p for p in h.probabilities if p[0] < t]
    past.probability = past.probabilities[-1][1] if past.probabilities else None
    value = h.value
    for at, old, _ in reversed(h.value_changes):
        if at >= t:
            value = old
    past.value = value
    close = None if h.close_date is None else h.close_date.isoformat()
    for changed, before, _ in reversed(h.close_date_changes):
        if changed >= t:
            close = before
    past.close_date = None if close is None else dt.date.fromisoformat(close)
    past.outcome = past.closed_ms = past.close_reason = past.deleted_ms = None
    past.updated_ms = min(h.updated_ms or t, t)
    past.attributes = dict(h.attributes)
    return past


@dataclass
class OwnerRecord:
    """Outcomes of each owner's closed deals in time order: the past win rate at any instant."""

    closes: dict[str, tuple[list[int], list[int]]] = field(default_factory=dict)

    @classmethod
    def of(cls, histories: Iterable[DealHistory]) -> OwnerRecord:
        rows = sorted(
            (h.owner_id or "", h.closed_ms, h.outcome == "won")
            for h in histories
            if h.outcome is not None and h.closed_ms is not None
        )
        record = cls()
        for owner, closed, won in rows:
            times, wins = record.closes.setdefault(owner, ([], []))
            times.append(closed)
            wins.append((wins[-1] if wins else 0) + int(won))
        return record

    def before(self, owner: str | None, t: int) -> tuple[float, int]:
        """(smoothed win rate, closed deals) of ``owner`` over the deals closed before ``t``."""
        times, wins = self.closes.get(owner or "", ([], []))
        n = bisect.bisect_left(times, t)
        won = wins[n - 1] if n else 0
        return (won + 1) / (n + 2), n


def features_at(
    h: DealHistory,
    t: int,
    owners: OwnerRecord,
    workspaces: dict[str, int],
    attributes: AttributeCodes | None = None,
) -> list[float]:
    """The features of deal ``h`` seen at ``t`` (order of ``feature_names(attributes)``)."""
    past = as_of(h, t)
    row = _features(past, t, owners, workspaces)
    return row if attributes is None else row + attributes.row(past.attributes)


def _features(
    p: DealHistory, t: int, owners: OwnerRecord, workspaces: dict[str, int]
) -> list[float]:
    created = p.created_ms if p.created_ms is not None else t
    stage = STAGE_INDEX.get(p.stage or "", -1)
    entered = p.stages[-1].entered_ms if p.stages else created
    times = [a.at_ms for a in p.activities]

    def since(days: int) -> int:
        return len(times) - bisect.bisect_left(times, t - days * DAY_MS)

    recent = [a for a in p.activities if a.at_ms >= t - 30 * DAY_MS]
    pushes = sum(1 for _, old, new in p.close_date_changes if old and new and new > old)
    if p.close_date is not None:
        close_ms = (p.close_date.toordinal() - 719_163) * DAY_MS
        to_close = (close_ms - t) / DAY_MS
    else:
        to_close = NAN
    win_rate, closed = owners.before(p.owner_id, t)
    return [
        float(stage),
        (t - entered) / DAY_MS,
        (t - created) / DAY_MS,
        float(len({s.stage for s in p.stages})),
        float(since(7)),
        float(since(30)),
        float(since(90)),
        float(sum(1 for a in recent if a.direction == "inbound")),
        float(sum(1 for a in recent if a.direction == "outbound")),
        float(sum(1 for a in recent if a.type == "meeting")),
        (t - times[-1]) / DAY_MS if times else (t - created) / DAY_MS,
        float(len(times)),
        float(pushes),
        to_close,
        math.log1p(p.value) if p.value is not None else NAN,
        float(len(p.value_changes)),
        p.probability if p.probability is not None else NAN,
        win_rate,
        float(closed),
        float(workspaces.get(p.workspace_id, -1)),
    ]


@dataclass
class Snapshots:
    """Rows of point-in-time snapshots: features, labels and where they come from."""

    X: list[list[float]] = field(default_factory=list)
    won: list[int] = field(default_factory=list)
    days_to_close: list[float] = field(default_factory=list)
    at_ms: list[int] = field(default_factory=list)
    closed_ms: list[int] = field(default_factory=list)
    deal: list[tuple[str, str]] = field(default_factory=list)
    attributes: AttributeCodes | None = None
    """The CRM attributes the rows carry after ``FEATURES`` (``None``: none)."""

    def __len__(self) -> int:
        return len(self.won)

    def select(self, keep: Sequence[bool]) -> Snapshots:
        out = Snapshots(attributes=self.attributes)
        for i, k in enumerate(keep):
            if k:
                out.X.append(self.X[i])
                out.won.append(self.won[i])
                out.days_to_close.append(self.days_to_close[i])
                out.at_ms.append(self.at_ms[i])
                out.closed_ms.append(self.closed_ms[i])
                out.deal.append(self.deal[i])
        return out


def workspace_codes(histories: Iterable[DealHistory]) -> dict[str, int]:
    return {ws: i for i, ws in enumerate(sorted({h.workspace_id for h in histories}))}


def snapshots(
    histories: Sequence[DealHistory],
    *,
    step_days: float = 14.0,
    max_per_deal: int = 12,
    workspaces: dict[str, int] | None = None,
    owners: OwnerRecord | None = None,
    attributes: AttributeCodes | None = None,
) -> Snapshots:
    """Snapshots of every closed deal: at creation + ``step_days``, + 2 x ``step_days``, ...
    while it was open (at most ``max_per_deal``, the first ones)."""
    owners = owners or OwnerRecord.of(histories)
    workspaces = workspaces if workspaces is not None else workspace_codes(histories)
    step = int(step_days * DAY_MS)
    out = Snapshots(attributes=attributes)
    for h in histories:
        if h.outcome is None or h.closed_ms is None or h.created_ms is None:
            continue
        t = h.created_ms + step
        k = 0
        while t < h.closed_ms and k < max_per_deal:
            out.X.append(features_at(h, t, owners, workspaces, attributes))
            out.won.append(int(h.outcome == "won"))
            out.days_to_close.append((h.closed_ms - t) / DAY_MS)
            out.at_ms.append(t)
            out.closed_ms.append(h.closed_ms)
            out.deal.append((h.workspace_id, h.deal_id))
            t += step
            k += 1
    return out
