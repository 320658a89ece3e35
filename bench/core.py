"""The pure core alone: CPU per record with no broker (``python -m bench.core [--runs 5]``).

Every record of the quick data set (``bench.data.events_dataset``: 10,000 deals, 100,000 deal
events and their ticks over 6 partitions) goes through what the monitor does per record, in
process: ``consumer.decode.decode_timed`` (strict JSON, the event-time bounds against a record
timestamp) → ``PartitionState.apply`` or ``tick`` (state, rules, lifecycle, packing) → each
insight's JSON bytes. No Kafka, changelog, metrics or loop: what is left of the monitor's CPU
per record once the shell is taken away. Prints process CPU µs per record, best and median of
``--runs``, and the insights published (the same input must give the same count).

``--velocity-off`` sets ``velocity_min_baseline_activities`` to 255 so velocity_drop cannot fire
(the rule set publishing what the monitor published before velocity_drop existed).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

from bench.data import events_dataset
from consumer.decode import TimeBounds, decode_timed
from consumer.partition import PartitionState
from consumer.thresholds import RulesConfig, RuleThresholds
from schemas.events import Tick
from vectoros import native

RECORD_MS = 1_800_000_000_000  # 2027-01-15: every event of the data set is within the bounds
BOUNDS = TimeBounds.of_seconds(3600, 400 * 86400)


def one_pass(rules: RulesConfig) -> tuple[float, int, int]:
    """(CPU seconds, records, insights) of one pass over the data set with fresh states."""
    data = events_dataset(10_000)
    states = {p: PartitionState(rules) for p in data.partitions}
    records = insights = 0
    gc.collect()
    started = time.process_time()
    for p, recs in data.partitions.items():
        state = states[p]
        apply, tick = state.apply, state.tick
        for key, value, _headers in recs:
            event, at_ms = decode_timed(
                value, key, max_bytes=1_000_000, record_ms=RECORD_MS, bounds=BOUNDS
            )
            step = tick(event, at_ms) if isinstance(event, Tick) else apply(event, at_ms)
            for insight in step.insights:
                _ = insight.value
                insights += 1
            records += 1
    return time.process_time() - started, records, insights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--velocity-off", action="store_true")
    args = parser.parse_args()
    th = RuleThresholds(velocity_min_baseline_activities=255) if args.velocity_off else None
    rules = RulesConfig(th)
    micros = []
    for _ in range(args.runs):
        seconds, records, insights = one_pass(rules)
        micros.append(seconds / records * 1e6)
    print(
        f"pure core: {records:,} records, {insights:,} insights; CPU per record "
        f"best {min(micros):.1f} µs, median {statistics.median(micros):.1f} µs "
        f"({args.runs} runs; {native.status()})"
    )


if __name__ == "__main__":
    main()
