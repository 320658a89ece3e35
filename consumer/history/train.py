"""``vectoros train``: fit a win-probability model on the history in PostgreSQL, judge it on the
held-out period beside the current model, store the version, promote it only if better."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from consumer.history.models import current_model, save_model, workspace_scope
from consumer.history.store import load_histories
from consumer.intelligence.evaluation import Evaluation, better, evaluate
from consumer.intelligence.metrics import Scores, reliability_points, score
from consumer.intelligence.projection import DealHistory
from vectoros.db import PgPool

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    version: int
    promoted: bool
    scores: Scores
    current: Scores | None
    current_version: int | None
    evaluation: Evaluation
    scope: str = "pooled"


PER_WORKSPACE_MIN_CLOSED = 200
"""A workspace with this many closed deals gets its own model (scored with it); the others are
scored with the pooled one (every workspace, the workspace a feature)."""


async def train(
    pool: PgPool,
    *,
    holdout_days: float = 90,
    histories: Sequence[DealHistory] | None = None,
    scope: str = "pooled",
    max_iter: int = 200,
    with_close: bool = True,
) -> TrainResult:
    """Train on the history (every workspace pooled, the workspace a feature) before the last
    ``holdout_days``; score the new model and the current one on that period; promote the new
    one only if ``better``. ``NotEnoughHistory`` when there is too little to do it. With
    ``with_close`` the close-date model is fitted too and stored with it (scores then carry
    their close-date P10)."""
    if histories is None:
        histories = await load_histories(pool)
    # the fit is CPU work of seconds to minutes: off the event loop (a service keeps serving)
    result = await asyncio.to_thread(
        evaluate, histories, holdout_days, with_close=with_close, max_iter=max_iter
    )
    result.model.close = result.close  # stored with it: each score's close-date P10
    holdout = result.split.holdout
    new = result.scores["model"]
    current = await current_model(pool, scope)
    current_scores = (
        None if current is None else score(holdout.won, current.model.predict(holdout.X))
    )
    promote = better(new, current_scores)
    baselines = {k: v.as_dict() for k, v in result.scores.items() if k != "model"}
    if current is not None and current_scores is not None:
        baselines["current"] = {**current_scores.as_dict(), "version": current.version}
    async with pool.acquire() as conn:
        version = await save_model(
            conn,
            scope=scope,
            model=result.model,
            data_until_ms=result.split.data_until_ms,
            holdout_from_ms=result.split.holdout_from_ms,
            train_snapshots=len(result.split.train),
            holdout_snapshots=len(holdout),
            closed_deals=result.split.closed_deals,
            metrics={
                **new.as_dict(),
                "reliability": reliability_points(holdout.won, result.predictions["model"]),
            },
            baselines=baselines,
            promote=promote,
        )
    logger.info(
        "model version %d: held-out AUC %.3f, Brier %.4f; %s",
        version,
        new.auc,
        new.brier,
        "promoted" if promote else "not promoted (the current one is as good or better)",
    )
    return TrainResult(
        version,
        promote,
        new,
        current_scores,
        None if current is None else current.version,
        result,
        scope,
    )


async def train_all(
    pool: PgPool,
    *,
    holdout_days: float = 90,
    max_iter: int = 200,
    with_close: bool = True,
    min_closed: int = PER_WORKSPACE_MIN_CLOSED,
) -> list[TrainResult]:
    """The pooled model, then one per workspace with at least ``min_closed`` closed deals
    (scope ``workspace:<id>``, trained on that workspace's history alone; each promoted only if
    it beats that scope's current model). A workspace whose history is still too small for its
    own split is skipped (logged). ``NotEnoughHistory`` when even the pooled one cannot train."""
    from consumer.intelligence.evaluation import NotEnoughHistory

    histories = await load_histories(pool)

    async def fit(scope: str, own: Sequence[DealHistory]) -> TrainResult:
        return await train(
            pool,
            holdout_days=holdout_days,
            histories=own,
            scope=scope,
            max_iter=max_iter,
            with_close=with_close,
        )

    results = [await fit("pooled", histories)]
    closed: dict[str, int] = {}
    for h in histories:
        if h.outcome is not None:
            closed[h.workspace_id] = closed.get(h.workspace_id, 0) + 1
    for workspace in sorted(w for w, n in closed.items() if n >= min_closed):
        own = [h for h in histories if h.workspace_id == workspace]
        try:
            results.append(await fit(workspace_scope(workspace), own))
        except NotEnoughHistory as exc:
            logger.info("no model of its own for workspace %s yet: %s", workspace, exc)
    return results


_DUE = """
SELECT
    (SELECT max(trained_at) FROM win_models WHERE scope = $1) AS last_trained,
    (SELECT count(*) FROM deal_history
     WHERE outcome IS NOT NULL AND deleted_at IS NULL
       AND closed_at > coalesce(
           (SELECT max(data_until) FROM win_models WHERE scope = $1), '-infinity'::timestamptz)
    ) AS new_outcomes,
    now() AS now
"""

RETRAIN_LOCK = 0x76656374_6F727472  # pg_try_advisory_lock key: one retraining at a time


async def due(
    pool: PgPool, *, after_outcomes: int, every_seconds: float, scope: str = "pooled"
) -> tuple[bool, int]:
    """Whether to retrain now, and how many outcomes arrived since the last model's data:
    ``after_outcomes`` of them, or any once the last training is ``every_seconds`` old."""
    row = await pool.fetchrow(_DUE, scope)
    assert row is not None
    new = int(row["new_outcomes"])
    last = row["last_trained"]
    if new >= after_outcomes:
        return True, new
    stale = last is not None and (row["now"] - last).total_seconds() >= every_seconds
    return stale and new > 0, new


async def retrain_if_due(
    pool: PgPool,
    *,
    after_outcomes: int,
    every_seconds: float,
    holdout_days: float,
    max_iter: int = 200,
) -> TrainResult | None:
    """Outcome learning: train (and promote if better) when ``due``; one process at a time
    (an advisory lock; another one finds it taken and skips). ``None`` when not due, busy, or
    the history is still too small."""
    from consumer.intelligence.evaluation import NotEnoughHistory

    is_due, new = await due(pool, after_outcomes=after_outcomes, every_seconds=every_seconds)
    if not is_due:
        return None
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", RETRAIN_LOCK):
            return None
        try:
            logger.info("retraining: %d new outcomes since the last model's data", new)
            try:
                results = await train_all(pool, holdout_days=holdout_days, max_iter=max_iter)
                return results[0]  # the pooled one (the per-workspace ones are logged)
            except NotEnoughHistory as exc:
                logger.info("not retraining yet: %s", exc)
                return None
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", RETRAIN_LOCK)
