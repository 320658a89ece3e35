"""The sink's merge rules, on the in-memory store: idempotent, order-robust, resolved is final."""

from __future__ import annotations

import itertools
import json
import typing
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.sink.postgres import (
    EVENT_ARRAYS,
    EVENT_TEXT_FIELDS,
    HISTORY_COLUMNS,
    INSIGHT_COLUMNS,
    INSIGHT_SOURCES,
    batch_parameters,
    defaults,
    fold,
)
from consumer.sink.store import (
    CONTENT_COLUMNS,
    IDENTITY_COLUMNS,
    STATE_COLUMNS,
    WRITE_BATCH_SQL,
    EventRow,
    InMemoryInsightStore,
    InsightRow,
    SourcePosition,
    WriteResult,
    event_row,
    fold_rows,
    insight_row,
    merge_rows,
    pg_json,
    pg_text,
)
from schemas.insights import (
    InsightAction,
    InsightData,
    InsightEvent,
    Lifecycle,
    Priority,
    RuleName,
    insight_adapter,
)

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def make_event(
    lifecycle: Lifecycle = Lifecycle.RAISED,
    *,
    insight: str = "i1",
    priority: Priority = Priority.HIGH,
    day: float = 0,
    raised_day: float = 0,
    title: str | None = None,
    source: str = "rules",
) -> InsightEvent:
    return InsightEvent(
        insight_id=insight,
        lifecycle=lifecycle,
        rule=RuleName.STALE_DEAL,
        workspace_id="ws1",
        deal_id=f"deal-{insight}",
        title=title or f"{lifecycle.value} {priority.value} on day {day:g}",
        description=f"{insight} is {priority.value}",
        priority=priority,
        confidence=0.9,
        data=InsightData(
            deal_id=f"deal-{insight}",
            deal_title="Acme renewal",
            deal_value=25_000.0,
            key_metrics={"days_inactive": 8 + day, "threshold_days": 7},
        ),
        actions=[
            InsightAction(action="Call", priority=priority, timeline="today", expected_impact="x"),
            InsightAction(
                action="Mail", priority=Priority.LOW, timeline="week", expected_impact="y"
            ),
        ],
        source=source,
        detected_at=T0 + timedelta(days=day),
        raised_at=T0 + timedelta(days=raised_day),
    )


def pos(offset: int, partition: int = 0) -> SourcePosition:
    return SourcePosition("deal-insights", partition, offset)


RAISED = make_event(Lifecycle.RAISED, priority=Priority.HIGH, day=0)
ESCALATED = make_event(Lifecycle.ESCALATED, priority=Priority.CRITICAL, day=7)
RESOLVED = make_event(Lifecycle.RESOLVED, priority=Priority.CRITICAL, day=9, title="Resolved")
EPISODE = [RAISED, ESCALATED, RESOLVED]


async def apply(
    store: InMemoryInsightStore, batches: list[list[InsightEvent]], first_offset: int = 0
) -> list[WriteResult]:
    results = []
    offset = first_offset
    for batch in batches:
        items = []
        for event in batch:
            items.append((event, pos(offset)))
            offset += 1
        results.append(await store.write_batch(items))
    return results


async def state_after(batches: list[list[InsightEvent]]) -> dict[str, InsightRow]:
    store = InMemoryInsightStore()
    await apply(store, batches)
    return store.insights


# --- rows --------------------------------------------------------------------------------------


def test_raised_row() -> None:
    row = insight_row(RAISED)
    assert (row.status, row.lifecycle, row.resolved_at) == ("open", "raised", None)
    assert (row.priority, row.priority_rank) == ("high", 2)
    assert row.rule_title == row.title == RAISED.title
    assert row.rule_description == row.description
    assert json.loads(row.actions)[0] == {
        "action": "Call",
        "priority": "high",
        "timeline": "today",
        "expected_impact": "x",
    }
    assert json.loads(row.key_metrics) == {"days_inactive": 8, "threshold_days": 7}
    assert json.loads(row.data)["deal_title"] == "Acme renewal"
    assert row.raised_at == row.detected_at == row.content_detected_at == T0


def test_resolved_row() -> None:
    row = insight_row(RESOLVED)
    assert (row.status, row.lifecycle) == ("resolved", "resolved")
    assert row.resolved_at == RESOLVED.detected_at
    assert row.state_rank > insight_row(ESCALATED).state_rank > insight_row(RAISED).state_rank
    # a resolution's text is the weakest content: only used when nothing else is known
    assert row.content_rank < insight_row(RAISED).content_rank < insight_row(ESCALATED).content_rank


def test_event_row_keeps_whole_payload_and_position() -> None:
    row = event_row(ESCALATED, pos(42, partition=3))
    assert row.key == (ESCALATED.insight_id, "escalated", ESCALATED.detected_at)
    assert (row.kafka_topic, row.kafka_partition, row.kafka_offset) == ("deal-insights", 3, 42)
    assert InsightEvent.model_validate_json(row.payload) == ESCALATED


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("plain", "plain"),
        ("a\x00b", "a\ufffdb"),
        ("\x00\x00", "\ufffd\ufffd"),
    ],
)
def test_pg_text_replaces_nul(raw: str, expected: str) -> None:
    assert pg_text(raw) == expected


@pytest.mark.parametrize(
    "value",
    ["a\x00b", "back\\u0000slash", "\\\x00", "\\\\\x00", "x\\\\u0000\x00y", "ok"],
)
def test_pg_json_replaces_only_escaped_nul(value: str) -> None:
    text = json.dumps({"v": value})
    cleaned = pg_json(text)
    assert "\\u0000" not in cleaned.replace("\\\\", "")
    assert json.loads(cleaned) == {"v": value.replace("\x00", "\ufffd")}


def test_nul_in_event_text_is_replaced() -> None:
    event = make_event(title="bad\x00title").model_copy(
        update={"data": RAISED.data.model_copy(update={"key_metrics": {"k": "v\x00"}})}
    )
    row = insight_row(event)
    assert row.title == "bad\ufffdtitle"
    assert json.loads(row.key_metrics) == {"k": "v\ufffd"}
    assert "\\u0000" not in event_row(event, pos(0)).payload


# --- merge rules -------------------------------------------------------------------------------


async def test_escalation_updates_priority_and_text() -> None:
    row = (await state_after([[RAISED], [ESCALATED]]))["i1"]
    assert (row.status, row.lifecycle) == ("open", "escalated")
    assert (row.priority, row.priority_rank) == ("critical", 3)
    assert row.title == row.rule_title == ESCALATED.title
    assert row.detected_at == ESCALATED.detected_at
    assert row.raised_at == T0


async def test_resolution_keeps_the_text_of_the_risk() -> None:
    row = (await state_after([[RAISED], [ESCALATED], [RESOLVED]]))["i1"]
    assert (row.status, row.lifecycle) == ("resolved", "resolved")
    assert row.resolved_at == RESOLVED.detected_at == row.detected_at
    assert row.title == ESCALATED.title
    assert row.priority == "critical"


async def test_late_raised_redelivery_does_not_reopen() -> None:
    store = InMemoryInsightStore()
    await apply(store, [[RAISED], [RESOLVED]])
    before = store.insights["i1"]
    [late] = await apply(store, [[RAISED]], first_offset=100)
    assert store.insights["i1"] == before
    assert before.status == "resolved"
    assert late == WriteResult(events=1, events_inserted=0, insights_written=0)


async def test_resolved_first_then_raised_fills_text_but_stays_resolved() -> None:
    row = (await state_after([[RESOLVED], [RAISED]]))["i1"]
    assert row.status == "resolved"
    assert row.resolved_at == RESOLVED.detected_at
    assert row.title == RAISED.title  # the resolution's own text was only a placeholder


async def test_second_escalation_wins_by_detected_at() -> None:
    again = make_event(Lifecycle.ESCALATED, priority=Priority.CRITICAL, day=8, title="worse")
    for order in ([ESCALATED, again], [again, ESCALATED]):
        row = (await state_after([[RAISED], order]))["i1"]
        assert row.title == "worse"
        assert row.detected_at == again.detected_at


async def test_raised_at_is_the_earliest_seen() -> None:
    early = make_event(Lifecycle.ESCALATED, priority=Priority.CRITICAL, day=7, raised_day=-1)
    row = (await state_after([[RAISED], [early]]))["i1"]
    assert row.raised_at == T0 - timedelta(days=1)


async def test_same_batch_twice_changes_nothing() -> None:
    store = InMemoryInsightStore()
    batch = [(e, pos(i)) for i, e in enumerate(EPISODE)]
    first = await store.write_batch(batch)
    snapshot = (dict(store.insights), dict(store.events))
    second = await store.write_batch(batch)
    assert first == WriteResult(events=3, events_inserted=3, insights_written=1)
    assert second == WriteResult(events=3, events_inserted=0, insights_written=0)
    assert (store.insights, store.events) == snapshot


async def test_history_keeps_first_position_and_every_step() -> None:
    store = InMemoryInsightStore()
    await store.write_batch([(RAISED, pos(5)), (RAISED, pos(6))])
    await store.write_batch([(RAISED, pos(9)), (ESCALATED, pos(10))])
    rows = sorted(store.events.values(), key=lambda r: r.kafka_offset)
    assert [(r.lifecycle, r.kafka_offset) for r in rows] == [("raised", 5), ("escalated", 10)]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
async def test_every_order_and_split_gives_the_same_state(order: tuple[int, ...]) -> None:
    expected = await state_after([EPISODE])
    events = [EPISODE[i] for i in order]
    for cut in range(len(events) + 1):
        batches = [b for b in (events[:cut], events[cut:]) if b]
        assert await state_after(batches) == expected, (order, cut)
    assert expected["i1"].status == "resolved"


async def test_write_result_counts_a_folded_batch() -> None:
    store = InMemoryInsightStore()
    result = await store.write_batch(
        [(RAISED, pos(0)), (ESCALATED, pos(1)), (make_event(insight="i2"), pos(2))]
    )
    assert result == WriteResult(events=3, events_inserted=3, insights_written=2)


async def test_fail_with_writes_nothing() -> None:
    store = InMemoryInsightStore()
    store.fail_with.append(OSError("down"))
    with pytest.raises(OSError, match="down"):
        await store.write_batch([(RAISED, pos(0))])
    assert not store.insights
    assert not store.events
    assert await store.write_batch([(RAISED, pos(0))]) == WriteResult(1, 1, 1)


# --- properties --------------------------------------------------------------------------------

_LIFECYCLES = list(Lifecycle)
_PRIORITIES = list(Priority)


@st.composite
def episode_events(draw: st.DrawFn) -> InsightEvent:
    """Events of three insights. Like real ones, an event's content is a function of its
    (insight, lifecycle, detected_at): replays and redeliveries are byte-identical."""
    insight = draw(st.sampled_from(["a", "b", "c"]))
    lifecycle = draw(st.sampled_from(_LIFECYCLES))
    day = draw(st.integers(0, 5))
    return make_event(
        lifecycle,
        insight=insight,
        priority=_PRIORITIES[(day + _LIFECYCLES.index(lifecycle)) % len(_PRIORITIES)],
        day=day,
        raised_day={"a": 0, "b": -1, "c": -2}[insight],
        source=["rules", "claude"][day % 2],
    )


def _split(events: list[InsightEvent], cuts: list[int]) -> list[list[InsightEvent]]:
    bounds = sorted({0, len(events), *(c % (len(events) + 1) for c in cuts)})
    return [events[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(
        episode_events(),
        min_size=1,
        max_size=12,
        unique_by=lambda e: (e.insight_id, e.lifecycle, e.detected_at),
    ),
    data=st.data(),
)
async def test_state_is_independent_of_order_batching_and_repeats(
    events: list[InsightEvent], data: st.DataObject
) -> None:
    expected = await state_after([events])
    shuffled = data.draw(st.permutations(events))
    repeated = shuffled + data.draw(st.lists(st.sampled_from(events), max_size=6))
    cuts = data.draw(st.lists(st.integers(0, 20), max_size=5))
    assert await state_after(_split(repeated, cuts)) == expected


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(episode_events().map(insight_row), min_size=1, max_size=6), data=st.data())
def test_merge_is_associative_and_commutative(rows: list[InsightRow], data: st.DataObject) -> None:
    same = [r for r in rows if r.insight_id == rows[0].insight_id]
    folded = fold_rows(same)[rows[0].insight_id]
    assert fold_rows(data.draw(st.permutations(same)))[rows[0].insight_id] == folded
    assert merge_rows(folded, folded) == folded
    for row in same:
        assert merge_rows(folded, row) == folded  # nothing already seen changes the result


# --- the SQL matches the rows ------------------------------------------------------------------


def test_columns_are_partitioned_into_groups() -> None:
    grouped = (*IDENTITY_COLUMNS, *CONTENT_COLUMNS, *STATE_COLUMNS, "raised_at")
    assert sorted(grouped) == sorted(INSIGHT_COLUMNS)
    assert len(set(grouped)) == len(grouped)


def test_every_column_has_a_source_and_the_history_columns_are_the_rows() -> None:
    assert set(INSIGHT_SOURCES) == set(INSIGHT_COLUMNS) == {f.name for f in fields(InsightRow)}
    assert tuple(f.name for f in fields(EventRow)) == HISTORY_COLUMNS


def test_array_types_match_field_types() -> None:
    hints = {**typing.get_type_hints(InsightRow), **typing.get_type_hints(EventRow)}
    hints["first"] = bool
    for name, array in EVENT_ARRAYS:
        hint = hints[name]
        if hint in (datetime, datetime | None):
            assert array == "timestamptz", name
        elif hint is bool:
            assert array == "bool", name
        elif hint is int:
            assert array in ("int2", "int4", "int8"), name
        elif hint is float:
            assert array == "float8", name
        else:
            assert hint is str, name
            assert array == "text", name
    for name in EVENT_TEXT_FIELDS:  # read from the JSON: str (or str enum) fields of the event
        annotation = InsightEvent.model_fields[name].annotation
        assert isinstance(annotation, type)
        assert issubclass(annotation, str), name


def test_sql_names_every_column_and_is_parameterised() -> None:
    for name in INSIGHT_COLUMNS:
        assert name in WRITE_BATCH_SQL
    for name in (*STATE_COLUMNS, *CONTENT_COLUMNS):
        assert f"{name} = CASE WHEN" in WRITE_BATCH_SQL
    assert f"${len(EVENT_ARRAYS) + 6}::text::jsonb" in WRITE_BATCH_SQL  # the last parameter
    assert "ON CONFLICT (insight_id, lifecycle, detected_at) DO NOTHING" in WRITE_BATCH_SQL
    assert "ON CONFLICT (insight_id) DO UPDATE" in WRITE_BATCH_SQL


def test_data_defaults_are_the_fields_a_producer_may_leave_out() -> None:
    defaults_ = json.loads(defaults(InsightData))
    assert defaults_["key_metrics"] == {}
    assert defaults_["currency"] is None
    assert not {"deal_id", "deal_title", "deal_value"} & set(defaults_)
    assert json.loads(defaults(InsightEvent, ["type", "title"])) == {"type": "risk"}


def _event_columns(params: list[object]) -> dict[str, object]:
    return dict(zip([name for name, _ in EVENT_ARRAYS], params, strict=False))


def test_parameters_are_sorted_by_history_key_with_the_first_of_each_key() -> None:
    i0 = make_event(insight="i0")
    batch = [(ESCALATED, pos(0)), (RAISED, pos(1)), (i0, pos(2)), (RAISED, pos(3))]  # 3: again
    params = batch_parameters(batch)
    columns = _event_columns(params)
    assert columns["kafka_offset"] == [2, 0, 1, 3]  # i0 raised, i1 escalated, i1 raised x2
    assert columns["first"] == [True, True, True, False]
    assert columns["detected_at"] == [i0.detected_at, ESCALATED.detected_at, T0, T0]
    fi, si, ci, raised_at = params[len(EVENT_ARRAYS) : len(EVENT_ARRAYS) + 4]
    # per insight_id in order (i0, i1), 1-based positions in the sorted arrays: i1's identity
    # is its first event in the batch, its state and content the escalation
    assert (fi, si, ci) == ([1, 2], [1, 2], [1, 2])
    assert raised_at == [T0, T0]


def test_the_raw_record_is_the_payload_and_events_without_one_are_serialised() -> None:
    raw = insight_adapter.dump_json(RAISED).replace(b'"title"', b' "title"')
    [from_raw] = _event_columns(batch_parameters([(RAISED, SourcePosition("t", 0, 0, raw))]))[
        "payload"
    ]  # type: ignore[misc]
    assert from_raw == raw.decode()
    [serialised] = _event_columns(batch_parameters([(RAISED, pos(0))]))["payload"]  # type: ignore[misc]
    assert insight_adapter.validate_json(serialised) == RAISED


def test_an_escaped_nul_is_replaced_in_the_payload_and_the_history_key() -> None:
    event = make_event(insight="i\x00d", title="bad\x00title")
    raw = insight_adapter.dump_json(event)
    [payload] = _event_columns(batch_parameters([(event, SourcePosition("t", 0, 0, raw))]))[
        "payload"
    ]  # type: ignore[misc]
    assert json.loads(payload)["title"] == "bad\ufffdtitle"
    assert fold([(event, pos(0))], ["i\ufffdd"]).keys() == {"i\ufffdd"}


@settings(max_examples=200, deadline=None)
@given(events=st.lists(episode_events(), min_size=1, max_size=10))
def test_fold_picks_the_rows_fold_rows_merges(events: list[InsightEvent]) -> None:
    batch = [(e, pos(i)) for i, e in enumerate(events)]
    steps = [e for e in events if e.lifecycle is not Lifecycle.ENRICHED]
    expected = fold_rows(insight_row(e) for e in steps)
    folded = fold(batch, [e.insight_id for e in events])
    assert set(folded) == set(expected)
    for insight_id, f in folded.items():
        state, content = insight_row(events[f.state]), insight_row(events[f.content])
        row = insight_row(events[f.identity])
        row = replace(row, **{n: getattr(state, n) for n in STATE_COLUMNS})
        row = replace(row, **{n: getattr(content, n) for n in CONTENT_COLUMNS})
        assert replace(row, raised_at=f.raised_at) == expected[insight_id]
