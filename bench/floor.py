"""Reference: the floor. A bare aiokafka loop running a minimal 5-rule job, like the issue's.

The same loop as ``bench.throughput.run_bare_loop`` (``getmany`` → work → one ``send_batch`` per
partition → acks → commit), but the work is the least a per-deal rule job does: ``orjson.loads``
(no schema validation), a dict per deal, five threshold rules on the event's time, and a small
JSON insight when a rule starts firing on a deal. No templates, no lifecycle, no packed state,
no dedupe, no ticks evaluated. What it reaches is what Kafka I/O in Python costs on this
machine; the gap to the monitor is the monitor's work per record, not its Kafka shell.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.data import Dataset, partition_for
from bench.env import Session
from bench.throughput import (
    BATCH_BYTES,
    LIMIT_S,
    RunResult,
    _Assigned,
    _send_batches,
    monitor_settings,
)
from consumer.state import DAY_MS
from vectoros.kafka import start_producer

_STAGE_DAYS = {"lead": 14, "qualified": 21, "proposal": 30, "negotiation": 21}


def _ms(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).timestamp() * 1000)


def _rules(d: dict[str, Any], now: int) -> set[str]:
    out = set()
    if now - d["active"] > 14 * DAY_MS:
        out.add("stale_deal")
    if now - d["entered"] > _STAGE_DAYS.get(d["stage"], 30) * DAY_MS:
        out.add("stuck_in_stage")
    if d["prob"] < 20:
        out.add("low_probability")
    if d["value"] >= 50_000 and d["prob"] < 40:
        out.add("high_value_at_risk")
    if d["close"] < now:
        out.add("close_date_passed")
    return out


def minimal_job(
    deals: dict[str, dict[str, Any]], body: dict[str, Any], out: list[tuple[str, bytes]]
) -> None:
    """Apply one event to ``deals`` and append (deal_id, insight JSON) for each rule that starts
    firing on its deal."""
    kind = body.get("type")
    deal_id = body.get("deal_id")
    if deal_id is None or kind == "tick":
        return
    now = _ms(body["occurred_at"])
    if kind in ("deal.closed", "deal.deleted"):
        deals.pop(deal_id, None)
        return
    d = deals.get(deal_id)
    if kind == "deal.created":
        d = deals[deal_id] = {
            "value": body["value"],
            "prob": body["probability"],
            "stage": body["stage"],
            "active": now,
            "entered": now,
            "close": _ms(body["close_date"] + "T00:00:00+00:00"),
            "firing": set(),
        }
    elif d is None:
        return
    elif kind == "activity.logged":
        d["active"] = now
    elif kind == "deal.updated":
        changes = body["changes"]
        if "stage" in changes and changes["stage"] != d["stage"]:
            d["stage"], d["entered"] = changes["stage"], now
        for field, key in (("value", "value"), ("probability", "prob")):
            if changes.get(field) is not None:
                d[key] = changes[field]
        if changes.get("close_date"):
            d["close"] = _ms(changes["close_date"] + "T00:00:00+00:00")
    firing = _rules(d, now)
    for rule in firing - d["firing"]:
        out.append((deal_id, orjson.dumps({"deal_id": deal_id, "rule": rule, "at": now})))
    d["firing"] = firing


async def run_floor_loop(session: Session, data: Dataset, events_topic: str) -> RunResult:
    prefix = session.name("floor")
    settings = monitor_settings(session, events_topic, prefix)
    await session.create_topics(settings.topic_insights)
    ends = data.end_offsets()
    producer = await start_producer(settings, max_batch_size=BATCH_BYTES)
    parts = session.partitions
    consumer = AIOKafkaConsumer(
        bootstrap_servers=session.bootstrap,
        group_id=settings.monitor_group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    listener = _Assigned()
    consumer.subscribe([events_topic], listener=listener)
    states: dict[int, dict[str, dict[str, Any]]] = {}
    position: dict[int, int] = {}
    insights = records = 0
    started = time.perf_counter()
    await consumer.start()
    try:
        cpu0: float | None = None
        broker0: float | None = None
        while any(position.get(p, 0) < end for p, end in ends.items()):
            if time.perf_counter() - started > LIMIT_S:
                raise AssertionError("the floor loop did not finish in time")
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            if cpu0 is None and listener.at is not None:
                cpu0, broker0 = time.process_time(), session.broker_cpu_seconds()
            if not batch:
                continue
            out: dict[int, list[tuple[bytes, bytes]]] = {}
            offsets: dict[TopicPartition, int] = {}
            for tp, recs in batch.items():
                deals = states.setdefault(tp.partition, {})
                found: list[tuple[str, bytes]] = []
                for rec in recs:
                    minimal_job(deals, orjson.loads(rec.value), found)
                for deal_id, value in found:
                    key = deal_id.encode()
                    out.setdefault(partition_for(key, parts), []).append((key, value))
                insights += len(found)
                records += len(recs)
                offsets[tp] = recs[-1].offset + 1
            await _send_batches(producer, settings.topic_insights, out)
            await consumer.commit(offsets)
            for tp, offset in offsets.items():
                position[tp.partition] = offset
        done = time.perf_counter()
        cpu1, broker1 = time.process_time(), session.broker_cpu_seconds()
    finally:
        await consumer.stop()
        await producer.stop()
    if records != data.records:
        raise AssertionError(f"floor loop read {records} records, expected {data.records}")
    assigned = listener.at or started
    await session.drop_topics(settings.topic_insights)
    return RunResult(
        records,
        assigned - started,
        done - assigned,
        insights,
        cpu1 - (cpu0 or 0.0),
        None if broker0 is None or broker1 is None else broker1 - broker0,
    )
