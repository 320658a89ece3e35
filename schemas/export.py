"""Generate the published contract files from the pydantic models (the source of truth).

``render_all()`` gives every file as text: one JSON Schema (2020-12) per event type, the
deal-event union, the insight event, and ``asyncapi.yaml`` (AsyncAPI 3.0.0). ``write_all()``
writes them, ``diff()`` lists the committed files that are out of date. Regenerate with
``vectoros schemas export`` or ``python -m schemas.export``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel

from schemas.acks import InsightAck
from schemas.events import EVENT_TYPES, TICK_HEADER, DealEvent, Tick, event_adapter
from schemas.forecasts import DealForecast
from schemas.insights import InsightEvent
from schemas.scores import DealScore

JsonSchema = dict[str, Any]

DEFAULT_ROOT = Path(__file__).resolve().parent
DIALECT = "https://json-schema.org/draft/2020-12/schema"
ID_BASE = "https://vectoros.dev/schemas/v1/"

_DESCRIPTIONS = {
    "deal-event": "Every record on deal-events (schema version 1), discriminated on `type`.",
    "deal.created": "A new deal in the CRM, with all of its fields.",
    "deal.updated": "A partial update: `changes` holds only the fields that changed.",
    "activity.logged": "An email, call, meeting, note or task on a deal; resets inactivity.",
    "deal.closed": "The deal was won or lost; resolves every open insight on it.",
    "deal.deleted": "The deal was deleted; the monitor forgets it.",
    "email.logged": "A captured email on a deal (metadata only, with its direction); counts "
    "as activity and feeds ghosting.",
    "meeting.logged": "A captured meeting on a deal (scheduled, held, cancelled, no-show); a "
    "held one counts as activity, a scheduled one holds off stale_deal and ghosting.",
    "deal.scored": "The model's score of a deal (a deal-score as an event), written by the "
    "history service after the events it reflects; the monitor folds it into the deal's state.",
    "tick": f"Advances a partition's clock; sent to every partition, header `{TICK_HEADER}: tick`.",
    "insight-event": "One lifecycle step (raised, escalated, resolved) of an insight.",
    "deal-score": "The win-probability model's current score of an open deal, with top factors.",
    "insight-ack": "Someone acknowledged, snoozed or marked an insight not useful.",
    "deal-forecast": "A period's revenue forecast of a workspace (or owner) as known at a date.",
}


def event_type(model: type[BaseModel]) -> str:
    """The ``type`` discriminator value of an event model."""
    return str(model.model_fields["type"].default)


def event_models() -> list[type[BaseModel]]:
    """One model per event type, in the order of ``EVENT_TYPES`` (the deal events, then tick)."""
    models: list[type[BaseModel]] = [*get_args(DealEvent), Tick]
    names = tuple(event_type(m) for m in models)
    if names != EVENT_TYPES:
        raise RuntimeError(f"event models {names} do not match EVENT_TYPES {EVENT_TYPES}")
    return models


def json_schemas() -> dict[str, JsonSchema]:
    """Schema name (the file name without ``.schema.json``) -> JSON Schema document."""
    sources = [("deal-event", "DealEvent", event_adapter.json_schema())]
    sources += [(event_type(m), m.__name__, m.model_json_schema()) for m in event_models()]
    sources.append(("insight-event", "InsightEvent", InsightEvent.model_json_schema()))
    sources.append(("deal-score", "DealScore", DealScore.model_json_schema()))
    sources.append(("insight-ack", "InsightAck", InsightAck.model_json_schema()))
    sources.append(("deal-forecast", "DealForecast", DealForecast.model_json_schema()))
    return {
        name: {
            "$schema": DIALECT,
            "$id": f"{ID_BASE}{name}.schema.json",
            "title": title,
            "description": _DESCRIPTIONS[name],
            **{k: v for k, v in schema.items() if k not in ("title", "description")},
        }
        for name, title, schema in sources
    }


def _to_asyncapi(node: Any) -> Any:
    """JSON Schema 2020-12 (pydantic) -> AsyncAPI schema (a JSON Schema draft-07 superset)."""
    if isinstance(node, list):
        return [_to_asyncapi(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: JsonSchema = {}
    for key, value in node.items():
        if key in ("$schema", "$id", "$defs"):
            continue
        if key == "$ref" and isinstance(value, str):
            out[key] = value.replace("#/$defs/", "#/components/schemas/")
        elif key == "discriminator" and isinstance(value, dict):
            out[key] = value["propertyName"]  # AsyncAPI: just the property name
        elif key in ("const", "default", "enum", "examples"):  # values, not schemas
            out[key] = value
        elif key in ("properties", "patternProperties"):
            out[key] = {name: _to_asyncapi(sub) for name, sub in value.items()}
        else:
            out[key] = _to_asyncapi(value)
    if "$ref" in out and len(out) > 1:  # draft-07 ignores the siblings of $ref
        out = {"allOf": [{"$ref": out.pop("$ref")}], **out}
    return out


def component_schemas(schemas: dict[str, JsonSchema]) -> dict[str, JsonSchema]:
    """Every document (by title) and every ``$defs`` entry as an AsyncAPI component schema."""
    found = {doc["title"]: _to_asyncapi(doc) for doc in schemas.values()}
    for doc in schemas.values():
        for name, sub in doc.get("$defs", {}).items():
            found.setdefault(name, _to_asyncapi(sub))
    found["CrmDealEvent"] = {
        "title": "CrmDealEvent",
        "description": "A deal event from the CRM backend: any type but tick and deal.scored.",
        "oneOf": [
            _ref("components/schemas", m.__name__)
            for m in get_args(DealEvent)
            if event_type(m) != "deal.scored"
        ],
        "discriminator": found["DealEvent"]["discriminator"],
    }
    return dict(sorted(found.items()))


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/{kind}/{name}"}


# All but the schemas, operations and channel messages (see _OPERATIONS and asyncapi()).
_SKELETON = """
asyncapi: 3.0.0
info:
  title: VectorOS Deal Monitor
  version: 1.0.0
  description: >-
    Generated from the pydantic models in schemas/ by `vectoros schemas export`; do not edit.
defaultContentType: application/json
servers:
  local: {host: "localhost:9092", protocol: kafka, description: Local development broker.}
channels:
  dealEvents: {address: deal-events, description: "Deal events from the CRM, and ticks."}
  dealInsights: {address: deal-insights, description: "Insights raised, escalated, resolved."}
  dealEventsDlq: {address: deal-events-dlq, description: "Records the monitor could not use."}
  dealScores: {address: deal-scores, description: "Model scores of open deals."}
  insightAcks: {address: insight-acks, description: "Insights acknowledged, snoozed, not useful."}
  dealForecasts: {address: deal-forecasts, description: "Revenue forecasts of a period."}
  dealMonitorState:
    address: deal-monitor-state
    description: Changelog of the monitor's per-deal state (compacted).
    bindings:
      kafka: {topicConfiguration: {cleanup.policy: [compact]}, bindingVersion: 0.5.0}
components:
  messages:
    dealEvent:
      summary: A change to a deal in the CRM (any type but tick), keyed by deal_id.
      payload: {$ref: "#/components/schemas/CrmDealEvent"}
      bindings: &key {kafka: {key: {type: string, description: deal_id}, bindingVersion: 0.5.0}}
    tick:
      summary: Advances one partition's clock; produced to every partition explicitly, no key.
      headers:
        type: object
        properties:
          vectoros-type: {type: string, const: tick, description: Marks a tick.}
        required: [vectoros-type]
      payload: {$ref: "#/components/schemas/Tick"}
    insightEvent:
      summary: One lifecycle step of an insight, keyed by deal_id.
      payload: {$ref: "#/components/schemas/InsightEvent"}
      bindings: *key
    deadLetter:
      summary: A deal-events record the monitor could not use, with the reason and its origin.
      description: The original key and value, unchanged (the key may be absent).
      contentType: application/octet-stream
      headers:
        type: object
        properties:
          vectoros-dlq-reason: {type: string, description: Short code from a fixed set.}
          vectoros-dlq-detail: {type: string, description: Human-readable explanation.}
          vectoros-source-topic: {type: string, description: The topic it was read from.}
          vectoros-source-partition: {type: string, pattern: "^[0-9]+$", description: Decimal.}
          vectoros-source-offset: {type: string, pattern: "^[0-9]+$", description: Decimal.}
        required: [vectoros-dlq-reason, vectoros-dlq-detail, vectoros-source-topic,
                   vectoros-source-partition, vectoros-source-offset]
      payload: {type: string, format: binary, description: The original value (opaque bytes).}
      bindings: {kafka: {key: {type: string, format: binary}, bindingVersion: 0.5.0}}
    dealScore:
      summary: The model's score of an open deal after an event changed it, keyed by deal_id.
      payload: {$ref: "#/components/schemas/DealScore"}
      bindings: *key
    insightAck:
      summary: An answer to an insight (Slack button, email link, CLI), keyed by insight_id.
      payload: {$ref: "#/components/schemas/InsightAck"}
      bindings: {kafka: {key: {type: string, description: insight_id}, bindingVersion: 0.5.0}}
    dealForecast:
      summary: A period's revenue forecast as known at a date, keyed by workspace_id.
      payload: {$ref: "#/components/schemas/DealForecast"}
      bindings: {kafka: {key: {type: string, description: workspace_id}, bindingVersion: 0.5.0}}
    dealState:
      summary: The monitor's state of one deal (internal). A null value (tombstone) deletes it.
      payload: {type: [object, "null"], description: Internal state snapshot.}
      bindings: *key
"""

_OPERATIONS = [  # (id, action, channel, messages, summary)
    ("crmSendDealEvents", "send", "dealEvents", ["dealEvent"], "The CRM backend (or gateway)."),
    ("tickerSendTicks", "send", "dealEvents", ["tick"], "The ticker, to every partition."),
    ("monitorReceiveDealEvents", "receive", "dealEvents", ["dealEvent", "tick"], "The monitor."),
    ("monitorSendDealInsights", "send", "dealInsights", ["insightEvent"], "The monitor."),
    ("monitorSendDeadLetters", "send", "dealEventsDlq", ["deadLetter"], "The monitor."),
    ("monitorSendState", "send", "dealMonitorState", ["dealState"], "The monitor."),
    ("monitorRestoreState", "receive", "dealMonitorState", ["dealState"], "The monitor, on start."),
    ("sinkReceiveDealInsights", "receive", "dealInsights", ["insightEvent"], "The sink."),
    ("notifierReceiveDealInsights", "receive", "dealInsights", ["insightEvent"], "The notifier."),
    ("historyReceiveDealEvents", "receive", "dealEvents", ["dealEvent", "tick"], "The history."),
    ("historySendDealScores", "send", "dealScores", ["dealScore"], "The history service."),
    ("gatewaySendInsightAcks", "send", "insightAcks", ["insightAck"], "The gateway."),
    ("cliSendInsightAcks", "send", "insightAcks", ["insightAck"], "vectoros insights ack|snooze."),
    ("apiSendInsightAcks", "send", "insightAcks", ["insightAck"], "The dashboard (vectoros api)."),
    ("notifierReceiveInsightAcks", "receive", "insightAcks", ["insightAck"], "The notifier."),
    ("forecastSendDealForecasts", "send", "dealForecasts", ["dealForecast"], "vectoros forecast."),
]


def asyncapi(schemas: dict[str, JsonSchema]) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of the four topics, as plain data."""
    doc: dict[str, Any] = yaml.safe_load(_SKELETON)
    for _, _, cid, messages, _ in _OPERATIONS:
        refs = doc["channels"][cid].setdefault("messages", {})
        refs.update({m: _ref("components/messages", m) for m in messages})
    doc["operations"] = {
        oid: {
            "action": action,
            "channel": _ref("channels", cid),
            "summary": summary,
            "messages": [_ref(f"channels/{cid}/messages", m) for m in messages],
        }
        for oid, action, cid, messages, summary in _OPERATIONS
    }
    doc["components"] = {"schemas": component_schemas(schemas), **doc["components"]}
    return doc


def _json(doc: JsonSchema) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render_all() -> dict[str, str]:
    """Relative path -> file text: deterministic, sorted, each ending with a newline."""
    schemas = json_schemas()
    files = {f"json/{name}.schema.json": _json(doc) for name, doc in schemas.items()}
    doc = json.loads(json.dumps(asyncapi(schemas)))  # fresh objects: no YAML anchors/aliases
    files["asyncapi.yaml"] = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)
    return dict(sorted(files.items()))


def _stale(root: Path, files: dict[str, str]) -> list[str]:
    """Generated schema files under ``root/json`` that no model produces any more."""
    found = (p.relative_to(root).as_posix() for p in (root / "json").glob("*.schema.json"))
    return sorted(rel for rel in found if rel not in files)


def write_all(root: Path = DEFAULT_ROOT) -> list[Path]:
    """Write every file under ``root`` and remove stale generated schemas; the paths written."""
    files = render_all()
    for rel in _stale(root, files):
        (root / rel).unlink()
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(text.encode())
    return [root / rel for rel in files]


def diff(root: Path = DEFAULT_ROOT) -> list[str]:
    """Relative paths under ``root`` that differ from ``render_all()``: changed, missing, stale."""
    files = render_all()
    changed = [
        rel
        for rel, text in files.items()
        if not (root / rel).is_file() or (root / rel).read_bytes() != text.encode()
    ]
    return sorted(changed + _stale(root, files))


if __name__ == "__main__":
    for written in write_all():
        print(f"wrote {written}")
