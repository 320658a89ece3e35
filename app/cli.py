"""``vectoros``: the command line. It only wires settings, logging and services together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from app.commands.common import (
    describe_error,
    load_settings,
    one_line,
    parse_duration,
    run_async,
)
from consumer.monitor.settings import MonitorSettings
from producer.simulate import SimulatorSettings
from producer.ticker import TickerSettings
from vectoros.errors import VectorOSError
from vectoros.logs import configure_logging
from vectoros.settings import CommonSettings, KafkaSettings

logger = logging.getLogger("vectoros")


def _debug_requested(argv: Sequence[str]) -> bool:
    """--debug, --log-level debug or VECTOROS_LOG_LEVEL=debug: tracebacks are wanted."""
    if "--debug" in argv or os.environ.get("VECTOROS_LOG_LEVEL", "").strip().upper() == "DEBUG":
        return True
    for i, arg in enumerate(argv):
        if arg.lower() == "--log-level=debug":
            return True
        if arg == "--log-level" and i + 1 < len(argv) and argv[i + 1].upper() == "DEBUG":
            return True
    return False


class VectorOSGroup(click.Group):
    """The ``vectoros`` group: every error (bad setting or argument, rules file, unreachable
    broker or database, busy port) is one ``Error: ...`` line on stderr and a non-zero exit
    code; a traceback only with ``--debug`` (or ``VECTOROS_LOG_LEVEL=debug``)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        argv = list(sys.argv[1:] if args is None else args)
        try:
            result = super().main(argv, prog_name, complete_var, False, **extra)
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except click.ClickException as exc:
            message = one_line(exc.format_message())
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                message += f" (see '{exc.ctx.command_path} --help')"
            click.echo(f"Error: {message}", err=True)
            sys.exit(exc.exit_code or 1)
        except KeyboardInterrupt:
            sys.exit(130)
        except Exception as exc:
            if _debug_requested(argv):
                raise
            click.echo(f"Error: {describe_error(exc)}", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


def warn_unknown_variables() -> None:
    from app.settings_index import unknown_variables

    for name, closest in unknown_variables(os.environ):
        hint = f"; did you mean {closest}?" if closest else ""
        logger.warning("%s is not a VectorOS setting and is ignored%s", name, hint)


@click.group(cls=VectorOSGroup)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default=None,
    help="Log level (default: VECTOROS_LOG_LEVEL, else INFO).",
)
@click.option("--debug", is_flag=True, help="Debug logs, and a traceback with every error.")
@click.version_option(package_name="vectoros-monitor")
def main(log_level: str | None, debug: bool) -> None:
    """VectorOS Deal Monitor: deal events in, risk insights out."""
    level = "DEBUG" if debug else log_level or load_settings(CommonSettings).log_level
    configure_logging(level.upper())
    warn_unknown_variables()


@main.command()
def monitor() -> None:
    """Consume deal-events, keep per-deal state, publish insights (runs until SIGTERM)."""
    from consumer.monitor import Monitor
    from consumer.monitor.metrics import MonitorMetrics
    from consumer.thresholds import RulesConfig
    from vectoros.service import serve

    settings = load_settings(MonitorSettings)
    rules = RulesConfig.load(settings.rules_file)
    settings.bootstrap()

    async def body(registry: Any, health: Any, stop: asyncio.Event) -> None:
        async with contextlib.AsyncExitStack() as stack:
            learned = None
            if settings.database_url is not None and settings.learned_benchmarks:
                from consumer.learned_rules import learned_rules_from

                learned = await stack.enter_async_context(learned_rules_from(settings.dsn(), rules))
            metrics = MonitorMetrics(registry)
            await Monitor(settings, rules, metrics, health, learned=learned).run(stop)

    run_async(serve("monitor", settings, body))


@main.command()
@click.option("--interval", default=None, help="Time between ticks, e.g. 60s (default 60s).")
@click.option("--once", is_flag=True, help="Send one round of ticks and exit.")
def tick(interval: str | None, once: bool) -> None:
    """Send a tick to every partition of deal-events at a fixed interval."""
    from producer.publisher import DealEventPublisher
    from producer.ticker import TickerMetrics, run_ticker, tick_once
    from vectoros.kafka import start_producer
    from vectoros.service import serve

    seconds = parse_duration(interval) if interval else None
    settings = load_settings(TickerSettings, tick_interval_seconds=seconds)
    settings.bootstrap()

    async def body(registry: Any, health: Any, stop: asyncio.Event) -> None:
        producer = await start_producer(settings)
        try:
            publisher = DealEventPublisher(producer, settings.topic_events)
            if once:
                import datetime as dt

                sent = await tick_once(publisher, dt.datetime.now(dt.UTC))
                click.echo(f"sent {sent} ticks")
                return
            health.register("ticker", lambda: True)
            await run_ticker(
                publisher, settings.tick_interval_seconds, stop, TickerMetrics(registry)
            )
        finally:
            await producer.stop()

    if once:
        settings = load_settings(TickerSettings, metrics_enabled=False)
    run_async(serve("ticker", settings, body))


@main.command()
@click.option(
    "--deals", type=click.IntRange(min=1), default=None, help="Number of deals (default 200)."
)
@click.option(
    "--days", type=click.IntRange(min=1), default=None, help="Simulated days (default 90)."
)
@click.option(
    "--workspaces", type=click.IntRange(min=1), default=None, help="Workspaces (default 3)."
)
@click.option("--seed", type=int, default=None, help="Random seed (default 42).")
@click.option(
    "--speedup",
    type=click.FloatRange(min=0),
    default=None,
    help="Simulated seconds per second; 0 = max speed.",
)
@click.option(
    "--start",
    default=None,
    metavar="TIME",
    help="First simulated moment: RFC 3339 or an age like 30d (default: --days before now, "
    "so the simulation ends now and a wall-clock ticker continues it).",
)
def simulate(
    deals: int | None,
    days: int | None,
    workspaces: int | None,
    seed: int | None,
    speedup: float | None,
    start: str | None,
) -> None:
    """Publish a realistic, reproducible pipeline of deals (with ticks) to deal-events."""
    import datetime as dt

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from producer.publisher import DealEventPublisher
    from producer.simulate import SimProgress, run_simulation
    from producer.simulator import SimulationSpec, start_ending_at
    from vectoros.kafka import ensure_standard_topics, start_producer
    from vectoros.when import parse_when

    settings = load_settings(
        SimulatorSettings,
        sim_deals=deals,
        sim_days=days,
        sim_workspaces=workspaces,
        sim_seed=seed,
        sim_speedup=speedup,
    )
    settings.bootstrap()
    now = dt.datetime.now(dt.UTC)
    try:
        first = start_ending_at(now, settings.sim_days) if start is None else parse_when(start, now)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--start'") from None
    spec = SimulationSpec(
        deals=settings.sim_deals,
        days=settings.sim_days,
        workspaces=settings.sim_workspaces,
        seed=settings.sim_seed,
        start=first,
        tick_every=dt.timedelta(hours=settings.sim_tick_hours),
    )

    async def go() -> None:
        await ensure_standard_topics(settings)
        producer = await start_producer(settings)
        try:
            publisher = DealEventPublisher(producer, settings.topic_events)
            with Progress(
                TextColumn("[bold]Simulating"),
                BarColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            ) as progress:
                task = progress.add_task("sim", total=spec.days, detail="")

                def show(p: SimProgress) -> None:
                    day = 0.0 if p.sim_time is None else (p.sim_time - spec.start).days
                    progress.update(
                        task, completed=day, detail=f"{p.events:,} events, {len(p.deals):,} deals"
                    )

                done = await run_simulation(
                    spec, publisher, speedup=settings.sim_speedup, on_progress=show
                )
        finally:
            await producer.stop()
        click.echo(
            f"published {done.events} events for {len(done.deals)} deals and "
            f"{done.ticks} tick rounds: {dict(sorted(done.by_type.items()))}"
        )
        click.echo(f"simulated {spec.start.isoformat()} to {spec.end.isoformat()}")

    run_async(go())


@main.command()
@click.argument("source", type=click.File("rb"), metavar="FILE|-")
def send(source: Any) -> None:
    """Publish deal events from JSON (an object, an array or JSON lines; - is stdin).

    Every event is validated against the contract first: if any is invalid, each bad one is
    named and nothing is published. Events are keyed by deal_id; ticks are refused.
    """
    from producer.send import parse_events, send_events
    from vectoros.kafka import ensure_standard_topics, start_producer

    settings = load_settings(MonitorSettings, metrics_enabled=False)  # the monitor's limits
    parsed = parse_events(source.read(), max_bytes=settings.max_event_bytes)
    if parsed.errors:
        for error in parsed.errors:
            click.echo(error, err=True)
        raise click.ClickException(f"{len(parsed.errors)} invalid event(s); nothing was published")

    async def go() -> None:
        await ensure_standard_topics(settings)
        producer = await start_producer(settings)
        try:
            sent = await send_events(producer, settings.topic_events, parsed.events)
        finally:
            await producer.stop()
        for item in sent:
            e = item.event
            click.echo(
                f"sent {e.type} deal {e.deal_id} (workspace {e.workspace_id}, event {e.event_id})"
                f" to {settings.topic_events} partition {item.partition} offset {item.offset}"
            )
        click.echo(f"{len(sent)} event(s) published")

    run_async(go())


@main.command()
def sink() -> None:
    """Write deal-insights into PostgreSQL (insights + insight_events), idempotently."""
    from consumer.sink.service import run_sink
    from consumer.sink.settings import SinkSettings
    from vectoros.service import serve

    settings = load_settings(SinkSettings)
    settings.bootstrap()
    settings.dsn()

    async def body(registry: Any, health: Any, stop: asyncio.Event) -> None:
        await run_sink(settings, registry, health, stop)

    run_async(serve("sink", settings, body))


@main.command()
def notify() -> None:
    """Deliver insights at or above a priority to Slack, signed webhooks and the console."""
    from consumer.notifier.service import run_notifier
    from consumer.notifier.settings import NotifierSettings
    from vectoros.service import serve

    settings = load_settings(NotifierSettings)
    settings.bootstrap()
    settings.dsn()

    async def body(registry: Any, health: Any, stop: asyncio.Event) -> None:
        await run_notifier(settings, registry, health, stop)

    run_async(serve("notifier", settings, body))


@main.command()
def enrich() -> None:
    """Claude rewrites raised/escalated insights (off without ANTHROPIC_API_KEY)."""
    from consumer.enricher.service import run_enricher
    from consumer.enricher.settings import EnricherSettings
    from vectoros.service import serve

    settings = load_settings(EnricherSettings)
    if settings.enrich_enabled:
        settings.bootstrap()
        settings.dsn()

    async def body(registry: Any, health: Any, stop: asyncio.Event) -> None:
        await run_enricher(settings, registry, health, stop)

    run_async(serve("enricher", settings, body))


@main.command()
@click.option("--host", default=None, help="Address of the webhook endpoints (default 127.0.0.1).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port of the webhook endpoints (default 8088).",
)
def gateway(host: str | None, port: int | None) -> None:
    """Receive CRM webhooks (HubSpot, Pipedrive, Salesforce CDC, Twenty), publish deal events."""
    from producer.gateway.service import check_config, run_gateway
    from producer.gateway.settings import GatewaySettings
    from vectoros.service import serve

    settings = load_settings(GatewaySettings, gateway_host=host, gateway_port=port)
    try:
        check_config(settings)  # no source, bad stages file, no broker configured: fail now
    except VectorOSError as exc:
        raise click.ClickException(str(exc)) from None

    async def body(registry: Any, health: Any, stop: asyncio.Event) -> None:
        await run_gateway(settings, registry, health, stop)

    run_async(serve("gateway", settings, body))


@main.group()
def db() -> None:
    """The PostgreSQL schema."""


@db.command("migrate")
def db_migrate() -> None:
    """Apply pending migrations (the sink and notifier also do this at start)."""
    from vectoros.db import connect_pool, migrate
    from vectoros.settings import DatabaseSettings

    dsn = load_settings(DatabaseSettings).dsn()

    async def go() -> list[str]:
        pool = await connect_pool(dsn)
        try:
            return await migrate(pool)
        finally:
            await pool.close()

    applied = run_async(go())
    click.echo("applied: " + ", ".join(applied) if applied else "schema is up to date")


@main.command("run")
@click.option("--no-ticker", is_flag=True, help="Do not run the wall-clock ticker.")
def run_cmd(no_ticker: bool) -> None:
    """Monitor, ticker, sink and notifier in one process (embedded broker/DB when unset)."""
    from app.pipeline import Pipeline, RunSettings, ready_banner, run_pipeline
    from vectoros.service import serve

    settings = load_settings(RunSettings, run_ticker=False if no_ticker else None)

    async def body(registry: Any, health: Any, stop: asyncio.Event) -> None:
        def announce(pipeline: Pipeline) -> None:
            import vectoros.service

            # the bound port (a free one when the default was busy), where the server says it
            current = getattr(vectoros.service, "current_ops_server", None)
            ops = current() if current is not None else None
            port = settings.metrics_port
            url = None
            if ops is not None:
                url = f"{ops.url}/metrics"
            elif settings.metrics_enabled and port:
                url = f"http://{settings.metrics_host}:{port}/metrics"
            elif settings.metrics_enabled:
                url = "a free port (VECTOROS_METRICS_PORT=0), named in the log above"
            click.echo(ready_banner(pipeline, url))

        await run_pipeline(settings, registry, health, stop, on_ready=announce)

    run_async(serve("run", settings, body))


@main.command()
@click.option("--deals", type=click.IntRange(min=1), default=300, show_default=True)
@click.option("--days", type=click.IntRange(min=1), default=90, show_default=True)
@click.option("--workspaces", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option(
    "--seconds",
    type=click.FloatRange(min=0),
    default=20.0,
    show_default=True,
    help="Wall time to play the simulated days in (0 = as fast as possible).",
)
@click.option("--keep", is_flag=True, help="Then keep it running with the dashboard until Ctrl-C.")
def demo(deals: int, days: int, workspaces: int, seed: int, seconds: float, keep: bool) -> None:
    """The whole pipeline on the embedded broker and PostgreSQL, driven by the simulator."""
    import datetime as dt

    from rich.console import Console

    from app.demo import print_report, run_demo
    from app.pipeline import RunSettings
    from producer.simulator import SimulationSpec, start_ending_at

    # The demo's clock is the simulation's: the wall-clock ticker would jump it to today.
    settings = load_settings(
        RunSettings,
        kafka_bootstrap_servers="",
        run_ticker=False,
        run_notifier=False,
        run_enricher=False,  # a key in the environment must not make paid calls in a demo
        log_level="WARNING",
    ).model_copy(update={"database_url": None})
    configure_logging("WARNING")
    spec = SimulationSpec(
        deals=deals,
        days=days,
        workspaces=workspaces,
        seed=seed,
        start=start_ending_at(dt.datetime.now(dt.UTC), days),
        tick_every=dt.timedelta(hours=6),
    )
    console = Console()
    if not console.is_terminal:
        console = Console(width=140)
    console.print(
        f"[bold]VectorOS demo[/]: {deals} deals over {days} simulated days in {workspaces} "
        "workspaces, on an embedded Kafka-protocol broker (Tansu) and embedded PostgreSQL."
    )
    result = run_async(run_demo(spec, settings, console, seconds=seconds, keep=keep))
    if not keep:  # --keep printed it before it waited
        print_report(result, console)


@main.group()
def topics() -> None:
    """Manage the Kafka topics."""


@topics.command("create")
@click.option(
    "--partitions",
    type=click.IntRange(1, 10_000),
    default=None,
    help="Partitions per topic (default 6).",
)
def topics_create(partitions: int | None) -> None:
    """Create deal-events, deal-insights, deal-events-dlq and deal-monitor-state if missing.

    An existing topic with another partition count is an error (exit 1): the count cannot be
    changed in place without moving deals to other partitions.
    """
    from vectoros.kafka import (
        PARTITIONS_MOVE_KEYS,
        compacted_topics,
        ensure_standard_topics,
        standard_topic_partitions,
        standard_topics,
    )

    settings = load_settings(KafkaSettings, topic_partitions=partitions, metrics_enabled=False)
    wanted, compacted = standard_topics(settings), compacted_topics(settings)

    async def go() -> dict[str, int | None]:
        before = await standard_topic_partitions(settings)
        if all(count in (None, wanted[name]) for name, count in before.items()):
            await ensure_standard_topics(settings)
        return before

    before = run_async(go())
    mismatched = []
    for name, count in wanted.items():
        kind = " (compacted)" if name in compacted else ""
        have = before[name]
        if have is None:
            state = "created"
        elif have == count:
            state = "exists"
        else:
            mismatched.append(name)
            click.echo(f"{name}: exists with {have} partitions{kind}, {count} requested")
            continue
        click.echo(f"{name}: {count} partitions{kind}, {state}")
    if mismatched:
        raise click.ClickException(
            f"{', '.join(mismatched)} "
            + ("has" if len(mismatched) == 1 else "have")
            + f" another partition count than {settings.topic_partitions}; nothing was created. "
            + PARTITIONS_MOVE_KEYS
        )


@main.group()
def schemas() -> None:
    """The event contracts."""


@schemas.command("export")
@click.option("--check", is_flag=True, help="Only report files that differ; exit 1 if any.")
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Directory (default: the schemas package).",
)
def schemas_export(check: bool, out: Path | None) -> None:
    """Write schemas/json/*.schema.json and schemas/asyncapi.yaml from the models."""
    import schemas as schemas_pkg
    from schemas.export import diff, write_all

    root = out or Path(schemas_pkg.__file__).parent
    if check:
        stale = diff(root)
        for path in stale:
            click.echo(f"differs: {path}")
        if stale:
            raise SystemExit(1)
        click.echo("schemas are up to date")
        return
    for written in write_all(root):
        click.echo(f"wrote {written}")


@main.group()
def state() -> None:
    """Inspect and repair the monitor's durable state (the deal-monitor-state changelog)."""


@state.command("reset-clock")
@click.option(
    "--partition", type=click.IntRange(min=0), required=True, help="Partition of deal-events."
)
@click.option(
    "--to", "to", required=True, help="The new clock, RFC 3339 (e.g. 2026-11-30T12:00:00Z)."
)
@click.option("--force", is_flag=True, help="Even while the monitor's consumer group has members.")
def state_reset_clock(partition: int, to: str, force: bool) -> None:
    """Move a partition clock back (after a bad timestamp advanced it), through the changelog.

    Stop every monitor first: the next one to restore the partition takes the new clock, and
    every deal of the partition is evaluated again at its next tick."""
    import datetime as dt

    from consumer.clock_reset import describe, reset_clock

    try:
        at = dt.datetime.fromisoformat(to.strip().replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{to!r} is not an RFC 3339 time like 2026-11-30T12:00:00Z", param_hint="--to"
        ) from None
    if at.tzinfo is None:
        raise click.BadParameter(
            f"{to!r} has no offset; add Z or +HH:MM (e.g. 2026-11-30T12:00:00Z)",
            param_hint="--to",
        )
    settings = load_settings(MonitorSettings, metrics_enabled=False)
    settings.bootstrap()
    plan = run_async(reset_clock(settings, partition, at, force=force))
    click.echo(describe(plan, settings.topic_state))


from app.commands.api import api  # noqa: E402
from app.commands.capture import capture  # noqa: E402
from app.commands.forecast import forecast  # noqa: E402
from app.commands.insights import insights, report  # noqa: E402
from app.commands.learning import evaluate, history, train  # noqa: E402
from app.commands.tokens import tokens  # noqa: E402

for _command in (insights, capture, history, train, evaluate, report, forecast, api, tokens):
    main.add_command(_command)
