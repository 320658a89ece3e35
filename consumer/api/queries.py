"""What the read API reads from PostgreSQL, always within one workspace (every statement takes
the token's workspace as its first parameter). All SQL is parameterised."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from vectoros.db import PgPool

PRIORITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}

_LIST_HEAD = """
SELECT
    i.insight_id, i.deal_id, i.rule, i.type, i.status, i.lifecycle, i.priority, i.priority_rank,
    i.title, i.description, i.actions, i.key_metrics, i.data, i.confidence, i.source,
    i.raised_at, i.detected_at, i.resolved_at, i.updated_at,
    a.state AS ack_state, a.snoozed_until
FROM """
_LIST_JOIN = """ LEFT JOIN insight_acks a ON a.insight_id = i.insight_id
WHERE i.workspace_id = $1"""
_STATUS = {
    # constants (a partial index on open insights needs the literal in the statement)
    "open": " AND i.status = 'open'",
    "resolved": " AND i.status = 'resolved'",
}
# One fragment per filter, appended only when the filter is given (the planner then sees exactly
# the conditions of the request). "$#" is the filter's parameter.
_FILTERS = {
    "rank": " AND i.priority_rank >= $#::smallint",
    "rule": " AND i.rule = $#",
    "deal": " AND i.deal_id = $#",
    "since": " AND i.detected_at >= $#::timestamptz",
    "after": " AND (i.priority_rank, i.detected_at, i.insight_id) < ($#::smallint,"
    " $#::timestamptz, $#::text)",
    "limit": " ORDER BY i.priority_rank DESC, i.detected_at DESC, i.insight_id DESC LIMIT $#",
}
# The owner's insights are found first (through the owner indexes), then sorted: planned
# together, PostgreSQL would walk the whole priority index hoping to meet the owner's soon.
_BY_OWNER = (
    "(SELECT * FROM insights WHERE workspace_id = $1 AND (data->>'owner_id' = $#"
    " OR lower(data->>'owner_name') = lower($#)){status} OFFSET 0) i"
)


def list_sql(
    status: str | None, where: Mapping[str, object], owner: str | None = None
) -> tuple[str, list[object]]:
    """The list statement: ``status`` open, resolved or None (both); ``where`` the other
    filters by name (``after`` a cursor tuple; ``limit`` last), ``owner`` an owner id or name.
    Returns it with its parameters after the workspace ($1). Only constant SQL text is put
    together; every value is a parameter."""
    args: list[object] = []

    def number(fragment: str, values: list[object]) -> str:
        for value in values:
            args.append(value)
            fragment = fragment.replace("$#", f"${len(args) + 1}", 1 if len(values) > 1 else -1)
        return fragment

    status_sql = _STATUS[status] if status is not None else ""
    if owner is None:
        sql = _LIST_HEAD + "insights i"
    else:
        inner = _BY_OWNER.replace("{status}", status_sql.replace("i.status", "status"))
        sql = _LIST_HEAD + number(inner, [owner])
    sql += _LIST_JOIN + status_sql
    for name, value in where.items():
        values = list(value) if isinstance(value, tuple) else [value]
        sql += number(_FILTERS[name], values)
    return sql, args


_INSIGHT_SQL = """
SELECT
    i.insight_id, i.deal_id, i.rule, i.type, i.status, i.lifecycle, i.priority, i.priority_rank,
    i.title, i.description, i.actions, i.key_metrics, i.data, i.confidence, i.source,
    i.raised_at, i.detected_at, i.resolved_at, i.updated_at,
    a.state AS ack_state, a.snoozed_until
FROM insights i LEFT JOIN insight_acks a ON a.insight_id = i.insight_id
WHERE i.workspace_id = $1 AND i.insight_id = $2
"""

_INSIGHT_HISTORY_SQL = """
SELECT lifecycle, detected_at, priority, source, payload->>'title' AS title, recorded_at
FROM insight_events
WHERE workspace_id = $1 AND insight_id = $2
ORDER BY detected_at, recorded_at
"""

_DEAL_SQL = """
SELECT title, value, currency, stage, probability, close_date, owner_id, owner_name, company,
       created_at, updated_at, outcome, closed_at, close_reason, deleted_at, stage_history
FROM deal_history WHERE workspace_id = $1 AND deal_id = $2
"""

_DEAL_EVENTS_SQL = """
SELECT event_id, occurred_at, type, payload
FROM deal_history_events WHERE workspace_id = $1 AND deal_id = $2
ORDER BY occurred_at DESC, event_id DESC
LIMIT $3
"""

_DEAL_INSIGHTS_SQL = """
SELECT insight_id, rule, status, lifecycle, priority, title, raised_at, detected_at, resolved_at
FROM insights WHERE workspace_id = $1 AND deal_id = $2
ORDER BY raised_at, insight_id
"""

_DEAL_STEPS_SQL = """
SELECT insight_id, rule, lifecycle, detected_at, priority, source, payload->>'title' AS title
FROM insight_events WHERE workspace_id = $1 AND deal_id = $2
ORDER BY detected_at, insight_id, lifecycle
"""

_DEAL_SCORE_SQL = """
SELECT as_of, model_version, win_probability, rep_probability, stage, top_factors
FROM deal_scores WHERE workspace_id = $1 AND deal_id = $2
"""

# The deal's part in the latest workspace-level forecast of each period (forecast_contributions)
_DEAL_FORECAST_SQL = """
SELECT period, as_of, p_land, expected
FROM forecast_contributions WHERE workspace_id = $1 AND deal_id = $2
ORDER BY period
"""

_FORECASTS_SQL = """
SELECT scope, period, as_of, period_start, period_end, computed_at, simulations, open_deals,
       won, p10, p50, p90, expected, weighted_pipeline, commit, best_case, pipeline, target,
       coverage, gap, p_reach_target
FROM forecasts
WHERE workspace_id = $1 AND ($2::text IS NULL OR period = $2)
ORDER BY as_of DESC, period, scope
LIMIT $3
"""

_RULE_STATS_SQL = """
SELECT i.rule,
       count(*) FILTER (WHERE i.status = 'open') AS open,
       count(*) FILTER (WHERE i.status = 'open' AND i.priority = 'critical') AS open_critical,
       count(*) FILTER (WHERE i.status = 'open' AND i.priority = 'high') AS open_high,
       count(*) FILTER (WHERE i.status = 'open' AND i.priority = 'medium') AS open_medium,
       count(*) FILTER (WHERE i.status = 'open' AND i.priority = 'low') AS open_low,
       coalesce(sum((i.data->>'deal_value')::double precision)
                FILTER (WHERE i.status = 'open'), 0) AS open_value,
       count(*) FILTER (WHERE i.raised_at >= $2) AS raised,
       count(*) FILTER (WHERE i.resolved_at >= $2) AS resolved,
       percentile_cont(0.5) WITHIN GROUP (
           ORDER BY extract(epoch FROM i.resolved_at - i.raised_at)
       ) FILTER (WHERE i.resolved_at >= $2) AS median_seconds_open,
       count(a.insight_id) FILTER (WHERE a.state = 'acknowledged') AS acknowledged,
       count(a.insight_id) FILTER (WHERE a.state = 'snoozed') AS snoozed
FROM insights i LEFT JOIN insight_acks a ON a.insight_id = i.insight_id
WHERE i.workspace_id = $1 AND (i.status = 'open' OR i.raised_at >= $2 OR i.resolved_at >= $2)
GROUP BY i.rule
ORDER BY i.rule
"""

# The model that scores the workspace's deals: its own current one, else the pooled one. Only the
# held-out quality measures go out (no counts: a pooled model was trained on every workspace).
_MODEL_SQL = """
SELECT version, scope = $1 AS own, trained_at, data_until, holdout_from, metrics, baselines
FROM win_models
WHERE current AND scope IN ($1, 'pooled')
ORDER BY scope = $1 DESC
LIMIT 1
"""
_QUALITY = ("auc", "brier", "log_loss", "ece")

_OPEN_BY_PRIORITY_SQL = """
SELECT priority, count(*) AS n FROM insights
WHERE workspace_id = $1 AND status = 'open' GROUP BY priority
"""

_AT_RISK_SQL = """
SELECT rule, coalesce(data->>'stage', 'unknown') AS stage, count(*) AS insights,
       coalesce(sum((data->>'deal_value')::double precision), 0) AS value
FROM insights WHERE workspace_id = $1 AND status = 'open'
GROUP BY 1, 2 ORDER BY value DESC, rule, stage
"""

_AT_RISK_DEALS_SQL = """
SELECT count(*) AS deals, coalesce(sum(v), 0) AS value FROM (
    SELECT DISTINCT ON (deal_id) (data->>'deal_value')::double precision AS v
    FROM insights WHERE workspace_id = $1 AND status = 'open'
    ORDER BY deal_id
) d
"""


@dataclass(frozen=True)
class InsightFilter:
    status: str | None = "open"  # open, resolved, None for both
    priority: str | None = None  # this and above
    rule: str | None = None
    deal: str | None = None
    owner: str | None = None
    since: dt.datetime | None = None


Cursor = tuple[int, dt.datetime, str]


def _plain(value: Any) -> Any:
    """JSON-ready: times as RFC 3339, dates as ISO dates."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def _row(record: Any, drop: Sequence[str] = ()) -> dict[str, Any]:
    return {k: _plain(v) for k, v in record.items() if k not in drop}


def _insight(record: Any) -> dict[str, Any]:
    item = _row(record, drop=("priority_rank", "ack_state", "snoozed_until"))
    item["ack"] = (
        None
        if record["ack_state"] is None
        else {"state": record["ack_state"], "snoozed_until": _plain(record["snoozed_until"])}
    )
    return item


class ApiStore(Protocol):
    async def list_insights(
        self, workspace: str, where: InsightFilter, after: Cursor | None, limit: int
    ) -> tuple[list[dict[str, Any]], Cursor | None]: ...
    async def insight(self, workspace: str, insight_id: str) -> dict[str, Any] | None: ...
    async def deal(self, workspace: str, deal_id: str) -> dict[str, Any] | None: ...
    async def forecasts(
        self, workspace: str, period: str | None, limit: int
    ) -> list[dict[str, Any]]: ...
    async def rule_stats(self, workspace: str, since: dt.datetime) -> list[dict[str, Any]]: ...
    async def summary(self, workspace: str) -> dict[str, Any]: ...
    async def model(self, workspace: str) -> dict[str, Any] | None: ...


DEAL_EVENTS_MAX = 200


class PgApiStore:
    def __init__(self, pool: PgPool) -> None:
        self._pool = pool

    async def list_insights(
        self, workspace: str, where: InsightFilter, after: Cursor | None, limit: int
    ) -> tuple[list[dict[str, Any]], Cursor | None]:
        """Up to ``limit`` insights after ``after``, most urgent then latest first, and the
        cursor of the next page (None on the last one)."""
        given: dict[str, object] = {
            "rank": None if where.priority is None else PRIORITY_RANK[where.priority],
            "rule": where.rule,
            "deal": where.deal,
            "since": where.since,
            "after": after,
        }
        filters = {k: v for k, v in given.items() if v is not None}
        sql, args = list_sql(where.status, {**filters, "limit": limit + 1}, where.owner)
        rows = await self._pool.fetch(sql, workspace, *args)
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if rows else None
        cursor = (
            (int(last["priority_rank"]), last["detected_at"], str(last["insight_id"]))
            if more and last is not None
            else None
        )
        return [_insight(r) for r in rows], cursor

    async def insight(self, workspace: str, insight_id: str) -> dict[str, Any] | None:
        row = await self._pool.fetchrow(_INSIGHT_SQL, workspace, insight_id)
        if row is None:
            return None
        item = _insight(row)
        steps = await self._pool.fetch(_INSIGHT_HISTORY_SQL, workspace, insight_id)
        item["history"] = [_row(s) for s in steps]
        return item

    async def deal(self, workspace: str, deal_id: str) -> dict[str, Any] | None:
        """The deal as the history knows it, its latest events, its insights with their
        lifecycle steps, its score, its contribution to the latest forecast of each period, and
        one timeline of events and insights (latest first); None when neither the history nor
        the insights know the deal."""
        async with self._pool.acquire() as conn:
            head = await conn.fetchrow(_DEAL_SQL, workspace, deal_id)
            events = await conn.fetch(_DEAL_EVENTS_SQL, workspace, deal_id, DEAL_EVENTS_MAX)
            insights = await conn.fetch(_DEAL_INSIGHTS_SQL, workspace, deal_id)
            steps = await conn.fetch(_DEAL_STEPS_SQL, workspace, deal_id)
            score = await conn.fetchrow(_DEAL_SCORE_SQL, workspace, deal_id)
            contributions = await conn.fetch(_DEAL_FORECAST_SQL, workspace, deal_id)
        if head is None and not insights and not events:
            return None
        by_insight: dict[str, list[dict[str, Any]]] = {}
        for step in steps:
            by_insight.setdefault(step["insight_id"], []).append(
                _row(step, drop=("insight_id", "rule"))
            )
        timeline: list[tuple[dt.datetime, int, dict[str, Any]]] = []
        for event in events:
            payload = event["payload"] if isinstance(event["payload"], dict) else {}
            timeline.append(
                (
                    event["occurred_at"],
                    0,
                    {
                        "at": _plain(event["occurred_at"]),
                        "kind": "event",
                        "type": event["type"],
                        "event_id": event["event_id"],
                        "summary": _event_summary(event["type"], payload),
                    },
                )
            )
        for step in steps:
            timeline.append(
                (
                    step["detected_at"],
                    1,
                    {
                        "at": _plain(step["detected_at"]),
                        "kind": "insight",
                        "type": step["lifecycle"],
                        "insight_id": step["insight_id"],
                        "rule": step["rule"],
                        "priority": step["priority"],
                        "summary": step["title"] or "",
                    },
                )
            )
        timeline.sort(key=lambda t: (t[0], t[1]), reverse=True)
        return {
            "deal_id": deal_id,
            "deal": None if head is None else _row(head),
            "score": None if score is None else _row(score),
            "forecast": [_row(c) for c in contributions],
            "insights": [
                {**_row(i), "history": by_insight.get(i["insight_id"], [])} for i in insights
            ],
            "timeline": [entry for _, _, entry in timeline],
        }

    async def forecasts(
        self, workspace: str, period: str | None, limit: int
    ) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(_FORECASTS_SQL, workspace, period, limit)
        return [_row(r) for r in rows]

    async def rule_stats(self, workspace: str, since: dt.datetime) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(_RULE_STATS_SQL, workspace, since)
        return [_row(r) for r in rows]

    async def summary(self, workspace: str) -> dict[str, Any]:
        async with self._pool.acquire() as conn:
            counts = await conn.fetch(_OPEN_BY_PRIORITY_SQL, workspace)
            at_risk = await conn.fetch(_AT_RISK_SQL, workspace)
            deals = await conn.fetchrow(_AT_RISK_DEALS_SQL, workspace)
        by_priority = dict.fromkeys(PRIORITY_RANK, 0)
        by_priority.update({r["priority"]: int(r["n"]) for r in counts})
        assert deals is not None
        return {
            "critical": by_priority["critical"],
            "open_by_priority": by_priority,
            "at_risk_deals": int(deals["deals"]),
            "at_risk_value": float(deals["value"]),
            "at_risk_by_rule_stage": [_row(r) for r in at_risk],
        }

    async def workspaces_of(self, insight_ids: list[str]) -> dict[str, str]:
        """The workspace of each of ``insight_ids`` that is stored (the live feed's answers)."""
        rows = await self._pool.fetch(
            "SELECT insight_id, workspace_id FROM insights WHERE insight_id = ANY($1::text[])",
            insight_ids,
        )
        return {r["insight_id"]: r["workspace_id"] for r in rows}

    async def model(self, workspace: str) -> dict[str, Any] | None:
        """The win model scoring the workspace's deals and how it did on held-out deals, against
        the baselines (the rep's probability, the stage's win rate, the model it replaced)."""
        row = await self._pool.fetchrow(_MODEL_SQL, workspace)
        if row is None:
            return None
        baselines = row["baselines"] if isinstance(row["baselines"], Mapping) else {}
        return {
            "version": row["version"],
            "scope": "workspace" if row["own"] else "pooled",
            "trained_at": _plain(row["trained_at"]),
            "data_until": _plain(row["data_until"]),
            "holdout_from": _plain(row["holdout_from"]),
            "heldout": _quality(row["metrics"]),
            "baselines": {str(k): _quality(v) for k, v in sorted(baselines.items())},
            "reliability": _reliability(row["metrics"]),
        }


def _quality(measures: Any) -> dict[str, float | None]:
    """The held-out quality measures of a model or baseline (a NaN AUC: one class only: None)."""
    found = measures if isinstance(measures, Mapping) else {}
    out: dict[str, float | None] = {}
    for name in _QUALITY:
        value = found.get(name)
        finite = isinstance(value, int | float) and math.isfinite(value)
        out[name] = float(value) if finite and value is not None else None
    return out


def _reliability(measures: Any) -> list[dict[str, float]]:
    """The stored reliability points of a model, each bin's size as its share of the held-out
    snapshots (not a count: a pooled model's counts would tell other workspaces' volumes).
    None for models trained before they were kept; anything malformed is left out."""
    found = measures.get("reliability") if isinstance(measures, Mapping) else None
    points: list[tuple[float, float, float]] = []
    for point in found if isinstance(found, list) else []:
        if not isinstance(point, Mapping):
            continue
        values = [point.get(k) for k in ("predicted", "observed", "count")]
        if all(isinstance(v, int | float) and math.isfinite(v) and v >= 0 for v in values):
            predicted, observed, count = (float(v) for v in values)  # type: ignore[arg-type]
            points.append((predicted, observed, count))
    total = sum(count for _, _, count in points) or 1.0
    return [
        {"predicted": predicted, "observed": observed, "share": count / total}
        for predicted, observed, count in points
    ]


def _event_summary(kind: str, payload: Mapping[str, Any]) -> str:
    """One line about a deal event for the timeline."""
    if kind == "deal.created":
        return f"created in {payload.get('stage', '?')}"
    if kind == "deal.updated":
        changes = payload.get("changes")
        names = sorted(changes) if isinstance(changes, dict) else []
        return "changed " + ", ".join(names) if names else "updated"
    if kind == "activity.logged":
        direction = payload.get("direction")
        what = str(payload.get("activity_type", "activity"))
        return f"{what} ({direction})" if direction else what
    if kind == "deal.closed":
        return f"closed {payload.get('outcome', '')}".strip()
    if kind == "deal.deleted":
        return "deleted"
    return kind
