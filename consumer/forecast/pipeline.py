"""The deals open at an as-of time, from the history, as they were known then (pure).

A deal is open at ``t`` when it was created before ``t`` and neither closed nor deleted before
``t``; its value, stage, close date and rep probability are those it had just before ``t``
(``consumer.intelligence.features.as_of``), so a forecast of a past date uses only what was
known then. Revenue already won in the period: the deals won in ``[period start, t)``, at the
value they closed with.

Close dates: the rep's expected close date is the P50; the spread is
``max(MIN_SPREAD_DAYS, SPREAD_SHARE * P50)`` on either side (P10 = P50 - spread, clipped at 0;
P90 = P50 + spread). A deal whose close date has passed gets P50 = 0 (it may close any day);
one without a close date gets ``DEFAULT_DAYS_TO_CLOSE``. Win probability: the rep's
(``probability``, 0-100), or the stage's ``STAGE_PROBABILITY`` when none was entered.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from consumer.forecast.simulate import OpenDeals, Period
from consumer.intelligence.features import as_of
from consumer.intelligence.projection import DAY_MS, DealHistory

Predict = Callable[[Sequence[DealHistory]], tuple[NDArray[np.float64], ...]]
"""Open deals -> (win probability, close P10, P50, P90 in days after the as-of time)."""
PredictClose = Callable[[Sequence[DealHistory]], tuple[NDArray[np.float64], ...]]
"""Open deals -> (close P10, P50, P90 in days after the as-of time)."""

MIN_SPREAD_DAYS = 14.0
SPREAD_SHARE = 0.5
DEFAULT_DAYS_TO_CLOSE = 60.0
STAGE_PROBABILITY = {"lead": 0.1, "qualified": 0.25, "proposal": 0.5, "negotiation": 0.7}
UNKNOWN_STAGE_PROBABILITY = 0.1
LOOKBACK_DAYS = 365.0
"""The window before the as-of time whose creations and closes the new pipeline and the
common shock are measured on. A year: it spans every season once, and with about twice the
wins of a half-year its rates' own noise, the largest part of the error of a forecast made
before the period starts, is about 0.7x (docs/forecast.md, "The third pass")."""
CANDIDATES = 4
"""At least this many candidate new deals per deal expected to be created."""
MIN_CYCLES = 10
"""Fewer wins in the lookback window: the new pipeline's close dates get the usual spread."""
DEFAULT_SHOCK_SD = 0.3
"""The common shock's spread when the lookback window has no win or no loss to measure it."""


@dataclass(frozen=True)
class PeriodSpec:
    """A calendar period: ``2026-Q1`` or ``2026-12`` (UTC, ``[start, end)``)."""

    name: str
    start: dt.datetime
    end: dt.datetime

    @classmethod
    def parse(cls, text: str) -> PeriodSpec:
        t = text.strip().upper()
        try:
            year_s, part = t.split("-")
            year = int(year_s)
            if part.startswith("Q"):
                quarter = int(part[1:])
                if not 1 <= quarter <= 4:
                    raise ValueError
                first = 3 * (quarter - 1) + 1
                start, end_month = dt.datetime(year, first, 1, tzinfo=dt.UTC), first + 3
            else:
                month = int(part)
                start, end_month = dt.datetime(year, month, 1, tzinfo=dt.UTC), month + 1
        except ValueError:
            raise ValueError(f"{text!r} is not a period like 2026-Q1 or 2026-12") from None
        end = dt.datetime(year + (end_month - 1) // 12, (end_month - 1) % 12 + 1, 1, tzinfo=dt.UTC)
        return cls(t, start, end)

    def relative_to(self, at: dt.datetime) -> Period:
        """The period in days after ``at``."""
        return Period(
            (self.start - at).total_seconds() / 86_400, (self.end - at).total_seconds() / 86_400
        )


@dataclass(frozen=True)
class Pipeline:
    deals: OpenDeals
    won: float
    won_deals: int


def open_at(h: DealHistory, t: int) -> bool:
    return (
        h.created_ms is not None
        and h.created_ms < t
        and (h.closed_ms is None or h.closed_ms >= t)
        and (h.deleted_ms is None or h.deleted_ms >= t)
    )


def won_in(h: DealHistory, start_ms: int, t: int) -> bool:
    return (
        h.outcome == "won"
        and h.closed_ms is not None
        and start_ms <= h.closed_ms < t
        and (h.deleted_ms is None or h.deleted_ms >= t)
    )


def close_spread(p50: float) -> tuple[float, float]:
    spread = max(MIN_SPREAD_DAYS, SPREAD_SHARE * p50)
    return max(0.0, p50 - spread), p50 + spread


def pipeline_at(
    histories: Iterable[DealHistory],
    at: dt.datetime,
    period: PeriodSpec,
    probabilities: Mapping[str, float] | None = None,
    model: Predict | None = None,
    close: PredictClose | None = None,
) -> Pipeline:
    """The open deals at ``at`` and what was won in ``period`` before it. ``probabilities``
    (deal id -> 0-1, e.g. the current model's scores for a forecast as of now) replace the
    probability of winning of the deals they name; the rep's stays for the roll-up. ``model``
    (the open deals' histories -> win probability and close-date P10/P50/P90 in days after
    ``at``, from models trained on what was known before ``at``) replaces both for every open
    deal. ``close`` (the open deals' histories -> close-date P10/P50/P90 in days after ``at``,
    from a model trained before ``at``) replaces the rep's close dates of every open deal (the
    win probability stays the rep's, or ``probabilities``')."""
    t = round(at.timestamp() * 1000)
    start_ms = round(period.start.timestamp() * 1000)
    ids: list[str] = []
    owners: list[str] = []
    stages: list[str] = []
    value: list[float] = []
    prob: list[float] = []
    p10: list[float] = []
    p50: list[float] = []
    p90: list[float] = []
    rep: list[float] = []
    won, won_deals = 0.0, 0
    open_histories: list[DealHistory] = []
    for h in histories:
        if won_in(h, start_ms, t):
            won += h.value or 0.0
            won_deals += 1
            continue
        if not open_at(h, t):
            continue
        past = as_of(h, t)
        if past.probability is not None:
            p = min(1.0, max(0.0, past.probability / 100.0))
        else:
            p = STAGE_PROBABILITY.get(past.stage or "", UNKNOWN_STAGE_PROBABILITY)
        if past.close_date is None:
            mid = DEFAULT_DAYS_TO_CLOSE
        else:
            close_ms = (past.close_date.toordinal() - dt.date(1970, 1, 1).toordinal()) * DAY_MS
            mid = max(0.0, (close_ms - t) / DAY_MS)
        lo, hi = close_spread(mid)
        rep.append(p)
        if probabilities is not None and h.deal_id in probabilities:
            p = min(1.0, max(0.0, probabilities[h.deal_id]))
        ids.append(h.deal_id)
        open_histories.append(h)
        owners.append(past.owner_id or "")
        stages.append(past.stage or "")
        value.append(past.value or 0.0)
        prob.append(p)
        p10.append(lo)
        p50.append(mid)
        p90.append(hi)
    win = np.asarray(prob, dtype=float)
    lo_a, mid_a, hi_a = (np.asarray(x, dtype=float) for x in (p10, p50, p90))
    if model is not None and open_histories:
        win, lo_a, mid_a, hi_a = (np.asarray(x, dtype=float) for x in model(open_histories))
    elif close is not None and open_histories:
        lo_a, mid_a, hi_a = (np.asarray(x, dtype=float) for x in close(open_histories))
    deals = OpenDeals(
        tuple(ids),
        np.asarray(value, dtype=float),
        win,
        np.asarray(rep, dtype=float),
        lo_a,
        mid_a,
        hi_a,
        tuple(owners),
        tuple(stages),
    )
    return Pipeline(deals, won, won_deals)


@dataclass(frozen=True)
class CreationRates:
    """How new pipeline came in during the ``lookback_days`` before an as-of time."""

    lookback_days: float
    created: int
    """Deals created in the window."""
    per_day: float
    """``created`` / the window's days, from the first deal's creation when it is later than
    the window's start (a history younger than the window)."""
    mean_value: float
    """Of the deals created in the window, as known at the as-of time (0 when none)."""
    win_rate: float
    """Won / (won + lost) of the deals closed in the window (0 when none closed)."""
    cycle_days: float
    """Median days from creation to a win, of the deals won in the window (the default
    ``DEFAULT_DAYS_TO_CLOSE`` when none)."""
    values: tuple[float, ...] = ()
    """The values of the deals created in the window."""
    won_values: tuple[float, ...] = ()
    """The values of the deals won in the window (at the value they closed with): what a new
    deal that is won is worth (big deals are won less often, so not the created values)."""
    cycles: tuple[float, ...] = ()
    """Days from creation to a win of each deal won in the window."""
    won: int = 0
    lost: int = 0
    """Deals won and lost in the window."""
    lost_values: tuple[float, ...] = ()
    """The values of the deals lost in the window (as known at the as-of time)."""

    @property
    def shock_sd(self) -> float:
        """The relative standard error of the window's value win rate R = won value / closed
        value (the ratio estimator's: sqrt(sum v^2 (y - R)^2) / won value, y = 1 for a win):
        how uncertain the level of the revenue the pipeline converts is, when it is learnt
        from these closes. A few big deals weigh more than many small ones, so this is wider
        than the count's. The spread of the forecast's common shock (``simulate.forecast``);
        ``DEFAULT_SHOCK_SD`` without a win and a loss of some value."""
        won = np.asarray(self.won_values, dtype=float)
        lost = np.asarray(self.lost_values, dtype=float)
        won_value = float(won.sum())
        if won_value <= 0 or float(lost.sum()) <= 0:
            return DEFAULT_SHOCK_SD
        rate = won_value / (won_value + float(lost.sum()))
        spread = float(np.sum(won**2) * (1 - rate) ** 2 + np.sum(lost**2) * rate**2)
        return float(np.sqrt(spread)) / won_value


def creation_rates(
    histories: Iterable[DealHistory], at: dt.datetime, lookback_days: float
) -> CreationRates:
    """The historical creation and conversion rates, from what was known before ``at``."""
    t = round(at.timestamp() * 1000)
    since = t - round(lookback_days * DAY_MS)
    values: list[float] = []
    won_values: list[float] = []
    lost_values: list[float] = []
    won = lost = 0
    cycles: list[float] = []
    first = t
    for h in histories:
        if h.created_ms is None or (h.deleted_ms is not None and h.deleted_ms < t):
            continue
        if h.created_ms < t:
            first = min(first, h.created_ms)
        if since <= h.created_ms < t:
            values.append(as_of(h, t).value or 0.0)
        if h.closed_ms is not None and since <= h.closed_ms < t:
            if h.outcome == "won":
                won += 1
                won_values.append(as_of(h, t).value or 0.0)
                cycles.append((h.closed_ms - h.created_ms) / DAY_MS)
            elif h.outcome == "lost":
                lost += 1
                lost_values.append(as_of(h, t).value or 0.0)
    return CreationRates(
        lookback_days=lookback_days,
        created=len(values),
        # per day of the window the history covers: a window reaching back before the first
        # deal would count days when nothing could be created
        per_day=len(values) / max(1.0, min(lookback_days, (t - first) / DAY_MS)),
        mean_value=float(np.mean(values)) if values else 0.0,
        win_rate=won / (won + lost) if won + lost else 0.0,
        cycle_days=float(np.median(cycles)) if cycles else DEFAULT_DAYS_TO_CLOSE,
        values=tuple(values),
        won_values=tuple(won_values),
        cycles=tuple(cycles),
        won=won,
        lost=lost,
        lost_values=tuple(lost_values),
    )


def new_pipeline(rates: CreationRates, rel: Period) -> OpenDeals:
    """The candidate new deals (``new-1``, ...) of the pipeline still to be created before the
    period ``rel`` ends, at the window's rates: every one of the window's wins whole (its
    value, and its days from creation to the win as its close date after its creation), each
    the same number of times, at least ``CANDIDATES`` candidates per deal expected to be
    created (``per_day`` x days left), their creation days spread evenly over the days left
    and each win's copies over all of them; each won with (win rate x deals expected /
    candidates), so the number won varies like a Poisson count. With fewer than
    ``MIN_CYCLES`` wins, the window's won (else created) values with the median cycle and the
    usual spread. Deterministic: drawing the candidates at random from the wins, as first
    built, gave each forecast's new pipeline a sampling error of its own (docs/forecast.md)."""
    days_left = max(0.0, rel.end)
    expected = rates.per_day * days_left
    none = np.zeros(0)
    empty = OpenDeals((), none, none, none, none, none, none)
    if expected <= 0 or not rates.values:
        return empty
    whole = len(rates.cycles) >= MIN_CYCLES
    pool = np.asarray(rates.won_values if whole else (rates.won_values or rates.values), float)
    copies = int(np.ceil(expected * CANDIDATES / len(pool)))
    k = copies * len(pool)
    created = (np.arange(k) + 0.5) * days_left / k
    pick = np.arange(k) % len(pool)
    p = np.full(k, min(1.0, rates.win_rate * expected / k))
    if whole:
        lo = mid = hi = np.asarray(rates.cycles, dtype=float)[pick]
    else:
        lo_d, hi_d = close_spread(rates.cycle_days)
        lo, mid, hi = (np.full(k, x) for x in (lo_d, rates.cycle_days, hi_d))
    return OpenDeals(
        tuple(f"new-{j + 1}" for j in range(k)),
        pool[pick],
        p,
        p,
        created + lo,
        created + mid,
        created + hi,
    )
