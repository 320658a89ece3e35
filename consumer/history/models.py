"""Model versions in PostgreSQL (``win_models``); every statement parameterised."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from consumer.intelligence.features import OwnerRecord
from consumer.intelligence.model import WinModel, loads
from consumer.intelligence.projection import DealHistory
from schemas.scores import DealScore
from vectoros.db import PgConnection, PgPool

_UPSERT_SCORE = """
INSERT INTO deal_scores (workspace_id, deal_id, as_of, model_version, win_probability,
                         rep_probability, stage, top_factors)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (workspace_id, deal_id) DO UPDATE SET
    as_of = EXCLUDED.as_of, model_version = EXCLUDED.model_version,
    win_probability = EXCLUDED.win_probability, rep_probability = EXCLUDED.rep_probability,
    stage = EXCLUDED.stage, top_factors = EXCLUDED.top_factors
WHERE (deal_scores.as_of, deal_scores.model_version)
      <= (EXCLUDED.as_of, EXCLUDED.model_version)
"""


_PREVIOUS_SCORES = """
SELECT s.workspace_id, s.deal_id, s.as_of, s.model_version, s.win_probability
FROM deal_scores s
JOIN unnest($1::text[], $2::text[]) AS k(workspace_id, deal_id)
  ON s.workspace_id = k.workspace_id AND s.deal_id = k.deal_id
"""


@dataclass(frozen=True)
class StoredModel:
    version: int
    scope: str
    metrics: dict[str, Any]
    model: WinModel


async def current_model(db: PgPool | PgConnection, scope: str = "pooled") -> StoredModel | None:
    row = await db.fetchrow(
        "SELECT version, scope, metrics, model FROM win_models WHERE scope = $1 AND current",
        scope,
    )
    if row is None:
        return None
    return StoredModel(row["version"], row["scope"], row["metrics"], loads(row["model"]))


WORKSPACE_SCOPE = "workspace:"
"""A per-workspace model's scope is this and the workspace id; the pooled one's ``pooled``."""


def workspace_scope(workspace_id: str) -> str:
    return f"{WORKSPACE_SCOPE}{workspace_id}"


async def current_models(db: PgPool | PgConnection) -> dict[str, StoredModel]:
    """Every scope's current model (``pooled`` and ``workspace:<id>``), by scope."""
    rows = await db.fetch("SELECT version, scope, metrics, model FROM win_models WHERE current")
    return {
        r["scope"]: StoredModel(r["version"], r["scope"], r["metrics"], loads(r["model"]))
        for r in rows
    }


async def save_model(
    conn: PgConnection,
    *,
    scope: str,
    model: WinModel,
    data_until_ms: int,
    holdout_from_ms: int,
    train_snapshots: int,
    holdout_snapshots: int,
    closed_deals: int,
    metrics: dict[str, Any],
    baselines: dict[str, Any],
    promote: bool,
) -> int:
    """Store a version; when ``promote``, it becomes the current one (in one transaction)."""
    async with conn.transaction():
        if promote:
            await conn.execute(
                "UPDATE win_models SET current = false WHERE scope = $1 AND current", scope
            )
        version = await conn.fetchval(
            "INSERT INTO win_models (scope, data_until, holdout_from, train_snapshots, "
            "holdout_snapshots, closed_deals, features, metrics, baselines, current, "
            "promoted_at, model) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, CASE WHEN $10 THEN now() END, $11) "
            "RETURNING version",
            scope,
            dt.datetime.fromtimestamp(data_until_ms / 1000, dt.UTC),
            dt.datetime.fromtimestamp(holdout_from_ms / 1000, dt.UTC),
            train_snapshots,
            holdout_snapshots,
            closed_deals,
            list(model.features),
            metrics,
            baselines,
            promote,
            model.dumps(),
        )
    assert isinstance(version, int)
    return version


async def versions(db: PgPool | PgConnection, scope: str = "pooled") -> list[Any]:
    """Every stored version of ``scope``, oldest first (without the model itself)."""
    return list(
        await db.fetch(
            "SELECT version, current, metrics, baselines, trained_at FROM win_models "
            "WHERE scope = $1 ORDER BY version",
            scope,
        )
    )


async def owner_record(db: PgPool | PgConnection) -> OwnerRecord:
    """Every owner's closed deals (time, outcome): their past win rates for scoring."""
    rows = await db.fetch(
        "SELECT workspace_id, deal_id, owner_id, outcome, closed_at FROM deal_history "
        "WHERE outcome IS NOT NULL AND closed_at IS NOT NULL AND deleted_at IS NULL"
    )
    return OwnerRecord.of(
        DealHistory(
            workspace_id=r["workspace_id"],
            deal_id=r["deal_id"],
            owner_id=r["owner_id"],
            outcome=r["outcome"],
            closed_ms=round(r["closed_at"].timestamp() * 1000),
        )
        for r in rows
    )


async def upsert_scores(db: PgPool | PgConnection, scores: list[DealScore]) -> None:
    """Each deal's latest score (one of an earlier deal state or model never replaces it)."""
    if not scores:
        return
    await db.executemany(
        _UPSERT_SCORE,
        [
            (
                s.workspace_id,
                s.deal_id,
                s.as_of,
                s.model_version,
                s.win_probability,
                s.rep_probability,
                s.stage,
                [f.model_dump() for f in s.top_factors],
            )
            for s in scores
        ],
    )


async def changed_scores(db: PgPool | PgConnection, scores: list[DealScore]) -> list[DealScore]:
    """The scores that say something new against each deal's stored score (call it before
    ``upsert_scores``): no stored score, another model version or probability, or a stored
    score that is not older (a batch processed again after a crash: what it published may
    never have reached the broker, so it is published again)."""
    if not scores:
        return []
    rows = await db.fetch(
        _PREVIOUS_SCORES, [s.workspace_id for s in scores], [s.deal_id for s in scores]
    )
    stored = {
        (r["workspace_id"], r["deal_id"]): (r["as_of"], r["model_version"], r["win_probability"])
        for r in rows
    }
    out = []
    for s in scores:
        before = stored.get((s.workspace_id, s.deal_id))
        if (
            before is None
            or before[0] >= s.as_of
            or (before[1], before[2]) != (s.model_version, s.win_probability)
        ):
            out.append(s)
    return out
