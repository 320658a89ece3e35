"""Hostile input, property-based: malformed messages of every kind (bad UTF-8, not JSON, not an
object, no or unknown type, future schema versions, wrong types, missing and extra fields, huge
values, wrong keys, tombstones) and re-sent event ids, interleaved with a valid stream.

Every message goes through the monitor's own per-record path
(``BatchProcessor.process_records``: decode, apply to the partition state, render insights, or
build the DLQ record). Properties:

* the monitor never stops: no message makes that path raise;
* every bad message lands in the DLQ once, with the expected reason, a detail, its source offset,
  and a value no larger than the limit;
* every valid event is processed once in effect: the insights and the final partition state are
  exactly those of the valid events fed alone (duplicates and bad messages change nothing).

The strategies are also used by ``tests/integration/test_reliability_hostile.py`` on the broker.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from pydantic_core import from_json

from consumer.decode import REASONS, decode
from consumer.monitor.batch import BatchProcessor, Tally
from consumer.monitor.dlq import (
    DLQ_DETAIL,
    DLQ_REASON,
    MAX_KEY_BYTES,
    ORIGINAL_KEY_SIZE,
    ORIGINAL_SIZE,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TOPIC,
)
from consumer.monitor.metrics import MonitorMetrics
from consumer.monitor.settings import MonitorSettings
from consumer.partition import PartitionState
from consumer.thresholds import RulesConfig
from producer.simulator import SimTick, SimulationSpec, generate
from schemas.events import (
    EVENT_TYPES,
    ActivityLogged,
    DealClosed,
    DealCreated,
    DealDeleted,
    DealUpdated,
    EmailLogged,
    MeetingLogged,
    Tick,
    encode_event,
)
from schemas.insights import insight_adapter
from vectoros.batch_produce import OutRecord
from vectoros.errors import EventRejected

MAX_BYTES = 4096
TOPIC = "deal-events"
MODELS: dict[str, Any] = {
    "deal.created": DealCreated,
    "deal.updated": DealUpdated,
    "activity.logged": ActivityLogged,
    "deal.closed": DealClosed,
    "deal.deleted": DealDeleted,
    "email.logged": EmailLogged,
    "meeting.logged": MeetingLogged,
    "tick": Tick,
}


@dataclass(frozen=True)
class Message:
    """One record of ``deal-events``. ``reasons``: the DLQ reasons it may get; empty for a valid
    message. ``after``: a re-sent event must come after the original (its index)."""

    key: bytes | None
    value: bytes | None
    reasons: frozenset[str] = frozenset()
    after: int = -1
    kind: str = "valid"


def _valid_stream() -> list[Message]:
    out = []
    for n, item in enumerate(generate(SimulationSpec(deals=20, days=45, seed=3))):
        if isinstance(item, SimTick):
            out.append(Message(None, encode_event(Tick(event_id=f"tick-{n}", at=item.at))))
        else:
            out.append(Message(item.deal_id.encode(), encode_event(item)))
    return out


VALID = _valid_stream()
BASES: list[dict[str, Any]] = [orjson.loads(m.value or b"") for m in VALID]
EVENT_INDEXES = [i for i, b in enumerate(BASES) if b["type"] != "tick"]
CREATED_INDEXES = [i for i, b in enumerate(BASES) if b["type"] == "deal.created"]
TICK_INDEXES = [i for i, b in enumerate(BASES) if b["type"] == "tick"]


# --- running messages through the monitor's record path ----------------------------------------


@dataclass
class Record:
    """What the monitor reads of an aiokafka ``ConsumerRecord``."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None = None


@dataclass
class Outcome:
    state: PartitionState
    insights: list[bytes] = field(default_factory=list)
    dlq: list[OutRecord] = field(default_factory=list)
    metrics: MonitorMetrics | None = None


def run(messages: list[Message]) -> Outcome:
    config = MonitorSettings(
        kafka_bootstrap_servers="unused:9092", metrics_enabled=False, max_event_bytes=MAX_BYTES
    )
    processor = BatchProcessor(config)
    metrics = MonitorMetrics(CollectorRegistry())
    state = PartitionState(RulesConfig())
    out: list[OutRecord] = []
    for offset, message in enumerate(messages):
        incoming = Record(TOPIC, 0, offset, message.key, message.value)
        tally = Tally()
        # the monitor's own per-record path; never raises
        processor.process_records(state, [incoming], out, tally)
        tally.flush(metrics)
    outcome = Outcome(state, metrics=metrics)
    for record in out:
        if record.topic == config.topic_dlq:
            outcome.dlq.append(record)
        else:
            assert record.topic == config.topic_insights
            assert record.value is not None
            outcome.insights.append(record.value)
    return outcome


@functools.cache
def reference() -> Outcome:
    return run(VALID)


def _window_ends() -> list[int]:
    """For each valid message: the position before which a copy of it is still recognised: its
    deal's most recent ``dedupe_per_deal`` event ids hold it, or the deal is closed and its
    tombstone (``tombstone_days``) has not expired yet."""
    settings = MonitorSettings(kafka_bootstrap_servers="unused:9092")
    keep = settings.dedupe_per_deal
    at = [dt.datetime.fromisoformat(b.get("occurred_at") or b["at"]) for b in BASES]
    clock = [max(at[: j + 1]) for j in range(len(at))]
    ends = []
    for i, message in enumerate(VALID):
        later = [j for j in range(i + 1, len(VALID)) if VALID[j].key == message.key]
        end = len(VALID)
        if message.key is not None and len(later) >= keep:
            end = later[keep - 1]
        ending = [j for j in [i, *later] if BASES[j]["type"] in ("deal.closed", "deal.deleted")]
        if message.key is not None and ending:
            expiry = at[ending[0]] + dt.timedelta(days=settings.tombstone_days - 1)
            end = min(end, next((j for j in range(len(VALID)) if clock[j] > expiry), end))
        ends.append(end)
    return ends


WINDOW_END = _window_ends()


def interleave(inserts: list[tuple[int, Message]]) -> list[Message]:
    """The valid stream with ``inserts`` (position, message) placed before VALID[position]; a
    re-sent event never before its original, and within its deal's de-duplication window (see
    test_partition for what happens after)."""
    slots: dict[int, list[Message]] = {}
    for position, message in inserts:
        at = max(position, message.after + 1)
        if message.kind in ("resent", "same_id") and message.key is not None:
            at = min(at, WINDOW_END[message.after])
        slots.setdefault(at, []).append(message)
    stream: list[Message] = []
    for i in range(len(VALID) + 1):
        stream.extend(slots.get(i, []))
        if i < len(VALID):
            stream.append(VALID[i])
    return stream


def same_state(a: PartitionState, b: PartitionState) -> None:
    assert a.clock_ms == b.clock_ms
    assert a.deals == b.deals
    assert a.closed == b.closed
    assert a.deadlines == b.deadlines


def check_stream(stream: list[Message]) -> Outcome:
    """Run ``stream``; assert the three properties against the valid events alone."""
    got, want = run(stream), reference()
    bad = [(offset, m) for offset, m in enumerate(stream) if m.reasons]
    dead = [dict(r.headers or []) for r in got.dlq]
    unexpected = [
        (h[SOURCE_OFFSET].decode(), h[DLQ_REASON].decode(), h[DLQ_DETAIL].decode()[:120])
        for h in dead
        if int(h[SOURCE_OFFSET]) not in {offset for offset, _ in bad}
    ]
    assert not unexpected, (
        f"{len(unexpected)} valid messages were dead-lettered, first {unexpected[:3]}; "
        f"the bad ones: {[(o, m.kind, (m.value or b'')[:150]) for o, m in bad][:3]}"
    )
    assert len(got.dlq) == len(bad), [(m.kind, m.value) for _, m in bad][:5]
    for record, (offset, message) in zip(got.dlq, bad, strict=True):
        headers = dict(record.headers or [])
        assert headers[SOURCE_OFFSET] == str(offset).encode(), (message.kind, message.value)
        assert headers[SOURCE_TOPIC] == TOPIC.encode()
        assert headers[SOURCE_PARTITION] == b"0"
        reason = headers[DLQ_REASON].decode()
        assert reason in message.reasons, (message.kind, reason, headers[DLQ_DETAIL], message.value)
        assert headers[DLQ_DETAIL]
        if message.key is not None and len(message.key) > MAX_KEY_BYTES:
            assert record.key == message.key[:MAX_KEY_BYTES]
            assert headers[ORIGINAL_KEY_SIZE] == str(len(message.key)).encode()
        else:
            assert record.key == message.key
        assert len(record.value or b"") <= MAX_BYTES
        if len(message.value or b"") > MAX_BYTES:
            assert headers[ORIGINAL_SIZE] == str(len(message.value or b"")).encode()
    assert got.insights == want.insights, first_difference(got.insights, want.insights, stream)
    same_state(got.state, want.state)
    return got


def first_difference(got: list[bytes], want: list[bytes], stream: list[Message]) -> str:
    def show(value: bytes | None) -> str:
        if value is None:
            return "nothing"
        i = insight_adapter.validate_json(value)
        return f"{i.deal_id} {i.rule.value} {i.lifecycle.value} {i.priority.value} @{i.detected_at}"

    n = next(n for n in range(max(len(got), len(want))) if got[n : n + 1] != want[n : n + 1])
    others = [
        (o, m.kind, (m.value or b"")[:120]) for o, m in enumerate(stream) if m.kind != "valid"
    ]
    return (
        f"insight {n} is {show(got[n] if n < len(got) else None)}, expected "
        f"{show(want[n] if n < len(want) else None)}; hostile or re-sent: {others[:4]}"
    )


# --- strategies --------------------------------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=5,
)


def dumps(value: Any) -> bytes:
    """JSON like any producer might write it (big integers included)."""
    return json.dumps(value, ensure_ascii=False).encode()


def kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def parses(value: bytes) -> bool:
    try:
        from_json(value)
    except ValueError:
        return False
    return True


def is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def hostile(kind: str, reasons: str | set[str], key: bytes | None, value: bytes | None) -> Message:
    return Message(
        key, value, frozenset({reasons} if isinstance(reasons, str) else reasons), -1, kind
    )


base_indexes = st.integers(0, len(VALID) - 1)
BAD_SEQUENCES = (
    b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xa0\xa1", b"\xe2\x28\xa1", b"\xf0\x28\x8c\xbc",
    b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80", b"\x80",
)  # fmt: skip


@st.composite
def bad_utf8(draw: st.DrawFn) -> Message:
    i = draw(base_indexes)
    if draw(st.booleans()):
        value = draw(st.binary(min_size=1, max_size=300).filter(lambda b: not is_utf8(b)))
    else:  # a valid event with invalid bytes inside one of its strings
        raw = VALID[i].value or b""
        starts = [n + 3 for n in range(len(raw)) if raw.startswith(b'":"', n)]
        at = draw(st.sampled_from(starts))
        value = raw[:at] + draw(st.sampled_from(BAD_SEQUENCES)) + raw[at:]
    return hostile("bad_utf8", "invalid_utf8", VALID[i].key, value)


@st.composite
def not_json(draw: st.DrawFn) -> Message:
    i = draw(base_indexes)
    raw, key = VALID[i].value or b"", VALID[i].key
    variant = draw(st.integers(0, 5))
    if variant == 0:
        value = draw(st.text(max_size=60).map(str.encode).filter(lambda b: not parses(b)))
    elif variant == 1:  # truncated
        value = raw[: draw(st.integers(0, len(raw) - 1))]
    elif variant == 2:  # trailing garbage
        value = raw + draw(st.sampled_from([b"}", b",", b"x", b"{}", b"\x00", b"]"]))
    elif variant == 3:
        value = b"\xef\xbb\xbf" + raw  # a byte order mark
    elif variant == 4:  # nested deeper than any parser should follow
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        depth = draw(st.integers(300, (MAX_BYTES - 1) // (len(opener) + 1)))  # under the limit
        value = opener * depth + b"1" + closer * depth
    else:  # a tombstone: a key (Kafka requires one) and no value
        key = VALID[draw(st.sampled_from(EVENT_INDEXES))].key
        return hostile("tombstone", "invalid_json", key, None)
    return hostile("not_json", "invalid_json", key, value)


@st.composite
def not_an_object(draw: st.DrawFn) -> Message:
    value = draw(JSON_VALUES.filter(lambda v: not isinstance(v, dict)))
    return hostile("not_an_object", "not_an_object", VALID[draw(base_indexes)].key, dumps(value))


@st.composite
def missing_type(draw: st.DrawFn) -> Message:
    i = draw(base_indexes)
    if draw(st.booleans()):
        body = {k: v for k, v in BASES[i].items() if k != "type"}
    else:
        body = draw(st.dictionaries(st.text(max_size=8).filter(lambda k: k != "type"), JSON_VALUES))
    return hostile("missing_type", "missing_type", VALID[i].key, dumps(body))


@st.composite
def unknown_type(draw: st.DrawFn) -> Message:
    i = draw(base_indexes)
    tag = draw(JSON_VALUES.filter(lambda v: v not in EVENT_TYPES))
    return hostile("unknown_type", "unknown_type", VALID[i].key, dumps({**BASES[i], "type": tag}))


@st.composite
def future_version(draw: st.DrawFn) -> Message:
    i = draw(base_indexes)
    version = draw(
        st.integers(-(2**70), 2**70).filter(lambda v: v != 1)
        | st.text(max_size=5)
        | st.lists(st.integers(), max_size=2)
    )
    body = {**BASES[i], "schema_version": version}
    if draw(st.booleans()):  # a newer producer also adds fields
        name = draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in body))
        body[name] = draw(JSON_VALUES)
    return hostile("future_version", "unsupported_schema_version", VALID[i].key, dumps(body))


@st.composite
def wrong_type(draw: st.DrawFn) -> Message:
    i = draw(base_indexes)
    body = dict(BASES[i])
    name = draw(st.sampled_from(sorted(set(body) - {"type", "schema_version"})))
    original = kind_of(body[name])
    body[name] = draw(JSON_VALUES.filter(lambda v: v is not None and kind_of(v) != original))
    # a nested object of the wrong type is classified not_an_object today: pinned separately by
    # test_a_nested_field_that_is_not_an_object_is_a_schema_violation
    reasons = {"schema_violation", "not_an_object"} if original == "dict" else "schema_violation"
    return hostile(f"wrong_type:{name}", reasons, VALID[i].key, dumps(body))


@st.composite
def missing_field(draw: st.DrawFn) -> Message:
    i = draw(base_indexes)
    body = BASES[i]
    model = MODELS[body["type"]]
    required = sorted(n for n, f in model.model_fields.items() if f.is_required() and n != "type")
    name = draw(st.sampled_from(required))
    body = {k: v for k, v in body.items() if k != name}
    return hostile(f"missing:{name}", "schema_violation", VALID[i].key, dumps(body))


@st.composite
def extra_field(draw: st.DrawFn) -> Message:
    i = draw(base_indexes)
    body = dict(BASES[i])
    known = MODELS[body["type"]].model_fields
    name = draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in known))
    body[name] = draw(JSON_VALUES)
    return hostile("extra_field", "schema_violation", VALID[i].key, dumps(body))


@st.composite
def huge(draw: st.DrawFn) -> Message:
    variant = draw(st.integers(0, 4))
    if variant == 0:  # over the size limit, whatever it contains
        i = draw(base_indexes)
        if draw(st.booleans()):
            body = {**BASES[i], "title": "x" * draw(st.integers(MAX_BYTES, 3 * MAX_BYTES))}
            return hostile("oversized", "oversized", VALID[i].key, dumps(body))
        size = draw(st.integers(MAX_BYTES + 1, 3 * MAX_BYTES))
        return hostile("oversized", "oversized", VALID[i].key, b"\xff" * size)
    i = draw(st.sampled_from(CREATED_INDEXES))
    body = dict(BASES[i])
    if variant == 1:  # numbers out of range, or beyond what a double holds
        name = draw(st.sampled_from(["probability", "value"]))
        literals = [b"-1", b"-1e-9", b"1" + b"0" * 400, b"-1" + b"0" * 400, b"1e400", b"-1e400"]
        bad = draw(
            st.sampled_from(literals)
            | (st.floats(100.0001, 1e300) if name == "probability" else st.nothing()).map(
                lambda f: repr(f).encode()
            )
        )
        raw = dumps({**body, name: "MARK"}).replace(b'"MARK"', bad)
        return hostile(f"huge:{name}", "schema_violation", VALID[i].key, raw)
    if variant == 2:  # strings over their length limit
        name, limit = draw(st.sampled_from([("title", 2000), ("event_id", 200), ("deal_id", 200)]))
        body[name] = "x" * draw(st.integers(limit + 1, limit + 1500))
        key = body["deal_id"].encode()
        return hostile(f"long:{name}", "schema_violation", key, dumps(body))
    if variant == 3:  # a probability as a huge integer
        body["probability"] = draw(st.integers(101, 2**70))
        return hostile("huge:probability", "schema_violation", VALID[i].key, dumps(body))
    body["changes"] = {"probability": draw(st.floats(100.5, 1e300))}
    body["type"] = "deal.updated"
    for name in ("title", "value", "currency", "stage", "probability", "close_date", "owner_id"):
        body.pop(name, None)
    body.pop("owner_name", None)
    body.pop("company", None)
    return hostile("huge:changes", "schema_violation", VALID[i].key, dumps(body))


@st.composite
def wrong_key(draw: st.DrawFn) -> Message:
    i = draw(st.sampled_from(EVENT_INDEXES))
    key = draw(st.none() | st.binary(max_size=20).filter(lambda k: k != VALID[i].key))
    return hostile("wrong_key", "key_mismatch", key, VALID[i].value)


@st.composite
def resent(draw: st.DrawFn) -> Message:
    """A valid event again (a redelivery), or another event reusing its event id. (Ticks: see
    test_a_redelivered_tick_changes_nothing.)"""
    i = draw(st.sampled_from(EVENT_INDEXES))
    if draw(st.booleans()):
        return Message(VALID[i].key, VALID[i].value, frozenset(), i, "resent")
    occurred = dt.datetime.fromisoformat(BASES[i]["occurred_at"])
    later = occurred + dt.timedelta(days=draw(st.integers(1, 60)))
    body = {**BASES[i], "occurred_at": later.isoformat()}
    return Message(VALID[i].key, dumps(body), frozenset(), i, "same_id")


HOSTILE = st.one_of(
    bad_utf8(),
    not_json(),
    not_an_object(),
    missing_type(),
    unknown_type(),
    future_version(),
    wrong_type(),
    missing_field(),
    extra_field(),
    huge(),
    wrong_key(),
    resent(),
)
INSERTS = st.lists(st.tuples(st.integers(0, len(VALID)), HOSTILE), min_size=20, max_size=150)

FAMILY = {"tombstone": "not_json", "oversized": "huge", "long": "huge", "same_id": "resent"}
PROPERTY = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- tests -------------------------------------------------------------------------------------


def test_the_valid_stream_makes_insights() -> None:
    want = reference()
    assert len(VALID) > 200
    assert len(want.insights) > 20
    assert want.dlq == []


@PROPERTY
@given(HOSTILE)
def test_each_hostile_message_gets_its_reason(message: Message) -> None:
    if not message.reasons:
        assert decode(message.value, message.key, max_bytes=MAX_BYTES) is not None
        return
    with pytest.raises(EventRejected) as info:
        decode(message.value, message.key, max_bytes=MAX_BYTES)
    assert info.value.reason in message.reasons, (message.kind, info.value.detail)
    assert info.value.reason in REASONS
    assert info.value.detail


# No shrinking: one run of a stream takes ~30 ms and shrinking one would take minutes; the
# assertion messages name the offending message (its kind, reason and bytes) instead.
@settings(PROPERTY, max_examples=60, phases=[Phase.explicit, Phase.generate])
@given(INSERTS)
def test_interleaved_hostile_messages_change_nothing_and_all_reach_the_dlq(
    inserts: list[tuple[int, Message]],
) -> None:
    stream = interleave(inserts)
    got = check_stream(stream)
    assert got.metrics is not None
    resent = sum(1 for m in stream if m.kind in ("resent", "same_id"))
    assert got.metrics.duplicates._value.get() == resent


def test_thousands_of_hostile_messages_in_one_stream() -> None:
    """Every category several hundred times in one stream (a fixed sample of the strategies)."""
    inserts = sample_inserts(3000, seed=1)
    stream = interleave(inserts)
    got = check_stream(stream)
    families = Counter(FAMILY.get(m.kind.split(":")[0], m.kind.split(":")[0]) for _, m in inserts)
    assert len(families) == 12, families
    assert min(families.values()) > 50, families
    reasons = Counter(dict(r.headers or [])[DLQ_REASON].decode() for r in got.dlq)
    # implausible_time needs record timestamps, which these records have not (test_decode.py)
    assert set(reasons) == set(REASONS) - {"processing_error", "implausible_time"}, reasons


def sample_inserts(count: int, seed: int) -> list[tuple[int, Message]]:
    """``count`` (position, hostile message) pairs drawn from the strategies, reproducibly."""
    import random

    rng = random.Random(seed)
    messages = sample(HOSTILE, count)
    return [(rng.randint(0, len(VALID)), m) for m in messages]


def sample(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """``count`` examples of ``strategy``, the same on every run (hypothesis, derandomized)."""
    out: list[Any] = []
    per_example = 20

    @settings(
        max_examples=count // per_example + 20,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
        ],
    )
    @given(st.lists(strategy, min_size=per_example, max_size=per_example))
    def collect(batch: list[Any]) -> None:
        out.extend(batch)

    collect()
    assert len(out) >= count, f"hypothesis made only {len(out)} examples"
    return out[:count]


# --- what the categories above do not cover ----------------------------------------------------

OUT_OF_RANGE_TIMES = [
    "9999-12-31T23:59:59-14:00",  # valid RFC 3339, but in UTC it is in the year 10000
    "9999-12-31T12:00:00-12:00",
]


@pytest.mark.parametrize("when", OUT_OF_RANGE_TIMES)
@pytest.mark.parametrize("which", ["event", "tick"])
def test_a_timestamp_past_the_year_9999_does_not_poison_the_partition(
    when: str, which: str
) -> None:
    """A schema-valid event or tick whose instant is after 9999-12-31 in UTC: it may be rejected
    (schema_violation) or fail (processing_error), but it must land in the DLQ and leave the
    partition as it was, so the events after it are processed normally."""
    indexes = EVENT_INDEXES if which == "event" else TICK_INDEXES
    i = indexes[len(indexes) // 3]
    body = {**BASES[i], "event_id": "out-of-range-1"}
    body["occurred_at" if which == "event" else "at"] = when
    bad = hostile("out_of_range_time", {"schema_violation", "processing_error"}, VALID[i].key,
                  dumps(body))  # fmt: skip
    check_stream(interleave([(i + 1, bad)]))


def test_a_boolean_schema_version_is_rejected() -> None:
    """``"schema_version": true`` is not the integer 1 (the JSON Schema says ``type: integer``);
    a non-Python consumer validating against it rejects the event, so the monitor must too."""
    body = {**BASES[0], "schema_version": True}
    with pytest.raises(EventRejected) as info:
        decode(dumps(body), VALID[0].key, max_bytes=MAX_BYTES)
    assert info.value.reason == "unsupported_schema_version"


@pytest.mark.parametrize(
    ("name", "value"), [("changes", []), ("changes", 5), ("changes", "stage"), ("previous", [])]
)
def test_a_nested_field_that_is_not_an_object_is_a_schema_violation(name: str, value: Any) -> None:
    """The message is an object; one of its fields is not. ``not_an_object`` ("expected a JSON
    object") would send its producer looking in the wrong place."""
    i = next(i for i, b in enumerate(BASES) if b["type"] == "deal.updated")
    body = {**BASES[i], name: value}
    with pytest.raises(EventRejected) as info:
        decode(dumps(body), VALID[i].key, max_bytes=MAX_BYTES)
    assert info.value.reason == "schema_violation", info.value.detail
    assert name in info.value.detail


def test_a_redelivered_tick_changes_nothing() -> None:
    """The ticker's ticks carry an event id too. A tick delivered again later (a producer retry,
    a replayed ticker) must not make the partition evaluate its due deals at another point of the
    stream than the uninterrupted run did."""
    for i in TICK_INDEXES:
        for later in (i + 5, i + 300):  # soon after the original, and much later
            if later <= len(VALID):
                again = Message(None, VALID[i].value, frozenset(), i, "resent")
                check_stream(interleave([(later, again)]))
