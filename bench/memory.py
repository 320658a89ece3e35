"""Resident memory per tracked deal, measured in a fresh child process.

The child (``python -m bench.memory --deals N``) imports everything, builds one
``PartitionState`` per partition (default settings: the 16 most recent event ids of each deal
kept with it, 30-day tombstones), then feeds it ``N`` encoded ``deal.created`` events through the
real path: ``consumer.decode.decode`` → ``PartitionState.apply`` (rules, lifecycle, rendering;
the rendered insights are dropped), clearing the dirty set every 5,000 records per partition as
a checkpoint would. bytes/deal = (VmRSS after - VmRSS before) / N, both after ``gc.collect()``.
It prints one JSON line.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from bench.env import ROOT


@dataclass
class MemoryResult:
    bytes_per_deal: float
    deals: int
    rss_before: int
    rss_after: int
    detail: dict[str, Any]


def measure(deals: int, partitions: int, dedupe_per_deal: int) -> dict[str, Any]:
    from bench.data import created_events, partition_for
    from bench.env import rss_bytes
    from consumer.decode import decode
    from consumer.partition import PartitionState
    from consumer.thresholds import RulesConfig
    from schemas.events import Tick

    rules = RulesConfig()
    states = [PartitionState(rules, dedupe_per_deal=dedupe_per_deal) for _ in range(partitions)]
    since_checkpoint = [0] * partitions
    # warm up every code path once (imports, caches) before the baseline
    for key, value in created_events(10, seed=99, start=10**8):
        event = decode(value, key, max_bytes=65536)
        assert not isinstance(event, Tick)
        PartitionState(rules).apply(event)
    gc.collect()
    before = rss_bytes()
    for key, value in created_events(deals):
        p = partition_for(key, partitions)
        event = decode(value, key, max_bytes=65536)
        assert not isinstance(event, Tick)
        states[p].apply(event)
        since_checkpoint[p] += 1
        if since_checkpoint[p] == 5000:
            states[p].dirty.clear()
            since_checkpoint[p] = 0
    for state in states:
        state.dirty.clear()
    del event
    gc.collect()
    after = rss_bytes()
    tracked = sum(len(s.deals) for s in states)
    return {
        "deals": tracked,
        "rss_before": before,
        "rss_after": after,
        "bytes_per_deal": (after - before) / tracked,
        "index_entries": sum(s.index_entries for s in states),
        "packed_bytes": sum(len(v) for s in states for v in s.packed.values()),
    }


def run_child(deals: int, partitions: int, dedupe_per_deal: int = 16) -> MemoryResult:
    out = subprocess.run(  # our own interpreter and module
        [
            sys.executable,
            "-m",
            "bench.memory",
            "--deals",
            str(deals),
            "--partitions",
            str(partitions),
            "--dedupe-per-deal",
            str(dedupe_per_deal),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return MemoryResult(r["bytes_per_deal"], r["deals"], r["rss_before"], r["rss_after"], r)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory")
    parser.add_argument("--deals", type=int, required=True)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--dedupe-per-deal", type=int, default=16)
    args = parser.parse_args()
    print(json.dumps(measure(args.deals, args.partitions, args.dedupe_per_deal)))


if __name__ == "__main__":
    main()
