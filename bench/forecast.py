"""The revenue forecast's Monte Carlo (issue 15): 10,000 open deals x 10,000 simulations,
pure and in process, timed alone, with the peak memory numpy allocated meanwhile (tracemalloc
sees numpy's buffers), which the chunks bound whatever deals x simulations."""

from __future__ import annotations

import gc
import time
import tracemalloc
from dataclasses import dataclass

import numpy as np

from consumer.forecast.simulate import CHUNK_CELLS, OpenDeals, Period, forecast

MIB = 2**20


@dataclass(frozen=True)
class ForecastResult:
    deals: int
    simulations: int
    seconds: float
    peak_mib: float
    p50: float


def pipeline(deals: int, seed: int = 0) -> OpenDeals:
    """Open deals like a big workspace's: values 1k-100k, probabilities 0-1, close dates spread
    over the next 120 days with a two-week P10-P90 on either side."""
    rng = np.random.default_rng(seed)
    mid = rng.uniform(0, 120, deals)
    prob = rng.uniform(0, 1, deals)
    return OpenDeals(
        tuple(f"deal-{i}" for i in range(deals)),
        rng.uniform(1e3, 1e5, deals),
        prob,
        prob,
        np.maximum(mid - 14, 0),
        mid,
        mid + 14,
    )


def run_forecast_bench(deals: int = 10_000, simulations: int = 10_000) -> ForecastResult:
    pipe = pipeline(deals)
    period = Period(0, 90)
    forecast(pipe, period, np.random.default_rng(0), n=100)  # warm-up
    gc.collect()
    tracemalloc.start()
    try:
        started = time.perf_counter()
        result = forecast(pipe, period, np.random.default_rng(1), n=simulations)
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return ForecastResult(deals, simulations, seconds, peak / MIB, result.p50)


def chunk_note() -> str:
    return f"chunks of at most {CHUNK_CELLS:,} simulation x deal cells"
