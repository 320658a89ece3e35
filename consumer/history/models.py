"""Model versions in PostgreSQL (``win_models``); every statement parameterised."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from consumer.intelligence.model import WinModel, loads
from vectoros.db import PgConnection, PgPool


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
