"""`vectoros forecast`: revenue forecasts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import click

from app.commands.common import (
    load_settings,
    one_line,
    run_async,
    with_pool,
)


@click.group()
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
@click.option(
    "--targets",
    "targets_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="YAML targets per workspace, owner and period instead (docs/forecast.md).",
)
@click.option("--simulations", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option("--seed", type=int, default=None, help="Random seed (repeatable results).")
@click.option(
    "--by",
    "by",
    type=click.Choice(["owner"]),
    default=None,
    help="Also one forecast per owner of each workspace.",
)
@click.option(
    "--scenario",
    "scenario_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A what-if YAML file (docs/forecast.md): shown as the change from the baseline.",
)
@click.option(
    "--models/--rep-probabilities",
    "use_models",
    default=True,
    show_default=True,
    help="Win probabilities and close dates from models trained on what was known before "
    "--as-of (as the backtest does; the rep's when too little history), or the rep's.",
)
@click.option(
    "--new-pipeline/--no-new-pipeline",
    default=True,
    show_default=True,
    help="With model probabilities: add the pipeline still to be created before the period "
    "ends, at the historical rates (as the backtest does).",
)
@click.option(
    "--common-shock/--independent",
    default=True,
    show_default=True,
    help="With model probabilities: one shock of every win probability per simulation (as "
    "the backtest does), or the deals independent.",
)
@click.option(
    "--publish/--no-publish",
    default=True,
    show_default=True,
    help="Publish the results on deal-forecasts when VECTOROS_KAFKA_BOOTSTRAP_SERVERS is set.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
def forecast_run(
    as_of: str,
    period: str,
    workspace: str | None,
    target: float | None,
    targets_file: str | None,
    simulations: int,
    seed: int | None,
    by: str | None,
    scenario_file: str | None,
    use_models: bool,
    new_pipeline: bool,
    common_shock: bool,
    publish: bool,
    as_json: bool,
) -> None:
    """Forecast a period's revenue from the deal history as known at --as-of: P10/P50/P90,
    expected value, weighted pipeline, commit/best-case/pipeline roll-up, and with --target
    the gap, the probability of reaching it and the deals that close the gap most. With
    --scenario, the forecast under it as the change from the baseline. Stored in the
    forecasts table (the baseline only) and, with a broker configured, published on
    deal-forecasts."""
    import orjson

    from consumer.forecast.pipeline import PeriodSpec
    from consumer.forecast.scenario import Scenario
    from consumer.forecast.service import WorkspaceForecast, forecast_workspaces, store
    from consumer.forecast.service import publish as publish_forecasts
    from consumer.forecast.settings import ForecastSettings
    from consumer.forecast.targets import parse_targets
    from consumer.history.store import load_histories
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
    targets = None
    if targets_file is not None:
        if target is not None:
            raise click.BadParameter("--target or --targets, not both", param_hint="'--targets'")
        try:
            targets = parse_targets(Path(targets_file).read_text(encoding="utf-8"))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--targets'") from None
    scenario = None
    if scenario_file is not None:
        try:
            scenario = Scenario.from_yaml(Path(scenario_file).read_text(encoding="utf-8"))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--scenario'") from None
    settings = load_settings(ForecastSettings)
    dsn = settings.dsn()
    if publish and not settings.kafka_bootstrap_servers:
        click.echo(
            f"not published on {settings.topic_forecasts}: "
            "VECTOROS_KAFKA_BOOTSTRAP_SERVERS is not set",
            err=True,
        )
        publish = False

    async def go(pool: Any) -> list[WorkspaceForecast]:
        histories = await load_histories(pool, workspace)
        model = None
        if use_models:
            from consumer.forecast.backtest import train_at

            trained = train_at(histories, round(at.timestamp() * 1000))
            model = trained.predict
            if model is None:
                click.echo(
                    f"models: {trained.training_snapshots} training snapshots before "
                    f"{at.isoformat()}, too few: the rep's probabilities (no new pipeline, "
                    "no common shock)",
                    err=True,
                )
        try:
            results = forecast_workspaces(
                histories,
                at,
                spec,
                workspace=workspace,
                target=target,
                simulations=simulations,
                seed=seed,
                by_owner=by == "owner",
                scenario=scenario,
                targets=targets,
                model=model,
                # measured with the models only: the rep's probabilities are too high to add
                # the new pipeline to (docs/forecast.md, Backtest)
                new_pipeline=new_pipeline and model is not None,
                common_shock=common_shock and model is not None,
            )
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--scenario'") from None
        await store(pool, results)
        if publish:
            await publish_forecasts(settings, pool, results)
        return results

    results: list[WorkspaceForecast] = run_async(with_pool(dsn, go))
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
    console = Console(width=200)
    console.print(table)
    for r in results:
        if r.result.target is not None:
            _print_gap_closers(console, r, money, share)
        if r.scenario is not None:
            _print_scenario(console, r, money, share)


def _print_gap_closers(console: Any, r: Any, money: Any, share: Any) -> None:
    from rich.table import Table

    if not r.gap_closers:
        console.print(f"{r.workspace_id}: no open deal raises the probability of the target")
        return
    table = Table(
        title=f"What closes the gap in {r.workspace_id}: P(target) {share(r.result.p_reach)} now"
    )
    for name in ("deal", "value", "P(win)", "P(target) if won", "lift"):
        table.add_column(name, justify="left" if name == "deal" else "right")
    for g in r.gap_closers:
        table.add_row(
            g.deal_id,
            money(g.value),
            share(g.probability),
            share(g.p_reach_if_won),
            f"{100 * g.lift:+.1f} pts",
        )
    console.print(table)


def _print_scenario(console: Any, r: Any, money: Any, share: Any) -> None:
    from rich.table import Table

    sc = r.scenario
    title = f"Scenario {sc.name or ''} in {r.workspace_id}: " + ("; ".join(sc.changes) or "none")
    table = Table(title=title)
    table.add_column("")
    labels = ("P10", "P50", "P90", "expected", "weighted", "pipeline", "P(target)")
    for name in labels:
        table.add_column(name, justify="right")
    fields = ("p10", "p50", "p90", "expected", "weighted_pipeline", "pipeline", "p_reach")

    def row(f: Any) -> list[str]:
        return [money(getattr(f, n)) for n in fields[:-1]] + [share(f.p_reach)]

    table.add_row("baseline", *row(sc.baseline))
    table.add_row("scenario", *row(sc.result))
    change = sc.change()

    def signed(x: float | None) -> str:
        return "" if x is None else f"{x:+,.0f}"

    pts = change["p_reach"]
    table.add_row(
        "change",
        *[signed(change[n]) for n in fields[:-1]],
        "" if pts is None else f"{100 * pts:+.1f} pts",
    )
    console.print(table)


@forecast.command("backtest")
@click.option("--from", "start", required=True, help="First day (YYYY-MM-DD): periods from it.")
@click.option("--to", "end", required=True, help="Day after the last (YYYY-MM-DD).")
@click.option("--period", "kind", type=click.Choice(["quarter", "month"]), default="quarter")
@click.option("--workspace", default=None, help="Only this workspace's history (PostgreSQL).")
@click.option(
    "--simulated",
    type=click.IntRange(min=100),
    default=None,
    metavar="DEALS",
    help="Backtest a known-truth simulated history of DEALS deals instead of PostgreSQL's.",
)
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the run.")
@click.option(
    "--histories",
    "count",
    type=click.IntRange(1, 100),
    default=1,
    show_default=True,
    help="With --simulated: backtest this many simulated histories (seeds SEED, SEED+1, ...) "
    "and score their forecasts together, in parallel processes.",
)
@click.option(
    "--points",
    type=click.IntRange(1, 12),
    default=3,
    show_default=True,
    help="As-of dates per period, evenly spaced from its start.",
)
@click.option("--simulations", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option(
    "--models/--rep-probabilities",
    default=True,
    show_default=True,
    help="Train a model per as-of date (the rep's probabilities where there is too little "
    "history), or use the rep's probabilities throughout.",
)
@click.option(
    "--new-pipeline/--no-new-pipeline",
    default=True,
    show_default=True,
    help="Add the pipeline still to be created, at the historical rates.",
)
@click.option(
    "--common-shock/--independent",
    default=True,
    show_default=True,
    help="Draw one shock of every win probability per simulation, its spread the uncertainty "
    "of the historical win rate (the deals are not independent), or treat deals as independent.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Exit 1 unless the Monte Carlo meets the issue's targets: P50 abs error <= "
    "0.7x the weighted pipeline's, P10-P90 coverage 70-90%.",
)
@click.option("--json", "as_json", is_flag=True, help="Rows and scores as JSON.")
def forecast_backtest(
    start: str,
    end: str,
    kind: str,
    workspace: str | None,
    simulated: int | None,
    seed: int,
    count: int,
    points: int,
    simulations: int,
    models: bool,
    new_pipeline: bool,
    common_shock: bool,
    check: bool,
    as_json: bool,
) -> None:
    """Forecast each past period from several as-of dates, using only what was known then
    (models trained on the history up to each date), and compare with what was won: P50
    absolute and percentage error, pinball loss and P10-P90 coverage of the Monte Carlo, beside
    the weighted pipeline (rep probabilities) and the historical stage win rate."""
    import orjson

    try:
        first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--from' / '--to'") from None
    if last <= first:
        raise click.BadParameter("--to must be after --from", param_hint="'--to'")
    if count > 1 and simulated is None:
        raise click.BadParameter("needs --simulated", param_hint="'--histories'")
    from consumer.forecast.backtest import periods

    period_kind: Literal["quarter", "month"] = "quarter" if kind == "quarter" else "month"
    if not periods(first, last, period_kind):
        raise click.BadParameter(
            f"no whole {kind} between {first} and {last}", param_hint="'--from' / '--to'"
        )
    run = _BacktestRun(
        first, last, period_kind, workspace, simulated, points, simulations, models,
        new_pipeline, common_shock,
    )  # fmt: skip

    def progress(line: str) -> None:
        if not as_json:
            click.echo(line, err=True)

    if count > 1:
        result = _pooled_backtests(run, range(seed, seed + count), progress)
    elif simulated is not None:
        result = run(seed, progress)
    else:
        from consumer.history.store import load_histories
        from vectoros.settings import DatabaseSettings

        dsn = load_settings(DatabaseSettings).dsn()
        stored = run_async(with_pool(dsn, lambda pool: load_histories(pool, workspace)))
        result = run(seed, progress, stored)
    if not result.rows:  # there are periods (above), so there were no deals
        where = "" if workspace is None else f" of workspace {workspace!r}"
        raise click.BadParameter(f"no deal history{where}", param_hint="'--workspace'")
    if as_json:
        doc = {
            "rows": [r.to_json() for r in result.rows],
            "scores": [s.to_json() for s in result.scores],
            "models_trained": result.models_trained,
        }
        click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    else:
        _print_backtest(result, rows=count == 1)
    if check:
        failed = backtest_targets_missed(result)
        for line in failed:
            click.echo(f"target missed: {line}", err=True)
        if failed:
            raise SystemExit(1)
        click.echo("targets met", err=True)


@dataclass(frozen=True)
class _BacktestRun:
    """One backtest's options; called with a seed, it backtests that seed's simulated
    history (or ``stored``). Picklable, so that a process pool can run one per history."""

    first: dt.date
    last: dt.date
    kind: Literal["quarter", "month"]
    workspace: str | None
    simulated: int | None
    points: int
    simulations: int
    models: bool
    new_pipeline: bool
    common_shock: bool

    def __call__(
        self,
        seed: int,
        progress: Callable[[str], None] | None = None,
        stored: Sequence[Any] | None = None,
    ) -> Any:
        import numpy as np

        from consumer.forecast.backtest import backtest

        histories = stored
        if histories is None:
            from consumer.intelligence.histgen import HistorySpec, generate_histories

            histories = generate_histories(HistorySpec(deals=self.simulated or 0, seed=seed))
            if self.workspace is not None:
                histories = [h for h in histories if h.workspace_id == self.workspace]
        return backtest(
            histories,
            self.first,
            self.last,
            self.kind,
            np.random.default_rng(seed),
            points=self.points,
            simulations=self.simulations,
            use_models=self.models,
            new_pipeline=self.new_pipeline,
            common_shock=self.common_shock,
            progress=progress,
        )


def _pooled_backtests(run: _BacktestRun, seeds: range, progress: Callable[[str], None]) -> Any:
    """``run`` for each seed, one process per core, pooled; a line per history as it ends."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from consumer.forecast.backtest import Backtest, pooled

    results: dict[int, Backtest] = {}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    # spawned, not forked: a fork of a process with threads (OpenMP's, asyncio's) may deadlock
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(len(seeds), cores or 1), mp_context=spawn) as pool:
        futures = {pool.submit(run, seed): seed for seed in seeds}
        try:
            for future in as_completed(futures):
                seed = futures[future]
                try:
                    results[seed] = future.result()
                except Exception:
                    progress(f"history seed {seed} failed")
                    raise
                progress(
                    f"history {len(results)}/{len(seeds)} (seed {seed}): "
                    f"{backtest_ratio(results[seed]):.2f}x the weighted pipeline's P50 error"
                )
        except BaseException:  # a failure or Ctrl-C: the histories not started are not run
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return pooled(results)


def backtest_ratio(result: Any) -> float:
    """The Monte Carlo P50's mean absolute error over the weighted pipeline's."""
    scores = {s.method: s.mae for s in result.scores}
    weighted = scores["weighted_pipeline"]
    return scores["monte_carlo"] / weighted if weighted else float("inf")


def backtest_targets_missed(result: Any) -> list[str]:
    """The issue's accuracy targets the backtest's Monte Carlo misses (none: it meets them)."""
    from consumer.forecast.backtest import COVERAGE_TARGET, ERROR_RATIO_TARGET

    mc = next(s for s in result.scores if s.method == "monte_carlo")
    out = []
    ratio = backtest_ratio(result)
    if ratio > ERROR_RATIO_TARGET:
        out.append(
            f"P50 abs error {ratio:.2f}x the weighted pipeline's (target <= "
            f"{ERROR_RATIO_TARGET:.1f}x)"
        )
    low, high = COVERAGE_TARGET
    if mc.coverage is None or not low <= mc.coverage <= high:
        out.append(f"P10-P90 coverage {mc.coverage or 0:.0%} (target {low:.0%}-{high:.0%})")
    return out


def _print_backtest(result: Any, *, rows: bool = True) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    if not rows:
        console.print(backtest_summary(result))
        return
    table = Table(title="Backtest: each period from its as-of dates, against what was won")
    for name in ("period", "as of", "workspace", "probabilities", "open"):
        table.add_column(name)
    for name in ("actual", "P10", "P50", "P90", "weighted", "stage rate"):
        table.add_column(name, justify="right")
    for r in result.rows:
        table.add_row(
            r.period,
            r.as_of.date().isoformat(),
            r.workspace_id,
            r.probabilities,
            str(r.open_deals),
            *(f"{x:,.0f}" for x in (r.actual, r.p10, r.p50, r.p90)),
            f"{r.weighted_pipeline:,.0f}",
            f"{r.stage_win_rate:,.0f}",
        )
    console.print(table)
    console.print(backtest_summary(result))


def backtest_summary(result: Any) -> str:
    """The scores as a Markdown table (the README's)."""
    names = {
        "monte_carlo": "Monte Carlo P50",
        "weighted_pipeline": "weighted pipeline (rep)",
        "stage_win_rate": "stage win rate",
    }
    weighted = next(s.mae for s in result.scores if s.method == "weighted_pipeline")
    seeds = sorted({r.history for r in result.rows if r.history is not None})
    pooled = f" of {len(seeds)} histories (seeds {seeds[0]}-{seeds[-1]})" if seeds else ""
    lines = [
        f"{len(result.rows)} forecasts{pooled}, {result.models_trained} as-of dates with a model",
        "",
        "| method | abs error | % error | pinball loss | P10-P90 coverage | abs error / weighted |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in result.scores:
        lines.append(
            f"| {names[s.method]} | {s.mae:,.0f} | "
            f"{'' if s.mape is None else f'{s.mape:.1%}'} | {s.pinball:,.0f} | "
            f"{'' if s.coverage is None else f'{s.coverage:.0%}'} | "
            f"{s.mae / weighted:.2f}x |"
            if weighted
            else f"| {names[s.method]} | {s.mae:,.0f} | | {s.pinball:,.0f} | | |"
        )
    return "\n".join(lines)


@forecast.command("fan")
@click.option("--period", required=True, help="The period forecast: 2026-Q1 or 2026-12.")
@click.option("--from", "start", required=True, help="First as-of date (YYYY-MM-DD).")
@click.option("--to", "end", default=None, help="Last as-of date (default: the period's end).")
@click.option("--every", type=click.IntRange(min=1), default=7, show_default=True, help="Days.")
@click.option("--workspace", default=None, help="The workspace (needed when there are several).")
@click.option(
    "--simulated",
    type=click.IntRange(min=100),
    default=None,
    metavar="DEALS",
    help="A known-truth simulated history of DEALS deals instead of PostgreSQL's.",
)
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the run.")
@click.option("--target", type=click.FloatRange(min=0), default=None, help="Drawn as a line.")
@click.option("--simulations", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option("--models/--rep-probabilities", default=True, show_default=True)
@click.option("--new-pipeline/--no-new-pipeline", default=True, show_default=True)
@click.option(
    "--common-shock/--independent",
    default=True,
    show_default=True,
    help="One shock of every win probability per simulation, as the backtest draws it.",
)
@click.option(
    "--png",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("fan.png"),
    show_default=True,
    help="Where to write the chart.",
)
def forecast_fan(
    period: str,
    start: str,
    end: str | None,
    every: int,
    workspace: str | None,
    simulated: int | None,
    seed: int,
    target: float | None,
    simulations: int,
    models: bool,
    new_pipeline: bool,
    common_shock: bool,
    png: Path,
) -> None:
    """A fan chart (PNG) of one period's forecast as of every --every days from --from: the
    P10-P90 band and the P50, beside the weighted pipeline, with what was won (when the
    history covers the period's end) and --target. Each point is made as the backtest makes
    it: only what was known at its date."""
    import numpy as np

    from consumer.forecast.backtest import fan
    from consumer.forecast.chart import fan_png
    from consumer.forecast.pipeline import PeriodSpec

    try:
        spec = PeriodSpec.parse(period)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--period'") from None
    try:
        first = dt.datetime.fromisoformat(start).replace(tzinfo=dt.UTC)
        last = spec.end if end is None else dt.datetime.fromisoformat(end).replace(tzinfo=dt.UTC)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--from' / '--to'") from None
    dates = []
    at = first
    while at < min(last + dt.timedelta(seconds=1), spec.end):
        dates.append(at)
        at += dt.timedelta(days=every)
    if not dates:
        raise click.BadParameter(
            f"no as-of date before the end of {spec.name}", param_hint="'--from'"
        )
    if simulated is not None:
        from consumer.intelligence.histgen import HistorySpec, generate_histories

        histories = generate_histories(HistorySpec(deals=simulated, seed=seed))
    else:
        from consumer.history.store import load_histories
        from vectoros.settings import DatabaseSettings

        dsn = load_settings(DatabaseSettings).dsn()
        histories = run_async(with_pool(dsn, lambda pool: load_histories(pool, workspace)))
    workspaces = sorted({h.workspace_id for h in histories})
    if workspace is None:
        if len(workspaces) != 1:
            raise click.BadParameter(
                f"choose one of {', '.join(workspaces) or 'no workspace'}",
                param_hint="'--workspace'",
            )
        workspace = workspaces[0]
    rows = fan(
        histories,
        workspace,
        spec,
        dates,
        np.random.default_rng(seed),
        simulations=simulations,
        use_models=models,
        new_pipeline=new_pipeline,
        common_shock=common_shock,
        progress=lambda line: click.echo(line, err=True),
    )
    latest = max((h.updated_ms or 0 for h in histories), default=0)
    over = latest >= spec.end.timestamp() * 1000
    fan_png(rows, png, target=target, actual_label="actual (won in the period)" if over else None)
    click.echo(f"fan chart of {workspace} {spec.name}, {len(rows)} as-of dates: {png}")


@forecast.command("serve")
def forecast_serve() -> None:
    """The forecast service: each workspace's current quarter and month (VECTOROS_FORECAST_*),
    daily at its time and whenever the current model changes; stored in forecasts and, with a
    broker, published on deal-forecasts (and pipeline_gap on deal-insights)."""
    import asyncio

    from consumer.forecast.service import run_forecast_service
    from consumer.forecast.settings import ForecastSettings
    from consumer.forecast.targets import Targets, parse_targets
    from consumer.history.store import load_histories
    from vectoros.db import connect_pool, migrate
    from vectoros.errors import ConfigError
    from vectoros.service import serve

    settings = load_settings(ForecastSettings)
    settings.dsn()
    targets = Targets()
    if settings.forecast_targets_file is not None:
        try:
            targets = parse_targets(settings.forecast_targets_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"VECTOROS_FORECAST_TARGETS_FILE {settings.forecast_targets_file}: "
                f"{one_line(str(exc))}"
            ) from None

    async def body(registry: Any, health: Any, stop: asyncio.Event) -> None:
        pool = await connect_pool(settings.dsn())
        try:
            await migrate(pool)
            await run_forecast_service(
                settings, pool, load_histories, registry, health, stop, targets
            )
        finally:
            await pool.close()

    run_async(serve("forecast", settings, body))
