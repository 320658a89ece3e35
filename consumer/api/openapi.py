"""The OpenAPI 3.1 document of the read API (served at ``/api/openapi.json``, committed as
``docs/openapi.json``; a test keeps the two equal)."""

from __future__ import annotations

from typing import Any

from schemas.insights import RuleName

_TIME = {"type": "string", "format": "date-time"}
_NTIME = {"type": ["string", "null"], "format": "date-time"}
_NUM = {"type": "number"}
_NNUM = {"type": ["number", "null"]}
_STR = {"type": "string"}
_TEXT = {"type": "string", "pattern": "^[^\\u0000]*$"}  # a parameter: no NUL
_SINCE_SCHEMA = {
    "anyOf": [
        {"type": "string", "format": "date-time"},
        {"type": "string", "format": "date"},
        {"type": "string", "pattern": "^[0-9]{1,6}(\\.[0-9]{1,3})?(s|m|h|d|w)$"},
    ]
}
_NSTR = {"type": ["string", "null"]}
_INT = {"type": "integer"}
_PRIORITY = {"type": "string", "enum": ["low", "medium", "high", "critical"]}
_RULE = {"type": "string", "enum": [r.value for r in RuleName]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": list(props) if required is None else required,
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
        "description": description,
    }


_WORKSPACE = _query(
    "workspace", _TEXT, "Optional: must be the token's workspace (another one answers 403)."
)


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        304: "Not modified (If-None-Match matched the ETag).",
        400: "A parameter is invalid.",
        401: "No token, or an unknown or revoked one.",
        403: "The workspace parameter names another workspace than the token's.",
        404: "Not found in the token's workspace.",
        413: "The body is larger than 1024 bytes.",
        429: "Over the token's rate limit; Retry-After says when to try again.",
        503: "The live stream is off; for an answer: no broker, or it did not take the answer.",
    }
    out: dict[str, Any] = {}
    for code in codes:
        if code == 304:
            out["304"] = {"description": text[code]}
        else:
            out[str(code)] = {
                "description": text[code],
                "content": {"application/json": {"schema": _ref("Error")}},
            }
    return out


def _ok(schema: str, description: str, *, etag: bool = False) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ref(schema)}},
    }
    if etag:
        answer["headers"] = {"ETag": {"schema": _STR, "description": "Tag of this answer."}}
    return answer


def _get(
    operation: str,
    summary: str,
    schema: str,
    params: list[dict[str, Any]],
    errors: tuple[int, ...],
    *,
    etag: bool = False,
) -> dict[str, Any]:
    return {
        "get": {
            "operationId": operation,
            "summary": summary,
            "parameters": [*params, _WORKSPACE],
            "responses": {"200": _ok(schema, summary, etag=etag), **_errors(*errors)},
        }
    }


_INSIGHT_PROPS: dict[str, Any] = {
    "insight_id": _STR,
    "deal_id": _STR,
    "rule": _RULE,
    "type": _STR,
    "status": {"type": "string", "enum": ["open", "resolved"]},
    "lifecycle": _STR,
    "priority": _PRIORITY,
    "title": _STR,
    "description": _STR,
    "actions": {"type": "array", "items": {"type": "object"}},
    "key_metrics": {"type": "object"},
    "data": {"type": "object"},
    "confidence": _NUM,
    "source": _STR,
    "raised_at": _TIME,
    "detected_at": _TIME,
    "resolved_at": _NTIME,
    "updated_at": _TIME,
    "ack": {
        "oneOf": [
            {"type": "null"},
            _obj(
                {
                    "state": {
                        "type": "string",
                        "enum": ["acknowledged", "snoozed", "not_useful"],
                    },
                    "snoozed_until": _NTIME,
                }
            ),
        ]
    },
}

_STEP = _obj(
    {
        "lifecycle": _STR,
        "detected_at": _TIME,
        "priority": _PRIORITY,
        "source": _STR,
        "title": _NSTR,
        "recorded_at": _TIME,
    }
)
_DEAL_STEP = _obj(
    {"lifecycle": _STR, "detected_at": _TIME, "priority": _PRIORITY, "source": _STR, "title": _NSTR}
)

_SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": _STR, "detail": _STR}),
    "Me": _obj({"workspace_id": _STR, "token_id": _STR, "name": _STR}),
    "Insight": _obj(_INSIGHT_PROPS),
    "InsightPage": _obj(
        {
            "items": {"type": "array", "items": _ref("Insight")},
            "next_cursor": {
                **_NSTR,
                "description": "Pass as cursor for the next page; null: last.",
            },
        }
    ),
    "InsightDetail": {
        "allOf": [
            _ref("Insight"),
            _obj({"history": {"type": "array", "items": _STEP}}),
        ]
    },
    "TimelineEntry": _obj(
        {
            "at": _TIME,
            "kind": {"type": "string", "enum": ["event", "insight"]},
            "type": _STR,
            "summary": _STR,
            "event_id": _STR,
            "insight_id": _STR,
            "rule": _STR,
            "priority": _PRIORITY,
        },
        required=["at", "kind", "type", "summary"],
    ),
    "Deal": _obj(
        {
            "deal_id": _STR,
            "deal": {"type": ["object", "null"], "description": "From the deal history."},
            "score": {"type": ["object", "null"], "description": "The current model's score."},
            "forecast": {
                "type": "array",
                "description": "Its part in the latest workspace forecast of each period (by "
                "period; empty when none): the share of the simulations in which it is won and "
                "closes inside the period, and that share times its value.",
                "items": _obj(
                    {
                        "period": _STR,
                        "as_of": _TIME,
                        "p_land": {"type": "number", "minimum": 0, "maximum": 1},
                        "expected": _NUM,
                    }
                ),
            },
            "insights": {
                "type": "array",
                "items": _obj(
                    {
                        "insight_id": _STR,
                        "rule": _RULE,
                        "status": _STR,
                        "lifecycle": _STR,
                        "priority": _PRIORITY,
                        "title": _STR,
                        "raised_at": _TIME,
                        "detected_at": _TIME,
                        "resolved_at": _NTIME,
                        "history": {"type": "array", "items": _DEAL_STEP},
                    }
                ),
            },
            "timeline": {"type": "array", "items": _ref("TimelineEntry")},
        }
    ),
    "Forecast": _obj(
        {
            "scope": _STR,
            "period": _STR,
            "as_of": _TIME,
            "period_start": _TIME,
            "period_end": _TIME,
            "computed_at": _TIME,
            "simulations": _INT,
            "open_deals": _INT,
            "won": _NUM,
            "p10": _NUM,
            "p50": _NUM,
            "p90": _NUM,
            "expected": _NUM,
            "weighted_pipeline": _NUM,
            "commit": _NUM,
            "best_case": _NUM,
            "pipeline": _NUM,
            "target": _NNUM,
            "coverage": _NNUM,
            "gap": _NNUM,
            "p_reach_target": _NNUM,
        }
    ),
    "Forecasts": _obj({"items": {"type": "array", "items": _ref("Forecast")}}),
    "RuleStats": _obj(
        {
            "rule": _RULE,
            "open": _INT,
            "open_critical": _INT,
            "open_high": _INT,
            "open_medium": _INT,
            "open_low": _INT,
            "open_value": _NUM,
            "raised": _INT,
            "resolved": _INT,
            "median_seconds_open": _NNUM,
            "acknowledged": _INT,
            "snoozed": _INT,
        }
    ),
    "RuleStatsPage": _obj({"since": _TIME, "items": {"type": "array", "items": _ref("RuleStats")}}),
    "AnswerRequest": {
        **_obj(
            {
                "answer": {
                    "type": "string",
                    "enum": ["acknowledged", "snooze_1d", "snooze_1w", "not_useful"],
                    "description": "Acknowledge, snooze for 1 day or 1 week, or not useful.",
                }
            }
        ),
        "additionalProperties": False,
    },
    "Answered": _obj(
        {
            "insight_id": _STR,
            "ack_id": {"type": "string", "description": "The InsightAck event's id."},
            "ack": _obj(
                {
                    "state": {
                        "type": "string",
                        "enum": ["acknowledged", "snoozed", "not_useful"],
                    },
                    "snoozed_until": _NTIME,
                }
            ),
        }
    ),
    "Quality": _obj(
        {
            "auc": _NNUM,
            "brier": _NNUM,
            "log_loss": _NNUM,
            "ece": {**_NNUM, "description": "Expected calibration error (10 equal-width bins)."},
        }
    ),
    "ModelInfo": _obj(
        {
            "model": {
                "oneOf": [
                    {"type": "null"},
                    _obj(
                        {
                            "version": _INT,
                            "scope": {"type": "string", "enum": ["workspace", "pooled"]},
                            "trained_at": _TIME,
                            "data_until": _TIME,
                            "holdout_from": _TIME,
                            "heldout": _ref("Quality"),
                            "baselines": {
                                "type": "object",
                                "additionalProperties": _ref("Quality"),
                                "description": "rep, stage, current (the model it replaced).",
                            },
                            "reliability": {
                                "type": "array",
                                "items": _obj(
                                    {
                                        "predicted": _NUM,
                                        "observed": _NUM,
                                        "share": _NUM,
                                    }
                                ),
                                "description": "The reliability diagram of the held-out deals: "
                                "per bin of predicted probability (10 equal-width bins, empty "
                                "ones left out), the mean prediction, the share won and the "
                                "bin's share of the held-out snapshots. Empty for models "
                                "trained before it was kept.",
                            },
                        }
                    ),
                ]
            }
        }
    ),
    "Summary": _obj(
        {
            "critical": _INT,
            "open_by_priority": _obj({p: _INT for p in ("low", "medium", "high", "critical")}),
            "at_risk_deals": _INT,
            "at_risk_value": _NUM,
            "at_risk_by_rule_stage": {
                "type": "array",
                "items": _obj({"rule": _RULE, "stage": _STR, "insights": _INT, "value": _NUM}),
            },
        }
    ),
}

_SINCE = "RFC 3339 time, or an age such as 12h, 7d, 2w."


def openapi_document() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/api/v1/me": _get("me", "The token's workspace and name.", "Me", [], (400, 401, 403, 429)),
        "/api/v1/insights": _get(
            "listInsights",
            "Insights of the workspace, most urgent then latest first, a page at a time.",
            "InsightPage",
            [
                _query(
                    "status",
                    {"type": "string", "enum": ["open", "resolved", "all"], "default": "open"},
                    "Which insights.",
                ),
                _query("priority", _PRIORITY, "This priority and above."),
                _query("rule", _RULE, "Only this rule."),
                _query("deal", _TEXT, "Only this deal id."),
                _query("owner", _TEXT, "Only deals of this owner (id, or name in any case)."),
                _query("since", _SINCE_SCHEMA, "Changed at or after: " + _SINCE),
                _query(
                    "limit",
                    {"type": "integer", "minimum": 1, "default": 50},
                    "Page size; a larger one is served as VECTOROS_API_PAGE_SIZE_MAX "
                    "(default 200).",
                ),
                _query("cursor", _TEXT, "next_cursor of the previous page."),
            ],
            (304, 400, 401, 403, 429),
            etag=True,
        ),
        "/api/v1/insights/{insight_id}": _get(
            "getInsight",
            "One insight and its lifecycle history.",
            "InsightDetail",
            [_path("insight_id", "The insight id.")],
            (400, 401, 403, 404, 429),
        ),
        "/api/v1/insights/{insight_id}/answer": {
            "post": {
                "operationId": "answerInsight",
                "summary": "Acknowledge, snooze (1 day, 1 week) or mark an insight not useful.",
                "description": (
                    "Publishes an InsightAck (source dashboard) on insight-acks and stores it; "
                    "the notifiers then hold the insight (an escalation still goes out)."
                ),
                "parameters": [_path("insight_id", "The insight id."), _WORKSPACE],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("AnswerRequest")}},
                },
                "responses": {
                    "200": _ok("Answered", "The answer, published and stored."),
                    **_errors(400, 401, 403, 404, 413, 429, 503),
                },
            }
        },
        "/api/v1/deals/{deal_id}": _get(
            "getDeal",
            "One deal: its history, score, forecast contribution, insights with their "
            "lifecycle, and its timeline.",
            "Deal",
            [_path("deal_id", "The deal id.")],
            (400, 401, 403, 404, 429),
        ),
        "/api/v1/forecasts": _get(
            "listForecasts",
            "Revenue forecasts of the workspace, latest first.",
            "Forecasts",
            [
                _query("period", _TEXT, "Only this period (2026-Q4, 2026-12)."),
                _query(
                    "limit",
                    {"type": "integer", "minimum": 1, "default": 20},
                    "How many (more than 500 is served as 500).",
                ),
            ],
            (304, 400, 401, 403, 429),
            etag=True,
        ),
        "/api/v1/stats/rules": _get(
            "ruleStats",
            "Per rule: open insights by priority and value, raised, resolved, acknowledged.",
            "RuleStatsPage",
            [_query("since", _SINCE_SCHEMA, "Window start (default 30 days ago): " + _SINCE)],
            (304, 400, 401, 403, 429),
            etag=True,
        ),
        "/api/v1/summary": _get(
            "summary",
            "The dashboard's figures: critical count, open by priority, at-risk revenue.",
            "Summary",
            [],
            (304, 400, 401, 403, 429),
            etag=True,
        ),
        "/api/v1/model": _get(
            "model",
            "The win model scoring the workspace's deals and its held-out calibration and "
            "accuracy against the baselines; model null before vectoros train.",
            "ModelInfo",
            [],
            (304, 400, 401, 403, 429),
            etag=True,
        ),
        "/api/v1/stream": {
            "get": {
                "operationId": "stream",
                "summary": "Server-sent events of the workspace's insights as they happen.",
                "description": (
                    "Events: `insight` (data: lifecycle raised, escalated, enriched or "
                    "resolved, and the insight's fields), `ack` (an answer to one of the "
                    "workspace's insights: insight_id, state, snoozed_until, source, at) and "
                    "`reset` (resuming was not possible: refetch, then follow). Send "
                    "Last-Event-ID to resume."
                ),
                "parameters": [
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": _STR,
                        "description": "The id of the last event received.",
                    },
                    _WORKSPACE,
                ],
                "responses": {
                    "200": {
                        "description": "The event stream.",
                        "content": {"text/event-stream": {"schema": _STR}},
                    },
                    **_errors(400, 401, 403, 429, 503),
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "VectorOS Deal Monitor read API",
            "version": "1.0.0",
            "description": (
                "Insights, deals, forecasts and rule statistics of one workspace per token "
                "(vectoros tokens create --workspace W). See docs/api.md."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
