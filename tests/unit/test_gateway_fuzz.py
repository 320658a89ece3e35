"""Untrusted input: whatever JSON a caller sends, a normalizer either returns validated events or
raises ``PayloadError`` (400). Nothing else escapes (no 500, no half-built event)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producer.gateway import hubspot, pipedrive, salesforce, twenty
from producer.gateway.common import Context, Normalized, PayloadError
from producer.gateway.stages import StageMap
from schemas.events import encode_event, event_adapter
from tests.unit.test_gateway_samples import (
    HUBSPOT_CHANGES,
    SALESFORCE_CREATE,
    SALESFORCE_UPDATE,
    pipedrive_activity_done,
    pipedrive_create,
    twenty_opportunity,
)

NORMALIZERS: dict[str, Callable[[Any, Context], Normalized]] = {
    "hubspot": hubspot.normalize,
    "pipedrive": pipedrive.normalize,
    "salesforce": salesforce.normalize,
    "twenty": twenty.normalize,
}
SAMPLES: dict[str, list[Any]] = {
    "hubspot": [HUBSPOT_CHANGES],
    "pipedrive": [pipedrive_create(), pipedrive_activity_done()],
    "salesforce": [SALESFORCE_CREATE, SALESFORCE_UPDATE],
    "twenty": [twenty_opportunity("created"), twenty_opportunity("updated", ["stage", "amount"])],
}

# What orjson can hand the normalizer: integers up to 64 bits, finite floats.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(["", "0", "-1", "1e3", "2025-01-01", "1735725600000", "closedwon"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    out = copy.deepcopy(value)
    target = out
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return out


def _check(source: str, payload: Any) -> None:
    ctx = Context(source, "ws-fuzz", StageMap(), "USD")
    try:
        result = NORMALIZERS[source](orjson.loads(orjson.dumps(payload)), ctx)
    except PayloadError:
        return
    for event in result.events:  # every event survives the wire and the monitor's decoder
        assert event_adapter.validate_json(encode_event(event)) == event


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, Any]:
    source = draw(st.sampled_from(sorted(SAMPLES)))
    sample = draw(st.sampled_from(SAMPLES[source]))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(sample)))
        sample = _replace(sample, path, draw(json_values))
    return source, sample


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_samples(case: tuple[str, Any]) -> None:
    _check(*case)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(NORMALIZERS)), json_values)
def test_arbitrary_json(source: str, payload: Any) -> None:
    _check(source, payload)
