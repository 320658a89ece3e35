"""Scoring open deals with the current model: one batch call for all of them (pure), with the
close-date P10 of the close-date model stored with it, when it has one; and which scores are
worth publishing to the monitor (``worth_publishing``)."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from consumer.intelligence.features import OwnerRecord, features_at
from consumer.intelligence.model import WinModel
from consumer.intelligence.projection import DealHistory
from schemas.events import DealScored
from schemas.scores import DealScore, TopFactor


def scorable(h: DealHistory) -> bool:
    """Open (not closed, not deleted) and with a known creation time."""
    return (
        h.outcome is None
        and h.deleted_ms is None
        and h.created_ms is not None
        and h.updated_ms is not None
    )


def score_deals(
    model: WinModel,
    version: int,
    histories: Sequence[DealHistory],
    owners: OwnerRecord,
    top: int = 3,
    *,
    at_ms: int | None = None,
) -> list[DealScore]:
    """A score for each open deal of ``histories`` as of just after its latest event (so a
    replay scores the same), with its ``top`` factors. With ``at_ms`` (a tick: time changed the
    features, e.g. the days since the last activity), as of ``at_ms`` instead, for the deals
    whose latest event is before it (the others have a newer score already)."""
    deals = [h for h in histories if scorable(h)]
    if at_ms is not None:
        deals = [h for h in deals if (h.updated_ms or 0) < at_ms]
    if not deals:
        return []
    at = [(h.updated_ms or 0) + 1 if at_ms is None else at_ms for h in deals]
    codes = getattr(model, "attributes", None)  # None in a model pickled before attributes
    rows = [
        features_at(h, t, owners, model.workspaces, codes) for h, t in zip(deals, at, strict=True)
    ]
    probabilities, factors = model.explain(rows, top)
    close = getattr(model, "close", None)  # None in a model pickled before it had one
    p10: list[dt.date | None] = [None] * len(deals)
    if close is not None:
        days = close.predict(rows)[0]
        p10 = [_day_after(t, float(d)) for t, d in zip(at, days, strict=True)]
    return [
        DealScore(
            workspace_id=h.workspace_id,
            deal_id=h.deal_id,
            as_of=dt.datetime.fromtimestamp(
                ((h.updated_ms or 0) if at_ms is None else at_ms) / 1000, dt.UTC
            ),
            model_version=version,
            win_probability=min(1.0, max(0.0, float(p))),
            rep_probability=h.probability,
            stage=h.stage,
            top_factors=[TopFactor(feature=f, effect=e) for f, e in why],
            close_p10=low,
        )
        for h, p, why, low in zip(deals, probabilities, factors, p10, strict=True)
    ]


def _day_after(at_ms: int, days: float) -> dt.date:
    """The date ``days`` after the instant ``at_ms`` (UTC)."""
    return (dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC) + dt.timedelta(days=days)).date()


def score_event(score: DealScore) -> DealScored:
    """``score`` as a ``deal.scored`` event for ``deal-events`` (where the monitor folds it into
    the deal's state), at its ``as_of``, with an id derived from the deal, the model version and
    ``as_of``: the same score published again (a replay) is the same event."""
    as_of_ms = round(score.as_of.timestamp() * 1000)
    name = f"{score.workspace_id}\x1f{score.deal_id}\x1f{score.model_version}\x1f{as_of_ms}"
    digest = hashlib.blake2b(name.encode(), digest_size=12).hexdigest()
    return DealScored(
        event_id=f"score-{digest}",
        workspace_id=score.workspace_id,
        deal_id=score.deal_id,
        occurred_at=score.as_of,
        model_version=score.model_version,
        win_probability=score.win_probability,
        top_factors=list(score.top_factors),
        close_p10=score.close_p10,
    )


@dataclass(frozen=True)
class Published:
    """The score last published for a deal as a ``deal.scored`` event (what the monitor holds)."""

    as_of: dt.datetime
    model_version: int
    win_probability: float
    close_p10: dt.date | None = None


def worth_publishing(
    score: DealScore,
    last: Published | None,
    *,
    min_points: float = 0.0,
    min_days: int = 0,
    rep_close: dt.date | None = None,
) -> bool:
    """Whether ``score`` goes to the monitor, against ``last``, the deal's last published one:
    its first score; another model version; a probability ``min_points`` or more (0-100) from
    the published one; a close-date P10 that appears, goes, moves ``min_days`` or more, or
    moves across the rep's close date ``rep_close`` (what ``close_date_unrealistic`` asks).
    With 0 for both, any change. The very score published before (a batch processed again after
    a crash, whose output may never have reached the broker) is published again: the same
    event, which the monitor drops if it has it; a score older than the published one never is.

    So the monitor's probability may lag the model's by less than ``min_points`` points, and
    its P10 by less than ``min_days`` days (never on the wrong side of the rep's close date)."""
    if last is None:
        return True
    mine, theirs = (score.as_of, score.model_version), (last.as_of, last.model_version)
    if mine <= theirs:
        return mine == theirs
    if score.model_version != last.model_version:
        return True
    moved = abs(score.win_probability - last.win_probability) * 100
    if moved > 0 and moved >= min_points - 1e-9:
        return True
    new, old = score.close_p10, last.close_p10
    if (new is None) != (old is None):
        return True
    if new is None or old is None or new == old:
        return False
    if abs((new - old).days) >= min_days:
        return True
    return rep_close is not None and (rep_close < new) != (rep_close < old)
