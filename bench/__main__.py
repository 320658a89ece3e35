"""``python -m bench [--quick] [--runs N] [--only NAME ...]``: run the scenarios, print the table.

Starts one embedded broker and one embedded PostgreSQL (or uses
``VECTOROS_KAFKA_BOOTSTRAP_SERVERS`` / ``VECTOROS_DATABASE_URL``), runs every selected scenario
up to ``--runs`` times (fewer when a scenario's ``--budget`` of seconds would be exceeded; never
fewer than one), prints the median, min and max of each metric with its target and the machine,
and writes the same as markdown to ``.bench-cache/last-results[-quick].md`` (and into
``docs/benchmarks.md`` with ``--write-docs``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bench import api as api_bench
from bench import floor, latency, memory, produce, profiling, restore, sink, throughput, tick
from bench import forecast as forecast_bench
from bench import notifier as notifier_bench
from bench import scores as scores_bench
from bench.data import Dataset, events_dataset
from bench.env import (
    ROOT,
    Session,
    cache_dir,
    embedded_servers,
    load,
    load_average,
    machine_line,
)
from bench.report import Metric, markdown_table, notes, text_table
from vectoros import native

SCENARIOS = (
    "monitor",
    "bare",
    "scores",
    "floor",
    "latency",
    "tick",
    "memory",
    "restore",
    "sink",
    "sse",
    "capture",
    "produce",
    "profile",
    "notifier",
    "api",
    "forecast",
)
DOCS = ROOT / "docs" / "benchmarks.md"
MIB = 2**20


@dataclass(frozen=True)
class Sizes:
    deals: int  # throughput: deals x 10 deal events (+ ticks)
    state_deals: int  # tick, memory, restore
    due: int
    latency_rate: float
    latency_warmup_s: float
    latency_measure_s: float
    light_rate: float  # latency at a light load too: what the pipeline adds when nothing queues
    light_measure_s: float
    sink_events: int
    produce_records: int
    budget_s: float

    @classmethod
    def full(cls) -> Sizes:
        return cls(100_000, 1_000_000, 1_000, 5_000, 3, 20, 200, 10, 50_000, 50_000, 150)

    @classmethod
    def quick(cls) -> Sizes:
        return cls(10_000, 100_000, 1_000, 5_000, 2, 8, 200, 5, 20_000, 20_000, 60)


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="smaller sizes: a few minutes in all")
    p.add_argument("--runs", type=int, default=3, help="runs per scenario (default 3)")
    p.add_argument(
        "--only", nargs="+", choices=SCENARIOS, metavar="NAME", help=", ".join(SCENARIOS)
    )
    p.add_argument("--skip", nargs="+", choices=SCENARIOS, metavar="NAME", default=[])
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds per scenario after which no further run starts "
        "(default 150, --quick 60; 0 = no limit)",
    )
    p.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    return p.parse_args(argv)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class Bench:
    session: Session
    sizes: Sizes
    runs: int
    budget: float
    quick: bool
    metrics: list[Metric] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    profile_text: str = ""
    data: Dataset | None = None
    topic: str = ""

    def metric(self, scenario: str, name: str, unit: str, **kw: Any) -> Metric:
        m = Metric(scenario, name, unit, **kw)
        self.metrics.append(m)
        return m

    async def repeat(self, name: str, body: Callable[[int], Awaitable[str]]) -> None:
        """``body`` up to ``runs`` times; no new run once the budget would be exceeded."""
        started = time.perf_counter()
        for i in range(self.runs):
            t = time.perf_counter()
            summary = await body(i)
            took = time.perf_counter() - t
            say(f"[{name}] run {i + 1}/{self.runs} ({took:.1f}s): {summary}")
            spent = time.perf_counter() - started
            if i + 1 < self.runs and self.budget and spent + took > self.budget:
                say(f"[{name}] stopping after {i + 1} run(s): {self.budget:.0f}s budget")
                break

    async def events(self, sizes: Sizes) -> tuple[Dataset, str]:
        data = events_dataset(sizes.deals)
        topic = self.session.name("events")
        await self.session.create_topics(topic)
        seconds = await load(self.session.bootstrap, topic, data.partitions)
        say(
            f"[setup] loaded {data.records:,} records ({data.deal_events:,} deal events over "
            f"{data.deals:,} deals + {data.ticks:,} ticks) in {seconds:.1f}s "
            f"({data.records / seconds:,.0f}/s)"
        )
        return data, topic

    # -- scenarios -------------------------------------------------------------------------------

    async def monitor(self) -> None:
        data, topic = self.data, self.topic
        assert data is not None
        m = self.metric(
            "monitor throughput",
            "end to end",
            "events/s",
            target=100_000,
            target_text=">= 100,000",
        )
        join = self.metric("monitor throughput", "group join + restore", "s", digits=2)
        last: list[throughput.RunResult] = []

        async def one(i: int) -> str:
            res = await throughput.run_monitor(self.session, data, topic)
            m.add(res.rate)
            join.add(res.join_s)
            last.append(res)
            return f"{res.rate:,.0f} events/s, {res.insights:,} insights, join {res.join_s:.1f}s"

        await self.repeat("monitor", one)
        m.notes.append(f"{_label(data)}; {_cpu(last[-1])} (last run)")

    async def bare(self) -> None:
        data, topic = self.data, self.topic
        assert data is not None
        b = self.metric("reference: bare aiokafka loop", "end to end, state in a dict", "events/s")
        last: list[throughput.RunResult] = []

        async def one(i: int) -> str:
            res = await throughput.run_bare_loop(self.session, data, topic)
            b.add(res.rate)
            last.append(res)
            return f"{res.rate:,.0f} events/s, {res.insights:,} insights"

        await self.repeat("bare", one)
        b.notes.append(
            f"{_label(data)}; no changelog, no metrics (the issue measured ~66k/s); "
            f"{_cpu(last[-1])} (last run)"
        )
        mon = [x for x in self.metrics if x.scenario == "monitor throughput" and x.values]
        if mon:
            ratio = self.metric(
                "monitor throughput",
                "monitor / bare loop (medians)",
                "x",
                target=1.0,
                target_text=">= 1.0",
                digits=2,
            )
            ratio.add(mon[0].median / b.median)

    async def scores(self) -> None:
        """Scoring on against off (``bench/scores.py``). By default (``history_model_rules``)
        the model rules run in ``vectoros history`` and no score reaches the monitor: its input,
        and so its throughput, is the same with scoring on; what the rules cost there is
        measured on the pure core. With ``history_scores_to_events`` the monitor folds the
        scores itself: the monitor on the same deal events, then on them with the
        ``deal.scored`` records it would get, alternately."""
        data, topic = self.data, self.topic
        if data is None:
            data, topic = self.data, self.topic = await self.events(self.sizes)
        name = "scoring on vs off"
        every, _ = scores_bench.with_scores(data, share=1.0)
        steps = scores_bench.history_steps(every)
        in_history = self.metric(
            name,
            "default: the model rules in vectoros history, every score (pure core)",
            "scores/s",
        )
        for _ in range(3):
            n, seconds, raised = scores_bench.model_rules_rate(steps)
            in_history.add(n / seconds)
        in_history.notes.append(
            f"{n:,} scores of up to 10,000 deals (each deal's first event, then every later "
            f"one of an open deal, a random walk of {scores_bench.STEP:.2f}): {raised:,} model "
            "insights"
        )
        scored, n_scores = scores_bench.with_scores(data)
        scored_topic = self.session.name("scored")
        await self.session.create_topics(scored_topic)
        seconds = await load(self.session.bootstrap, scored_topic, scored.partitions)
        say(f"[setup] loaded the same with {n_scores:,} deal.scored records in {seconds:.1f}s")
        first, n_first = scores_bench.with_scores(data, first_only=True)
        first_topic = self.session.name("scored-first")
        await self.session.create_topics(first_topic)
        await load(self.session.bootstrap, first_topic, first.partitions)
        off = self.metric(name, "monitor, scoring off", "deal events/s")
        on = self.metric(name, "scores to events: monitor, scoring on", "deal events/s")
        on_records = self.metric(
            name, "scores to events: monitor, scoring on, all records", "records/s"
        )
        on_first = self.metric(
            name, "scores to events: monitor, first score of each deal only", "deal events/s"
        )

        async def one(i: int) -> str:
            plain = await throughput.run_monitor(self.session, data, topic)
            with_scores = await throughput.run_monitor(self.session, scored, scored_topic)
            first_score = await throughput.run_monitor(self.session, first, first_topic)
            off.add(data.deal_events / plain.process_s)
            on.add(data.deal_events / with_scores.process_s)
            on_records.add(with_scores.rate)
            on_first.add(data.deal_events / first_score.process_s)
            return (
                f"off {data.deal_events / plain.process_s:,.0f} deal events/s; scores to "
                f"events {data.deal_events / with_scores.process_s:,.0f} deal events/s "
                f"({with_scores.rate:,.0f} records/s, {with_scores.insights:,} insights "
                f"against {plain.insights:,}); first score only "
                f"{data.deal_events / first_score.process_s:,.0f} deal events/s"
            )

        await self.repeat("scores", one)
        # The default sends the monitor no score: with scoring on its input is the very records
        # it reads with scoring off (tests/integration/test_history_model_rules.py), so the
        # ratio is 1 by construction, not a measurement (running the same input twice measures
        # only this machine's noise: 0.80-1.22 per run pair on 2026-12-03)
        default_ratio = self.metric(
            name,
            "default: on / off, the monitor: no score reaches it, the same input "
            "(by construction, not measured)",
            "x",
            digits=2,
        )
        default_ratio.add(1.0)
        ratio = self.metric(
            name, "scores to events: on / off, deal events/s (medians)", "x", digits=2
        )
        ratio.add(on.median / off.median)
        per_record = self.metric(
            name, "scores to events: on / off, records/s (medians)", "x", digits=2
        )
        per_record.add(on_records.median / off.median)
        first_ratio = self.metric(
            name, "scores to events: first score only / off (medians)", "x", digits=2
        )
        first_ratio.add(on_first.median / off.median)
        off.notes.append(
            f"{_label(data)}; scores to events: the same plus {n_scores:,} deal.scored records "
            f"(each deal's first, then after {scores_bench.SHARE:.0%} of its later deal events: "
            "how often a score worth publishing comes on the simulator; bench/scores.py); first "
            f"score only: {n_first:,} (what carrying a score costs a deal's later events)"
        )

    async def notifier(self) -> None:
        rate = self.metric(
            "notifier",
            "flood control: insights grouped",
            "insights/s",
            target=5000,
            target_text=">= 5,000",
        )
        mem = self.metric("notifier", "peak RSS growth, one open group per insight", "MiB")
        count = 20_000 if self.quick else 100_000

        async def one(i: int) -> str:
            res = notifier_bench.run_notifier_bench(count)
            rate.add(res.rate)
            mem.add(res.state_mib)
            return f"{res.rate:,.0f} insights/s, {res.groups:,} groups, {res.state_mib:.0f} MiB"

        await self.repeat("notifier", one)
        rate.notes.append(f"{count:,} insights, two recipients, no I/O (bench/notifier.py)")

    async def capture(self) -> None:
        from bench import capture as capture_bench

        rate = self.metric(
            "capture",
            "Gmail sync: provider messages to acknowledged events",
            "messages/min",
            target=10_000,
            target_text=">= 10,000",
        )
        probes = self.metric(
            "capture",
            "index probes per message, 100k / 1k deals",
            "x",
            target=1.0,
            exact=True,
            target_text="= 1",
            digits=2,
        )
        cost = self.metric(
            "capture",
            "matching time per message, 100k / 1k deals",
            "x",
            target=1.5,
            higher_is_better=False,
            target_text="<= 1.5",
            digits=2,
        )
        messages = 5_000 if self.quick else 20_000

        async def one(i: int) -> str:
            res = await capture_bench.run_with_broker(self.session, messages, 1_000)
            rate.add(res.per_minute)
            small = capture_bench.run_matching(20_000, 1_000)
            big = capture_bench.run_matching(20_000, 100_000)
            probes.add(big.lookups_per_message / small.lookups_per_message)
            cost.add(big.micros_per_message / small.micros_per_message)
            return (
                f"{res.per_minute:,.0f} messages/min ({res.events:,} events); matching "
                f"{small.micros_per_message:.1f} us (1k deals) vs {big.micros_per_message:.1f} us "
                f"(100k deals), {big.lookups_per_message:.1f} probes/message"
            )

        await self.repeat("capture", one)
        rate.notes.append(
            f"{messages:,} messages of one mailbox through a Gmail stand-in in process (no "
            "network), SQLite captured log, matcher, events acknowledged by the broker "
            "(bench/capture.py)"
        )

    async def forecast(self) -> None:
        took = self.metric(
            "forecast",
            "Monte Carlo, 10,000 open deals x 10,000 simulations",
            "s",
            target=2.0,
            higher_is_better=False,
            target_text="<= 2",
            digits=2,
        )
        peak = self.metric("forecast", "peak numpy memory during it", "MiB", digits=0)

        async def one(i: int) -> str:
            res = forecast_bench.run_forecast_bench()
            took.add(res.seconds)
            peak.add(res.peak_mib)
            return f"{res.seconds:.2f}s, peak {res.peak_mib:.0f} MiB, P50 {res.p50:,.0f}"

        await self.repeat("forecast", one)
        took.notes.append(
            "consumer.forecast.simulate.forecast alone, in process, one warm-up first; "
            f"{forecast_bench.chunk_note()}; peak memory from tracemalloc"
        )

    async def floor(self) -> None:
        data, topic = self.data, self.topic
        assert data is not None
        f = self.metric(
            "reference: the floor", "bare loop, minimal 5-rule job (orjson, dicts)", "events/s"
        )
        last: list[throughput.RunResult] = []

        async def one(i: int) -> str:
            res = await floor.run_floor_loop(self.session, data, topic)
            f.add(res.rate)
            last.append(res)
            return f"{res.rate:,.0f} events/s, {res.insights:,} insights"

        await self.repeat("floor", one)
        f.notes.append(
            f"{_label(data)}; what Kafka I/O in Python costs here: no validation, no templates, "
            f"no changelog; {_cpu(last[-1])} (last run)"
        )

    async def latency(self) -> None:
        s = self.sizes
        rate = f"{s.latency_rate:,.0f}/s"
        p50 = self.metric("latency", f"event -> insight p50 at {rate}", "ms", digits=1)
        p99 = self.metric(
            "latency",
            f"event -> insight p99 at {rate}",
            "ms",
            target=25,
            higher_is_better=False,
            target_text="<= 25",
            digits=1,
        )
        light = f"{s.light_rate:,.0f}/s"
        light_p50 = self.metric("latency", f"event -> insight p50 at {light}", "ms", digits=1)
        light_p99 = self.metric("latency", f"event -> insight p99 at {light}", "ms", digits=1)
        last: list[latency.LatencyResult] = []

        async def one(i: int) -> str:
            low = await latency.run_latency(
                self.session,
                rate=s.light_rate,
                warmup_s=s.latency_warmup_s,
                measure_s=s.light_measure_s,
            )
            light_p50.add(low.p50_ms)
            light_p99.add(low.p99_ms)
            res = await latency.run_latency(
                self.session,
                rate=s.latency_rate,
                warmup_s=s.latency_warmup_s,
                measure_s=s.latency_measure_s,
            )
            p50.add(res.p50_ms)
            p99.add(res.p99_ms)
            last.append(res)
            return (
                f"p50 {res.p50_ms:,.1f} ms, p99 {res.p99_ms:,.1f} ms, max {res.max_ms:,.1f} ms "
                f"(at {light}: p50 {low.p50_ms:,.1f} ms, p99 {low.p99_ms:,.1f} ms)"
            )

        await self.repeat("latency", one)
        r = last[-1]
        p99.notes.append(
            f"{r.events:,} events measured after a {s.latency_warmup_s:g}s warm-up, offered "
            f"{r.achieved_rate:,.0f}/s, each raises one insight; max {r.max_ms:,.0f} ms; the "
            f"monitor process used {r.monitor_cpu_share:.0%} of a core, the broker "
            f"{'?' if r.broker_cpu_share is None else f'{r.broker_cpu_share:.0%}'}, the bench's "
            f"producer and reader {r.bench_cpu_share:.0%} (of the machine's 200 %; last run)"
        )

    async def tick(self) -> None:
        s = self.sizes
        t0 = time.perf_counter()
        ts = tick.setup(s.state_deals, s.due, self.runs + 1)
        say(
            f"[tick] {s.state_deals:,} deals built and loaded in {time.perf_counter() - t0:.1f}s "
            f"(PartitionState.load {ts.load_s:.1f}s)"
        )
        tm = self.metric(
            "tick",
            f"one tick, {s.due:,} of {s.state_deals:,} deals due",
            "ms",
            target=20,
            higher_is_better=False,
            target_text="<= 20",
            digits=1,
        )
        touched = self.metric(
            "tick",
            "deals touched",
            "",
            target=s.due,
            exact=True,
            target_text=f"= {s.due:,} (only the due)",
        )
        last: list[tick.TickResult] = []

        async def one(i: int) -> str:
            res = tick.run_tick(ts)
            tm.add(res.ms)
            touched.add(res.touched)
            last.append(res)
            return f"{res.ms:.1f} ms, {res.touched:,} deals touched, {res.insights:,} insights"

        await self.repeat("tick", one)
        kinds = ", ".join(f"{n:,} {k}" for k, n in sorted(last[-1].kinds.items()))
        tm.notes.append(
            f"PartitionState.tick alone; insights per tick: {kinds}; PartitionState.load of "
            f"the {s.state_deals:,} deals (builds the deadline index) took {ts.load_s:.1f}s"
        )

    async def memory(self) -> None:
        s = self.sizes
        parts = self.session.partitions
        mem = self.metric(
            "memory",
            f"RSS growth per tracked deal at {s.state_deals:,} deals",
            "bytes",
            target=400,
            higher_is_better=False,
            target_text="<= 400",
        )
        last: list[memory.MemoryResult] = []

        async def one(i: int) -> str:
            res = await asyncio.to_thread(memory.run_child, s.state_deals, parts)
            mem.add(res.bytes_per_deal)
            last.append(res)
            return (
                f"{res.bytes_per_deal:,.0f} bytes/deal ({res.deals:,} deals, "
                f"RSS {res.rss_before / MIB:,.0f} -> {res.rss_after / MIB:,.0f} MiB)"
            )

        await self.repeat("memory", one)
        r = last[-1]
        mem.notes.append(
            f"decode + apply of deal.created into {parts} partitions, default settings; RSS "
            f"{r.rss_before / MIB:,.0f} -> {r.rss_after / MIB:,.0f} MiB; packed deal states "
            f"{r.detail['packed_bytes'] / r.deals:,.0f} bytes/deal on average (the event-id "
            f"digest included), {r.detail['index_entries']:,} deadline index entries"
        )

    async def restore(self) -> None:
        s = self.sizes
        rs = await restore.setup(self.session, s.state_deals)
        say(
            f"[restore] {rs.records:,} changelog records encoded in {rs.encode_s:.1f}s, "
            f"loaded in {rs.load_s:.1f}s"
        )
        rt = self.metric(
            "restore",
            f"{s.state_deals:,} deal states from the changelog",
            "s",
            target=15,
            higher_is_better=False,
            target_text="<= 15",
            digits=2,
        )

        async def one(i: int) -> str:
            res = await restore.run_restore(self.session, rs)
            rt.add(res.seconds)
            return f"{res.seconds:.2f}s, {res.deals / res.seconds:,.0f} deals/s"

        await self.repeat("restore", one)
        parts = await restore.breakdown(self.session, rs, partition=0)
        rt.notes.append(
            f"{self.session.partitions} partitions read by one consumer, then folded and "
            "loaded, as on assignment; "
            f"partition 0 alone ({parts['deals']:,.0f} deals): reading the records "
            f"{parts['read']:.1f}s, folding them (consumer.changelog.restore) "
            f"{parts['fold']:.1f}s, PartitionState.load {parts['load']:.1f}s"
        )
        await self.session.drop_topics(rs.topic, rs.source_topic)

    async def sink(self) -> None:
        ss = await sink.setup(self.session, self.sizes.sink_events)
        se = self.metric(
            "sink",
            "insight events -> PostgreSQL, end to end",
            "events/s",
            target=20_000,
            target_text=">= 20,000",
        )
        so = self.metric("sink", "PostgresInsightStore.write_batch only", "events/s")

        async def one(i: int) -> str:
            res = await sink.run_service(self.session, ss)
            se.add(res.rate)
            rate = await sink.run_store(ss)
            so.add(rate)
            return (
                f"service {res.rate:,.0f} events/s (join {res.join_s:.1f}s), "
                f"store only {rate:,.0f} events/s"
            )

        try:
            await self.repeat("sink", one)
        finally:
            await ss.pool.close()
        se.notes.append(
            f"{self.sizes.sink_events:,} distinct insights; each inserts 1 insight_events row "
            "and upserts 1 insights row; batches of 1,000 (the default)"
        )
        await self.session.drop_topics(ss.topic)

    async def api(self) -> None:
        count = 100_000 if not self.quick else 20_000
        setup = await api_bench.setup(self.session, count)
        p99 = self.metric(
            "read API",
            f"open-insights list, {count:,} insights in the workspace: p99",
            "ms",
            target=50,
            higher_is_better=False,
            target_text="<= 50",
            digits=1,
        )
        p50 = self.metric("read API", "open-insights list: p50", "ms", digits=1)

        async def one(i: int) -> str:
            res = await api_bench.run(setup, rounds=100)
            p99.add(res.p99_ms)
            p50.add(res.p50_ms)
            return f"{res.requests} requests: p50 {res.p50_ms:.1f} ms, p99 {res.p99_ms:.1f} ms"

        try:
            await self.repeat("api", one)
        finally:
            await api_bench.teardown(self.session, setup)
        p99.notes.append(
            "in-process ASGI (token lookup, rate limit, SQL, JSON, ETag): first pages, priority, "
            "owner and rule filters, three pages after a cursor; page size 50"
        )

    async def sse(self) -> None:
        from bench import sse as sse_bench

        clients, rate, seconds = 500, 100.0, (5.0 if self.quick else 10.0)
        p99 = self.metric(
            "live stream",
            f"{clients} clients, {rate:.0f} insights/s: new insight visible, p99",
            "ms",
            target=1000,
            higher_is_better=False,
            target_text="<= 1,000",
        )
        p50 = self.metric("live stream", "new insight visible: p50", "ms")
        complete = self.metric(
            "live stream",
            "clients that read every insight",
            "clients",
            target=clients,
            target_text=f">= {clients}",
        )

        async def one(i: int) -> str:
            res = await sse_bench.run(self.session, clients, rate, seconds)
            p99.add(res.p99_ms)
            p50.add(res.p50_ms)
            complete.add(res.complete)
            return (
                f"{res.clients} clients, {res.insights} insights, {res.delivered:,} deliveries: "
                f"p50 {res.p50_ms:.0f} ms, p99 {res.p99_ms:.0f} ms, max {res.max_ms:.0f} ms; "
                f"{res.complete} clients read every insight; CPU: server "
                f"{res.server_cpu_s:.1f} s, clients {res.clients_cpu_s:.1f} s "
                f"in {res.elapsed_s:.1f} s"
            )

        await self.repeat("sse", one)
        p99.notes.append(
            f"from the producer's send to a client's read: deal-insights -> the API's live feed "
            f"-> hub -> server-sent events over HTTP/1.1 (uvicorn) -> {clients} clients of one "
            f"workspace in a child process on the same machine; {seconds:.0f} s at {rate:.0f}/s "
            "(bench/sse.py)"
        )

    async def produce(self) -> None:
        topic, parts = await produce.setup(self.session, self.sizes.produce_records)
        rows = {
            "send": self.metric("produce (insights)", "send() each, 16 KiB batches", "records/s"),
            "send_big": self.metric(
                "produce (insights)", "send() each, 1 MiB batches", "records/s"
            ),
            "send_batch": self.metric(
                "produce (insights)", "create_batch/send_batch per partition", "records/s"
            ),
        }

        async def one(i: int) -> str:
            out = []
            for how, metric in rows.items():
                rate = await produce.run(self.session, topic, parts, how)
                metric.add(rate)
                out.append(f"{how} {rate:,.0f}/s")
            return ", ".join(out)

        await self.repeat("produce", one)
        rows["send"].notes.append(
            f"{self.sizes.produce_records:,} real insight events (~1.2 KB), acks=all, every "
            "acknowledgement awaited"
        )
        await self.session.drop_topics(topic)

    async def profile(self) -> None:
        data, topic = self.data, self.topic
        if data is None or not self.quick:  # per record, the quick data set says the same
            data, topic = await self.events(Sizes.quick())
        res, self.profile_text, path = await profiling.profile_monitor(self.session, data, topic)
        say(f"[profile] {res.records:,} records at {res.rate:,.0f} events/s under cProfile")
        self.extra.append(
            f"profile: cProfile over the monitor throughput scenario ({_label(data)}; "
            f"{res.rate:,.0f} events/s under the profiler); stats: {path.relative_to(ROOT)}"
        )


def _label(data: Dataset) -> str:
    return f"{data.records:,} records ({data.deals:,} deals)"


def _cpu(res: throughput.RunResult) -> str:
    broker = (
        f", broker {res.broker_cpu_s / res.records * 1e6:.0f}"
        if res.broker_cpu_s is not None
        else ""
    )
    return (
        f"CPU µs/record: this process {res.cpu_s / res.records * 1e6:.0f}{broker}; "
        f"{res.insights:,} insights"
    )


async def run_all(args: argparse.Namespace) -> Bench:
    sizes = Sizes.quick() if args.quick else Sizes.full()
    chosen = [s for s in (args.only or SCENARIOS) if s not in args.skip]
    with embedded_servers(need_pg=bool({"sink", "api", "sse"} & set(chosen))) as (
        bootstrap,
        dsn,
        pid,
    ):
        session = Session(bootstrap, dsn, args.quick, args.runs, broker_pid=pid)
        bench = Bench(
            session,
            sizes,
            max(1, args.runs),
            sizes.budget_s if args.budget is None else args.budget,
            args.quick,
        )
        if {"monitor", "bare", "floor"} & set(chosen) or ("profile" in chosen and args.quick):
            bench.data, bench.topic = await bench.events(sizes)
        for name in chosen:
            await getattr(bench, name)()
        return bench


def render(
    bench: Bench, machine: str, revision: str, load_before: str, elapsed: float
) -> tuple[str, str]:
    command = " ".join(["python -m bench", *(shlex.quote(a) for a in sys.argv[1:])])
    about = [
        f"command: {command}  ({elapsed / 60:.1f} min)",
        f"code: {revision}; pure core: {native.status()}",
        f"machine: {machine}",
        f"load average (1/5/15 min) before / after: {load_before} / {load_average()}",
    ]
    listed = [f"- {n}" for n in notes(bench.metrics) + bench.extra]
    text = "\n".join([text_table(bench.metrics), "", *about, *listed])
    md = ["  \n".join(a[0].upper() + a[1:] for a in about), "", markdown_table(bench.metrics)]
    md += ["", *listed]
    if bench.profile_text:
        text += "\n\nprofile headline (top 15 by tottime):\n" + bench.profile_text
        md += ["", "Profile headline (top 15 functions by tottime):", "", "```"]
        md += [bench.profile_text, "```"]
    return text, "\n".join(md) + "\n"


def git_revision() -> str:
    """The commit measured, and whether the work tree differed from it (read-only git)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown (no git)"
    return f"{head or 'unknown'}{' + uncommitted changes' if dirty else ''}"


def write_docs(section: str, mode: str) -> None:
    """Replace the results between this mode's markers in docs/benchmarks.md (or append them)."""
    start, end = f"<!-- bench:{mode}:start -->", f"<!-- bench:{mode}:end -->"
    body = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    if start not in body or end not in body:
        body = body.rstrip() + f"\n\n{start}\n{end}\n"
    head, rest = body.split(start, 1)
    _, tail = rest.split(end, 1)
    DOCS.write_text(f"{head}{start}\n{section}{end}{tail}")


def main(argv: list[str] | None = None) -> None:
    args = _args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    logging.getLogger("bench").setLevel(logging.INFO)
    if not args.verbose:
        # aiokafka logs an error for every producer on Tansu (no InitProducerId)
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        logging.getLogger("vectoros.kafka").setLevel(logging.ERROR)
    machine = machine_line()
    revision = git_revision()
    load_before = load_average()
    say(f"machine: {machine}; load average {load_before}")
    started = time.perf_counter()
    bench = asyncio.run(run_all(args))
    text, md = render(bench, machine, revision, load_before, time.perf_counter() - started)
    print(text)
    out = cache_dir() / ("last-results-quick.md" if args.quick else "last-results.md")
    out.write_text(md)
    say(f"markdown: {out.relative_to(ROOT)}")
    if args.write_docs:
        write_docs(md, "quick" if args.quick else "full")
        say(f"updated {DOCS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
