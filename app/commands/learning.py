"""`vectoros history`, `vectoros train` and `vectoros evaluate`: learning from history."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from app.commands.common import (
    load_settings,
    run_async,
    with_pool,
)
from vectoros.errors import ConfigError


@click.group(invoke_without_command=True)
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
            with_pool(dsn, lambda pool: import_csv(pool, file, mapping, workspace, progress))
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

    rows = run_async(with_pool(dsn, work))
    if not rows:
        click.echo("no benchmarks yet (no deal has left a stage; try --refresh)")
        return
    click.echo(f"{'workspace':<20} {'stage':<12} {'deals':>6} {'P50':>7} {'P75':>7} {'P90':>7}")
    for r in rows:
        click.echo(
            f"{r['workspace_id']:<20} {r['stage']:<12} {r['samples']:>6} "
            f"{r['p50_days']:>7.1f} {r['p75_days']:>7.1f} {r['p90_days']:>7.1f}"
        )


@click.command()
@click.option(
    "--holdout-days",
    type=click.FloatRange(min=1),
    default=90,
    show_default=True,
    help="The held-out period at the end of the history the model is judged on.",
)
@click.option(
    "--min-closed",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="A workspace with this many closed deals also gets a model of its own.",
)
def train(holdout_days: float, min_closed: int) -> None:
    """Train the win-probability model on the deal history in PostgreSQL (every workspace
    pooled, the workspace a feature), and one per workspace with at least --min-closed closed
    deals (its deals are then scored with its own); store each version with its held-out
    metrics; make it the current one only if it beats the current one of its scope on the same
    held-out period."""
    from consumer.history.train import train_all
    from consumer.intelligence.evaluation import NotEnoughHistory
    from vectoros.settings import DatabaseSettings

    dsn = load_settings(DatabaseSettings).dsn()
    try:
        results = run_async(
            with_pool(
                dsn,
                lambda pool: train_all(pool, holdout_days=holdout_days, min_closed=min_closed),
            )
        )
    except NotEnoughHistory as exc:
        raise ConfigError(f"not enough history to train on: {exc}") from None
    for result in results:
        m = result.scores
        scope = "" if result.scope == "pooled" else f" ({result.scope})"
        click.echo(
            f"model version {result.version}{scope}: held-out AUC {m.auc:.3f}, Brier "
            f"{m.brier:.4f}, log loss {m.log_loss:.4f}, ECE {m.ece:.3f} on {m.n} snapshots"
        )
        ev = result.evaluation
        if ev.interval_coverage is not None:
            click.echo(
                f"close date: P10-P90 interval holds {ev.interval_coverage:.1%} of the held-out "
                "close dates (scores carry the P10)"
            )
        if result.current is not None:
            c = result.current
            click.echo(
                f"current version {result.current_version} on the same period: AUC "
                f"{c.auc:.3f}, Brier {c.brier:.4f}"
            )
        click.echo("promoted: it is now the current model" if result.promoted else "not promoted")


@click.command()
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
        histories = run_async(with_pool(dsn, lambda pool: load_histories(pool, workspace)))
    try:
        result = run_evaluate(histories, holdout_days)
    except NotEnoughHistory as exc:
        raise ConfigError(f"not enough history to evaluate: {exc}") from None
    click.echo(table(result))
    reliability_png(result, png)
    click.echo(f"reliability diagram: {png}")
