"""``vectoros train``: fit a win-probability model on the history in PostgreSQL, judge it on the
held-out period beside the current model, store the version, promote it only if better."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from consumer.history.models import current_model, save_model
from consumer.history.store import load_histories
from consumer.intelligence.evaluation import Evaluation, better, evaluate
from consumer.intelligence.metrics import Scores, score
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


async def train(
    pool: PgPool,
    *,
    holdout_days: float = 90,
    histories: Sequence[DealHistory] | None = None,
    scope: str = "pooled",
    max_iter: int = 200,
) -> TrainResult:
    """Train on the history (every workspace pooled, the workspace a feature) before the last
    ``holdout_days``; score the new model and the current one on that period; promote the new
    one only if ``better``. ``NotEnoughHistory`` when there is too little to do it."""
    if histories is None:
        histories = await load_histories(pool)
    result = evaluate(histories, holdout_days, with_close=False, max_iter=max_iter)
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
            metrics=new.as_dict(),
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
    )
