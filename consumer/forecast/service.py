"""``vectoros forecast run``: forecast a period from the history as known at an as-of time, per
workspace, and store each result in ``forecasts`` (an upsert: the same forecast again replaces
its row). Every statement is parameterised."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np
from prometheus_client import CollectorRegistry, Counter

from consumer.forecast import gap, schedule
from consumer.forecast import scenario as what_if
from consumer.forecast.backtest import close_at
from consumer.forecast.pipeline import (
    LOOKBACK_DAYS,
    PeriodSpec,
    Predict,
    PredictClose,
    creation_rates,
    pipeline_at,
)
from consumer.forecast.pipeline import new_pipeline as new_deals
from consumer.forecast.settings import ForecastSettings
from consumer.forecast.simulate import SIMULATIONS, Forecast, GapCloser, forecast, gap_closers
from consumer.forecast.targets import Targets
from consumer.intelligence.projection import DealHistory
from schemas.forecasts import DealForecast, ForecastGapCloser
from schemas.insights import InsightEvent, Priority
from vectoros.consume_loop import stopped_within
from vectoros.db import PgConnection, PgPool
from vectoros.kafka import ensure_topics, start_producer
from vectoros.metrics import PREFIX
from vectoros.ops_server import Health

logger = logging.getLogger(__name__)

WORKSPACE_SCOPE = "workspace"
OWNER_SCOPE = "owner:"
GAP_CLOSERS = 10
REP = "rep"
TRAINED = "model trained to as-of"
CHANGE_FIELDS = ("p10", "p50", "p90", "expected", "weighted_pipeline", "pipeline", "p_reach")

_UPSERT = """
INSERT INTO forecasts (workspace_id, scope, period, as_of, period_start, period_end,
                       simulations, seed, open_deals, won, p10, p50, p90, expected,
                       weighted_pipeline, commit, best_case, pipeline, target, coverage, gap,
                       p_reach_target, probabilities)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
        $20, $21, $22, $23)
ON CONFLICT (workspace_id, scope, period, as_of) DO UPDATE SET
    period_start = EXCLUDED.period_start, period_end = EXCLUDED.period_end,
    computed_at = now(), simulations = EXCLUDED.simulations, seed = EXCLUDED.seed,
    open_deals = EXCLUDED.open_deals, won = EXCLUDED.won, p10 = EXCLUDED.p10,
    p50 = EXCLUDED.p50, p90 = EXCLUDED.p90, expected = EXCLUDED.expected,
    weighted_pipeline = EXCLUDED.weighted_pipeline, commit = EXCLUDED.commit,
    best_case = EXCLUDED.best_case, pipeline = EXCLUDED.pipeline, target = EXCLUDED.target,
    coverage = EXCLUDED.coverage, gap = EXCLUDED.gap, p_reach_target = EXCLUDED.p_reach_target,
    probabilities = EXCLUDED.probabilities
"""

# Each deal's contribution to the latest workspace-level forecast of a period: the rows of a
# (workspace, period) are replaced by a forecast at least as recent as any stored for it, in the
# transaction of its forecasts row; the advisory lock orders concurrent runs of the same period.
_CONTRIB_LOCK = "SELECT pg_advisory_xact_lock(hashtext('forecast_contributions'), hashtext($1))"
_LATEST_AS_OF = """
SELECT max(as_of) FROM forecasts WHERE workspace_id = $1 AND scope = 'workspace' AND period = $2
"""
_CONTRIB_CLEAR = "DELETE FROM forecast_contributions WHERE workspace_id = $1 AND period = $2"
_CONTRIB_INSERT = """
INSERT INTO forecast_contributions (workspace_id, period, deal_id, as_of, p_land, expected)
SELECT $1, $2, c.deal_id, $3, c.p_land, c.expected
  FROM unnest($4::text[], $5::double precision[], $6::double precision[])
       AS c(deal_id, p_land, expected)
"""


@dataclass(frozen=True)
class ScenarioForecast:
    """The forecast under a scenario, beside the baseline it changes."""

    name: str | None
    changes: tuple[str, ...]
    result: Forecast
    baseline: Forecast

    def change(self) -> dict[str, float | None]:
        """Scenario - baseline of each headline number (None where either has none)."""
        out: dict[str, float | None] = {}
        for name in CHANGE_FIELDS:
            after, before = getattr(self.result, name), getattr(self.baseline, name)
            out[name] = None if after is None or before is None else after - before
        return out

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "changes": list(self.changes),
            "forecast": self.result.to_json(),
            "change": self.change(),
        }


@dataclass(frozen=True)
class WorkspaceForecast:
    workspace_id: str
    scope: str
    period: PeriodSpec
    as_of: dt.datetime
    seed: int | None
    result: Forecast
    gap_closers: tuple[GapCloser, ...] = ()
    """With a target: the open deals whose win in the period raises P(target) most."""
    scenario: ScenarioForecast | None = None
    probabilities: str = REP
    """Whose probabilities of winning: ``rep``, or ``model v<N>`` (the current model's scores
    of the open deals, where it has one; the rep's for the others)."""

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "workspace_id": self.workspace_id,
            "scope": self.scope,
            "period": self.period.name,
            "as_of": self.as_of.isoformat(),
            "seed": self.seed,
            "probabilities": self.probabilities,
            **self.result.to_json(),
        }
        if self.result.target is not None:
            out["gap_closers"] = [g.to_json() for g in self.gap_closers]
        if self.scenario is not None:
            out["scenario"] = self.scenario.to_json()
        return out


def forecast_workspaces(
    histories: Sequence[DealHistory],
    at: dt.datetime,
    period: PeriodSpec,
    *,
    workspace: str | None = None,
    target: float | None = None,
    simulations: int = SIMULATIONS,
    seed: int | None = None,
    by_owner: bool = False,
    scenario: what_if.Scenario | None = None,
    gap_top: int = GAP_CLOSERS,
    probabilities: Mapping[str, float] | None = None,
    probabilities_label: str = REP,
    targets: Targets | None = None,
    model: Predict | None = None,
    close: PredictClose | None = None,
    new_pipeline: bool = False,
    common_shock: bool = False,
    lookback_days: float = LOOKBACK_DAYS,
) -> list[WorkspaceForecast]:
    """One forecast per workspace of ``histories`` (only ``workspace`` when given, even if it
    has no deal), in workspace order; one random generator from ``seed`` for all of them. With
    ``by_owner``, each workspace's is followed by one per owner (scope ``owner:<id>``, the
    deal's current owner), in owner order. ``target`` is every workspace's; without it each
    workspace's and each owner's come from ``targets`` (none when it has none).

    With a ``target``, each workspace forecast lists its ``gap_top`` gap closers; with a
    ``scenario``, it carries the forecast under the scenario too. Both draw from copies of the
    generator as it was for the baseline (common random numbers), so their differences from the
    baseline come from what they change, not from other random draws. ``probabilities`` (deal
    id -> 0-1, the model's scores for a forecast as of now) replace the rep's for the deals they
    name; ``probabilities_label`` says so in each result. ``model`` (trained on what was known
    before ``at``, see ``backtest.train_at``) gives every open deal its win probability and
    close-date distribution instead; the label is then ``TRAINED``. ``close`` (a close-date
    model trained on what was known before ``at``, ``backtest.close_at``) gives every open
    deal its close-date distribution instead of the rep's close date, whoever's probability.

    ``new_pipeline``: each workspace forecast also draws the deals still to be created before
    the period ends, at the rates of the ``lookback_days`` before ``at``
    (``pipeline.new_pipeline``; not in the roll-up, the contributions or the gap closers'
    ranks; a scenario with its own ``new_pipeline`` replaces them). ``common_shock``: one
    shock of every win probability per simulation (``simulate.forecast``), its spread from the
    same window; owner forecasts draw the shock, not the new pipeline. The backtest measures
    both (docs/forecast.md)."""
    if at >= period.end:
        raise ValueError(f"the as-of time {at.isoformat()} is not before the end of {period.name}")
    by_workspace: dict[str, list[DealHistory]] = {}
    if workspace is not None:
        by_workspace[workspace] = []
    for h in histories:
        if workspace is None or h.workspace_id == workspace:
            by_workspace.setdefault(h.workspace_id, []).append(h)
    if scenario is not None and scenario.set:
        open_ids = {
            d for ws in by_workspace.values() for d in pipeline_at(ws, at, period).deals.ids
        }
        for s in scenario.set:
            if s.deal not in open_ids:
                raise ValueError(f"deal {s.deal!r} of the scenario is not open at the as-of time")
    rng = np.random.default_rng(seed)
    label = TRAINED if model is not None else probabilities_label if probabilities else REP
    out = []
    for ws in sorted(by_workspace):
        pipe = pipeline_at(by_workspace[ws], at, period, probabilities, model, close)
        rel = period.relative_to(at)
        ws_target = target
        if ws_target is None and targets is not None:
            ws_target = targets.of(ws, period.name)
        window = None
        if new_pipeline or common_shock:
            window = creation_rates(by_workspace[ws], at, lookback_days)
        new = new_deals(window, rel) if new_pipeline and window is not None else None
        shock_sd = window.shock_sd if common_shock and window is not None else 0.0
        start = copy.deepcopy(rng)
        result = forecast(
            pipe.deals,
            rel,
            rng,
            won=pipe.won,
            n=simulations,
            target=ws_target,
            shock_sd=shock_sd,
            new=new,
        )
        closers: tuple[GapCloser, ...] = ()
        if ws_target is not None:
            _, found = gap_closers(
                pipe.deals,
                rel,
                copy.deepcopy(start),
                target=ws_target,
                won=pipe.won,
                n=simulations,
                top=gap_top,
                new=new,
                shock_sd=shock_sd,
            )
            closers = tuple(found)
        under = None
        if scenario is not None:
            rates = None
            if scenario.new_pipeline is not None:
                lookback = scenario.new_pipeline.lookback_days
                rates = creation_rates(by_workspace[ws], at, lookback)
            changed = what_if.apply(scenario, pipe.deals, pipe.won, rel, rates, only_open=True)
            under = ScenarioForecast(
                scenario.name,
                changed.changes,
                forecast(
                    changed.deals,
                    rel,
                    copy.deepcopy(start),
                    won=changed.won,
                    n=simulations,
                    target=ws_target,
                    shock_sd=shock_sd,
                    new=new if scenario.new_pipeline is None else None,
                ),
                result,
            )
        out.append(
            WorkspaceForecast(ws, WORKSPACE_SCOPE, period, at, seed, result, closers, under, label)
        )
        if not by_owner:
            continue
        owners: dict[str, list[DealHistory]] = {}
        for h in by_workspace[ws]:
            owners.setdefault(h.owner_id or "", []).append(h)
        for owner in sorted(owners):
            pipe = pipeline_at(owners[owner], at, period, probabilities, model, close)
            if not len(pipe.deals) and not pipe.won_deals:
                continue  # nothing open or won in the period: no row
            owner_target = None if targets is None else targets.of(ws, period.name, owner)
            result = forecast(
                pipe.deals,
                period.relative_to(at),
                rng,
                won=pipe.won,
                n=simulations,
                target=owner_target,
                shock_sd=shock_sd,
            )
            out.append(
                WorkspaceForecast(
                    ws, OWNER_SCOPE + owner, period, at, seed, result, probabilities=label
                )
            )
    return out


async def store(db: PgPool | PgConnection, forecasts: Sequence[WorkspaceForecast]) -> None:
    """Upsert each forecast's row of ``forecasts`` and, for each workspace-level forecast that
    is the latest of its workspace and period (no stored one has a later as-of), replace the
    period's ``forecast_contributions`` with its deals' contributions; all in one
    transaction."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            await _store(conn, forecasts)
    else:
        await _store(db, forecasts)
    for f in forecasts:
        logger.info(
            "forecast %s %s as of %s: P50 %.0f (P10 %.0f, P90 %.0f), %d open deals",
            f.workspace_id,
            f.period.name,
            f.as_of.isoformat(),
            f.result.p50,
            f.result.p10,
            f.result.p90,
            f.result.open_deals,
        )


async def _store(conn: PgConnection, forecasts: Sequence[WorkspaceForecast]) -> None:
    workspace_level = [f for f in forecasts if f.scope == WORKSPACE_SCOPE]
    async with conn.transaction():
        for key in sorted({f"{f.workspace_id}/{f.period.name}" for f in workspace_level}):
            await conn.execute(_CONTRIB_LOCK, key)
        await _upsert(conn, forecasts)
        for f in workspace_level:
            latest = await conn.fetchval(_LATEST_AS_OF, f.workspace_id, f.period.name)
            if latest is not None and latest > f.as_of:
                continue  # an older as-of: the stored contributions stay
            contributions = f.result.contributions
            await conn.execute(_CONTRIB_CLEAR, f.workspace_id, f.period.name)
            await conn.execute(
                _CONTRIB_INSERT,
                f.workspace_id,
                f.period.name,
                f.as_of,
                [c.deal_id for c in contributions],
                [c.p_land for c in contributions],
                [c.expected for c in contributions],
            )


async def _upsert(conn: PgConnection, forecasts: Sequence[WorkspaceForecast]) -> None:
    await conn.executemany(
        _UPSERT,
        [
            (
                f.workspace_id,
                f.scope,
                f.period.name,
                f.as_of,
                f.period.start,
                f.period.end,
                f.result.simulations,
                f.seed,
                f.result.open_deals,
                f.result.won,
                f.result.p10,
                f.result.p50,
                f.result.p90,
                f.result.expected,
                f.result.weighted_pipeline,
                f.result.commit,
                f.result.best_case,
                f.result.pipeline,
                f.result.target,
                f.result.coverage,
                f.result.gap,
                f.result.p_reach,
                f.probabilities,
            )
            for f in forecasts
        ],
    )


def to_contract(f: WorkspaceForecast) -> DealForecast:
    """The ``deal-forecasts`` record of a forecast (the same numbers as its ``forecasts`` row)."""
    r = f.result
    return DealForecast(
        workspace_id=f.workspace_id,
        scope=f.scope,
        period=f.period.name,
        period_start=f.period.start,
        period_end=f.period.end,
        as_of=f.as_of,
        simulations=r.simulations,
        seed=f.seed,
        open_deals=r.open_deals,
        won=r.won,
        p10=r.p10,
        p50=r.p50,
        p90=r.p90,
        expected=r.expected,
        weighted_pipeline=r.weighted_pipeline,
        commit=r.commit,
        best_case=r.best_case,
        pipeline=r.pipeline,
        target=r.target,
        coverage=r.coverage,
        gap=r.gap,
        p_reach_target=r.p_reach,
        probabilities=f.probabilities,
        gap_closers=[
            ForecastGapCloser(
                deal_id=g.deal_id,
                value=g.value,
                probability=g.probability,
                p_reach_if_won=g.p_reach_if_won,
                lift=g.lift,
            )
            for g in f.gap_closers
        ],
    )


_GAP_LOAD = """
SELECT last_as_of, priority, raised_at FROM forecast_gap_state
 WHERE workspace_id = $1 AND period = $2
   FOR UPDATE
"""
_GAP_SAVE = """
INSERT INTO forecast_gap_state (workspace_id, period, last_as_of, priority, raised_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (workspace_id, period) DO UPDATE SET
    last_as_of = EXCLUDED.last_as_of, priority = EXCLUDED.priority,
    raised_at = EXCLUDED.raised_at, updated_at = now()
"""


async def publish(
    settings: ForecastSettings, db: PgPool, forecasts: Sequence[WorkspaceForecast]
) -> list[InsightEvent]:
    """Publish each forecast on ``topic_forecasts`` (keyed by workspace) and wait for the broker
    to acknowledge them all; then step the ``pipeline_gap`` lifecycle of each workspace
    forecast with a target and publish its insight events on ``topic_insights``. The topics
    are created when missing. The insight events published, in order."""
    parts = settings.topic_partitions
    await ensure_topics(
        settings.bootstrap(),
        {settings.topic_forecasts: parts, settings.topic_insights: parts},
        retry_for=settings.kafka_connect_timeout_seconds,
    )
    producer = await start_producer(settings)
    try:
        contracts = [to_contract(f) for f in forecasts]
        sent = [
            await producer.send(
                settings.topic_forecasts, c.model_dump_json().encode(), key=c.workspace_id.encode()
            )
            for c in contracts
        ]
        for ack in sent:
            await ack
        logger.info("published %d forecasts on %s", len(contracts), settings.topic_forecasts)
        insights = []
        for c in contracts:
            event = await _step_gap(db, producer, settings, c)
            if event is not None:
                insights.append(event)
    finally:
        await producer.stop()
    return insights


async def _step_gap(
    db: PgPool, producer: Any, settings: ForecastSettings, f: DealForecast
) -> InsightEvent | None:
    """One forecast through the pipeline_gap lifecycle: the state row is locked, the event (if
    any) acknowledged by the broker, then the state saved, in one transaction."""
    if f.scope != gap.WORKSPACE_SCOPE or f.target is None:
        return None
    async with db.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(_GAP_LOAD, f.workspace_id, f.period)
        state = None
        if row is not None:
            priority = None if row["priority"] is None else Priority(row["priority"])
            state = gap.GapState(row["last_as_of"], priority, row["raised_at"])
        after, event = gap.step(state, f, settings.forecast_gap_threshold)
        if after is None or after == state:
            return None
        if event is not None:
            await producer.send_and_wait(
                settings.topic_insights,
                event.model_dump_json().encode(),
                key=event.deal_id.encode(),
            )
            logger.info(
                "pipeline_gap %s for %s %s: P(target) %.2f",
                event.lifecycle.value,
                f.workspace_id,
                f.period,
                f.p_reach_target,
            )
        await conn.execute(
            _GAP_SAVE,
            f.workspace_id,
            f.period,
            after.last_as_of,
            None if after.priority is None else after.priority.value,
            after.raised_at,
        )
    return event


# --- the daily service ---------------------------------------------------------------------

_WORKSPACES = "SELECT DISTINCT workspace_id FROM deal_history ORDER BY 1"
_LAST_RUNS = """
SELECT workspace_id, max(as_of) AS last FROM forecasts WHERE scope = 'workspace'
 GROUP BY workspace_id
"""
_CURRENT_MODEL = "SELECT max(version) FROM win_models WHERE current"
_SCORES = """
SELECT s.deal_id, s.win_probability FROM deal_scores s
  JOIN win_models m ON m.version = s.model_version AND m.current
 WHERE s.workspace_id = $1
"""

HistoryLoader = Callable[[PgPool, str | None], Awaitable[list[DealHistory]]]
"""The deal histories of a workspace (of every workspace with ``None``)."""
_UNSEEN = -1


class ForecastMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.rounds = Counter(
            f"{PREFIX}_forecast_rounds_total",
            "Forecast rounds that forecast at least one workspace, by trigger "
            "(schedule, model: a model was promoted).",
            ["trigger"],
            registry=registry,
        )
        self.forecasts = Counter(
            f"{PREFIX}_forecast_forecasts_total",
            "Forecasts stored (one per workspace and period).",
            registry=registry,
        )
        self.failures = Counter(
            f"{PREFIX}_forecast_failures_total",
            "Checks that failed (database or broker); retried at the next check.",
            registry=registry,
        )


class ForecastService:
    """Each workspace's forecast of the current periods, daily at its time and whenever the
    current model changes (``check``, called every ``forecast_check_seconds``)."""

    def __init__(
        self,
        settings: ForecastSettings,
        pool: PgPool,
        load: HistoryLoader,
        metrics: ForecastMetrics,
        targets: Targets | None = None,
        close_max_iter: int | None = None,
    ) -> None:
        self.settings = settings
        self.close_max_iter = close_max_iter
        """Boosting iterations of the close-date model (``None``: the model's default)."""
        self.pool = pool
        self.load = load
        self.metrics = metrics
        self.targets = targets or Targets()
        self.default_at = schedule.parse_time(settings.forecast_at)
        self.workspace_at = {
            ws: schedule.parse_time(t) for ws, t in settings.forecast_workspace_at.items()
        }
        self.kinds = [k.strip() for k in settings.forecast_periods.split(",") if k.strip()]
        schedule.current_periods(dt.datetime.now(dt.UTC), self.kinds)  # validates the kinds
        self._model: int | None = _UNSEEN

    async def check(self, now: dt.datetime) -> list[WorkspaceForecast]:
        """Forecast the workspaces that are due (all of them after a model promotion), store
        and, with a broker, publish; the forecasts made."""
        version = await self.pool.fetchval(_CURRENT_MODEL)
        promoted = self._model != _UNSEEN and version is not None and version != self._model
        self._model = version
        workspaces = [r["workspace_id"] for r in await self.pool.fetch(_WORKSPACES)]
        if promoted:
            todo, trigger = workspaces, "model"
        else:
            last = {r["workspace_id"]: r["last"] for r in await self.pool.fetch(_LAST_RUNS)}
            todo = schedule.due(now, workspaces, last, self.default_at, self.workspace_at)
            trigger = "schedule"
        results: list[WorkspaceForecast] = []
        if not todo:
            return results
        everyone: dict[str, list[DealHistory]] | None = None
        close: PredictClose | None = None
        if version is not None:
            # a current model: its scores are the probabilities, and the close dates come from
            # a close-date model trained as of now on every workspace's history, as forecast
            # run trains one (the stored model's was fitted on every closed deal, lost ones
            # too, and before its held-out period: docs/forecast.md)
            loaded = await self.load(self.pool, None)
            everyone = {}
            for h in loaded:
                everyone.setdefault(h.workspace_id, []).append(h)
            t = round(now.timestamp() * 1000)
            close = await asyncio.to_thread(close_at, loaded, t, self.close_max_iter)
            if close is None:
                logger.info("too little history for a close-date model: the rep's close dates")
        for ws in todo:
            if everyone is not None:
                histories = everyone.get(ws, [])
            else:
                histories = await self.load(self.pool, ws)
            scores = {
                r["deal_id"]: r["win_probability"] for r in await self.pool.fetch(_SCORES, ws)
            }
            for period in schedule.current_periods(now, self.kinds):
                results += forecast_workspaces(
                    histories,
                    now,
                    period,
                    workspace=ws,
                    targets=self.targets,
                    simulations=self.settings.forecast_simulations,
                    probabilities=scores,
                    probabilities_label=f"model v{version}",
                    # with the model's probabilities, as forecast run: the model's close dates,
                    # the deals not created yet and the common shock (the rep's probabilities
                    # are too high to add them to)
                    close=close if scores else None,
                    new_pipeline=bool(scores),
                    common_shock=bool(scores),
                )
        if not results:
            return results
        await store(self.pool, results)
        if self.settings.kafka_bootstrap_servers:
            await publish(self.settings, self.pool, results)
        self.metrics.rounds.labels(trigger).inc()
        self.metrics.forecasts.inc(len(results))
        logger.info("%s: forecast %d workspaces (%d forecasts)", trigger, len(todo), len(results))
        return results


async def run_forecast_service(
    settings: ForecastSettings,
    pool: PgPool,
    load: HistoryLoader,
    registry: CollectorRegistry,
    health: Health,
    stop: asyncio.Event,
    targets: Targets | None = None,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> None:
    """Check at once, then every ``forecast_check_seconds`` until ``stop``; a failed check is
    logged, counted and tried again at the next one."""
    service = ForecastService(settings, pool, load, ForecastMetrics(registry), targets)
    health.register("forecast", lambda: True)
    if not settings.kafka_bootstrap_servers:
        logger.warning("VECTOROS_KAFKA_BOOTSTRAP_SERVERS is not set: forecasts are stored only")
    while True:  # the first check at once, even when already asked to stop
        try:
            await service.check(clock())
        except Exception as exc:
            service.metrics.failures.inc()
            logger.warning("forecast check failed (%s: %s); trying again", type(exc).__name__, exc)
        if await stopped_within(stop, settings.forecast_check_seconds):
            return
