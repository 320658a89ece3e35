"""The history projection in PostgreSQL: events recorded once, deals recomputed from them.

Every statement is parameterised. ``write_events`` runs in one transaction: the new events are
inserted (``ON CONFLICT DO NOTHING``), then every deal the batch touched is folded again from
all of its stored events and upserted, so replays, redeliveries and out-of-order arrivals leave
the same rows.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from consumer.intelligence import benchmarks
from consumer.intelligence.projection import DealHistory, fold, from_json, to_json
from schemas.events import DealEvent, encode_event, event_adapter
from vectoros.db import PgConnection, PgPool

_INSERT_EVENT = """
INSERT INTO deal_history_events (workspace_id, deal_id, event_id, occurred_at, type, payload)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT DO NOTHING
"""

_EVENTS_OF = """
SELECT workspace_id, deal_id, payload FROM deal_history_events
WHERE (workspace_id, deal_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
"""

_COLUMNS = (
    "workspace_id", "deal_id", "source", "title", "value", "currency", "stage", "probability",
    "close_date", "owner_id", "owner_name", "company", "created_at", "updated_at", "outcome",
    "closed_at", "close_reason", "deleted_at", "stage_history", "activities", "activity_counts",
    "close_date_changes", "value_changes", "probability_history", "attributes", "event_count",
)  # fmt: skip

# The column names are the constants above; every value is a parameter.
_UPSERT = (
    f"INSERT INTO deal_history ({', '.join(_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join(f'${i + 1}' for i in range(len(_COLUMNS)))}) "
    "ON CONFLICT (workspace_id, deal_id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMNS[2:])
)

_SELECT = (
    f"SELECT {', '.join(_COLUMNS)} FROM deal_history "  # noqa: S608
    "WHERE deleted_at IS NULL AND ($1::text IS NULL OR workspace_id = $1) "
    "ORDER BY workspace_id, deal_id"
)


_SELECT_OPEN = (
    f"SELECT {', '.join(_COLUMNS)} FROM deal_history "  # noqa: S608
    "WHERE deleted_at IS NULL AND outcome IS NULL ORDER BY workspace_id, deal_id"
)


def _ts(ms: int | None) -> dt.datetime | None:
    return None if ms is None else dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def _ms(at: dt.datetime | None) -> int | None:
    return None if at is None else round(at.timestamp() * 1000)


def row_of(h: DealHistory) -> tuple[Any, ...]:
    """The ``deal_history`` row of ``h``, in ``_COLUMNS`` order."""
    j = to_json(h)
    return (
        h.workspace_id, h.deal_id, h.source, h.title, h.value, h.currency, h.stage,
        h.probability, h.close_date, h.owner_id, h.owner_name, h.company, _ts(h.created_ms),
        _ts(h.updated_ms), h.outcome, _ts(h.closed_ms), h.close_reason, _ts(h.deleted_ms),
        j["stage_history"], j["activities"], j["activity_counts"], j["close_date_changes"],
        j["value_changes"], j["probability_history"], j["attributes"], h.event_count,
    )  # fmt: skip


def history_of(row: Any) -> DealHistory:
    """A ``deal_history`` row back into a ``DealHistory``."""
    base = DealHistory(
        workspace_id=row["workspace_id"],
        deal_id=row["deal_id"],
        source=row["source"],
        title=row["title"],
        value=row["value"],
        currency=row["currency"],
        stage=row["stage"],
        probability=row["probability"],
        close_date=row["close_date"],
        owner_id=row["owner_id"],
        owner_name=row["owner_name"],
        company=row["company"],
        created_ms=_ms(row["created_at"]),
        updated_ms=_ms(row["updated_at"]),
        outcome=row["outcome"],
        closed_ms=_ms(row["closed_at"]),
        close_reason=row["close_reason"],
        deleted_ms=_ms(row["deleted_at"]),
        event_count=row["event_count"],
    )
    return from_json(base, {name: row[name] for name in _COLUMNS[18:25]})


@dataclass(frozen=True, slots=True)
class WriteResult:
    events: int = 0
    events_inserted: int = 0
    deals_written: int = 0
    histories: tuple[DealHistory, ...] = ()
    """The deals the batch touched, as now written."""


async def write_events(conn: PgConnection, events: Sequence[DealEvent]) -> WriteResult:
    """Record ``events`` and recompute the deals they belong to, in one transaction."""
    if not events:
        return WriteResult()
    async with conn.transaction():
        inserted = 0
        for e in events:
            status = await conn.execute(
                _INSERT_EVENT,
                e.workspace_id,
                e.deal_id,
                e.event_id,
                e.occurred_at,
                e.type,
                json.loads(encode_event(e)),
            )
            inserted += status.endswith(" 1")
        keys = sorted({(e.workspace_id, e.deal_id) for e in events})
        rows = await conn.fetch(_EVENTS_OF, [k[0] for k in keys], [k[1] for k in keys])
        by_deal: dict[tuple[str, str], list[DealEvent]] = {}
        for row in rows:
            event = event_adapter.validate_python(row["payload"])
            assert not isinstance(event, dict)
            by_deal.setdefault((row["workspace_id"], row["deal_id"]), []).append(event)  # type: ignore[arg-type]
        histories = [h for evs in by_deal.values() if (h := fold(evs)) is not None]
        await conn.executemany(_UPSERT, [row_of(h) for h in histories])
    return WriteResult(len(events), inserted, len(histories), tuple(histories))


async def upsert_histories(conn: PgConnection, histories: Iterable[DealHistory]) -> int:
    """Write whole deals (the CSV import); the caller holds the transaction."""
    rows = [row_of(h) for h in histories]
    await conn.executemany(_UPSERT, rows)
    return len(rows)


async def load_histories(pool: PgPool, workspace: str | None = None) -> list[DealHistory]:
    """Every deal of ``workspace`` (all when ``None``) that was not deleted."""
    rows = await pool.fetch(_SELECT, workspace)
    return [history_of(r) for r in rows]


async def load_open_histories(db: PgPool | PgConnection) -> list[DealHistory]:
    """Every open deal (not closed, not deleted), of every workspace."""
    return [history_of(r) for r in await db.fetch(_SELECT_OPEN)]


async def refresh_benchmarks(db: PgPool | PgConnection) -> None:
    """Recompute ``stage_benchmarks`` (readers keep the previous one meanwhile)."""
    await db.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY stage_benchmarks")


async def load_benchmarks(db: PgPool | PgConnection, workspace: str | None = None) -> list[Any]:
    """The stage benchmarks as of the last refresh: workspace, stage, samples, p50/p75/p90."""
    return list(await db.fetch(benchmarks.SQL, workspace))
