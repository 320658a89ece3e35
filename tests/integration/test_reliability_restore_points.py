"""Restoring at any checkpoint, without a broker: the same functions the monitor uses
(``checkpoint_records`` after each batch, ``restore`` of the changelog as of the committed offset,
``PartitionState.load``), at many crash points of a simulated partition. A restored partition must
continue exactly like the one that never stopped: same insights, same state.

The broker tests (``test_reliability_crash.py``) kill real processes at random points; this one
tries every kind of point deterministically and fast, and says which step differs.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from consumer.changelog import checkpoint_records, load_into, restore
from consumer.partition import PartitionState, StepResult
from consumer.thresholds import RulesConfig
from producer.simulator import SimTick, SimulationSpec, generate
from schemas.events import DealEvent, Tick

ITEMS: list[DealEvent | SimTick] = list(generate(SimulationSpec(deals=40, days=60, seed=5)))
RULES = RulesConfig()


def step(state: PartitionState, item: DealEvent | SimTick) -> StepResult:
    if isinstance(item, SimTick):
        return state.tick(Tick(event_id=f"tick-{item.at.isoformat()}", at=item.at))
    return state.apply(item)


def describe(items: Sequence[DealEvent | SimTick], n: int) -> str:
    item = items[n]
    if isinstance(item, SimTick):
        return f"item {n}: tick at {item.at}"
    return f"item {n}: {item.type} of {item.deal_id} at {item.occurred_at}"


@dataclass
class Live:
    """The uninterrupted partition: what every item produced, and the changelog it wrote with
    a checkpoint after each batch (``ends``: the offsets the batches committed)."""

    insights: list[list[bytes]]
    state: PartitionState
    changelog: list[tuple[bytes, bytes | None, int]]  # key, value, offset of the checkpoint
    ends: list[int]


def run_live(items: Sequence[DealEvent | SimTick], seed: int) -> Live:
    rng = random.Random(seed)
    state = PartitionState(RULES)
    insights: list[list[bytes]] = []
    changelog: list[tuple[bytes, bytes | None, int]] = []
    ends = []
    n = 0
    while n < len(items):
        end = min(len(items), n + rng.randint(1, 40))
        for item in items[n:end]:
            insights.append([i.value for i in step(state, item).insights])
        changelog.extend((k, v, end) for k, v in checkpoint_records(state, end))
        ends.append(end)
        n = end
    return Live(insights, state, changelog, ends)


def restored_at(live: Live, committed: int, *, written_until: int) -> PartitionState:
    """The state a new process builds when the group committed ``committed`` and the changelog
    holds everything checkpointed up to ``written_until`` (later batches' entries included:
    they were written before a crash that came before their commit)."""
    records = [(k, v) for k, v, offset in live.changelog if offset <= written_until]
    restored = restore(records, committed)
    state = PartitionState(RULES)
    load_into(state, restored)
    return state


def continue_from(
    state: PartitionState, items: Sequence[DealEvent | SimTick], start: int, live: Live
) -> None:
    for n in range(start, len(items)):
        got = [i.value for i in step(state, items[n]).insights]
        assert got == live.insights[n], f"after a restore at offset {start}, {describe(items, n)}"
    assert state.deals == live.state.deals
    assert state.closed == live.state.closed
    assert state.closed_seen == live.state.closed_seen
    assert state.clock_ms == live.state.clock_ms


@pytest.mark.parametrize("seed", [1, 2])
def test_a_restore_at_any_checkpoint_continues_like_the_uninterrupted_partition(
    seed: int,
) -> None:
    live = run_live(ITEMS, seed)
    points = list(zip(live.ends, live.ends[1:], strict=False))
    failures = []
    for committed, next_end in points:
        # crash after the next batch wrote its changelog entries but before it committed
        state = restored_at(live, committed, written_until=next_end)
        try:
            continue_from(state, ITEMS, committed, live)
        except AssertionError as exc:
            failures.append(str(exc).splitlines()[0])
    assert not failures, f"{len(failures)} of {len(points)} restore points diverge: {failures[:5]}"
