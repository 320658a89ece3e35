"""``vectoros``: the command line. It only wires settings, logging and services together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from consumer.monitor.settings import MonitorSettings
from producer.simulate import SimulatorSettings
from producer.ticker import TickerSettings
from schemas.insights import RuleName
from vectoros.errors import ConfigError, VectorOSError
from vectoros.logs import configure_logging
from vectoros.settings import CommonSettings, KafkaSettings

logger = logging.getLogger("vectoros")

S = TypeVar("S", bound=BaseSettings)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """'60s', '5m', '1h', '250ms' or a plain number of seconds."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise click.BadParameter(f"{text!r} is not a positive duration like 60s, 5m or 1h")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def describe_settings_error(exc: ValidationError) -> str:
    """One sentence naming the ``VECTOROS_*`` variables at fault (never their values)."""
    parts = []
    for err in exc.errors(include_url=False):
        message = str(err["msg"]).removeprefix("Value error, ")
        loc = err["loc"]
        if not loc:  # a check across fields: its message names the variables
            parts.append(message)
            continue
        name = str(loc[0])
        variable = name if name.isupper() else f"VECTOROS_{name.upper()}"
        variable += "".join(f"[{part}]" for part in loc[1:])
        parts.append(f"{variable}: {message}")
    return "invalid settings: " + "; ".join(parts)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Settings from the environment plus CLI overrides; invalid ones raise ``ConfigError``."""
    try:
        return cls(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(describe_settings_error(exc)) from exc


T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine; errors reach ``VectorOSGroup``, which reports them in one line."""
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:  # pragma: no cover - signals are handled inside services
        sys.exit(130)


def one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip()) or "(no detail)"


def describe_error(exc: BaseException) -> str:
    """What the person at the terminal needs: what is wrong and where, in one line."""
    if isinstance(exc, VectorOSError):
        return one_line(str(exc))
    if isinstance(exc, ValidationError):
        return one_line(describe_settings_error(exc))
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return one_line(f"{exc.strerror}{where}")
    return one_line(f"{type(exc).__name__}: {exc} (unexpected; run with --debug for the traceback)")


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
def demo(deals: int, days: int, workspaces: int, seed: int, seconds: float) -> None:
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
    result = run_async(run_demo(spec, settings, console, seconds=seconds))
    print_report(result, console)


@main.group()
def insights() -> None:
    """Read insights from PostgreSQL."""


@insights.command("list")
@click.option("--workspace", default=None, help="Only this workspace id.")
@click.option(
    "--priority",
    type=click.Choice(["low", "medium", "high", "critical"]),
    default=None,
    help="This priority and above.",
)
@click.option("--rule", type=click.Choice([r.value for r in RuleName]), default=None)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
@click.option("--deal", default=None, help="Only this deal id.")
@click.option("--owner", default=None, help="Only deals of this owner (id, or name in any case).")
@click.option(
    "--status",
    type=click.Choice(["open", "resolved", "all"]),
    default="open",
    show_default=True,
)
@click.option(
    "--since",
    default=None,
    metavar="TIME",
    help="Raised, escalated or resolved at or after TIME: RFC 3339 or an age like 7d, 12h.",
)
def insights_list(
    workspace: str | None,
    priority: str | None,
    rule: str | None,
    deal: str | None,
    owner: str | None,
    status: str,
    since: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Insights (open by default), most urgent and most valuable first."""
    import datetime as dt

    import orjson
    from rich.console import Console

    from app.listing import insights_table, print_table
    from consumer.sink.queries import InsightPage, list_insights
    from vectoros.db import connect_pool
    from vectoros.settings import DatabaseSettings
    from vectoros.when import parse_when

    now = dt.datetime.now(dt.UTC)
    try:
        since_at = None if since is None else parse_when(since, now)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--since'") from None
    dsn = load_settings(DatabaseSettings).dsn()

    async def go() -> InsightPage:
        pool = await connect_pool(dsn)
        try:
            return await list_insights(
                pool,
                status=status,
                workspace=workspace,
                priority=priority,
                rule=rule,
                deal=deal,
                owner=owner,
                since=since_at,
                limit=limit,
            )
        finally:
            await pool.close()

    page = run_async(go())
    if as_json:
        click.echo(orjson.dumps(page.rows, option=orjson.OPT_INDENT_2).decode())
        return
    console = Console()
    print_table(console, insights_table(page.rows, page.total, status, now, console.width))


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


@main.command()
@click.option("--host", default=None, help="Address of the capture endpoints (default 127.0.0.1).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port of the capture endpoints (default 8089).",
)
def capture(host: str | None, port: int | None) -> None:
    """Capture emails and meetings (signed JSON webhook), match them to deals, publish them."""
    from producer.capture.service import check_config, run_capture
    from producer.capture.settings import CaptureSettings
    from vectoros.service import serve

    settings = load_settings(CaptureSettings, capture_host=host, capture_port=port)
    try:
        check_config(settings)
    except (VectorOSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None

    async def body(registry: Any, health: Any, stop: asyncio.Event) -> None:
        await run_capture(settings, registry, health, stop)

    run_async(serve("capture", settings, body))


# --- deal history and the learned models (issue 14) ----------------------------------------------


@main.group(invoke_without_command=True)
@click.pass_context
def history(ctx: click.Context) -> None:
    """Keep every deal's history in PostgreSQL from deal-events (idempotent; replays change
    nothing). Subcommands: import a CRM export, show the learned stage benchmarks."""
    if ctx.invoked_subcommand is not None:
        return
    from consumer.history.service import run_history
    from consumer.history.settings import HistorySettings
    from vectoros.service import serve

    settings = load_settings(HistorySettings)
    settings.bootstrap()
    settings.dsn()

    async def body(registry: Any, health: Any, stop: asyncio.Event) -> None:
        await run_history(settings, registry, health, stop)

    run_async(serve("history", settings, body))


async def _with_pool(dsn: str, work: Any) -> Any:
    from vectoros.db import connect_pool, migrate

    pool = await connect_pool(dsn)
    try:
        await migrate(pool)
        return await work(pool)
    finally:
        await pool.close()


@history.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--mapping",
    "mapping_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The export's mapping (YAML; HubSpot, Pipedrive, Salesforce in docs/mappings/).",
)
@click.option("--workspace", default=None, help="Workspace id (default: the mapping's).")
def history_import(file: Path, mapping_path: Path, workspace: str | None) -> None:
    """Load a CRM export of past deals (CSV) into the history, in one transaction.

    Rows that cannot be read are reported by line and skipped; the rest is imported, or nothing
    is (a failure while writing rolls everything back)."""
    from rich.console import Console
    from rich.progress import Progress as Bar

    from consumer.history.importer import import_csv, read_mapping
    from vectoros.settings import DatabaseSettings

    mapping = read_mapping(mapping_path)
    dsn = load_settings(DatabaseSettings).dsn()
    console = Console(stderr=True)
    with Bar(console=console, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                label = "reading rows" if phase == "read" else "writing deals"
                tasks[phase] = bar.add_task(label, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        report = run_async(
            _with_pool(dsn, lambda pool: import_csv(pool, file, mapping, workspace, progress))
        )
    for error in report.errors[:50]:
        click.echo(f"{file}: {error}", err=True)
    if len(report.errors) > 50:
        click.echo(f"... and {len(report.errors) - 50} more bad rows", err=True)
    click.echo(
        f"imported {report.imported} deal(s) from {report.rows} row(s); "
        f"{len(report.errors)} row(s) skipped"
    )


@history.command("benchmarks")
@click.option("--workspace", default=None, help="Only this workspace id.")
@click.option("--refresh", is_flag=True, help="Recompute them from the history first.")
def history_benchmarks(workspace: str | None, refresh: bool) -> None:
    """The learned stage benchmarks: days in stage (P50/P75/P90) of the deals that left it."""
    from consumer.history.store import load_benchmarks, refresh_benchmarks
    from vectoros.settings import DatabaseSettings

    dsn = load_settings(DatabaseSettings).dsn()

    async def work(pool: Any) -> Any:
        if refresh:
            await refresh_benchmarks(pool)
        return await load_benchmarks(pool, workspace)

    rows = run_async(_with_pool(dsn, work))
    if not rows:
        click.echo("no benchmarks yet (no deal has left a stage; try --refresh)")
        return
    click.echo(f"{'workspace':<20} {'stage':<12} {'deals':>6} {'P50':>7} {'P75':>7} {'P90':>7}")
    for r in rows:
        click.echo(
            f"{r['workspace_id']:<20} {r['stage']:<12} {r['samples']:>6} "
            f"{r['p50_days']:>7.1f} {r['p75_days']:>7.1f} {r['p90_days']:>7.1f}"
        )


@main.command()
@click.option(
    "--holdout-days",
    type=click.FloatRange(min=1),
    default=90,
    show_default=True,
    help="The held-out period at the end of the history the model is judged on.",
)
def train(holdout_days: float) -> None:
    """Train the win-probability model on the deal history in PostgreSQL (every workspace
    pooled, the workspace a feature); store the version with its held-out metrics; make it the
    current one only if it beats the current one on the same held-out period."""
    from consumer.history.train import train as run_train
    from consumer.intelligence.evaluation import NotEnoughHistory
    from vectoros.settings import DatabaseSettings

    dsn = load_settings(DatabaseSettings).dsn()
    try:
        result = run_async(_with_pool(dsn, lambda pool: run_train(pool, holdout_days=holdout_days)))
    except NotEnoughHistory as exc:
        raise ConfigError(f"not enough history to train on: {exc}") from None
    m = result.scores
    click.echo(
        f"model version {result.version}: held-out AUC {m.auc:.3f}, Brier {m.brier:.4f}, "
        f"log loss {m.log_loss:.4f}, ECE {m.ece:.3f} on {m.n} snapshots"
    )
    if result.current is not None:
        c = result.current
        click.echo(
            f"current version {result.current_version} on the same period: AUC {c.auc:.3f}, "
            f"Brier {c.brier:.4f}"
        )
    click.echo("promoted: it is now the current model" if result.promoted else "not promoted")


@main.command()
@click.option(
    "--simulated",
    type=click.IntRange(min=100),
    default=None,
    metavar="DEALS",
    help="Evaluate on a known-truth simulated history of DEALS deals instead of PostgreSQL's.",
)
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of --simulated.")
@click.option("--workspace", default=None, help="Only this workspace's history (PostgreSQL).")
@click.option(
    "--holdout-days",
    type=click.FloatRange(min=1),
    default=180,
    show_default=True,
    help="Train before the last N days of the history, report on them.",
)
@click.option(
    "--png",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("reliability.png"),
    show_default=True,
    help="Where to write the reliability diagram.",
)
def evaluate(
    simulated: int | None, seed: int, workspace: str | None, holdout_days: float, png: Path
) -> None:
    """Train on one period of history and report on the later one: AUC, Brier, log loss and
    calibration error of the model, the rep's probability and the stage win rate, the close-date
    interval's coverage, and a reliability diagram (PNG). Works on any history: imported,
    recorded by `vectoros history`, or simulated."""
    from consumer.history.report import reliability_png, table
    from consumer.intelligence.evaluation import NotEnoughHistory
    from consumer.intelligence.evaluation import evaluate as run_evaluate

    if simulated is not None:
        from consumer.intelligence.histgen import HistorySpec, generate_histories

        histories = generate_histories(HistorySpec(deals=simulated, seed=seed))
    else:
        from consumer.history.store import load_histories
        from vectoros.settings import DatabaseSettings

        dsn = load_settings(DatabaseSettings).dsn()
        histories = run_async(_with_pool(dsn, lambda pool: load_histories(pool, workspace)))
    try:
        result = run_evaluate(histories, holdout_days)
    except NotEnoughHistory as exc:
        raise ConfigError(f"not enough history to evaluate: {exc}") from None
    click.echo(table(result))
    reliability_png(result, png)
    click.echo(f"reliability diagram: {png}")


@insights.command("ack")
@click.argument("insight_id")
@click.option("--by", "actor", default=None, help="Who acknowledges (default: $USER).")
def insights_ack(insight_id: str, actor: str | None) -> None:
    """Acknowledge an insight: no more notifications about it except an escalation."""
    from consumer.notifier.acks import PgAcks

    async def go(acks: PgAcks, who: str) -> None:
        await acks.acknowledge(insight_id, who)

    _with_acks(go, actor)
    click.echo(f"acknowledged {insight_id}")


@insights.command("snooze")
@click.argument("insight_id")
@click.option(
    "--until",
    "until_text",
    default="1d",
    show_default=True,
    metavar="TIME",
    help="An RFC 3339 time, or a duration from now like 12h, 1d, 1w.",
)
@click.option("--by", "actor", default=None, help="Who snoozes (default: $USER).")
def insights_snooze(insight_id: str, until_text: str, actor: str | None) -> None:
    """Snooze an insight: no notifications about it until then, except an escalation."""
    import datetime as dt

    from consumer.notifier.acks import PgAcks
    from vectoros.when import parse_when

    now = dt.datetime.now(dt.UTC)
    try:
        parsed = parse_when(until_text, now)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--until'") from None
    until = parsed if parsed >= now else now + (now - parsed)  # a duration counts forward
    if until <= now:
        raise click.BadParameter("must be in the future", param_hint="'--until'")

    async def go(acks: PgAcks, who: str) -> None:
        await acks.snooze(insight_id, until, who)

    _with_acks(go, actor)
    click.echo(f"snoozed {insight_id} until {until.isoformat(timespec='seconds')}")


def _with_acks(action: Any, actor: str | None) -> None:
    """Run ``action(PgAcks, actor)`` on a migrated pool (``insight_acks`` may be new)."""
    import getpass

    from consumer.notifier.acks import PgAcks
    from vectoros.db import connect_pool, migrate
    from vectoros.settings import DatabaseSettings

    dsn = load_settings(DatabaseSettings).dsn()
    who = actor or getpass.getuser()

    async def go() -> None:
        pool = await connect_pool(dsn)
        try:
            await migrate(pool)
            await action(PgAcks(pool), who)
        finally:
            await pool.close()

    run_async(go())


@main.group()
def report() -> None:
    """Reports from PostgreSQL."""


@report.command("usefulness")
@click.option(
    "--since",
    default="30d",
    show_default=True,
    metavar="TIME",
    help="Notifications at or after TIME: RFC 3339 or an age like 7d, 12h.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
def report_usefulness(since: str, as_json: bool) -> None:
    """Per rule: insights notified, and the share acknowledged or snoozed."""
    import datetime as dt

    import orjson

    from consumer.notifier.usefulness import RuleUsefulness, usefulness
    from vectoros.db import connect_pool, migrate
    from vectoros.settings import DatabaseSettings
    from vectoros.when import parse_when

    try:
        since_at = parse_when(since, dt.datetime.now(dt.UTC))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--since'") from None
    dsn = load_settings(DatabaseSettings).dsn()

    async def go() -> list[RuleUsefulness]:
        pool = await connect_pool(dsn)
        try:
            await migrate(pool)
            return await usefulness(pool, since_at)
        finally:
            await pool.close()

    rows = run_async(go())
    if as_json:
        click.echo(orjson.dumps([r.to_json() for r in rows], option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"{'rule':<22} {'notified':>8} {'acknowledged':>14} {'snoozed':>9}")
    for r in rows:
        click.echo(
            f"{r.rule:<22} {r.notified:>8} {r.acknowledged:>6} ({r.acknowledged_share:>4.0%})"
            f" {r.snoozed:>3} ({r.snoozed_share:>3.0%})"
        )
    if not rows:
        click.echo(f"no notifications since {since_at.isoformat(timespec='seconds')}")


# --- revenue forecast (issue 15) ------------------------------------------------------------------


@main.group()
def forecast() -> None:
    """Revenue forecast: a Monte Carlo over the pipeline as known at a date (docs/forecast.md)."""


@forecast.command("run")
@click.option(
    "--as-of",
    "as_of",
    required=True,
    help="Use only what was known before this time: RFC 3339, or a date (its 00:00 UTC).",
)
@click.option("--period", required=True, help="The period forecast: 2026-Q1 or 2026-12.")
@click.option("--workspace", default=None, help="Only this workspace (default: each one).")
@click.option("--target", type=click.FloatRange(min=0), default=None, help="The period's target.")
@click.option("--simulations", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option("--seed", type=int, default=None, help="Random seed (repeatable results).")
@click.option(
    "--by",
    "by",
    type=click.Choice(["owner"]),
    default=None,
    help="Also one forecast per owner of each workspace.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
def forecast_run(
    as_of: str,
    period: str,
    workspace: str | None,
    target: float | None,
    simulations: int,
    seed: int | None,
    by: str | None,
    as_json: bool,
) -> None:
    """Forecast a period's revenue from the deal history as known at --as-of: P10/P50/P90,
    expected value, weighted pipeline, commit/best-case/pipeline roll-up, and with --target
    the gap and the probability of reaching it. Stored in the forecasts table."""
    import datetime as dt

    import orjson

    from consumer.forecast.pipeline import PeriodSpec
    from consumer.forecast.service import WorkspaceForecast, forecast_workspaces, store
    from consumer.history.store import load_histories
    from vectoros.settings import DatabaseSettings
    from vectoros.when import parse_when

    try:
        at = parse_when(as_of, dt.datetime.now(dt.UTC))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--as-of'") from None
    try:
        spec = PeriodSpec.parse(period)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--period'") from None
    if at >= spec.end:
        raise click.BadParameter(
            f"{at.isoformat()} is not before the end of {spec.name}", param_hint="'--as-of'"
        )
    dsn = load_settings(DatabaseSettings).dsn()

    async def go(pool: Any) -> list[WorkspaceForecast]:
        histories = await load_histories(pool, workspace)
        results = forecast_workspaces(
            histories,
            at,
            spec,
            workspace=workspace,
            target=target,
            simulations=simulations,
            seed=seed,
            by_owner=by == "owner",
        )
        await store(pool, results)
        return results

    results: list[WorkspaceForecast] = run_async(_with_pool(dsn, go))
    if as_json:
        click.echo(
            orjson.dumps([r.to_json() for r in results], option=orjson.OPT_INDENT_2).decode()
        )
        return
    _print_forecasts(results)


def _print_forecasts(results: Sequence[Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    def money(x: float | None) -> str:
        return "" if x is None else f"{x:,.0f}"

    def share(x: float | None) -> str:
        return "" if x is None else f"{x:.0%}"

    def ratio(x: float | None) -> str:
        return "" if x is None else f"{x:.2f}x"

    if not results:
        click.echo("no workspace has any deal history")
        return
    first = results[0]
    table = Table(title=f"Forecast of {first.period.name} as of {first.as_of.isoformat()}")
    for name in ("workspace", "open", "won", "P10", "P50", "P90", "expected", "weighted"):
        table.add_column(name, justify="left" if name == "workspace" else "right")
    for name in ("commit", "best case", "pipeline", "target", "gap", "P(target)", "coverage"):
        table.add_column(name, justify="right")
    for r in results:
        f = r.result
        table.add_row(
            r.workspace_id if r.scope == "workspace" else f"  {r.scope}",
            str(f.open_deals),
            money(f.won),
            money(f.p10),
            money(f.p50),
            money(f.p90),
            money(f.expected),
            money(f.weighted_pipeline),
            money(f.commit),
            money(f.best_case),
            money(f.pipeline),
            money(f.target),
            money(f.gap),
            share(f.p_reach),
            ratio(f.coverage),
        )
    Console(width=200).print(table)
