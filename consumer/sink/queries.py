"""Reading what the sink wrote: open insights for `vectoros insights list`, and the figures of
the demo's report. All SQL is parameterised."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from vectoros.db import PgPool

_LIST_SQL = """
SELECT insight_id, workspace_id, deal_id, rule, type, status, lifecycle, priority, title,
       description, actions, key_metrics, data, confidence, source, rule_title,
       rule_description, raised_at, detected_at, resolved_at, updated_at,
       count(*) OVER () AS total
FROM insights
WHERE ($1::text IS NULL OR status = $1)
  AND ($2::text IS NULL OR workspace_id = $2)
  AND ($3::smallint IS NULL OR priority_rank >= $3)
  AND ($4::text IS NULL OR rule = $4)
  AND ($5::text IS NULL OR deal_id = $5)
  AND ($6::text IS NULL OR data->>'owner_id' = $6 OR lower(data->>'owner_name') = lower($6))
  AND ($7::timestamptz IS NULL OR detected_at >= $7)
ORDER BY priority_rank DESC, (data->>'deal_value')::double precision DESC NULLS LAST,
         detected_at DESC, insight_id
LIMIT $8
"""

PRIORITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}
STATUSES = ("open", "resolved", "all")


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


@dataclass(frozen=True)
class InsightPage:
    """Up to ``limit`` insights, and how many match the filters in all."""

    rows: list[dict[str, Any]]
    total: int


async def list_insights(
    pool: PgPool,
    *,
    status: str = "open",
    workspace: str | None = None,
    priority: str | None = None,
    rule: str | None = None,
    deal: str | None = None,
    owner: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
) -> InsightPage:
    """Insights, most urgent and most valuable first. ``status``: open, resolved or all;
    ``priority``: that priority and above; ``owner``: owner id, or name (any case);
    ``since``: changed (raised, escalated, resolved) at or after."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}")
    rank = None if priority is None else PRIORITY_RANK[priority]
    rows = await pool.fetch(
        _LIST_SQL,
        None if status == "all" else status,
        workspace,
        rank,
        rule,
        deal,
        owner,
        since,
        limit,
    )
    out = []
    for row in rows:
        item = dict(row)
        item.pop("total")
        for key in ("data", "key_metrics", "actions"):
            item[key] = _json(item[key])
        for key in ("raised_at", "detected_at", "resolved_at", "updated_at"):
            item[key] = None if item[key] is None else item[key].isoformat()
        out.append(item)
    return InsightPage(out, rows[0]["total"] if rows else 0)


async def open_insights(
    pool: PgPool,
    *,
    workspace: str | None = None,
    priority: str | None = None,
    rule: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Open insights (at ``priority`` or above), most urgent and most valuable first."""
    page = await list_insights(pool, workspace=workspace, priority=priority, rule=rule, limit=limit)
    return page.rows


@dataclass(frozen=True)
class Summary:
    workspaces: int
    deals: int
    insights: int
    open_insights: int
    by_rule_priority: dict[tuple[str, str], int]
    by_lifecycle: dict[str, int]
    critical_open: int


async def summary(pool: PgPool) -> Summary:
    """The figures of a cycle report: every insight (open or resolved) by rule and its current
    priority, and every insight event by lifecycle."""
    head = await pool.fetchrow(
        "SELECT count(DISTINCT workspace_id) AS ws,"
        " count(DISTINCT (workspace_id, deal_id)) AS deals, count(*) AS n,"
        " count(*) FILTER (WHERE status = 'open') AS open,"
        " count(*) FILTER (WHERE status = 'open' AND priority = 'critical') AS crit FROM insights"
    )
    grid = await pool.fetch("SELECT rule, priority, count(*) AS n FROM insights GROUP BY 1, 2")
    life = await pool.fetch("SELECT lifecycle, count(*) AS n FROM insight_events GROUP BY 1")
    assert head is not None
    return Summary(
        workspaces=head["ws"],
        deals=head["deals"],
        insights=head["n"],
        open_insights=head["open"],
        by_rule_priority={(r["rule"], r["priority"]): r["n"] for r in grid},
        by_lifecycle={r["lifecycle"]: r["n"] for r in life},
        critical_open=head["crit"],
    )
