"""Monte Carlo revenue forecast of one period (pure: numpy, the random generator passed in).

Each of ``n`` simulations draws, for every open deal, won or lost from its probability and a
close date from its close-date distribution, and sums the value of the deals won with a close
date inside the period; the revenue already won in the period is added to every simulation.

A close-date distribution is given by its P10, P50 and P90 in days after the as-of time; a
draw is the piecewise-linear quantile function through (0.1, P10), (0.5, P50), (0.9, P90),
extended beyond both ends with the slope of the nearest segment and clipped at 0 (a deal open
at the as-of time cannot close before it). Simulations run in chunks so that memory stays
bounded (``CHUNK_CELLS`` draws at a time) whatever ``n`` * deals. Optionally, a common shock
per simulation scales every deal's probability (``shock_sd``), so that deals are not
independent.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

SIMULATIONS = 10_000
CHUNK_CELLS = 1_000_000
COMMIT_FROM = 0.7
"""Roll-up bands on the rep's probability: commit at or above 70%, best case from 40%."""
BEST_CASE_FROM = 0.4

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class OpenDeals:
    """The deals open at the as-of time, one entry per deal in every array."""

    ids: tuple[str, ...]
    value: FloatArray
    probability: FloatArray
    """Of winning, 0-1: the model's when there is one, else the rep's."""
    rep_probability: FloatArray
    """The rep's, 0-1 (the roll-up bands use it); the probability when none was entered."""
    close_p10: FloatArray
    close_p50: FloatArray
    close_p90: FloatArray
    """Days after the as-of time."""
    owners: tuple[str, ...] = ()
    stages: tuple[str, ...] = ()
    """The stage at the as-of time ("" when unknown); scenarios select deals by it."""

    def __post_init__(self) -> None:
        n = len(self.ids)
        for name in ("value", "probability", "rep_probability", "close_p10", "close_p50"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries, not {n}")
        if (
            len(self.close_p90) != n
            or (self.owners and len(self.owners) != n)
            or (self.stages and len(self.stages) != n)
        ):
            raise ValueError("every array needs one entry per deal")

    def __len__(self) -> int:
        return len(self.ids)

    def plus(self, other: OpenDeals) -> OpenDeals:
        """These deals followed by ``other``'s."""
        if not len(other):
            return self
        return OpenDeals(
            self.ids + other.ids,
            np.concatenate([self.value, other.value]),
            np.concatenate([self.probability, other.probability]),
            np.concatenate([self.rep_probability, other.rep_probability]),
            np.concatenate([self.close_p10, other.close_p10]),
            np.concatenate([self.close_p50, other.close_p50]),
            np.concatenate([self.close_p90, other.close_p90]),
            self.owners + (other.owners or ("",) * len(other)) if self.owners else (),
            self.stages + (other.stages or ("",) * len(other)) if self.stages else (),
        )

    def select(self, keep: NDArray[np.bool_]) -> OpenDeals:
        return OpenDeals(
            tuple(i for i, k in zip(self.ids, keep, strict=True) if k),
            self.value[keep],
            self.probability[keep],
            self.rep_probability[keep],
            self.close_p10[keep],
            self.close_p50[keep],
            self.close_p90[keep],
            tuple(o for o, k in zip(self.owners, keep, strict=True) if k) if self.owners else (),
            tuple(s for s, k in zip(self.stages, keep, strict=True) if k) if self.stages else (),
        )


@dataclass(frozen=True)
class Period:
    """``[start, end)`` in days after the as-of time (``start`` ≤ 0 when it has begun)."""

    start: float
    end: float


@dataclass(frozen=True)
class Forecast:
    simulations: int
    open_deals: int
    won: float
    """Already won in the period before the as-of time."""
    p10: float
    p50: float
    p90: float
    expected: float
    weighted_pipeline: float
    """``won`` + Σ probability * value of the open deals expected (P50) to close in the period."""
    commit: float
    best_case: float
    pipeline: float
    """Cumulative roll-up: ``won`` + open deals expected in the period with rep probability
    ≥ ``COMMIT_FROM`` (commit), + those ≥ ``BEST_CASE_FROM`` (best case), + every other one
    (pipeline)."""
    target: float | None = None
    coverage: float | None = None
    """Open pipeline expected in the period / what is left of the target after ``won``."""
    gap: float | None = None
    """``target`` - P50 (positive: short of it)."""
    p_reach: float | None = None
    """The share of simulations reaching the target."""
    contributions: tuple[Contribution, ...] = ()
    """One per open deal, in the order of the deals; they sum to ``expected`` - ``won`` - the
    new pipeline's (not in ``to_json``)."""

    def to_json(self) -> dict[str, float | int | None]:
        return {
            "simulations": self.simulations,
            "open_deals": self.open_deals,
            "won": self.won,
            "p10": self.p10,
            "p50": self.p50,
            "p90": self.p90,
            "expected": self.expected,
            "weighted_pipeline": self.weighted_pipeline,
            "commit": self.commit,
            "best_case": self.best_case,
            "pipeline": self.pipeline,
            "target": self.target,
            "coverage": self.coverage,
            "gap": self.gap,
            "p_reach_target": self.p_reach,
        }


def close_days(u: FloatArray, p10: FloatArray, p50: FloatArray, p90: FloatArray) -> FloatArray:
    """The close-date quantile function at ``u`` (broadcast over deals): piecewise linear
    through the three quantiles, extended linearly, clipped at 0."""
    low = p50 - (0.5 - u) * (p50 - p10) / 0.4
    high = p50 + (u - 0.5) * (p90 - p50) / 0.4
    return np.maximum(np.where(u < 0.5, low, high), 0.0)


def close_cdf(x: float, p10: FloatArray, p50: FloatArray, p90: FloatArray) -> FloatArray:
    """P(close day < ``x``) of each deal: the inverse of ``close_days`` (its two linear pieces,
    clipped at 0), so a quantile draw ``v`` lands before ``x`` exactly when ``v < F(x)``."""
    if x <= 0:
        return np.zeros(len(p50))
    with np.errstate(divide="ignore", invalid="ignore"):
        low = np.where(p50 > p10, 0.5 - (p50 - x) * 0.4 / (p50 - p10), 0.0)
        high = np.where(p90 > p50, 0.5 + (x - p50) * 0.4 / (p90 - p50), 1.0)
    return np.clip(np.where(x <= p50, low, high), 0.0, 1.0)


def _landings(
    deals: OpenDeals, period: Period, n: int, rng: np.random.Generator, shock_sd: float = 0.0
) -> Iterator[NDArray[np.bool_]]:
    """Chunks of the simulations x deals matrix "won and closed inside the period", each of at
    most ``CHUNK_CELLS`` cells (at least one simulation), in simulation order.

    One uniform ``u`` per cell decides both: the deal is won when ``u < p``, and then
    ``v = u / p`` is itself uniform and independent of the win, so it serves as the close-date
    quantile draw. The close day ``close_days(v)`` is nondecreasing in ``v``, so it falls in
    ``[start, end)`` exactly when ``F(start) <= v < F(end)`` (``close_cdf``): the cell lands
    when ``p * F(start) <= u < p * F(end)``, two comparisons against per-deal bounds computed
    once. Same distribution as drawing the two separately, a fraction of the work.

    With ``shock_sd`` > 0, each simulation first draws one common shock, a factor
    ``max(0, N(1, shock_sd))``, and every deal's probability is ``min(1, p * factor)`` in it:
    the deals are no longer independent, as when the whole pipeline converts better or worse
    than its probabilities say, while the expected revenue stays the same. The bounds are
    then per cell (same comparisons)."""
    if n < 1:
        raise ValueError("at least one simulation")
    d = len(deals)
    if d == 0:
        return
    if shock_sd < 0:
        raise ValueError("shock_sd must be >= 0")
    p = np.clip(deals.probability, 0.0, 1.0)
    args = (deals.close_p10, deals.close_p50, deals.close_p90)
    f_start, f_end = close_cdf(period.start, *args), close_cdf(period.end, *args)
    low = (p * f_start).astype(np.float32)
    high = (p * f_end).astype(np.float32)
    chunk = max(1, CHUNK_CELLS // d)
    for begin in range(0, n, chunk):
        rows = min(chunk, n - begin)
        if shock_sd > 0:
            # one factor per simulation, mean and median 1: the P50 and E[p] stay (but for
            # the cap at 1 and the floor at 0)
            factor = np.maximum(rng.normal(1.0, shock_sd, size=(rows, 1)), 0.0)
            shocked = np.minimum(p * factor, 1.0)
            u = rng.random((rows, d), dtype=np.float32)
            yield (u >= (shocked * f_start).astype(np.float32)) & (
                u < (shocked * f_end).astype(np.float32)
            )
            continue
        u = rng.random((rows, d), dtype=np.float32)
        yield (u >= low) & (u < high)


def simulate(
    deals: OpenDeals,
    period: Period,
    n: int,
    rng: np.random.Generator,
    won: float = 0.0,
    shock_sd: float = 0.0,
) -> tuple[FloatArray, NDArray[np.int64]]:
    """The period revenue of each of ``n`` simulations (``won`` included), with a common
    shock of ``shock_sd`` on every win probability (``_landings``), and per open deal the
    number of simulations in which it lands (won and closed inside the period), counted from
    the same draws chunk by chunk."""
    if n < 1:
        raise ValueError("at least one simulation")
    out = np.full(n, float(won))
    landed = np.zeros(len(deals), dtype=np.int64)
    begin = 0
    for lands in _landings(deals, period, n, rng, shock_sd):
        rows = len(lands)
        # a matrix-vector product: several times faster than np.where(...).sum(axis=1), which
        # pays for the landing counts below (equal to it but for the order of the additions)
        out[begin : begin + rows] += lands.astype(np.float64) @ deals.value
        # bytes summed down the columns: faster than count_nonzero along axis 0
        landed += lands.view(np.uint8).sum(axis=0, dtype=np.int32)
        begin += rows
    return out, landed


def revenue_draws(
    deals: OpenDeals,
    period: Period,
    n: int,
    rng: np.random.Generator,
    won: float = 0.0,
    shock_sd: float = 0.0,
) -> FloatArray:
    """The period revenue of each of ``n`` simulations (``simulate`` without the counts)."""
    return simulate(deals, period, n, rng, won, shock_sd)[0]


@dataclass(frozen=True)
class Contribution:
    """One open deal's part in a forecast, from the same simulations."""

    deal_id: str
    p_land: float
    """The share of simulations in which it is won and closes inside the period."""
    expected: float
    """``p_land`` * its value: what it adds to the expected revenue of the period."""


@dataclass(frozen=True)
class GapCloser:
    """One open deal and what winning it inside the period does to the chance of the target."""

    deal_id: str
    value: float
    probability: float
    p_reach_if_won: float
    lift: float
    """``p_reach_if_won`` - the probability of reaching the target as things stand."""

    def to_json(self) -> dict[str, str | float]:
        return {
            "deal_id": self.deal_id,
            "value": self.value,
            "probability": self.probability,
            "p_reach_if_won": self.p_reach_if_won,
            "lift": self.lift,
        }


def gap_closers(
    deals: OpenDeals,
    period: Period,
    rng: np.random.Generator,
    *,
    target: float,
    won: float = 0.0,
    n: int = SIMULATIONS,
    top: int = 10,
    new: OpenDeals | None = None,
    shock_sd: float = 0.0,
) -> tuple[float, list[GapCloser]]:
    """The probability of reaching ``target``, and the ``top`` open deals ranked by how much
    winning each one inside the period raises it (largest lift first, then value, then id;
    only deals with a positive lift).

    One set of ``n`` simulations serves every deal (common random numbers): in each, forcing
    deal ``i`` won inside the period adds its value unless it already landed there, so the
    revenue with ``i`` won is ``revenue + value_i * (1 - lands_i)``. Chunked like the forecast.
    ``new`` (the pipeline still to be created) and ``shock_sd`` are drawn as in ``forecast``;
    only ``deals`` are ranked.
    """
    d = len(deals)
    drawn = deals if new is None else deals.plus(new)
    reached = np.zeros(d, dtype=np.int64)
    base = 0
    for lands in _landings(drawn, period, n, rng, shock_sd):
        revenue = won + np.where(lands, drawn.value, 0.0).sum(axis=1)
        base += int(np.count_nonzero(revenue >= target))
        forced = revenue[:, None] + np.where(lands[:, :d], 0.0, deals.value)
        reached += np.count_nonzero(forced >= target, axis=0)
    if len(drawn) == 0:
        base = n if won >= target else 0
    p_base = base / n
    ranked = []
    for i in range(d):
        p_if_won = float(reached[i]) / n
        if p_if_won > p_base:
            ranked.append(
                GapCloser(
                    deals.ids[i],
                    float(deals.value[i]),
                    float(deals.probability[i]),
                    p_if_won,
                    p_if_won - p_base,
                )
            )
    ranked.sort(key=lambda g: (-g.lift, -g.value, g.deal_id))
    return p_base, ranked[:top]


def forecast(
    deals: OpenDeals,
    period: Period,
    rng: np.random.Generator,
    *,
    won: float = 0.0,
    n: int = SIMULATIONS,
    target: float | None = None,
    shock_sd: float = 0.0,
    new: OpenDeals | None = None,
) -> Forecast:
    """The period's forecast from the open ``deals`` and the revenue ``won`` so far; with
    ``shock_sd`` > 0, a common shock on the win probabilities per simulation (``_landings``).
    ``new``: the deals still to be created before the period ends
    (``pipeline.new_pipeline``), drawn with the open ones (under the same shock) into the
    revenue; the roll-up, the coverage, ``open_deals`` and the contributions are the open
    deals' only."""
    drawn = deals if new is None else deals.plus(new)
    draws, landed = simulate(drawn, period, n, rng, won, shock_sd)
    p_land = landed[: len(deals)] / n
    contributions = tuple(
        map(Contribution, deals.ids, p_land.tolist(), (p_land * deals.value).tolist())
    )
    p10, p50, p90 = (float(q) for q in np.quantile(draws, [0.1, 0.5, 0.9]))
    expected_in = (deals.close_p50 >= period.start) & (deals.close_p50 < period.end)
    value = np.where(expected_in, deals.value, 0.0)
    rep = deals.rep_probability
    commit = won + float(value[rep >= COMMIT_FROM].sum())
    best = won + float(value[rep >= BEST_CASE_FROM].sum())
    pipeline = float(value.sum())
    coverage = gap = p_reach = None
    if target is not None:
        left = target - won
        coverage = pipeline / left if left > 0 else None
        gap = target - p50
        p_reach = float(np.mean(draws >= target))
    return Forecast(
        simulations=n,
        open_deals=len(deals),
        won=won,
        p10=p10,
        p50=p50,
        p90=p90,
        expected=float(draws.mean()),
        weighted_pipeline=won + float((value * deals.probability).sum()),
        commit=commit,
        best_case=best,
        pipeline=won + pipeline,
        target=target,
        coverage=coverage,
        gap=gap,
        p_reach=p_reach,
        contributions=contributions,
    )
