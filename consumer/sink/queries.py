"""Reading what the sink wrote: open insights for `vectoros insights list`, and the figures of
the demo's report. All SQL is parameterised."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from vectoros.db import PgPool

_OPEN_SQL = """
SELECT insight_id, workspace_id, deal_id, rule, priority, title, description, source,
       data, key_metrics, raised_at, detected_at
FROM insights
WHERE status = 'open'
  AND ($1::text IS NULL OR workspace_id = $1)
  AND ($2::text IS NULL OR priority = $2)
  AND ($3::text IS NULL OR rule = $3)
ORDER BY priority_rank DESC, (data->>'deal_value')::double precision DESC NULLS LAST,
         detected_at DESC
LIMIT $4
"""


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


async def open_insights(
    pool: PgPool,
    *,
    workspace: str | None = None,
    priority: str | None = None,
    rule: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Open insights, most urgent and most valuable first."""
    rows = await pool.fetch(_OPEN_SQL, workspace, priority, rule, limit)
    out = []
    for row in rows:
        item = dict(row)
        item["data"] = _json(item["data"])
        item["key_metrics"] = _json(item["key_metrics"])
        item["raised_at"] = item["raised_at"].isoformat()
        item["detected_at"] = item["detected_at"].isoformat()
        out.append(item)
    return out


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
