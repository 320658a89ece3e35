"""``vectoros forecast run``: forecast a period from the history as known at an as-of time, per
workspace, and store each result in ``forecasts`` (an upsert: the same forecast again replaces
its row). Every statement is parameterised."""

from __future__ import annotations

import copy
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from consumer.forecast import gap
from consumer.forecast import scenario as what_if
from consumer.forecast.pipeline import PeriodSpec, creation_rates, pipeline_at
from consumer.forecast.settings import ForecastSettings
from consumer.forecast.simulate import SIMULATIONS, Forecast, GapCloser, forecast, gap_closers
from consumer.intelligence.projection import DealHistory
from schemas.forecasts import DealForecast, ForecastGapCloser
from schemas.insights import InsightEvent, Priority
from vectoros.db import PgConnection, PgPool
from vectoros.kafka import ensure_topics, start_producer

logger = logging.getLogger(__name__)

WORKSPACE_SCOPE = "workspace"
OWNER_SCOPE = "owner:"
GAP_CLOSERS = 10
CHANGE_FIELDS = ("p10", "p50", "p90", "expected", "weighted_pipeline", "pipeline", "p_reach")

_UPSERT = """
INSERT INTO forecasts (workspace_id, scope, period, as_of, period_start, period_end,
                       simulations, seed, open_deals, won, p10, p50, p90, expected,
                       weighted_pipeline, commit, best_case, pipeline, target, coverage, gap,
                       p_reach_target)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
        $20, $21, $22)
ON CONFLICT (workspace_id, scope, period, as_of) DO UPDATE SET
    period_start = EXCLUDED.period_start, period_end = EXCLUDED.period_end,
    computed_at = now(), simulations = EXCLUDED.simulations, seed = EXCLUDED.seed,
    open_deals = EXCLUDED.open_deals, won = EXCLUDED.won, p10 = EXCLUDED.p10,
    p50 = EXCLUDED.p50, p90 = EXCLUDED.p90, expected = EXCLUDED.expected,
    weighted_pipeline = EXCLUDED.weighted_pipeline, commit = EXCLUDED.commit,
    best_case = EXCLUDED.best_case, pipeline = EXCLUDED.pipeline, target = EXCLUDED.target,
    coverage = EXCLUDED.coverage, gap = EXCLUDED.gap, p_reach_target = EXCLUDED.p_reach_target
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

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "workspace_id": self.workspace_id,
            "scope": self.scope,
            "period": self.period.name,
            "as_of": self.as_of.isoformat(),
            "seed": self.seed,
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
) -> list[WorkspaceForecast]:
    """One forecast per workspace of ``histories`` (only ``workspace`` when given, even if it
    has no deal), in workspace order; one random generator from ``seed`` for all of them. With
    ``by_owner``, each workspace's is followed by one per owner (scope ``owner:<id>``, the
    deal's current owner, no target), in owner order.

    With a ``target``, each workspace forecast lists its ``gap_top`` gap closers; with a
    ``scenario``, it carries the forecast under the scenario too. Both draw from copies of the
    generator as it was for the baseline (common random numbers), so their differences from the
    baseline come from what they change, not from other random draws."""
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
    out = []
    for ws in sorted(by_workspace):
        pipe = pipeline_at(by_workspace[ws], at, period)
        rel = period.relative_to(at)
        start = copy.deepcopy(rng)
        result = forecast(pipe.deals, rel, rng, won=pipe.won, n=simulations, target=target)
        closers: tuple[GapCloser, ...] = ()
        if target is not None:
            _, found = gap_closers(
                pipe.deals,
                rel,
                copy.deepcopy(start),
                target=target,
                won=pipe.won,
                n=simulations,
                top=gap_top,
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
                    target=target,
                ),
                result,
            )
        out.append(WorkspaceForecast(ws, WORKSPACE_SCOPE, period, at, seed, result, closers, under))
        if not by_owner:
            continue
        owners: dict[str, list[DealHistory]] = {}
        for h in by_workspace[ws]:
            owners.setdefault(h.owner_id or "", []).append(h)
        for owner in sorted(owners):
            pipe = pipeline_at(owners[owner], at, period)
            if not len(pipe.deals) and not pipe.won_deals:
                continue  # nothing open or won in the period: no row
            result = forecast(pipe.deals, period.relative_to(at), rng, won=pipe.won, n=simulations)
            out.append(WorkspaceForecast(ws, OWNER_SCOPE + owner, period, at, seed, result))
    return out


async def store(db: PgPool | PgConnection, forecasts: Sequence[WorkspaceForecast]) -> None:
    """Upsert each forecast's row of ``forecasts``."""
    await db.executemany(
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
            )
            for f in forecasts
        ],
    )
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
