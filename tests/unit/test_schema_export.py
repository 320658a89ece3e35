"""The committed contract files (JSON Schema, AsyncAPI) are what the models generate, and valid."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import schemas
from schemas.events import EVENT_TYPES, TICK_HEADER, TICK_HEADER_VALUE
from schemas.export import DIALECT, ID_BASE, diff, json_schemas, render_all, write_all

SCHEMAS_DIR = Path(schemas.__file__).resolve().parent
RENDERED = render_all()
JSON_FILES = sorted(rel for rel in RENDERED if rel.endswith(".json"))
REGENERATE = "run `vectoros schemas export` (or `python -m schemas.export`) and commit the result"

try:  # optional (not a dependency): a full meta-schema check when jsonschema is installed
    _jsonschema: Any = importlib.import_module("jsonschema")
except ImportError:  # pragma: no cover - depends on the environment
    _jsonschema = None


def test_committed_files_match_models() -> None:
    stale = diff(SCHEMAS_DIR)
    assert not stale, f"schema files out of date with the models: {stale}; {REGENERATE}"


def test_expected_files() -> None:
    expected = {f"json/{t}.schema.json" for t in EVENT_TYPES}
    expected |= {"json/deal-event.schema.json", "json/insight-event.schema.json", "asyncapi.yaml"}
    expected |= {"json/deal-score.schema.json", "json/insight-ack.schema.json"}
    expected |= {"json/deal-score.schema.json"}
    expected |= {"json/deal-forecast.schema.json"}
    assert set(RENDERED) == expected


def test_render_is_deterministic() -> None:
    again = render_all()
    assert again == RENDERED
    assert list(again) == sorted(again)
    assert all(text.endswith("\n") and not text.endswith("\n\n") for text in again.values())


def test_write_all_and_diff(tmp_path: Path) -> None:
    assert diff(tmp_path) == sorted(RENDERED)  # everything missing
    written = write_all(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == sorted(RENDERED)
    assert diff(tmp_path) == []
    (tmp_path / "json/tick.schema.json").write_text("{}\n")
    (tmp_path / "json/deal.merged.schema.json").write_text("{}\n")  # no model makes it any more
    (tmp_path / "json/notes.json").write_text("{}\n")  # not a generated file: left alone
    assert diff(tmp_path) == ["json/deal.merged.schema.json", "json/tick.schema.json"]
    write_all(tmp_path)
    assert diff(tmp_path) == []
    assert not (tmp_path / "json/deal.merged.schema.json").exists()
    assert (tmp_path / "json/notes.json").exists()


# ------------------------------------------------------------------ JSON Schema

_SCHEMA_KEYWORDS = {"allOf", "anyOf", "oneOf", "prefixItems"}
_SUBSCHEMA = {
    "not",
    "if",
    "then",
    "else",
    "items",
    "contains",
    "additionalProperties",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contentSchema",
}
_SCHEMA_MAPS = {"properties", "patternProperties", "$defs", "dependentSchemas"}
_COUNTS = {
    "maxLength",
    "minLength",
    "maxItems",
    "minItems",
    "maxContains",
    "minContains",
    "maxProperties",
    "minProperties",
}
_NUMBERS = {"maximum", "minimum", "exclusiveMaximum", "exclusiveMinimum", "multipleOf"}
_STRINGS = {"$schema", "$id", "$anchor", "$comment", "title", "description", "format"}
_ANY = {"const", "default", "examples", "enum", "deprecated", "readOnly", "writeOnly"}
_OTHER = {"type", "required", "pattern", "$ref", "uniqueItems", "dependentRequired"}
_OTHER |= {"discriminator"}  # OpenAPI-style annotation emitted by pydantic; ignored by 2020-12
_KNOWN = _SCHEMA_KEYWORDS | _SUBSCHEMA | _SCHEMA_MAPS | _COUNTS | _NUMBERS | _STRINGS | _ANY
_KNOWN |= _OTHER
_TYPES = {"null", "boolean", "object", "array", "number", "string", "integer"}


def _resolve(doc: Any, ref: str) -> Any:
    """A local JSON pointer ('#/a/b') inside ``doc``; KeyError if it does not exist."""
    assert ref.startswith("#"), f"non-local $ref {ref!r}"
    node = doc
    for part in filter(None, ref[1:].split("/")):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _check_schema(node: Any, doc: Any, where: str) -> None:
    """Structural check of a 2020-12 schema: keywords, their value types, refs that resolve."""
    if isinstance(node, bool):
        return
    assert isinstance(node, dict), f"{where}: a schema is an object or a boolean"
    unknown = set(node) - _KNOWN
    assert not unknown, f"{where}: unknown keywords {unknown}"
    for key, value in node.items():
        at = f"{where}/{key}"
        if key in _SCHEMA_KEYWORDS:
            assert isinstance(value, list), at
            assert value, f"{at}: non-empty array of schemas"
            for i, sub in enumerate(value):
                _check_schema(sub, doc, f"{at}/{i}")
        elif key in _SUBSCHEMA:
            _check_schema(value, doc, at)
        elif key in _SCHEMA_MAPS:
            assert isinstance(value, dict), at
            for name, sub in value.items():
                _check_schema(sub, doc, f"{at}/{name}")
        elif key in _COUNTS:
            assert type(value) is int, at
            assert value >= 0, at
        elif key in _NUMBERS:
            assert type(value) in (int, float), at
        elif key in _STRINGS:
            assert isinstance(value, str), at
            assert value, at
        elif key == "type":
            types = value if isinstance(value, list) else [value]
            assert types, at
            assert set(types) <= _TYPES, at
            assert len(set(types)) == len(types), at
        elif key == "enum":
            assert isinstance(value, list), at
            assert value, at
        elif key == "required":
            assert isinstance(value, list), at
            assert len(set(value)) == len(value), at
            assert all(isinstance(name, str) for name in value), at
            if node.get("additionalProperties") is False:
                assert set(value) <= set(node.get("properties", {})), f"{at}: not a property"
        elif key == "pattern":
            re.compile(value)
        elif key == "$ref":
            assert isinstance(value, str), at
            _resolve(doc, value)
        elif key == "discriminator":
            assert isinstance(value["propertyName"], str), at
            for target in value.get("mapping", {}).values():
                _resolve(doc, target)


@pytest.mark.parametrize("rel", JSON_FILES)
def test_json_schema_is_valid(rel: str) -> None:
    doc = json.loads(RENDERED[rel])
    name = rel.removeprefix("json/").removesuffix(".schema.json")
    assert doc["$schema"] == DIALECT
    assert doc["$id"] == f"{ID_BASE}{name}.schema.json"
    assert doc["title"]
    assert doc["description"]
    assert doc.get("type") == "object" or "oneOf" in doc
    _check_schema(doc, doc, "#")
    if _jsonschema is not None:  # pragma: no cover - depends on the environment
        _jsonschema.Draft202012Validator.check_schema(doc)


def test_per_type_schemas_match_the_union() -> None:
    docs = json_schemas()
    union = docs["deal-event"]
    assert union["discriminator"]["propertyName"] == "type"
    assert set(union["discriminator"]["mapping"]) == set(EVENT_TYPES)
    for event_type, target in union["discriminator"]["mapping"].items():
        single = docs[event_type]
        member = _resolve(union, target)
        ignored = {"$schema", "$id", "$defs", "title", "description"}
        assert {k: v for k, v in single.items() if k not in ignored} == {
            k: v for k, v in member.items() if k not in ignored
        }, event_type
        assert single["properties"]["type"]["const"] == event_type
        for name, sub in single.get("$defs", {}).items():
            assert union["$defs"][name] == sub, f"{event_type}: $defs/{name} differs"


# ------------------------------------------------------------------ AsyncAPI

ASYNCAPI: dict[str, Any] = yaml.safe_load(RENDERED["asyncapi.yaml"])
_MESSAGE_FIELDS = {
    "headers",
    "payload",
    "correlationId",
    "contentType",
    "name",
    "title",
    "summary",
    "description",
    "tags",
    "externalDocs",
    "bindings",
    "examples",
    "traits",
}
_NAME = re.compile(r"^[a-zA-Z0-9.\-_]+$")


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for key, v in node.items() if key != "$ref" for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _deref(node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = _resolve(ASYNCAPI, node["$ref"])
    return node


def test_asyncapi_document() -> None:
    assert ASYNCAPI["asyncapi"] == "3.0.0"
    assert set(ASYNCAPI) <= {
        "asyncapi",
        "id",
        "info",
        "servers",
        "defaultContentType",
        "channels",
        "operations",
        "components",
    }
    assert ASYNCAPI["info"]["title"]
    assert isinstance(ASYNCAPI["info"]["version"], str)
    for server in ASYNCAPI.get("servers", {}).values():
        assert server["protocol"] == "kafka"
        assert server["host"] == "localhost:9092"
    assert "&id" not in RENDERED["asyncapi.yaml"]  # no YAML anchors
    assert "$defs" not in RENDERED["asyncapi.yaml"]


def test_every_ref_resolves() -> None:
    refs = _refs(ASYNCAPI)
    assert refs
    for ref in refs:
        assert ref.startswith("#/"), ref
        _resolve(ASYNCAPI, ref)  # raises KeyError when the target is missing


def test_channels() -> None:
    channels = ASYNCAPI["channels"]
    assert {cid: ch["address"] for cid, ch in channels.items()} == {
        "dealEvents": "deal-events",
        "dealInsights": "deal-insights",
        "dealEventsDlq": "deal-events-dlq",
        "dealMonitorState": "deal-monitor-state",
        "dealScores": "deal-scores",
        "insightAcks": "insight-acks",
        "dealForecasts": "deal-forecasts",
    }
    state = channels["dealMonitorState"]["bindings"]["kafka"]
    assert state["topicConfiguration"]["cleanup.policy"] == ["compact"]
    for cid, channel in channels.items():
        assert channel["messages"], cid
        for message in channel["messages"].values():
            resolved = _deref(message)
            assert set(resolved) <= _MESSAGE_FIELDS, cid
            assert "payload" in resolved, cid
    assert set(channels["dealEvents"]["messages"]) == {"dealEvent", "tick"}


def test_messages() -> None:
    messages = ASYNCAPI["components"]["messages"]
    for mid in ("dealEvent", "insightEvent", "dealState"):
        key = messages[mid]["bindings"]["kafka"]["key"]
        assert key["type"] == "string", mid
    assert "bindings" not in messages["tick"]  # ticks go to partitions explicitly
    tick_header = messages["tick"]["headers"]["properties"][TICK_HEADER]
    assert tick_header["const"] == TICK_HEADER_VALUE.decode()
    assert messages["tick"]["headers"]["required"] == [TICK_HEADER]
    assert _deref(messages["tick"]["payload"])["properties"]["type"]["const"] == "tick"
    dlq = messages["deadLetter"]
    assert set(dlq["headers"]["properties"]) == {
        "vectoros-dlq-reason",
        "vectoros-dlq-detail",
        "vectoros-source-topic",
        "vectoros-source-partition",
        "vectoros-source-offset",
    }
    assert dlq["payload"] == {**dlq["payload"], "type": "string", "format": "binary"}
    insight = _deref(messages["insightEvent"]["payload"])
    assert insight["title"] == "InsightEvent"
    crm = _deref(messages["dealEvent"]["payload"])
    members = {_deref(m)["properties"]["type"]["const"] for m in crm["oneOf"]}
    assert members == set(EVENT_TYPES) - {"tick", "deal.scored"}  # not from the CRM


def test_component_schemas() -> None:
    components = ASYNCAPI["components"]["schemas"]
    assert all(_NAME.match(name) for name in components)
    assert all(_NAME.match(name) for name in ASYNCAPI["components"]["messages"])
    union = components["DealEvent"]
    assert union["discriminator"] == "type"  # AsyncAPI: a property name, not an object
    assert {_deref(m)["title"] for m in union["oneOf"]} >= {"Tick", "DealCreated"}
    for name, schema in components.items():
        assert "$schema" not in schema, name
        assert "$id" not in schema, name
        for ref in _refs(schema):
            assert ref.startswith("#/components/schemas/"), (name, ref)


def test_operations() -> None:
    operations = ASYNCAPI["operations"]
    by_channel: dict[tuple[str, str], set[str]] = {}
    for oid, op in operations.items():
        assert op["action"] in ("send", "receive"), oid
        channel_ref = op["channel"]["$ref"]
        cid = channel_ref.removeprefix("#/channels/")
        for message in op["messages"]:
            # an operation's messages must be messages of its own channel
            assert message["$ref"].startswith(f"{channel_ref}/messages/"), oid
        by_channel.setdefault((cid, op["action"]), set()).add(oid)
    assert "monitorReceiveDealEvents" in by_channel["dealEvents", "receive"]
    assert "crmSendDealEvents" in by_channel["dealEvents", "send"]
    assert {"monitorSendDealInsights"} <= by_channel["dealInsights", "send"]
    assert {"sinkReceiveDealInsights", "notifierReceiveDealInsights"} <= by_channel[
        "dealInsights", "receive"
    ]
    assert "monitorSendDeadLetters" in by_channel["dealEventsDlq", "send"]
    assert "monitorSendState" in by_channel["dealMonitorState", "send"]
