"""``vectoros demo``: the whole pipeline on the embedded broker and database, driven by the
simulator, with a live progress display and a cycle report read back from PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from app.pipeline import Pipeline, RunSettings, run_pipeline
from consumer.sink.queries import Summary, open_insights, summary
from producer.publisher import DealEventPublisher
from producer.simulate import SimProgress, run_simulation
from producer.simulator import SimulationSpec
from schemas.insights import WORKSPACE_RULES, Priority, RuleName
from vectoros.db import connect_pool
from vectoros.kafka import start_producer
from vectoros.ops_server import Health, OpsServer
from vectoros.service import start_ops_server

CATCH_UP_LIMIT = 300.0  # seconds: a safety bound so a broken pipeline cannot hang the demo


@dataclass
class DemoResult:
    published: SimProgress
    summary: Summary
    top_critical: list[dict[str, object]]
    seconds: float
    metrics_url: str | None


def _counter_total(registry: CollectorRegistry, name: str) -> float:
    total = 0.0
    for metric in registry.collect():
        if metric.name == name.removesuffix("_total"):
            total += sum(s.value for s in metric.samples if s.name == name)
    return total


async def run_demo(
    spec: SimulationSpec,
    settings: RunSettings,
    console: Console,
    *,
    seconds: float = 20.0,
    keep: bool = False,
) -> DemoResult:
    """Run the pipeline, play ``spec`` into it over about ``seconds`` (0 = as fast as possible),
    wait until monitor and sink have caught up, and read the report back from PostgreSQL.
    ``keep``: then print the report and the dashboard's links, and keep everything running
    until Ctrl-C (or SIGTERM)."""
    registry = CollectorRegistry()
    health = Health()
    stop = asyncio.Event()
    started = time.monotonic()
    ops: OpsServer | None = None
    metrics_url: str | None = None
    if settings.metrics_enabled:
        # port taken: any free port will do for a demo (start_ops_server says which)
        ops = await start_ops_server("demo", settings, registry, health, any_port_if_busy=True)
        metrics_url = f"{ops.url}/metrics"
    result: dict[str, object] = {}

    async def drive(pipeline: Pipeline) -> None:
        if metrics_url:
            console.print(f"Metrics while it runs: {metrics_url} (also /healthz, /readyz)")
        s = pipeline.settings
        producer = await start_producer(s)
        try:
            publisher = DealEventPublisher(producer, s.topic_events)
            with console.status("Starting the monitor and the sink (joining their groups)"):
                while not (pipeline.monitor.ready() and pipeline.sink is not None):  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
                # the API starts beside them: wait for its address a while, never block on it
                api_deadline = time.monotonic() + 30
                while s.run_api and pipeline.api_url is None:
                    if time.monotonic() > api_deadline:
                        break
                    await asyncio.sleep(0.1)
            if pipeline.api_url is not None:
                console.print(
                    f"Dashboard while it runs: {pipeline.api_url} (it asks for a token: "
                    "`vectoros tokens create --workspace <id>`; with --keep the demo prints "
                    "ready links and keeps running)",
                    soft_wrap=True,
                )
            speedup = spec.days * 86_400 / seconds if seconds > 0 else 0.0
            with Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                console=console,
            ) as progress:
                sim = progress.add_task("Simulating", total=spec.days, detail="")

                def show(p: SimProgress) -> None:
                    day = (
                        0.0
                        if p.sim_time is None
                        else (p.sim_time - spec.start) / dt.timedelta(days=1)
                    )
                    insights = _counter_total(registry, "vectoros_monitor_insights_total")
                    rows = _counter_total(registry, "vectoros_sink_rows_written_total")
                    progress.update(
                        sim,
                        completed=day,
                        detail=f"day {day:3.0f}: {p.events:,} events, {len(p.deals):,} deals, "
                        f"{insights:,.0f} insight events, {rows:,.0f} rows in PostgreSQL",
                    )

                published = await run_simulation(
                    spec, publisher, speedup=speedup, on_progress=show, stop=stop, progress_every=50
                )
                progress.update(sim, completed=spec.days)
                wait = progress.add_task("Monitor and sink catching up", total=None, detail="")
                deadline = time.monotonic() + CATCH_UP_LIMIT
                streak = 0
                while streak < 3:
                    if time.monotonic() > deadline:
                        raise TimeoutError("the pipeline did not catch up")
                    streak = streak + 1 if pipeline.caught_up() else 0
                    written = _counter_total(registry, "vectoros_sink_rows_written_total")
                    progress.update(wait, detail=f"{written:,.0f} rows written")
                    await asyncio.sleep(0.2)
                progress.update(wait, total=1, completed=1)
            pool = await connect_pool(s.dsn())
            try:
                result["summary"] = await summary(pool)
                result["top"] = await open_insights(pool, priority="critical", limit=10)
            finally:
                await pool.close()
            result["published"] = published
            if keep:
                report = DemoResult(
                    published,
                    result["summary"],  # type: ignore[arg-type]
                    result["top"],  # type: ignore[arg-type]
                    time.monotonic() - started,
                    metrics_url,
                )
                await keep_serving(pipeline, report, console, stop)
        finally:
            await producer.stop()
            stop.set()

    try:
        await run_pipeline(settings, registry, health, stop, on_started=drive)
    finally:
        if ops is not None:
            await ops.stop()
    return DemoResult(
        published=result["published"],  # type: ignore[arg-type]
        summary=result["summary"],  # type: ignore[arg-type]
        top_critical=result["top"],  # type: ignore[arg-type]
        seconds=time.monotonic() - started,
        metrics_url=metrics_url,
    )


async def keep_serving(
    pipeline: Pipeline, result: DemoResult, console: Console, stop: asyncio.Event
) -> None:
    """``demo --keep``: the report, a dashboard link with a fresh token per workspace (in the
    URL's fragment, which the browser does not send), then wait for Ctrl-C."""
    from consumer.api.tokens import PgTokens

    print_report(result, console)
    while pipeline.settings.run_api and pipeline.api_url is None:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    if pipeline.api_url is not None:
        pool = await connect_pool(pipeline.settings.dsn())
        try:
            tokens = PgTokens(pool)
            workspaces = sorted({ws for ws, _ in result.published.deals})
            links = [(ws, (await tokens.create(ws, "demo"))[1]) for ws in workspaces]
        finally:
            await pool.close()
        console.print("[bold]Dashboard[/] (one link per workspace; each carries its token):")
        for ws, token in links:
            console.print(f"  {ws}: {pipeline.api_url}#token={token}", soft_wrap=True)
    console.print("Everything keeps running; Ctrl-C stops it (the data goes with it).")
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def grid_rules(by_rule_priority: Mapping[tuple[str, str], int]) -> list[RuleName]:
    """The rows of the report's rules grid: every deal rule (the demo runs them all), and a
    workspace rule (``pipeline_gap``, raised by forecasts, which the demo does not run) only
    when it has insights."""
    with_rows = {rule for rule, _ in by_rule_priority}
    return [r for r in RuleName if r not in WORKSPACE_RULES or r.value in with_rows]


def print_report(result: DemoResult, console: Console) -> None:
    s = result.summary
    p = result.published
    console.rule("[bold]VectorOS Deal Monitor — cycle report")
    console.print(
        f"Workspaces: [bold]{len({ws for ws, _ in p.deals})}[/]   "
        f"Deals analysed: [bold]{len(p.deals):,}[/]   "
        f"Events: [bold]{p.events:,}[/] + {p.ticks:,} tick rounds   "
        f"Duration: [bold]{result.seconds:.1f} s[/]"
    )
    console.print(
        f"Insights: [bold]{s.insights:,}[/] on {s.deals:,} deals "
        f"({s.open_insights:,} still open)   "
        f"Insight events: " + ", ".join(f"{k} {v:,}" for k, v in sorted(s.by_lifecycle.items()))
    )
    console.print(f"Critical alerts open: [bold red]{s.critical_open:,}[/]")

    grid = Table(title="Insights by rule and priority", show_lines=False)
    grid.add_column("rule")
    priorities = [Priority.CRITICAL, Priority.HIGH, Priority.MEDIUM, Priority.LOW]
    for prio in priorities:
        grid.add_column(prio.value, justify="right")
    grid.add_column("total", justify="right")
    for rule in grid_rules(s.by_rule_priority):
        counts = [s.by_rule_priority.get((rule.value, prio.value), 0) for prio in priorities]
        grid.add_row(rule.value, *(f"{c:,}" if c else "·" for c in counts), f"{sum(counts):,}")
    console.print(grid)

    top = Table(title="Top open critical insights (read back from PostgreSQL)")
    top.add_column("deal", max_width=34)
    top.add_column("workspace")
    top.add_column("rule")
    top.add_column("value", justify="right")
    top.add_column("why", max_width=60)
    for row in result.top_critical:
        data = row["data"]
        assert isinstance(data, dict)
        value = data.get("deal_value")
        top.add_row(
            str(data.get("deal_title", row["deal_id"])),
            str(row["workspace_id"]),
            str(row["rule"]),
            "" if value is None else f"{value:,.0f} {data.get('currency') or ''}",
            str(row["description"]),
        )
    console.print(top)
    if result.metrics_url:
        console.print(
            f"Metrics were served at {result.metrics_url} (also /healthz, /readyz); "
            "`vectoros run` keeps them up."
        )
    console.print("`vectoros demo --keep` keeps it running with the dashboard (links printed).")
