"""One tick over many tracked deals of which exactly ``due`` are due: pure, in this process.

One ``PartitionState`` is loaded (``load()``, which builds the deadline index) with ``deals``
open deals none of which is due for days, except groups of ``due`` deals (without open
insights) whose stale deadline falls within hour ``r`` after the partition clock. Tick ``r``
(at clock + (r+1) h) then has exactly ``due`` deals due, each of which raises ``stale_deal``.
It is timed alone (``PartitionState.tick``: the due buckets of the deadline index, rule
evaluation, lifecycle, insight rendering to JSON), after a ``gc.collect()`` so that garbage of
the setup is not charged to it. Group 0 is a warm-up tick (first-call costs), not reported.
"""

from __future__ import annotations

import datetime as dt
import gc
import time
from collections import Counter
from dataclasses import dataclass, replace

from bench.data import HOUR_MS, START_MS, deal_states
from bench.env import bench_rules
from consumer.deal_codec import pack
from consumer.partition import PartitionState
from consumer.state import DAY_MS
from schemas.events import Tick


@dataclass
class TickSetup:
    state: PartitionState
    clock_ms: int
    deals: int
    due: int
    groups: int
    load_s: float
    next_group: int = 0


def setup(deals: int, due: int, groups: int) -> TickSetup:
    clock = START_MS + 60 * DAY_MS
    stale = bench_rules().defaults.stale_days
    stride = max(1, deals // (due * groups))
    states = {}
    for i, deal in enumerate(deal_states(deals, clock)):
        group, k = divmod(i // stride, due) if i % stride == 0 else (groups, 0)
        if group < groups:
            # last activity such that the stale deadline is clock + group h + (k / due) h + 1 ms
            deadline = clock + group * HOUR_MS + (k * HOUR_MS) // due + 1
            last_activity = deadline - int(stale * DAY_MS) - 1
            deal = replace(deal, last_activity_at_ms=last_activity, open=())
        states[deal.deal_id] = deal
    packed = {deal_id: pack(deal, None) for deal_id, deal in states.items()}
    state = PartitionState(bench_rules())
    started = time.perf_counter()
    state.load(packed, {}, clock, without_deadline=frozenset(packed))
    load_s = time.perf_counter() - started
    del states, packed
    prepared = TickSetup(state, clock, deals, due, groups, load_s)
    run_tick(prepared)  # warm-up
    return prepared


@dataclass
class TickResult:
    ms: float
    touched: int
    insights: int
    kinds: Counter[str]


def run_tick(s: TickSetup) -> TickResult:
    if s.next_group >= s.groups:
        raise RuntimeError("no due group left; set up more groups")
    at = s.clock_ms + (s.next_group + 1) * HOUR_MS
    tick = Tick(at=dt.datetime.fromtimestamp(at / 1000, tz=dt.UTC))
    s.next_group += 1
    gc.collect()
    started = time.perf_counter()
    step = s.state.tick(tick)
    elapsed = time.perf_counter() - started
    s.state.dirty.clear()  # what the next checkpoint would do
    kinds = Counter(f"{i.rule.value} {i.lifecycle.value}" for i in step.insights)
    return TickResult(elapsed * 1000, step.deals_touched, len(step.insights), kinds)
