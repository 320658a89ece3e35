"""Model versions in PostgreSQL (``win_models``); every statement parameterised."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from consumer.intelligence.features import OwnerRecord
from consumer.intelligence.model import WinModel, loads
from consumer.intelligence.projection import DealHistory
from consumer.intelligence.scoring import Published, worth_publishing
from schemas.scores import DealScore
from vectoros.db import PgConnection, PgPool

_UPSERT_SCORE = """
INSERT INTO deal_scores (workspace_id, deal_id, as_of, model_version, win_probability,
                         rep_probability, stage, top_factors, close_p10,
                         published_as_of, published_model_version, published_win_probability,
                         published_close_p10)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,
        CASE WHEN $10::boolean THEN $3::timestamptz END,
        CASE WHEN $10::boolean THEN $4::integer END,
        CASE WHEN $10::boolean THEN $5::double precision END,
        CASE WHEN $10::boolean THEN $9::date END)
ON CONFLICT (workspace_id, deal_id) DO UPDATE SET
    as_of = EXCLUDED.as_of, model_version = EXCLUDED.model_version,
    win_probability = EXCLUDED.win_probability, rep_probability = EXCLUDED.rep_probability,
    stage = EXCLUDED.stage, top_factors = EXCLUDED.top_factors, close_p10 = EXCLUDED.close_p10,
    published_as_of = COALESCE(EXCLUDED.published_as_of, deal_scores.published_as_of),
    published_model_version
        = COALESCE(EXCLUDED.published_model_version, deal_scores.published_model_version),
    published_win_probability
        = COALESCE(EXCLUDED.published_win_probability, deal_scores.published_win_probability),
    published_close_p10 = CASE WHEN EXCLUDED.published_as_of IS NULL
                               THEN deal_scores.published_close_p10
                               ELSE EXCLUDED.published_close_p10 END
WHERE (deal_scores.as_of, deal_scores.model_version)
      <= (EXCLUDED.as_of, EXCLUDED.model_version)
"""


_PUBLISHED_SCORES = """
SELECT s.workspace_id, s.deal_id, s.published_as_of, s.published_model_version,
       s.published_win_probability, s.published_close_p10
FROM deal_scores s
JOIN unnest($1::text[], $2::text[]) AS k(workspace_id, deal_id)
  ON s.workspace_id = k.workspace_id AND s.deal_id = k.deal_id
WHERE s.published_as_of IS NOT NULL
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


async def upsert_scores(
    db: PgPool | PgConnection,
    scores: list[DealScore],
    published: Collection[DealScore] = (),
) -> None:
    """Each deal's latest score (one of an earlier deal state or model never replaces it), with
    its close-date P10; for the scores in ``published`` (sent to the monitor), also as the
    deal's published score."""
    if not scores:
        return
    sent = {id(s) for s in published}
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
                s.close_p10,
                id(s) in sent,
            )
            for s in sorted(scores, key=_order)
        ],
    )


def _order(s: DealScore) -> tuple[dt.datetime, int]:
    return s.as_of, s.model_version


async def scores_to_publish(
    db: PgPool | PgConnection,
    scores: list[DealScore],
    *,
    min_points: float = 0.0,
    min_days: int = 0,
    rep_close: Mapping[tuple[str, str], dt.date | None] | None = None,
) -> list[DealScore]:
    """The scores worth sending to the monitor (``scoring.worth_publishing``) against each
    deal's last published score (call it before ``upsert_scores``, and pass the result to it);
    a deal's scores in time order, each against the one published before it. ``rep_close``:
    the rep's close date of each ``(workspace_id, deal_id)``."""
    if not scores:
        return []
    rows = await db.fetch(
        _PUBLISHED_SCORES, [s.workspace_id for s in scores], [s.deal_id for s in scores]
    )
    last: dict[tuple[str, str], Published | None] = {
        (r["workspace_id"], r["deal_id"]): Published(
            r["published_as_of"],
            r["published_model_version"],
            r["published_win_probability"],
            r["published_close_p10"],
        )
        for r in rows
    }
    closes = rep_close or {}
    out = []
    for s in sorted(scores, key=_order):
        key = (s.workspace_id, s.deal_id)
        if worth_publishing(
            s,
            last.get(key),
            min_points=min_points,
            min_days=min_days,
            rep_close=closes.get(key),
        ):
            out.append(s)
            last[key] = Published(s.as_of, s.model_version, s.win_probability, s.close_p10)
    return out
